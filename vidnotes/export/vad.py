"""Silero VAD for the model store (store task ``vad``), from the ``silero-vad`` PyPI package (MIT).

The package (installed with the ``export`` extra, pinned) ships the model as ONNX in two forms:
``silero_vad.onnx``, one 32 ms frame per call with the LSTM state in and out (silero's
``OnnxWrapper``), and ``silero_vad_16k_sequence.onnx``, a block of frames per call. Both are run
here through :class:`vidnotes.vad.SileroVad` (onnxruntime + numpy) on real speech (Asterisk
prompts of the test split), compared with the package's own reference (its TorchScript model via
``get_speech_timestamps`` and its ONNX wrapper, both torch) and timed; the faster one whose
probabilities match is published, with the package's license. Inference reads only the
published ``.onnx``: it never imports the package or torch.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.export.onnx_tools import installed_package_dir, log, package_license
from vidnotes.store import ModelStore

TASK = "vad"
PACKAGE = "silero-vad"
CANDIDATES = {"stream": "silero_vad.onnx", "sequence": "silero_vad_16k_sequence.onnx"}
BLOCK_FRAMES = 512  # frames per call of the sequence model (16.4 s), as the package's default
# Tolerances of the parity check (max absolute difference of a frame's speech probability):
# against the package's ONNX wrapper (the same graph) and against its TorchScript model (other
# kernels; measured 6e-6 on the parity audio).
MAX_DIFF_ONNX = 1e-6
MAX_DIFF_JIT = 1e-4
PARITY_RECORDINGS = 20
PARITY_GAP_S = 0.5


def package_dir() -> Path:
    """``silero_vad/data`` of the installed package, found without importing it (it imports torch)."""
    d = installed_package_dir("silero_vad") / "data"
    missing = [n for n in CANDIDATES.values() if not (d / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{d}: {', '.join(missing)} missing; reinstall silero-vad")
    return d


def parity_audio(n: int = PARITY_RECORDINGS) -> tuple[np.ndarray, list[str]]:
    """The first ``n`` recordings of the Asterisk test split joined with 0.5 s of silence."""
    from vidnotes.audio import SAMPLE_RATE, decode_audio
    from vidnotes.datasets import load_split

    recs = load_split("test")[:n]
    gap = np.zeros(int(PARITY_GAP_S * SAMPLE_RATE), dtype=np.float32)
    parts = [x for r in recs for x in (decode_audio(r.path, input_format="g722"), gap)]
    return np.concatenate(parts), [r.name for r in recs]


def reference(audio: np.ndarray) -> dict[str, Any]:
    """The package's own results on ``audio`` (torch): probabilities of its TorchScript model and
    of its ONNX wrapper, and the speech timestamps of ``get_speech_timestamps`` (defaults)."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    jit = load_silero_vad(onnx=False)
    with torch.no_grad():
        probs_jit = jit.audio_forward(x, 16000).numpy().reshape(-1)
        stamps = get_speech_timestamps(x, jit, sampling_rate=16000)
    wrapper = load_silero_vad(onnx=True)
    probs_onnx = wrapper.audio_forward(x, 16000).numpy().reshape(-1)
    return {"probs_jit": probs_jit, "probs_onnx": probs_onnx, "timestamps": [(int(s["start"]), int(s["end"])) for s in stamps]}


def _timed(fn, *args, repeat: int = 2) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return out, best


