"""Voice activity detection: Silero VAD (MIT) run with ONNX Runtime and numpy, no torch.

Silero VAD scores the audio in 32 ms frames (512 samples at 16 kHz; each frame is fed together
with the 64 samples before it) with an LSTM whose state runs on from frame to frame:
:meth:`SileroVad.probabilities` gives one speech probability per frame. Here the state starts
afresh every ``RESET_FRAMES`` (4.1 s), warmed up on the second before: run on over a long file,
Silero's state can lock into "no speech" (measured on real speech, docs/vad.md). :func:`speech_regions`
turns them into speech regions with silero's own state machine (``get_speech_timestamps`` of the
``silero-vad`` package, ported line for line: same parameters, same regions; see
:class:`VadOptions`). :meth:`SpeechMap.windows` cuts the audio into Whisper windows of at most
30 s at the pauses between regions, so that a stretch without speech (noise, applause, music,
hum) is a window of its own, which :mod:`vidnotes.asr` does not decode at all.

The model is read from the model store (task ``vad``, built by ``vidnotes models build --vad``
from the ``silero-vad`` PyPI package); this module imports neither that package nor torch.
Two ONNX interfaces are supported, named by the manifest (``onnx.interface``):

- ``sequence`` (``silero_vad_16k_sequence.onnx``): a block of up to ``block_frames`` frames per
  call (the state reset per block, or carried between blocks with ``warmup_frames=None``, as the
  package does): what the store publishes, because it is the faster one and gives the same
  probabilities (the build measures both, state carried);
- ``stream`` (``silero_vad.onnx``): one frame per call with its state, as silero's OnnxWrapper.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidnotes.audio import SAMPLE_RATE, Window
from vidnotes.onnxutil import make_session, thread_count

TASK = "vad"
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: one probability per frame
CONTEXT_SAMPLES = 64  # the end of the previous frame, fed before each frame
STATE_SIZE = 128
Interface = Literal["sequence", "stream"]


@dataclass(frozen=True, slots=True)
class VadOptions:
    """How probabilities become speech regions (silero's ``get_speech_timestamps`` parameters).

    - ``threshold``: a frame with probability >= this starts (or continues) speech;
    - ``neg_threshold``: hysteresis, speech ends only where the probability falls below this
      (default ``threshold - 0.15``, at least 0.01), so a dip to 0.4 inside a word ends nothing;
    - ``min_silence_ms``: how long it must stay below ``neg_threshold`` before the region ends
      (at the first such frame);
    - ``min_speech_ms``: regions this short or shorter are dropped (clicks, single claps);
    - ``speech_pad_ms``: each region grows by this on both sides (by half the gap each when two
      regions are closer than twice the pad);
    - ``max_speech_s``: longer regions are split at their longest silence of more than
      ``min_silence_at_max_speech_ms`` (else cut hard); vidnotes leaves it at infinity and splits
      long regions itself (:meth:`SpeechMap.windows`).
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30
    max_speech_s: float = math.inf
    min_silence_at_max_speech_ms: int = 98
    use_max_poss_sil_at_max_speech: bool = True


@dataclass(frozen=True, slots=True)
class WindowOptions:
    """How :meth:`SpeechMap.windows` groups speech regions into Whisper windows.

    Regions are packed greedily, in order, into windows of at most ``max_seconds``; a region at
    most ``join_gap_s`` after the previous one joins its window while it fits (a sentence pause
    stays inside a window). A window reaches ``margin_s`` into the pauses before and after its
    speech, or to the middle of a pause shorter than twice that; what is left of a longer pause
    is a window without speech. A region longer than a window is cut at its least speech-like
    96 ms in the second half of the span. Defaults measured on Asterisk speech joined into long
    audio (``bench/bench_noise.py``): margins of 1 s gave a lower WER than 0.2 or 0.4 s, and
    greedy packing a lower one than closing windows at their widest pause."""

    max_seconds: float = 30.0
    join_gap_s: float = 2.0
    margin_s: float = 1.0


@dataclass(frozen=True, eq=False)
class SpeechMap:
    """Where the speech is in ``n_samples`` of audio: regions in samples, sorted, disjoint, and
    (when computed here, not read back from a job) the per-frame probabilities."""

    regions: tuple[Window, ...]
    n_samples: int
    probs: np.ndarray | None = field(default=None, repr=False)
    model: str = ""

    @property
    def speech_seconds(self) -> float:
        return sum(r.end - r.start for r in self.regions) / SAMPLE_RATE

    @property
    def non_speech_seconds(self) -> float:
        return max(0.0, self.n_samples / SAMPLE_RATE - self.speech_seconds)

    def within(self, start: int, end: int) -> list[Window]:
        """The regions clipped to ``[start, end)`` (samples)."""
        return [Window(max(r.start, start), min(r.end, end)) for r in self.regions if r.start < end and r.end > start]

    def speech_samples(self, start: int, end: int) -> int:
        return sum(r.end - r.start for r in self.within(start, end))

    def touches(self, start: int, end: int) -> bool:
        """Whether ``[start, end]`` (samples, closed: a zero-length span is a point) meets any region."""
        return any(r.start <= end and start <= r.end for r in self.regions)

    def windows(self, opts: WindowOptions = WindowOptions()) -> list[Window]:
        return plan_windows(self.n_samples, self.regions, self.probs, opts)


RESET_FRAMES = 128  # frames between resets of the LSTM state (4.1 s; 256 and 512 lost more speech)
WARMUP_FRAMES = 32  # frames run before each block to warm the fresh state up (1 s)


class SileroVad:
    """One loaded Silero VAD: create once per process, call :meth:`speech` many times."""

    def __init__(
        self,
        model_path: Path,
        *,
        interface: Interface = "sequence",
        name: str = "",
        block_frames: int = RESET_FRAMES,
        warmup_frames: int | None = WARMUP_FRAMES,
        options: VadOptions = VadOptions(),
        workers: int | None = None,
    ) -> None:
        if interface not in ("sequence", "stream"):
            raise ValueError(f"unknown Silero VAD interface {interface!r} (sequence or stream)")
        self.interface = interface
        self.name = name or Path(model_path).stem
        self.block_frames = max(1, int(block_frames))
        self.warmup_frames = None if warmup_frames is None else max(0, int(warmup_frames))
        self.model_path = Path(model_path)
        self.options = options
        # one thread a run: the LSTM runs frame after frame (measured faster than two on 2 cores);
        # independent blocks run ``workers`` at a time instead (2x faster on 2 cores, same output)
        self.session = make_session(Path(model_path), threads=1)
        self.workers = max(1, workers if workers is not None else (thread_count() or os.cpu_count() or 1))

    @classmethod
    def from_dir(cls, model_dir: Path, manifest: dict[str, Any]) -> SileroVad:
        onnx = manifest.get("onnx") or {}
        name = f"{TASK}/{manifest['version']}" if "version" in manifest else ""
        return cls(
            Path(model_dir) / onnx.get("model", "silero_vad_16k_sequence.onnx"),
            interface=onnx.get("interface", "sequence"),
            block_frames=min(int(onnx.get("block_frames", RESET_FRAMES)), RESET_FRAMES),
            name=name,
        )

    @classmethod
    def from_store(cls, store: Any, version: str | None = None) -> SileroVad:
        """The ``vad`` model of a :class:`~vidnotes.store.ModelStore` (its CURRENT by default), verified."""
        model_dir, manifest = store.fetch(TASK, version)
        return cls.from_dir(model_dir, manifest)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of every 32 ms frame of 16 kHz mono ``audio`` (the last frame zero-padded)."""
        out = []
        if self.interface == "sequence":
            # Each block starts from a fresh LSTM state, warmed up on the frames before it: run on
            # and on, the state can lock into "no speech" (on real speech after a change of
            # speaker and recording room, the probability stayed near 0.05 for 26 s: the
            # package's own model does the same). Measured in bench/bench_noise.py.
            # (warmup_frames None: the state carried on, as the package does; the parity check)
            if self.warmup_frames is None:
                h = c = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
                for x in frame_blocks(audio, self.block_frames):
                    p, h, c = self.session.run(["speech_probs", "hn", "cn"], {"input": x, "h": h, "c": c})
                    out.append(np.asarray(p, dtype=np.float32).reshape(-1))
            else:
                # blocks with a fresh state do not depend on each other: ``workers`` threads run
                # them at once (onnxruntime runs without the GIL)
                with ThreadPoolExecutor(self.workers) as pool:
                    out = list(pool.map(lambda a: self._fresh_block(*a), self._warmed_blocks(audio)))
        else:
            state = np.zeros((2, 1, STATE_SIZE), dtype=np.float32)
            sr = np.array(SAMPLE_RATE, dtype=np.int64)
            for x in frame_blocks(audio, self.block_frames):
                probs = np.empty(len(x), dtype=np.float32)
                for i in range(len(x)):
                    p, state = self.session.run(None, {"input": x[i : i + 1], "state": state, "sr": sr})
                    probs[i] = p.reshape(-1)[0]
                out.append(probs)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def _warmed_blocks(self, audio: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """Each block's input with the ``warmup_frames`` frames before it put first, and how many those are."""
        tail = np.zeros((0, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        for x in frame_blocks(audio, self.block_frames):
            yield (np.concatenate([tail, x]) if len(tail) else x), len(tail)
            if self.warmup_frames:
                tail = x[-self.warmup_frames :]

    def _fresh_block(self, inp: np.ndarray, n_warmup: int) -> np.ndarray:
        """Probabilities of one block run from a fresh state, without those of its warm-up frames."""
        h = c = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
        p, _, _ = self.session.run(["speech_probs", "hn", "cn"], {"input": inp, "h": h, "c": c})
        return np.asarray(p, dtype=np.float32).reshape(-1)[n_warmup:]

    def speech(self, audio: np.ndarray, opts: VadOptions | None = None) -> SpeechMap:
        """Probabilities and speech regions of ``audio``."""
        probs = self.probabilities(audio)
        regions = speech_regions(probs, len(audio), opts or self.options)
        return SpeechMap(tuple(regions), len(audio), probs, self.name)


def frame_blocks(audio: np.ndarray, block_frames: int) -> Iterator[np.ndarray]:
    """The model's inputs, ``block_frames`` rows at a time (so a 4-hour upload needs no second copy
    of itself): each row the previous frame's last 64 samples (zeros for the first frame), then the
    frame's 512 samples; the last frame zero-padded. Blocks of shape (frames, 576)."""
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    n = (audio.size + FRAME_SAMPLES - 1) // FRAME_SAMPLES
    width = CONTEXT_SAMPLES + FRAME_SAMPLES
    for f0 in range(0, n, block_frames):
        f1 = min(n, f0 + block_frames)
        lo = f0 * FRAME_SAMPLES - CONTEXT_SAMPLES  # audio index of the block's first input sample
        buf = np.zeros((f1 - f0) * FRAME_SAMPLES + CONTEXT_SAMPLES, dtype=np.float32)
        src = audio[max(0, lo) : min(audio.size, f1 * FRAME_SAMPLES)]
        buf[max(0, -lo) : max(0, -lo) + src.size] = src
        yield np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(buf, width)[::FRAME_SAMPLES])


def speech_regions(probs: Sequence[float] | np.ndarray, n_samples: int, opts: VadOptions = VadOptions()) -> list[Window]:
    """Speech regions (samples) from per-frame probabilities: silero-vad 6.2.3's
    ``get_speech_timestamps_from_probs`` at 16 kHz, ported as it is (tested equal)."""
    window = FRAME_SAMPLES
    min_speech = SAMPLE_RATE * opts.min_speech_ms / 1000
    pad = SAMPLE_RATE * opts.speech_pad_ms / 1000
    max_speech = SAMPLE_RATE * opts.max_speech_s - window - 2 * pad
    min_silence = SAMPLE_RATE * opts.min_silence_ms / 1000
    min_silence_at_max = SAMPLE_RATE * opts.min_silence_at_max_speech_ms / 1000
    threshold = opts.threshold
    neg = opts.neg_threshold if opts.neg_threshold is not None else max(threshold - 0.15, 0.01)
    use_max_poss = opts.use_max_poss_sil_at_max_speech

    triggered = False
    speeches: list[dict[str, int]] = []
    current: dict[str, int] = {}
    temp_end = 0
    prev_end = next_start = 0
    possible_ends: list[tuple[int, int]] = []

    for i, p in enumerate(np.asarray(probs, dtype=np.float64).tolist()):
        cur = window * i
        if p >= threshold and temp_end:
            sil = cur - temp_end
            if sil > min_silence_at_max:
                possible_ends.append((temp_end, sil))
            temp_end = 0
            if next_start < prev_end:
                next_start = cur
        if p >= threshold and not triggered:
            triggered = True
            current["start"] = cur
            continue
        if triggered and cur - current["start"] > max_speech:
            if use_max_poss and possible_ends:
                prev_end, dur = max(possible_ends, key=lambda x: x[1])
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                next_start = prev_end + dur
                if next_start < prev_end + cur:
                    current["start"] = next_start
                else:
                    triggered = False
                prev_end = next_start = temp_end = 0
                possible_ends = []
            elif prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
                possible_ends = []
            else:
                current["end"] = cur
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                possible_ends = []
                continue
        if p < neg and triggered:
            if not temp_end:
                temp_end = cur
            sil_now = cur - temp_end
            if not use_max_poss and sil_now > min_silence_at_max:
                prev_end = temp_end
            if sil_now < min_silence:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
            possible_ends = []
            continue

    if current and n_samples - current["start"] > min_speech:
        current["end"] = n_samples
        speeches.append(current)

    for i, sp in enumerate(speeches):
        if i == 0:
            sp["start"] = int(max(0, sp["start"] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1]["start"] - sp["end"]
            if gap < 2 * pad:
                sp["end"] += int(gap // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - gap // 2))
            else:
                sp["end"] = int(min(n_samples, sp["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            sp["end"] = int(min(n_samples, sp["end"] + pad))
    return [Window(int(s["start"]), int(s["end"])) for s in speeches]


def plan_windows(n_samples: int, regions: Sequence[Window], probs: np.ndarray | None, opts: WindowOptions = WindowOptions()) -> list[Window]:
    """Cut ``n_samples`` of audio into consecutive windows of at most ``opts.max_seconds`` that
    cover every sample: windows with speech around groups of ``regions``, the long gaps between
    them as windows without speech (see :class:`WindowOptions`)."""
    if n_samples <= 0:
        return []
    max_len = int(opts.max_seconds * SAMPLE_RATE)
    margin = max(0, min(int(opts.margin_s * SAMPLE_RATE), max_len // 4))
    span = max_len - 2 * margin  # the most speech one window holds
    join = int(opts.join_gap_s * SAMPLE_RATE)

    pieces: list[Window] = []
    for r in regions:
        s = max(0, r.start)
        end = min(n_samples, r.end)
        while end - s > span:
            cut = _least_speech(probs, s + span // 2, s + span)
            pieces.append(Window(s, cut))
            s = cut
        if end > s:
            pieces.append(Window(s, end))

    groups: list[list[Window]] = []  # greedy: as much speech per window as fits
    for p in pieces:
        if groups and p.start - groups[-1][-1].end <= join and p.end - groups[-1][0].start <= span:
            groups[-1].append(p)
        else:
            groups.append([p])

    out: list[Window] = []

    def non_speech(a: int, b: int) -> None:
        while b - a > max_len:
            out.append(Window(a, a + max_len))
            a += max_len
        if b > a:
            out.append(Window(a, b))

    pos = 0
    for i, g in enumerate(groups):
        s, e = g[0].start, g[-1].end
        start = max(pos, s - margin)
        if start > pos:
            non_speech(pos, start)
        if i + 1 < len(groups):
            gap = groups[i + 1][0].start - e
            end = e + gap // 2 if gap <= 2 * margin else e + margin
        else:
            end = min(n_samples, e + margin)
        out.append(Window(start, end))
        pos = end
    non_speech(pos, n_samples)
    return out


def _least_speech(probs: np.ndarray | None, lo: int, hi: int) -> int:
    """A cut point in ``[lo, hi]`` (samples): the middle of the 96 ms with the lowest mean
    speech probability, the latest among near-ties; ``hi`` without probabilities."""
    if probs is None or probs.size == 0:
        return hi
    f0, f1 = lo // FRAME_SAMPLES, min(len(probs), hi // FRAME_SAMPLES)
    if f1 - f0 < 1:
        return hi
    seg = np.asarray(probs[f0:f1], dtype=np.float64)
    smooth = np.convolve(np.pad(seg, 1, mode="edge"), np.ones(3) / 3, mode="valid")  # edges not pulled down by zeros
    best = np.flatnonzero(smooth <= smooth.min() + 0.01)
    return min(hi, (f0 + int(best[-1])) * FRAME_SAMPLES + FRAME_SAMPLES // 2)
