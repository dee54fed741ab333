"""Who spoke when: speaker diarization with onnxruntime and numpy, no torch (docs/speakers.md).

1. **Speech**: the speech regions of Silero VAD (:mod:`vidnotes.vad`), given or computed here.
2. **Embeddings**: resemblyzer's GE2E speaker encoder (store task ``speaker``, exported by
   ``vidnotes models build --speaker``) over 1.6 s windows of the speech regions, every
   ``hop_s``; a region shorter than a window is one window of its own length (at least
   ``min_window_s``). Its input is resemblyzer's mel power spectrum (:func:`mel_spectrogram`,
   equal to ``resemblyzer.audio.wav_to_mel_spectrogram``, i.e. librosa's, within a tested
   tolerance) of the audio normalized to -30 dBFS as resemblyzer does (:func:`normalize_volume`).
3. **Clustering** (:func:`cluster`): spectral clustering of the cosine affinities, the
   neighbour graph binarized per row and its size chosen by the normalized maximum eigengap
   (NME-SC, Park et al. 2019), which also gives the speaker count, unless told; then clusters
   are merged while two centroids are closer than ``merge_cosine`` or a cluster holds less than
   ``min_speaker_s`` of speech (the guard that keeps a lecture one speaker).
4. **Re-segmentation** (:func:`resegment`): Viterbi over the windows, every window scored
   against every speaker's centroid, a penalty per change of speaker; a change inside a region is
   then placed at the 0.1 s step where the frames before it match the old speaker and the frames
   after it the new one best.
5. **Assignment** (:func:`assign_speakers`): each transcript segment gets the speaker who talks
   most within it, and is split where the speaker changes inside it (by word timestamps when
   the transcript has them, else the words shared out in proportion to time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.features import _hann, mel_filters
from vidnotes.onnxutil import make_session
from vidnotes.types import speaker_count

TASK = "speaker"
SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms: one mel frame
FRAME_S = HOP / SAMPLE_RATE
N_MELS = 40
WINDOW_FRAMES = 160  # 1.6 s, resemblyzer's partial utterance
TARGET_DBFS = -30.0  # resemblyzer's audio_norm_target_dBFS
INT16_MAX = 2**15 - 1
_BLOCK_FRAMES = 6000  # mel frames computed per block (60 s): bounded memory on long audio


# -- features -----------------------------------------------------------------------------------


def normalize_volume(audio: np.ndarray, target_dbfs: float = TARGET_DBFS, *, increase_only: bool = True) -> np.ndarray:
    """resemblyzer's ``normalize_volume``: scaled to ``target_dbfs`` RMS (only up, by default)."""
    audio = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean((audio.astype(np.float64) * INT16_MAX) ** 2))) if len(audio) else 0.0
    if rms <= 0:
        return audio
    change = target_dbfs - 20 * math.log10(rms / INT16_MAX)
    if change < 0 and increase_only:
        return audio
    return (audio * 10 ** (change / 20)).astype(np.float32)


def mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """resemblyzer's ``wav_to_mel_spectrogram`` in numpy: librosa's ``melspectrogram`` (power 2,
    400-point periodic Hann, hop 160, centered with zero padding, 40 slaney mel bands, no log) of
    16 kHz mono audio, as (frames, 40) float32, ``1 + len(audio) // 160`` frames."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {audio.shape}")
    n_frames = 1 + len(audio) // HOP
    x = np.pad(audio, N_FFT // 2, mode="constant")
    filters = mel_filters(N_MELS)
    out = np.empty((n_frames, N_MELS), dtype=np.float32)
    for f0 in range(0, n_frames, _BLOCK_FRAMES):
        f1 = min(n_frames, f0 + _BLOCK_FRAMES)
        seg = x[f0 * HOP : (f1 - 1) * HOP + N_FFT]
        frames = np.lib.stride_tricks.sliding_window_view(seg, N_FFT)[::HOP]
        spec = np.fft.rfft(frames * _hann(), axis=-1)
        power = (spec.real**2 + spec.imag**2).astype(np.float32)
        out[f0:f1] = power @ filters
    return out


# -- the encoder --------------------------------------------------------------------------------


class SpeakerEncoder:
    """resemblyzer's speaker encoder in ONNX Runtime: mel windows in, L2-normed 256-d embeddings out."""

    def __init__(self, model_path: Path, *, threads: int | None = None, name: str = "") -> None:
        self.model_path = Path(model_path)
        self.name = name or self.model_path.stem
        self.session = make_session(self.model_path, threads=threads)

    @classmethod
    def from_store(cls, store: Any, version: str | None = None, *, threads: int | None = None) -> SpeakerEncoder:
        model_dir, manifest = store.fetch(TASK, version)
        onnx = manifest.get("onnx") or {}
        return cls(Path(model_dir) / onnx.get("model", "speaker_encoder.onnx"), threads=threads, name=f"{TASK}/{manifest['version']}")

    def embed(self, mels: np.ndarray, *, batch: int = 16) -> np.ndarray:
        """(n, frames, 40) mel windows -> (n, 256) embeddings."""
        mels = np.ascontiguousarray(mels, dtype=np.float32)
        if len(mels) == 0:
            return np.zeros((0, 256), dtype=np.float32)
        out = [self.session.run(["embeddings"], {"mels": mels[i : i + batch]})[0] for i in range(0, len(mels), batch)]
        return np.concatenate(out).astype(np.float32)


