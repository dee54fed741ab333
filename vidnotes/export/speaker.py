"""The speaker encoder for the model store (store task ``speaker``), from the ``resemblyzer`` PyPI
package (Apache-2.0).

resemblyzer 0.1.4 ships the weights of its GE2E speaker encoder in the wheel
(``resemblyzer/pretrained.pt``: a 3-layer LSTM of 256 units over 40-band mel power spectra,
then a linear layer, ReLU and L2 normalization to a 256-dimensional embedding). The package
itself is never imported: its ``__init__`` imports webrtcvad and librosa, and its ``audio`` module
a scipy namespace that newer SciPy drops. Here the state dict is read with ``torch.load``
into the same network (:class:`Encoder`, defined as resemblyzer's ``VoiceEncoder.forward``),
exported with ``torch.onnx.export`` (TorchScript exporter, opset 17, input ``mels`` [batch,
frames, 40], both axes dynamic), and checked against torch on real speech: windows of Asterisk
prompts of several voices, mels from :func:`vidnotes.diarize.mel_spectrogram`. fp32 only:
dynamic int8 quantization gives a cosine of about 0.3 to the fp32 embedding (RESEARCH.md), useless.
Inference (:mod:`vidnotes.diarize`) reads only the published ``.onnx``.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.export.onnx_tools import installed_package_dir, log, package_license
from vidnotes.store import ModelStore

TASK = "speaker"
PACKAGE = "resemblyzer"
ONNX_NAME = "speaker_encoder.onnx"
OPSET = 17
N_MELS, HIDDEN, LAYERS, EMBEDDING = 40, 256, 3, 256  # resemblyzer/hparams.py
# parity: max |onnx - torch| of an embedding component, and the lowest cosine between the two
MAX_ABS_DIFF = 1e-5
MIN_COSINE = 0.99999


def package_dir() -> Path:
    """``resemblyzer/`` of the installed package, found without importing it."""
    d = installed_package_dir(PACKAGE, install_hint="pip install -e '.[speaker]'")
    if not (d / "pretrained.pt").is_file():
        raise FileNotFoundError(f"{d}/pretrained.pt missing; reinstall resemblyzer (pip install -e '.[speaker]')")
    return d


def load_encoder(weights: Path | None = None) -> Any:
    """resemblyzer's voice encoder in torch, from its ``pretrained.pt`` (torch only)."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
            self.linear = nn.Linear(HIDDEN, EMBEDDING)
            self.relu = nn.ReLU()

        def forward(self, mels: torch.Tensor) -> torch.Tensor:  # resemblyzer's VoiceEncoder.forward
            _, (hidden, _) = self.lstm(mels)
            raw = self.relu(self.linear(hidden[-1]))
            return raw / torch.norm(raw, dim=1, keepdim=True)

    path = Path(weights) if weights else package_dir() / "pretrained.pt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = Encoder()
    missing, unexpected = model.load_state_dict(checkpoint["model_state"], strict=False)
    if missing:
        raise RuntimeError(f"{path}: weights missing for {missing}")
    model.eval()
    return model


