"""Audio in: decode any media file to 16 kHz mono float32 with ffmpeg, and cut it at silences.

ffmpeg always runs as an argument list (never through a shell) with a time limit.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
FRAME = SAMPLE_RATE // 100  # 10 ms energy frames
SILENCE_DBFS = -60.0  # audio whose loudest 100 ms stays below this is silent


class AudioError(RuntimeError):
    """The input could not be decoded as audio."""


class AudioTimeout(AudioError):
    """Decoding took longer than its time limit (ffmpeg was stopped)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of the audio, in samples: ``audio[start:end]``."""

    start: int
    end: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def decode_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = SAMPLE_RATE,
    input_format: str | None = None,
    timeout: float = 600.0,
    max_seconds: float | None = None,
    formats: str | None = None,
) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 at ``sample_rate``.

    ``input_format`` forces ffmpeg's demuxer for headerless files (e.g. ``"g722"``).
    ``max_seconds`` stops decoding there (what the file declares may be less than what it holds),
    ``formats`` is ffmpeg's ``-format_whitelist``: the demuxers it may use (e.g. no playlists).
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such file")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0"]
    if formats:
        cmd += ["-format_whitelist", formats]
    if input_format:
        cmd += ["-f", input_format]
    cmd += ["-i", str(p), "-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate)]
    if max_seconds is not None:
        cmd += ["-t", f"{max_seconds:.3f}"]
    cmd += ["-f", "f32le", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise AudioTimeout(f"{p.name}: decoding took longer than {timeout:g} s") from e
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{p.name}: ffmpeg could not decode audio: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def frame_energy(audio: np.ndarray, *, smooth_frames: int = 10) -> np.ndarray:
    """RMS per 10 ms frame, smoothed with a moving average (100 ms by default)."""
    n = len(audio) // FRAME
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    rms = np.sqrt((audio[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2).mean(axis=1))
    if smooth_frames > 1 and n >= smooth_frames:
        rms = np.convolve(rms, np.ones(smooth_frames) / smooth_frames, mode="same")
    return rms.astype(np.float32)


def loudest_dbfs(audio: np.ndarray) -> float:
    """Level of the loudest 100 ms of ``audio`` in dBFS (-inf-safe: at least -240)."""
    energy = frame_energy(audio)
    peak = float(energy.max()) if energy.size else 0.0
    return 20.0 * float(np.log10(max(peak, 1e-12)))


def is_silent(audio: np.ndarray) -> bool:
    return loudest_dbfs(audio) < SILENCE_DBFS


def split_at_silences(audio: np.ndarray, *, max_seconds: float = 30.0, min_seconds: float | None = None) -> list[Window]:
    """Cut audio into windows of at most ``max_seconds``, each cut at the quietest moment of
    the second half of the allowed span (so words are not split when there is any pause).
    Covers every sample: nothing is dropped."""
    total = len(audio)
    if total == 0:
        return []
    max_len = int(max_seconds * SAMPLE_RATE)
    min_len = int((min_seconds if min_seconds is not None else max_seconds / 2) * SAMPLE_RATE)
    energy = frame_energy(audio)
    windows: list[Window] = []
    pos = 0
    while total - pos > max_len:
        lo, hi = (pos + min_len) // FRAME, (pos + max_len) // FRAME
        region = energy[lo:hi]
        # the quietest frame; among near-ties, the latest (longest window)
        quiet = np.flatnonzero(region <= region.min() * 1.05 + 1e-6)
        cut = min((lo + int(quiet[-1])) * FRAME + FRAME // 2, pos + max_len)
        windows.append(Window(pos, cut))
        pos = cut
    windows.append(Window(pos, total))
    return windows