# -- types --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    """A stretch of one speaker's speech, in seconds; ``speaker`` counts from 0 in order of first appearance."""

    start: float
    end: float
    speaker: int

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "speaker": self.speaker}


@dataclass(frozen=True, slots=True)
class DiarizeOptions:
    """Parameters; the defaults are what ``bench/bench_diarize.py`` measured (docs/speakers.md)."""

    hop_s: float = 0.8  # between window starts (windows are 1.6 s)
    min_window_s: float = 0.5  # shorter speech regions get no embedding of their own
    max_speakers: int = 8
    merge_cosine: float = 0.86  # clusters whose centroids are at least this similar are one speaker
    sub_cosine: float = 0.75  # ... or this similar, when one is heard only inside the other's speech regions
    min_solo: float = 0.5  # (that is: leads the speech regions of less than this share of its windows)
    min_speaker_s: float = 3.0  # a cluster with less speech than this joins its nearest (short files: see cluster())
    min_speaker_fraction: float = 0.04  # ... or with less than this share of the speech
    switch_penalty: float = 0.15  # Viterbi: cost of a change of speaker between windows (cosine units)
    window_level: bool = True  # each window brought to -30 dBFS before it is embedded (embed_windows)
    refine: bool = True  # place a change inside a speech region at the best 0.1 s step
    max_points: int = 2000  # windows clustered at most (a uniform subsample beyond; the rest by nearest centroid)
    seed: int = 0


@dataclass(slots=True)
class Diarization:
    turns: list[Turn]
    speakers: int
    model: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"speakers": self.speakers, "model": self.model, "turns": [t.to_dict() for t in self.turns], "stats": self.stats}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diarization:
        turns = [Turn(float(t["start"]), float(t["end"]), int(t["speaker"])) for t in data["turns"]]
        return cls(turns, int(data["speakers"]), str(data.get("model", "")), dict(data.get("stats") or {}))


# -- windows and embeddings ---------------------------------------------------------------------


def speech_windows(regions: Sequence[tuple[int, int]], opts: DiarizeOptions = DiarizeOptions()) -> list[tuple[int, int, int]]:
    """Embedding windows over speech ``regions`` (samples): ``(region index, first frame, end frame)``,
    1.6 s every ``hop_s`` within a region, the last one flush with its end; a shorter region is one
    window of its own length, one shorter than ``min_window_s`` none."""
    hop = max(1, round(opts.hop_s / FRAME_S))
    min_frames = round(opts.min_window_s / FRAME_S)
    out = []
    for ri, (s, e) in enumerate(regions):
        f0, f1 = s // HOP, e // HOP
        n = f1 - f0
        if n < min_frames:
            continue
        if n <= WINDOW_FRAMES:
            out.append((ri, f0, f1))
            continue
        starts = list(range(f0, f1 - WINDOW_FRAMES + 1, hop))
        if starts[-1] != f1 - WINDOW_FRAMES:
            starts.append(f1 - WINDOW_FRAMES)
        out.extend((ri, a, a + WINDOW_FRAMES) for a in starts)
    return out