def parity_windows(per_voice: int = 6) -> tuple[np.ndarray, list[str]]:
    """1.6 s mel windows of real speech: Asterisk prompts of the English, Russian, French and
    Italian voices (``per_voice`` prompts each), the middle of each prompt."""
    from vidnotes.audio import decode_audio
    from vidnotes.datasets import language_prompts
    from vidnotes.diarize import WINDOW_FRAMES, mel_spectrogram, normalize_volume

    mels, names = [], []
    for lang in ("en", "ru", "fr", "it"):
        try:
            prompts = language_prompts(lang, min_words=6)
        except FileNotFoundError:
            continue
        for p in prompts[:: max(1, len(prompts) // per_voice)][:per_voice]:
            audio = normalize_volume(decode_audio(p.path, input_format="g722" if lang == "en" else None))
            m = mel_spectrogram(audio)
            if len(m) < WINDOW_FRAMES:
                m = np.pad(m, ((0, WINDOW_FRAMES - len(m)), (0, 0)))
            s = (len(m) - WINDOW_FRAMES) // 2
            mels.append(m[s : s + WINDOW_FRAMES])
            names.append(f"{lang}/{p.name}")
    if not mels:
        raise FileNotFoundError("no Asterisk prompts installed: scripts/system-deps.sh")
    return np.stack(mels).astype(np.float32), names


def export_onnx(model: Any, path: Path) -> Path:
    import torch

    dummy = torch.zeros(2, 160, N_MELS)
    torch.onnx.export(
        model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
        input_names=["mels"], output_names=["embeddings"],
        dynamic_axes={"mels": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}},
    )  # fmt: skip
    return path


def check_parity(model: Any, onnx_path: Path, mels: np.ndarray) -> dict[str, Any]:
    """The ONNX model against torch on ``mels``: as one batch, at a shorter length, and one alone."""
    import torch

    from vidnotes.onnxutil import make_session

    sess = make_session(onnx_path, threads=1)
    out: dict[str, Any] = {}
    # a batch of 1.6 s windows, shorter windows (what short speech regions give), one window alone
    for label, x in (("windows_160", mels), ("windows_80", mels[:, :80]), ("batch_1", mels[:1])):
        with torch.no_grad():
            ref = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        got = sess.run(["embeddings"], {"mels": np.ascontiguousarray(x)})[0]
        cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        out[label] = {"windows": int(len(x)), "max_abs_diff": float(np.abs(ref - got).max()), "min_cosine": float(cos.min())}
    t0 = time.perf_counter()
    for _ in range(3):
        sess.run(["embeddings"], {"mels": mels})
    out["ms_per_window_1_thread"] = round((time.perf_counter() - t0) / 3 / len(mels) * 1000, 3)
    return out


def export_speaker(store: ModelStore, *, work_dir: Path, version: str | None = None) -> dict[str, Any]:
    """Export resemblyzer's encoder to ONNX, check it against torch on real speech, publish it as
    task ``speaker`` (fp32)."""
    import hashlib

    t0 = time.perf_counter()
    src = package_dir()
    pkg_version = importlib.metadata.version(PACKAGE)
    model = load_encoder()
    pub = Path(work_dir) / "speaker-publish"
    if pub.exists():
        shutil.rmtree(pub)
    pub.mkdir(parents=True)
    onnx_path = export_onnx(model, pub / ONNX_NAME)
    mels, names = parity_windows()
    log(f"parity: resemblyzer {pkg_version} (torch) vs onnxruntime on {len(names)} windows of real speech ...")
    parity = check_parity(model, onnx_path, mels)
    log(f"parity: {parity}")
    bad = [k for k, v in parity.items() if isinstance(v, dict) and (v["max_abs_diff"] > MAX_ABS_DIFF or v["min_cosine"] < MIN_COSINE)]
    if bad:
        raise RuntimeError(f"the ONNX speaker encoder differs from torch on {bad}: {parity}")
    lic = package_license(PACKAGE)
    if lic and lic.is_file():
        shutil.copy2(lic, pub / "LICENSE")
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:10]
    version = version or f"resemblyzer-{pkg_version}-{digest}"
    manifest = {
        "source": f"{PACKAGE}=={pkg_version} (PyPI, Apache-2.0), {src / 'pretrained.pt'}",
        "license": "Apache-2.0",
        "format": "onnx",
        "precision": "fp32",
        "sample_rate": 16000,
        "onnx": {"model": ONNX_NAME, "opset": OPSET, "input": "mels [batch, frames, 40]", "output": "embeddings [batch, 256], L2-normed"},
        "features": {
            "n_fft": 400,
            "hop_length": 160,
            "n_mels": N_MELS,
            "power": 2.0,
            "center": True,
            "pad_mode": "constant",
            "mel": "slaney",
            "log": False,
            "volume_dbfs": -30.0,
        },  # fmt: skip
        "parity": {
            "audio": "the middle 1.6 s of Asterisk prompts of four voices (en, ru, fr, it), mels in numpy",
            "windows": names,
            "reference": "resemblyzer's VoiceEncoder network with pretrained.pt in torch",
            "tolerance": {"max_abs_diff": MAX_ABS_DIFF, "min_cosine": MIN_COSINE},
            "checks": parity,
        },
        "export_seconds": round(time.perf_counter() - t0, 1),
    }
    published = store.publish(TASK, version, pub, manifest)
    log(f"published {TASK}/{version} to {store.root}")
    return published
