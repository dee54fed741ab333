"""Whisper's log-mel spectrogram in numpy, equal to transformers' ``WhisperFeatureExtractor``.

80 (or 128) slaney-scaled mel bands over a 400-point Hann STFT with a hop of 160 samples at
16 kHz, log10, floored at 8 below the window's maximum, then scaled to roughly [-1, 1].
Every window is padded with zeros to 30 s (3000 frames), as the encoder expects.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480,000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3,000 frames per window


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, 27.0 / np.log(6.4)
    mels = 3.0 * freq / 200.0
    log_region = freq >= min_log_hz
    mels[log_region] = min_log_mel + np.log(freq[log_region] / min_log_hz) * logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    freq = 200.0 * mels / 3.0
    log_region = mels >= min_log_mel
    freq[log_region] = min_log_hz * np.exp(logstep * (mels[log_region] - min_log_mel))
    return freq


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters with slaney area normalization."""
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    mel_edges = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0], n_mels + 2)
    filter_freqs = _mel_to_hz(mel_edges)
    diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (filter_freqs[2 : n_mels + 2] - filter_freqs[:n_mels])
    return filters.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    # periodic Hann window, as torch.hann_window / transformers' window_function
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def log_mel(audio: np.ndarray, *, n_mels: int = 80) -> np.ndarray:
    """Log-mel features of one window of at most 30 s of 16 kHz mono audio: (n_mels, 3000) float32."""
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {audio.shape}")
    if audio.shape[0] > N_SAMPLES:
        raise ValueError(f"a window holds at most {CHUNK_SECONDS} s; got {audio.shape[0] / SAMPLE_RATE:.2f} s")
    padded = np.zeros(N_SAMPLES, dtype=np.float32)
    padded[: audio.shape[0]] = audio
    # centered STFT with reflect padding; the last frame is dropped, as in Whisper
    x = np.pad(padded, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP_LENGTH][:N_FRAMES]
    spec = np.fft.rfft(frames * _hann(), axis=-1)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    mel = power @ mel_filters(n_mels)
    logspec = np.log10(np.maximum(mel, 1e-10))
    logspec = np.maximum(logspec, logspec.max() - 8.0)
    return ((logspec + 4.0) / 4.0).T.astype(np.float32, copy=False)


def log_mel_batch(windows: list[np.ndarray], *, n_mels: int = 80) -> np.ndarray:
    """Stacked features of several windows: (batch, n_mels, 3000)."""
    return np.stack([log_mel(w, n_mels=n_mels) for w in windows])