def export_vad(store: ModelStore, *, work_dir: Path, version: str | None = None) -> dict[str, Any]:
    """Check both ONNX forms of the packaged Silero VAD against the package and publish the faster
    exact one as task ``vad``; the manifest records the parity, the timings and the choice."""
    from vidnotes.vad import SileroVad, VadOptions, speech_regions

    t0 = time.perf_counter()
    src = package_dir()
    pkg_version = importlib.metadata.version(PACKAGE)
    audio, names = parity_audio()
    seconds = len(audio) / 16000
    log(f"parity: silero-vad {pkg_version} (torch) vs onnxruntime + numpy on {len(names)} recordings ({seconds:.0f} s) ...")
    ref = reference(audio)
    checks: dict[str, dict[str, Any]] = {}
    for interface, name in CANDIDATES.items():
        # the state carried on as the package does (what is compared); inference resets it (vidnotes.vad.RESET_FRAMES)
        vad = SileroVad(src / name, interface=interface, block_frames=BLOCK_FRAMES, warmup_frames=None)  # type: ignore[arg-type]
        vad.probabilities(audio[:16000])  # warm-up
        probs, took = _timed(vad.probabilities, audio)
        regions = [(r.start, r.end) for r in speech_regions(probs, len(audio), VadOptions())]
        checks[interface] = {
            "file": name,
            "frames": int(len(probs)),
            "max_abs_diff_vs_package_onnx": float(np.abs(probs - ref["probs_onnx"]).max()),
            "max_abs_diff_vs_package_jit": float(np.abs(probs - ref["probs_jit"]).max()),
            "regions_equal_package": regions == ref["timestamps"],
            "regions": len(regions),
            "seconds": round(took, 4),
            "real_time_factor": round(took / seconds, 5),
        }
        log(f"{interface} ({name}): max |p - package onnx| {checks[interface]['max_abs_diff_vs_package_onnx']:.1e}, "
            f"|p - package jit| {checks[interface]['max_abs_diff_vs_package_jit']:.1e}, regions equal: "
            f"{checks[interface]['regions_equal_package']}, {took:.3f} s")  # fmt: skip
    exact = [
        k for k, c in checks.items()
        if c["max_abs_diff_vs_package_onnx"] <= MAX_DIFF_ONNX and c["max_abs_diff_vs_package_jit"] <= MAX_DIFF_JIT and c["regions_equal_package"]
    ]  # fmt: skip
    if not exact:
        raise RuntimeError(f"no ONNX form of silero-vad {pkg_version} matches the package's reference: {json.dumps(checks)}")
    chosen = min(exact, key=lambda k: checks[k]["seconds"])
    log(f"publishing the {chosen} model ({CANDIDATES[chosen]})")

    pub = Path(work_dir) / "vad-publish"
    if pub.exists():
        shutil.rmtree(pub)
    pub.mkdir(parents=True)
    shutil.copy2(src / CANDIDATES[chosen], pub / CANDIDATES[chosen])
    lic = package_license(PACKAGE)
    if lic and lic.is_file():
        shutil.copy2(lic, pub / "LICENSE")
    version = version or f"silero-vad-{pkg_version}-{chosen}"
    manifest = {
        "source": f"{PACKAGE}=={pkg_version} (PyPI, MIT), {src}",
        "license": "MIT",
        "format": "onnx",
        "precision": "fp32",
        "sample_rate": 16000,
        "frame_samples": 512,
        "context_samples": 64,
        "onnx": {"model": CANDIDATES[chosen], "interface": chosen, "block_frames": BLOCK_FRAMES},
        # the region parameters the parity used (silero's defaults; max_speech_s null = infinite)
        "options": {k: (None if v == float("inf") else v) for k, v in asdict(VadOptions()).items()},
        "parity": {
            "audio": f"{len(names)} Asterisk test-split recordings joined with {PARITY_GAP_S} s pauses ({seconds:.1f} s)",
            "recordings": names,
            "reference": "silero_vad.load_silero_vad() (TorchScript) audio_forward + get_speech_timestamps; load_silero_vad(onnx=True) audio_forward",
            "tolerance": {"max_abs_diff_vs_package_onnx": MAX_DIFF_ONNX, "max_abs_diff_vs_package_jit": MAX_DIFF_JIT},
            "checks": checks,
            "chosen": chosen,
        },
        "export_seconds": round(time.perf_counter() - t0, 1),
    }
    published = store.publish(TASK, version, pub, manifest)
    log(f"published {TASK}/{version} to {store.root}")
    return published
