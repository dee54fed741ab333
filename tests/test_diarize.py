"""Speaker diarization: mel features and the exported encoder (docs/speakers.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vidnotes.diarize import mel_spectrogram, normalize_volume

SR = 16000


def _prompts(lang: str, n: int) -> list[np.ndarray]:
    from vidnotes.audio import decode_audio
    from vidnotes.datasets import language_prompts

    ps = language_prompts(lang, min_words=5)[:n]
    return [decode_audio(p.path, input_format="g722" if lang == "en" else None) for p in ps]


def _join(parts: list[np.ndarray], gap_s: float) -> np.ndarray:
    gap = np.zeros(int(gap_s * SR), dtype=np.float32)
    return np.concatenate([x for p in parts for x in (p, gap)])


def _resemblyzer_hparams() -> dict:
    """resemblyzer/hparams.py read as text (importing the package needs webrtcvad and librosa)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("resemblyzer not installed (the export extra)")
    ns: dict = {}
    exec((Path(next(iter(spec.submodule_search_locations))) / "hparams.py").read_text(), ns)
    return ns


# -- features ----------------------------------------------------------------------------------


def test_mel_equals_resemblyzer_librosa():
    """resemblyzer's wav_to_mel_spectrogram is librosa.feature.melspectrogram with its hparams:
    ours equals it on real speech within 1e-4 relative to each frame's peak band."""
    librosa = pytest.importorskip("librosa")
    hp = _resemblyzer_hparams()
    audio = normalize_volume(_join(_prompts("en", 2), 0.3))
    ref = librosa.feature.melspectrogram(
        y=audio, sr=hp["sampling_rate"], n_fft=int(hp["sampling_rate"] * hp["mel_window_length"] / 1000),
        hop_length=int(hp["sampling_rate"] * hp["mel_window_step"] / 1000), n_mels=hp["mel_n_channels"],
    ).astype(np.float32).T  # fmt: skip
    ours = mel_spectrogram(audio)
    assert ours.shape == ref.shape
    scale = np.maximum(ref.max(axis=1, keepdims=True), 1e-6)
    assert float(np.abs(ours - ref).max() / ref.max()) < 1e-5
    assert float((np.abs(ours - ref) / scale).max()) < 1e-4


def test_mel_blocks_match_one_pass(monkeypatch):
    import vidnotes.diarize as d

    x = np.random.default_rng(0).standard_normal(SR * 3).astype(np.float32) * 0.1
    whole = mel_spectrogram(x)
    monkeypatch.setattr(d, "_BLOCK_FRAMES", 37)
    assert np.allclose(mel_spectrogram(x), whole, rtol=1e-5, atol=1e-7)
    assert whole.shape == (1 + len(x) // 160, 40)


def test_normalize_volume_like_resemblyzer():
    x = np.full(1000, 0.001, dtype=np.float32)
    y = normalize_volume(x)
    assert 20 * np.log10(np.sqrt(np.mean((y * 32767.0) ** 2)) / 32767) == pytest.approx(-30, abs=1e-3)
    loud = np.full(1000, 0.5, dtype=np.float32)
    assert normalize_volume(loud) is not None and np.allclose(normalize_volume(loud), loud)  # increase only


# -- the exported encoder ----------------------------------------------------------------------


@pytest.mark.models
def test_store_speaker_parity_recorded(store):
    """The store's speaker encoder was checked against torch on real speech at export."""
    m = store.manifest("speaker")
    assert m["precision"] == "fp32"
    for check in ("windows_160", "windows_80", "batch_1"):
        c = m["parity"]["checks"][check]
        assert c["max_abs_diff"] <= 1e-5 and c["min_cosine"] >= 0.99999, c


@pytest.mark.models
def test_onnx_encoder_equals_torch(store):
    pytest.importorskip("torch")
    import torch

    from vidnotes.diarize import SpeakerEncoder
    from vidnotes.export.speaker import load_encoder, parity_windows

    enc = SpeakerEncoder.from_store(store, threads=1)
    mels, _ = parity_windows(per_voice=2)
    with torch.no_grad():
        ref = load_encoder()(torch.from_numpy(mels)).numpy()
    got = enc.embed(mels)
    assert np.abs(got - ref).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
