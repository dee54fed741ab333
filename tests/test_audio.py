import subprocess
import wave

import numpy as np
import pytest

from vidnotes.audio import SAMPLE_RATE, AudioError, decode_audio, split_at_silences


def _bursts(n: int, *, tone_s: float = 7.0, gap_s: float = 1.0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """n tone bursts separated by silences; returns audio and the silent spans."""
    t = np.arange(int(tone_s * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    parts, gaps, pos = [], [], 0
    for _ in range(n):
        parts += [tone, gap]
        pos += len(tone)
        gaps.append((pos, pos + len(gap)))
        pos += len(gap)
    return np.concatenate(parts), gaps


def test_split_covers_everything_and_cuts_in_silence():
    audio, gaps = _bursts(10)  # 80 s
    windows = split_at_silences(audio, max_seconds=30)
    assert windows[0].start == 0 and windows[-1].end == len(audio)
    assert all(a.end == b.start for a, b in zip(windows, windows[1:]))
    assert all(0 < w.seconds <= 30 for w in windows)
    for w in windows[:-1]:
        assert any(g0 <= w.end <= g1 for g0, g1 in gaps), f"cut at {w.end / SAMPLE_RATE:.2f}s is not in a pause"


def test_split_without_pauses_still_bounded():
    audio = np.ones(SAMPLE_RATE * 65, dtype=np.float32) * 0.1
    windows = split_at_silences(audio, max_seconds=30)
    assert sum(w.end - w.start for w in windows) == len(audio)
    assert all(w.seconds <= 30 for w in windows)
    assert split_at_silences(np.zeros(0, dtype=np.float32)) == []
    assert len(split_at_silences(audio[: SAMPLE_RATE * 3])) == 1


def test_decode_audio_resamples_and_downmixes(tmp_path):
    path = tmp_path / "stereo 44k ü.wav"
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 300 * t)], axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes((stereo * 0.5 * 32767).astype("<i2").tobytes())
    audio = decode_audio(path)
    assert audio.dtype == np.float32 and abs(len(audio) - SAMPLE_RATE) < 200
    assert 0.45 < np.abs(audio).max() < 0.75  # ffmpeg downmixes with equal power


def test_decode_audio_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        decode_audio(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(AudioError, match="ffmpeg could not decode audio"):
        decode_audio(junk)
    silent_video = tmp_path / "noaudio.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=s=64x64:d=1", "-c:v", "libx264", str(silent_video)],
        check=True,
    )
    with pytest.raises(AudioError, match="ffmpeg could not decode audio"):
        decode_audio(silent_video)
