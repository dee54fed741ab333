"""Checking an upload before any work: is it media, has it sound, how long, how big.

ffprobe and ffmpeg always run as argument lists with time limits, never through a shell, and
only with the demuxers of :data:`MEDIA_FORMATS`: an upload is one self-contained file, never a
playlist (HLS, concat) that would make them read other files or URLs.
"""

from __future__ import annotations

import json
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidnotes.audio import SAMPLE_RATE, SILENCE_DBFS, AudioError, AudioTimeout, decode_audio, loudest_dbfs

# ffmpeg's -format_whitelist for uploads: audio and video containers that hold their media
# themselves. Left out on purpose: hls, dash, concat, image2 (patterns), tee, data URIs and every
# other demuxer that opens further files or URLs named inside the upload.
MEDIA_FORMATS = ",".join([
    "mov", "matroska", "avi", "flv", "mpegts", "mpeg", "asf", "nut", "mxf", "rm", "dv", "ogg",
    "wav", "w64", "aiff", "caf", "au", "voc", "mp3", "aac", "ac3", "eac3", "dts", "truehd", "flac",
    "amr", "amrnb", "amrwb", "wv", "ape", "tta", "tak", "mpc", "mpc8", "shn", "gsm", "xwma", "loas",
])  # fmt: skip


class InputError(ValueError):
    """The upload cannot be turned into notes; ``code`` is stable, ``str()`` tells the user why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class MediaInfo:
    duration: float  # the container's (longest stream)
    audio_duration: float  # the audio stream's, as its header declares (0 when unknown)
    size: int
    format_name: str
    audio_codec: str
    has_video: bool


def probe(path: Path, *, max_bytes: int, max_seconds: float, timeout: float = 60.0) -> MediaInfo:
    """Facts about ``path``, or an :class:`InputError` saying what is wrong with it."""
    size = path.stat().st_size
    if size == 0:
        raise InputError("empty", "the upload is empty (0 bytes)")
    if size > max_bytes:
        raise InputError("too_large", f"the upload is {size / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    cmd = ["ffprobe", "-v", "error", "-format_whitelist", MEDIA_FORMATS, "-print_format", "json", "-show_format", "-show_streams", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise InputError("probe_timeout", f"inspecting the file took longer than {timeout:.0f} s") from e
    info = json.loads(proc.stdout or b"{}") if proc.returncode == 0 else {}
    streams = info.get("streams") or []
    if proc.returncode != 0 or not info.get("format"):
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        # ffprobe names the file by our working path, which means nothing to the user
        detail = reason[-1].replace(f"{path}: ", "").replace(str(path), "the file") if reason else "unknown format"
        raise InputError("not_media", f"the upload is not a readable audio or video file ({detail})")
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        raise InputError("no_audio", "the file has no audio stream, so there is nothing to transcribe")
    try:
        duration = float(info["format"].get("duration") or audio[0].get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    if duration > max_seconds:
        raise InputError("too_long", f"the recording is {_length(duration)} long; the limit is {_length(max_seconds)}")
    try:
        audio_duration = float(audio[0].get("duration") or 0.0)
    except ValueError:
        audio_duration = 0.0
    return MediaInfo(
        duration=duration,
        audio_duration=audio_duration,
        size=size,
        format_name=str(info["format"].get("format_name", "")),
        audio_codec=str(audio[0].get("codec_name", "")),
        has_video=any(s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic") for s in streams),
    )


def load_speech(path: Path, *, timeout: float, max_seconds: float) -> np.ndarray:
    """The audio as 16 kHz mono float32; :class:`InputError` if it cannot be decoded, is silent,
    or holds more than ``max_seconds`` (whatever its header declares: decoding stops there)."""
    try:
        audio = decode_audio(path, timeout=timeout, max_seconds=max_seconds + 1.0, formats=MEDIA_FORMATS)
    except AudioTimeout as e:
        raise InputError("decode_timeout", f"decoding the audio took longer than the limit of {timeout:g} s; the file may be damaged or crafted") from e
    except AudioError as e:
        raise InputError("undecodable", f"the audio could not be decoded; the file may be truncated or corrupt ({e})") from e
    if audio.size > max_seconds * SAMPLE_RATE:
        raise InputError("too_long", f"the recording is longer than the limit of {_length(max_seconds)} (its header declares less: decoding stopped there)")
    if audio.size < SAMPLE_RATE // 10:
        raise InputError("no_audio", "the audio track is empty (shorter than 0.1 s)")
    loudest = loudest_dbfs(audio)
    if loudest < SILENCE_DBFS:
        raise InputError("silent", f"the audio track is silent (loudest moment {loudest:.0f} dBFS); there is no speech to transcribe")
    return audio


def _length(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds:.0f} s"


def write_wav(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise AudioError(f"{path.name}: expected 16 kHz mono 16-bit WAV")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