def embed_windows(
    mels: np.ndarray, windows: Sequence[tuple[int, int, int]], encoder: SpeakerEncoder, *, audio: np.ndarray | None = None
) -> np.ndarray:
    """Embeddings of ``windows`` (frames into ``mels``): full windows batched, shorter ones grouped
    by length. With ``audio`` (what ``mels`` was computed from), each window is first brought to
    -30 dBFS on its own (its mels scaled by the square of the gain): the encoder works on mel power,
    not its log, so a change of level alone moved a voice's embedding (a 12 dB step split one
    speaker in two on the bench)."""
    emb = np.zeros((len(windows), 256), dtype=np.float32)
    by_len: dict[int, list[int]] = {}
    for i, (_, a, b) in enumerate(windows):
        by_len.setdefault(b - a, []).append(i)
    target = 10 ** (TARGET_DBFS / 20)
    for n, idx in by_len.items():
        batch = np.zeros((len(idx), n, N_MELS), dtype=np.float32)
        for j, i in enumerate(idx):
            _, a, b = windows[i]
            seg = mels[a:b]
            if audio is not None:
                x = audio[a * HOP : b * HOP]
                rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0
                if rms > 1e-6:
                    seg = seg * np.float32((target / rms) ** 2)
            batch[j, : len(seg)] = seg
        emb[idx] = encoder.embed(batch)
    return emb


# -- clustering ---------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 8, iters: int = 50) -> np.ndarray:
    """Labels of k-means (k-means++ starts, the best of ``n_init``) on the rows of ``x``."""
    rng = np.random.default_rng(seed)
    n = len(x)
    if k <= 1 or n <= k:
        return np.zeros(n, dtype=int) if k <= 1 else np.arange(n) % max(k, 1)
    best, best_cost = np.zeros(n, dtype=int), np.inf
    for _ in range(n_init):
        centers = [x[rng.integers(n)]]
        for _ in range(1, k):
            d = np.min(((x[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
            centers.append(x[rng.choice(n, p=d / d.sum())] if d.sum() > 0 else x[rng.integers(n)])
        c = np.array(centers)
        labels = np.zeros(n, dtype=int)
        for _ in range(iters):
            d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
            new = d.argmin(1)
            if np.array_equal(new, labels) and _ > 0:
                break
            labels = new
            for j in range(k):
                if np.any(labels == j):
                    c[j] = x[labels == j].mean(0)
        cost = float(((x - c[labels]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = labels.copy(), cost
    return best


def _laplacian_eig(aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lap = np.diag(aff.sum(1)) - aff
    w, v = np.linalg.eigh(lap)
    return w, v


def nme_spectral(
    emb: np.ndarray, *, speakers: int | None = None, max_speakers: int = 8, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """NME-SC: the cosine affinity binarized to each row's p nearest neighbours (symmetrized), p
    chosen to minimize p / normalized maximum eigengap; the eigengap's position is the speaker
    count (or ``speakers``); k-means on the first k eigenvectors."""
    n = len(emb)
    if n < 4:
        return np.zeros(n, dtype=int), {"p": None, "eigengap_k": 1}
    x = _unit(emb)
    cos = np.clip(x @ x.T, -1.0, 1.0)
    order = np.argsort(-cos, axis=1)
    max_k = max(1, min(max_speakers, n - 1))
    ps = sorted({max(2, int(round(n * f))) for f in (0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25)} & set(range(2, n)))
    best: tuple[float, int, np.ndarray, int] | None = None
    for p in ps:
        aff = np.zeros_like(cos)
        rows = np.repeat(np.arange(n), p)
        aff[rows, order[:, :p].reshape(-1)] = 1.0
        aff = 0.5 * (aff + aff.T)
        w, v = _laplacian_eig(aff)
        gaps = np.diff(w[: max_k + 1])
        k = int(np.argmax(gaps)) + 1
        g = float(gaps.max() / max(w[-1], 1e-9))
        r = p / max(g, 1e-9)
        if best is None or r < best[0]:
            best = (r, p, v, k)
    assert best is not None
    _, p, v, k_est = best
    k = speakers or k_est
    k = max(1, min(k, n))
    spec = _unit(v[:, :k]) if k > 1 else v[:, :1]
    labels = kmeans(spec, k, seed=seed)
    return labels, {"p": p, "eigengap_k": k_est}


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Speakers numbered 0, 1, ... in order of first appearance."""
    out = np.empty_like(labels)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels):
        out[i] = seen.setdefault(int(lab), len(seen))
    return out


def _solo_share(labels: np.ndarray, regions: np.ndarray, i: int) -> tuple[float, int]:
    """Of cluster ``i``'s windows, the share in speech regions where ``i`` has most windows, and
    the cluster that has most windows where ``i`` has not (-1 if none)."""
    mine = labels == i
    own, host = 0, {}
    for r in np.unique(regions[mine]):
        lab, cnt = np.unique(labels[regions == r], return_counts=True)
        top = int(lab[int(np.argmax(cnt))])
        n_i = int(np.sum(mine & (regions == r)))
        if top == i:
            own += n_i
        else:
            host[top] = host.get(top, 0) + n_i
    return own / max(1, int(mine.sum())), max(host, key=host.__getitem__) if host else -1


def merge_clusters(emb: np.ndarray, labels: np.ndarray, seconds: np.ndarray, *, merge_cosine: float, min_seconds: float,
                   keep: int | None = None, regions: np.ndarray | None = None, sub_cosine: float = 0.75,
                   min_solo: float = 0.5) -> np.ndarray:  # fmt: skip
    """Merge clusters while two centroids have a cosine of at least ``merge_cosine``, or a cluster
    holds less than ``min_seconds`` of speech (into its nearest), or (with ``regions``, the speech
    region of each window) a cluster is mostly heard inside another's speech regions, never on its
    own (less than ``min_solo`` of its windows where it leads a region: a speaker changes at a
    pause, a voice's own sub-mode does not), with a centroid cosine of at least ``sub_cosine`` to
    that one. With ``keep`` (a given speaker count) only down to that many, and only by size."""
    labels = labels.copy()
    while True:
        ids = sorted(set(labels.tolist()))
        if len(ids) <= max(1, keep or 1):
            return labels
        cents = _unit(np.stack([emb[labels == i].mean(0) for i in ids]))
        dur = np.array([seconds[labels == i].sum() for i in ids])
        sim = cents @ cents.T
        np.fill_diagonal(sim, -np.inf)
        small = int(np.argmin(dur))
        sub = None
        if keep is None and regions is not None:
            for k in np.argsort(dur):
                share, host = _solo_share(labels, regions, ids[int(k)])
                if share < min_solo and host >= 0 and sim[int(k), ids.index(host)] >= sub_cosine:
                    sub = (ids[int(k)], host)
                    break
        if dur[small] < min_seconds:
            a, b = ids[small], ids[int(np.argmax(sim[small]))]
        elif keep is None and sim.max() >= merge_cosine:
            i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
            a, b = ids[int(j)], ids[int(i)]
            if dur[int(j)] > dur[int(i)]:
                a, b = b, a
        elif sub is not None:
            a, b = sub
        else:
            return labels
        labels[labels == a] = b


def cluster(
    emb: np.ndarray,
    seconds: np.ndarray,
    *,
    speakers: int | None = None,
    opts: DiarizeOptions = DiarizeOptions(),
    regions: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Speaker labels of the windows (0, 1, ... in order of appearance) and what was decided;
    ``regions``: the speech region of each window (for the merge, :func:`merge_clusters`)."""
    n = len(emb)
    if n == 0:
        return np.zeros(0, dtype=int), {"eigengap_k": 0}
    if speakers == 1 or n < 4:
        return np.zeros(n, dtype=int), {"eigengap_k": 1}
    rng = np.random.default_rng(opts.seed)
    idx = np.sort(rng.choice(n, opts.max_points, replace=False)) if n > opts.max_points else np.arange(n)
    labels_sub, info = nme_spectral(emb[idx], speakers=speakers, max_speakers=opts.max_speakers, seed=opts.seed)
    if len(idx) < n:
        cents = _unit(np.stack([emb[idx][labels_sub == i].mean(0) for i in sorted(set(labels_sub.tolist()))]))
        labels = (_unit(emb) @ cents.T).argmax(1)
    else:
        labels = labels_sub
    total = float(seconds.sum())
    min_s = max(min(opts.min_speaker_s, 0.25 * total), opts.min_speaker_fraction * total)
    ids = sorted(set(labels.tolist()))
    if len(ids) > 1:  # what the merge decides on (bench/bench_diarize.py reports it)
        cents = _unit(np.stack([emb[labels == i].mean(0) for i in ids]))
        sim = cents @ cents.T
        info["centroid_cosines"] = sorted(
            (round(float(sim[i, j]), 3) for i in range(len(ids)) for j in range(i + 1, len(ids))), reverse=True
        )
        info["cluster_seconds"] = [round(float(seconds[labels == i].sum()), 1) for i in ids]
    labels = merge_clusters(
        emb, labels, seconds, merge_cosine=opts.merge_cosine, min_seconds=min_s, keep=speakers, regions=regions,
        sub_cosine=opts.sub_cosine, min_solo=opts.min_solo,
    )  # fmt: skip
    info["clusters_before_merge"] = len(ids)
    return _relabel(labels), info


def resegment(emb: np.ndarray, labels: np.ndarray, windows: Sequence[tuple[int, int, int]], *, penalty: float) -> np.ndarray:
    """Viterbi over the windows in time order: score = cosine to the speaker's centroid, minus
    ``penalty`` per change of speaker between neighbouring windows of the same speech region
    (half of it across a pause)."""
    ids = sorted(set(labels.tolist()))
    if len(ids) < 2:
        return labels
    cents = _unit(np.stack([emb[labels == i].mean(0) for i in ids]))
    score = _unit(emb) @ cents.T  # (n, k)
    n, k = score.shape
    back = np.zeros((n, k), dtype=int)
    acc = score[0].copy()
    for t in range(1, n):
        pen = penalty if windows[t][0] == windows[t - 1][0] else penalty / 2
        trans = acc[:, None] - pen * (1 - np.eye(k))  # from i (rows) to j (cols)
        back[t] = trans.argmax(0)
        acc = trans.max(0) + score[t]
    path = np.zeros(n, dtype=int)
    path[-1] = int(acc.argmax())
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return _relabel(np.array([ids[p] for p in path]))


# -- turns ---------------------------------------------------------------------------------------


def _refine_change(mels: np.ndarray, lo: int, hi: int, c_old: np.ndarray, c_new: np.ndarray, encoder: SpeakerEncoder) -> int:
    """The frame in ``[lo, hi]`` where a change from ``c_old`` to ``c_new`` fits best: 0.8 s before
    each candidate should sound like the old speaker, 0.8 s after it like the new."""
    half = WINDOW_FRAMES // 2
    cands = list(range(lo, hi + 1, 10))
    if len(cands) < 2:
        return (lo + hi) // 2
    left = np.stack([mels[max(0, c - half) : c] if c - half >= 0 else np.pad(mels[:c], ((half - c, 0), (0, 0))) for c in cands])
    right = np.stack([np.pad(mels[c : c + half], ((0, max(0, half - len(mels[c : c + half]))), (0, 0))) for c in cands])
    e = encoder.embed(np.concatenate([left, right]))
    el, er = e[: len(cands)], e[len(cands) :]
    gain = (el @ c_old - el @ c_new) + (er @ c_new - er @ c_old)
    return cands[int(np.argmax(gain))]


def make_turns(regions: Sequence[tuple[int, int]], windows: Sequence[tuple[int, int, int]], labels: np.ndarray, *,
               mels: np.ndarray | None = None, emb: np.ndarray | None = None, encoder: SpeakerEncoder | None = None) -> list[Turn]:  # fmt: skip
    """Speaker turns over the speech regions: each region cut where its windows change speaker
    (at the midpoint between the two windows' centres, refined when ``mels``, ``emb`` and
    ``encoder`` are given); a region without a window takes the speaker of the nearest window."""
    if not windows:
        return [Turn(s / SAMPLE_RATE, e / SAMPLE_RATE, 0) for s, e in regions]
    cents = None
    if mels is not None and emb is not None and encoder is not None:
        ids = sorted(set(labels.tolist()))
        cents = {i: _unit(emb[labels == i].mean(0)) for i in ids}
    centers = np.array([(a + b) / 2 for _, a, b in windows])
    by_region: dict[int, list[int]] = {}
    for i, (ri, _, _) in enumerate(windows):
        by_region.setdefault(ri, []).append(i)
    turns: list[Turn] = []
    for ri, (s, e) in enumerate(regions):
        f0, f1 = s // HOP, max(s // HOP + 1, e // HOP)
        idx = by_region.get(ri)
        if not idx:
            near = int(np.argmin(np.abs(centers - (f0 + f1) / 2)))
            turns.append(Turn(s / SAMPLE_RATE, e / SAMPLE_RATE, int(labels[near])))
            continue
        cur_start, cur = s / SAMPLE_RATE, int(labels[idx[0]])
        for a, b in zip(idx, idx[1:]):
            if labels[b] == labels[a]:
                continue
            cut = int((centers[a] + centers[b]) / 2)
            if cents is not None and mels is not None and encoder is not None:
                cut = _refine_change(mels, int(centers[a]), int(centers[b]), cents[int(labels[a])], cents[int(labels[b])], encoder)
            t = min(max(cut * FRAME_S, cur_start), e / SAMPLE_RATE)
            turns.append(Turn(cur_start, t, cur))
            cur_start, cur = t, int(labels[b])
        turns.append(Turn(cur_start, e / SAMPLE_RATE, cur))
    turns = [t for t in turns if t.end > t.start]
    # renumber in order of first appearance, join touching turns of one speaker
    seen: dict[int, int] = {}
    out: list[Turn] = []
    for t in turns:
        sp = seen.setdefault(t.speaker, len(seen))
        if out and out[-1].speaker == sp and t.start - out[-1].end < 1e-6:
            out[-1] = Turn(out[-1].start, t.end, sp)
        else:
            out.append(Turn(t.start, t.end, sp))
    return out


def diarize(
    audio: np.ndarray,
    encoder: SpeakerEncoder,
    *,
    regions: Sequence[tuple[int, int]] | None = None,
    vad: Any = None,
    speakers: int | None = None,
    opts: DiarizeOptions = DiarizeOptions(),
) -> Diarization:
    """Speaker turns of 16 kHz mono ``audio``. ``regions``: speech regions in samples (else from
    ``vad``, a :class:`vidnotes.vad.SileroVad`); ``speakers``: the count if known, else estimated."""
    import time

    t0 = time.perf_counter()
    if regions is None:
        if vad is None:
            raise ValueError("diarize needs the speech regions or a VAD to find them")
        regions = [(r.start, r.end) for r in vad.speech(audio).regions]
    regions = [(int(s), int(e)) for s, e in regions if e > s]
    t_vad = time.perf_counter()
    if speakers is not None and speakers < 1:
        raise ValueError(f"speakers must be at least 1 (or None for auto), got {speakers}")
    audio = normalize_volume(audio)
    mels = mel_spectrogram(audio)
    windows = speech_windows(regions, opts)
    emb = embed_windows(mels, windows, encoder, audio=audio if opts.window_level else None)
    t_emb = time.perf_counter()
    seconds = np.array([(b - a) * FRAME_S for _, a, b in windows]) if windows else np.zeros(0)
    # a window's weight in the cluster durations: its share of speech not shared with neighbours
    weight = np.minimum(seconds, opts.hop_s)
    labels, info = cluster(emb, weight, speakers=speakers, opts=opts, regions=np.array([w[0] for w in windows], dtype=int))
    if len(set(labels.tolist())) > 1:
        labels = resegment(emb, labels, windows, penalty=opts.switch_penalty)
    refine = opts.refine and len(set(labels.tolist())) > 1
    turns = make_turns(
        regions, windows, labels, mels=mels if refine else None, emb=emb if refine else None, encoder=encoder if refine else None
    )
    n_speakers = len({t.speaker for t in turns})
    t_end = time.perf_counter()
    audio_s = len(audio) / SAMPLE_RATE
    stats = {
        **info,
        "windows": len(windows),
        "speech_seconds": round(sum(e - s for s, e in regions) / SAMPLE_RATE, 3),
        "seconds": {"vad": round(t_vad - t0, 3), "embeddings": round(t_emb - t_vad, 3), "clustering": round(t_end - t_emb, 3)},
        "times_real_time": round(audio_s / max(t_end - t0, 1e-9), 1),
        "speakers_given": speakers,
    }
    return Diarization(turns, n_speakers, encoder.name, stats)


# -- transcript segments -----------------------------------------------------------------------


def speaker_label(index: int) -> str:
    return f"Speaker {index + 1}"


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _split_text(text: str, fractions: Sequence[float]) -> list[str]:
    """``text`` shared out over pieces in proportion to ``fractions``, at word boundaries (a
    sentence end near a cut wins)."""
    words = text.split()
    if len(fractions) <= 1 or len(words) <= 1:
        return [text.strip()] + [""] * (len(fractions) - 1)
    cum = np.cumsum(fractions) / max(sum(fractions), 1e-9)
    cuts, prev = [], 0
    for c in cum[:-1]:
        target = int(round(c * len(words)))
        # prefer a cut right after a sentence end within one word of the proportional one
        for d in (0, 1, -1):
            j = target + d
            if prev < j < len(words) and re.search(r"[.?!]$", words[j - 1]):
                target = j
                break
        target = min(max(target, prev), len(words))
        cuts.append(target)
        prev = target
    bounds = [0, *cuts, len(words)]
    return [" ".join(words[a:b]) for a, b in zip(bounds, bounds[1:])]


def assign_speakers(transcript: Any, turns: Sequence[Turn], *, min_piece_s: float = 1.0, names: dict[int, str] | None = None) -> Any:
    """A copy of ``transcript`` (:class:`vidnotes.types.Transcript`) whose every segment carries
    a speaker (``Speaker 1``, ... or ``names``): the one with the most speech inside it; a segment
    in which another speaker talks for at least ``min_piece_s`` is split there. Words go to the
    pieces by their timestamps where the segment has ``words``, else in proportion to time."""
    from vidnotes.types import Segment

    def name(i: int) -> str:
        return (names or {}).get(i) or speaker_label(i)

    turns = sorted(turns, key=lambda t: t.start)
    out: list[Segment] = []
    for seg in transcript.segments:
        inside = [
            (max(t.start, seg.start), min(t.end, seg.end), t.speaker) for t in turns if _overlap(t.start, t.end, seg.start, seg.end) > 0
        ]
        if not inside:
            near = min(turns, key=lambda t: min(abs(t.start - seg.end), abs(t.end - seg.start)), default=None)
            out.append(replace(seg, speaker=name(near.speaker)) if near else seg)
            continue
        # pieces: runs of one speaker, the silence between turns given to the run before it
        pieces: list[list[Any]] = []
        for a, b, sp in inside:
            if pieces and pieces[-1][2] == sp:
                pieces[-1][1] = b
            else:
                pieces.append([a, b, sp])
        # a piece too short to be a turn of its own joins its longer neighbour
        while len(pieces) > 1:
            lens = [p[1] - p[0] for p in pieces]
            i = int(np.argmin(lens))
            if lens[i] >= min_piece_s:
                break
            j = i - 1 if i == len(pieces) - 1 or (i > 0 and lens[i - 1] >= lens[i + 1]) else i + 1
            lo, hi = min(i, j), max(i, j)
            keep = pieces[j][2]
            pieces[lo : hi + 1] = [[pieces[lo][0], pieces[hi][1], keep]]
            # neighbours of one speaker join up
            k = 0
            while k < len(pieces) - 1:
                if pieces[k][2] == pieces[k + 1][2]:
                    pieces[k : k + 2] = [[pieces[k][0], pieces[k + 1][1], pieces[k][2]]]
                else:
                    k += 1
        if len(pieces) == 1:
            out.append(replace(seg, speaker=name(pieces[0][2])))
            continue
        # piece boundaries: seg.start, the midpoints of the pauses between runs, seg.end
        edges = [seg.start] + [(pieces[k][1] + pieces[k + 1][0]) / 2 for k in range(len(pieces) - 1)] + [seg.end]
        words = getattr(seg, "words", None)
        if words:
            parts = [[w for w in words if a <= (w["start"] + w["end"]) / 2 < b or (k == len(pieces) - 1 and (w["start"] + w["end"]) / 2 >= b)]
                     for k, (a, b) in enumerate(zip(edges, edges[1:]))]  # fmt: skip
            texts = [" ".join(str(w["word"]).strip() for w in p) for p in parts]
        else:
            texts = _split_text(seg.text, [b - a for a, b in zip(edges, edges[1:])])
        for k, text in enumerate(texts):
            if text.strip():
                out.append(
                    replace(seg, start=edges[k], end=edges[k + 1], text=text if not k else " " + text.lstrip(), speaker=name(pieces[k][2]))
                )
    t = replace_transcript(transcript, out)
    return t


def replace_transcript(transcript: Any, segments: list[Any]) -> Any:
    from vidnotes.types import Transcript

    return Transcript(segments=segments, duration=transcript.duration, language=transcript.language, model=transcript.model)


def parse_speakers(value: str | int | None) -> int | None:
    """``auto`` (or None/0/"") -> None, else a speaker count >= 1 (:func:`vidnotes.types.speaker_count`)."""
    if value is None or value == 0 or (isinstance(value, str) and value.strip() in ("", "0")):
        return None
    return speaker_count(value)
