"""Chapter boundaries: how well a method splits a talk into its topics, scored side by side.

Every talk is a concatenation of parts about distinct topics (one source document or prompt family
= one topic); the reference chapter boundaries are the times where the parts join. All data are
built at run time from Debian packages (bench/chapters_data.py says which and how; nothing is
downloaded or committed) and are fixed by a seed:

  spoken     synthetic talks of 2-8 parts, each 4-25 consecutive prose sentences (6-40 words) of one
             document: a section of the Debian Administrator's Handbook (debian-handbook) or a page
             of the Python tutorial / HOWTOs (python3.11-doc), never two documents of one group
             (handbook chapter, Python subject) in a talk. Read by espeak-ng, one voice per talk
             (en-us, en-gb, en-gb-x-rp, en-us-nyc, with a variant, 150-180 words a minute), then
             transcribed by the project's ASR (vidnotes.asr.WhisperOnnx with the store's CURRENT
             whisper, audio through vidnotes.audio.decode_audio). Pauses between sentences are
             0.25-0.7 s; part joins get a longer pause (1.2-1.8 s) only in every third short talk
             ("cue" in the tables); elsewhere a join pause is drawn like any sentence gap, so
             pauses give nothing away. Kinds: multi (12-20 sentences, 1.5-4 min), control (one
             document, 2-2.5 min, reference = 1 chapter), long (6-12 parts, 15-16 min).
  real       real human speech: Debian's Asterisk prompts (asterisk-core-sounds-en-g722, one female
             speaker, prompts of 4+ words and at most 12 s), grouped into topic families by name
             (voicemail, conference, directory, queues/agents, privacy, call errors, ...); talks of
             2-6 families, 5-15 prompts of one family each, joined with the same pauses, transcribed
             by the same ASR.
  languages  the text path, no ASR (the ASR is English-only): the same family construction over the
             Russian, French and Spanish Asterisk prompt texts (asterisk-ru/fr/es), and prose talks
             built as in spoken from the ru/fr/es translations of the handbook (paragraphs really in
             that language) and, for Russian, the DESCRIPTION sections of manpages-ru
             (prose-ru/fr/es). Transcripts get synthetic times: 0.4 s a word, one segment per
             prompt or sentence, 0.5 s between segments.

Dev/test: every document group / prompt family belongs to one split only (a seeded hash of its
name; the Asterisk families are split by hand, each side with one big family). Tune on dev, report
test.

Units and scores. One common unit sequence per talk: the transcript's sentences (each segment cut at
. ! ?, its time span shared out by characters). A unit's reference label is the part containing its
time midpoint; its hypothesis label is the chapter containing its midpoint (by chapter start times).
Pk and WindowDiff (nltk.metrics.segmentation) compare the two boundary strings, with k = half the
mean reference part length in units (at least 1); lower is better, 0 is perfect, and one-chapter
scores about the share of windows that straddle a reference boundary. Also: |predicted chapters -
reference chapters|, and on the single-topic controls the share of talks given exactly 1 chapter.
Aggregates are means over talks, per set (languages: per subset) and split.

Methods:
  vidnotes     vidnotes.summarize.load_notes_builder(store).build(transcript), as the summarize function runs it
               -> notes.chapters[*].start (skipped, with a note, while vidnotes.notes cannot be
               imported)
  texttiling   nltk's TextTilingTokenizer with its defaults (w=20, k=10, block comparison, HC
               cutoff), fed the units as paragraphs ("\\n\\n" between them), its output mapped back
               to unit start times. It keeps ASCII letters only, so ru/fr/es text is folded to ASCII
               first (accents dropped, Cyrillic transliterated). Stopwords (NLTK's corpus cannot be
               downloaded): a short English function-word list written here; the stop-words
               package's lists for ru/fr/es. Any exception (a text too short for its windows) = one
               chapter.
  uniform      the oracle number of chapters, of equal duration
  one-chapter  a single chapter

Transcripts are cached per talk in build/bench/chapters/<set>/ (keyed by the talk's specification
and the whisper version; talks no longer specified are removed), so a re-run only re-scores;
--refresh rebuilds them. The MiniLM vectors vidnotes asks for are cached too (build/bench/chapters/
embeddings/, per minilm version; --no-embedding-cache turns that off). The first build synthesizes and transcribes about 80 minutes of audio
(about 6 minutes on 2 cores). Writes bench/results/chapters.json (per talk and aggregated, with each
method's chapter starts) and bench/results/chapters.md (sizes, and a table per set and split).

Usage: python bench/bench_chapters.py [--sets spoken,real,languages] [--methods vidnotes,texttiling,uniform,one-chapter]
                                      [--refresh] [--plan] [--store models] [--keep-audio]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import random
import sys
import tempfile
import time
import unicodedata
import wave
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import chapters_data as cd  # noqa: E402

RESULTS = REPO / "bench" / "results"
CACHE = REPO / "build" / "bench" / "chapters"
METHODS = ["vidnotes", "texttiling", "uniform", "one-chapter"]
SETS = ["spoken", "real", "languages"]
SEED = 0
# talks per split: spoken (multi, control, long), real, languages (asterisk, prose multi/control/long per language)
SIZES = {
    "spoken": {"multi": 5, "control": 2, "long": 1},
    "real": 5,
    "languages": {"asterisk": 8, "prose": {"ru": (8, 2, 1), "fr": (8, 2, 0), "es": (8, 2, 0)}},
}

# A short English function-word list for TextTiling (NLTK's own list needs its corpus download).
EN_STOPWORDS = set(
    """a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers herself
    him himself his how i if in into is it its itself just let me more most my myself no nor not now of off on once only or
    other ought our ours ourselves out over own same she should so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours yourself yourselves also may might must shall however thus therefore one ones many much
    s t d ll m o re ve y don doesn didn isn aren wasn weren hasn haven hadn won wouldn shouldn couldn mustn ok yes like well
    okay so just really""".split()
)


# ---------------------------------------------------------------------------------------------
# Talks
# ---------------------------------------------------------------------------------------------
def talk_specs(sets: list[str], seed: int = SEED) -> list[cd.TalkSpec]:
    specs: list[cd.TalkSpec] = []
    if "spoken" in sets:
        docs = cd.english_docs()
        for split in ("dev", "test"):
            mine = [d for d in docs if cd.group_split(d.group, seed) == split]
            s = SIZES["spoken"]
            specs += cd.prose_talks(
                mine, set_name="spoken", lang="en", split=split, n_multi=s["multi"], n_control=s["control"], n_long=s["long"], seed=seed
            )
    if "real" in sets:
        fams = cd.prompt_families("en", need_audio=True)
        for split in ("dev", "test"):
            specs += cd.asterisk_talks(fams, set_name="real", lang="en", split=split, n=SIZES["real"], seed=seed)
    if "languages" in sets:
        for lang in ("ru", "fr", "es"):
            fams = cd.prompt_families(lang)
            for split in ("dev", "test"):
                specs += cd.asterisk_talks(
                    fams,
                    set_name="languages",
                    lang=lang,
                    split=split,
                    n=SIZES["languages"]["asterisk"],
                    seed=seed,
                    subset=f"asterisk-{lang}",
                )
        for lang, (n_multi, n_control, n_long) in SIZES["languages"]["prose"].items():
            docs = cd.prose_docs(lang)
            for split in ("dev", "test"):
                mine = [d for d in docs if cd.group_split(d.group, seed) == split]
                specs += cd.prose_talks(mine, set_name="languages", lang=lang, split=split, n_multi=n_multi, n_control=n_control,
                                        n_long=n_long, seed=seed, subset=f"prose-{lang}", spoken=False)  # fmt: skip
    return [s for s in specs if len(s.parts) >= (1 if s.kind == "control" else 2)]


def estimate_seconds(spec: cd.TalkSpec) -> float:
    """Audio length: prompt files' sizes (real), words at the voice's speed (spoken)."""
    if spec.set == "real":
        sizes = [(cd.ASTERISK_AUDIO_EN / f"{n}.g722").stat().st_size for p in spec.parts for n in p.items]
        return sum(sizes) / 8000 + 0.5 * len(sizes)
    words = sum(len(t.split()) for p in spec.parts for t in p.texts)
    n = sum(len(p.texts) for p in spec.parts)
    wpm = spec.speed or 160
    return words * 60.0 / wpm + 0.5 * n


class Asr:
    """The project's ASR, loaded once on first use."""

    def __init__(self, store_root: str, threads: int | None) -> None:
        from vidnotes.store import ModelStore

        self.store = ModelStore(store_root)
        self.model_dir, self.manifest = self.store.fetch("whisper")
        self.name = f"whisper/{self.manifest['version']}"
        self.threads = threads
        self._model = None

    def transcribe(self, audio):  # noqa: ANN001, ANN201
        from vidnotes.asr import TranscriptionOptions, WhisperOnnx

        if self._model is None:
            self._model = WhisperOnnx(self.model_dir, name=self.name, threads=self.threads)
        return self._model.transcribe(audio, TranscriptionOptions(batch_size=8))


_PROMPT_AUDIO: dict[str, object] = {}


def spoken_audio(spec: cd.TalkSpec):  # noqa: ANN201
    """espeak-ng sentences joined at 22.05 kHz, then resampled to 16 kHz by ffmpeg (vidnotes.audio)."""
    import numpy as np

    from vidnotes.audio import decode_audio

    pieces = [[cd.espeak(t, spec.voice, spec.speed) for t in p.texts] for p in spec.parts]
    audio22, bounds, spans = cd.assemble(pieces, cd.ESPEAK_RATE, spec)
    with tempfile.TemporaryDirectory(prefix="vidnotes-chapters-") as tmp:
        wav = Path(tmp) / "talk.wav"
        write_wav(wav, audio22, cd.ESPEAK_RATE)
        audio = decode_audio(wav)
    return np.asarray(audio, dtype=np.float32), bounds, spans


def real_audio(spec: cd.TalkSpec):  # noqa: ANN201
    from vidnotes.audio import decode_audio

    pieces = []
    for p in spec.parts:
        row = []
        for name in p.items:
            if name not in _PROMPT_AUDIO:
                _PROMPT_AUDIO[name] = cd.trim(decode_audio(cd.ASTERISK_AUDIO_EN / f"{name}.g722", input_format="g722"), 16000)
            row.append(_PROMPT_AUDIO[name])
        pieces.append(row)
    return cd.assemble(pieces, 16000, spec)


def write_wav(path: Path, audio, rate: int) -> None:  # noqa: ANN001
    import numpy as np

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def build_talks(specs: list[cd.TalkSpec], *, cache: Path, refresh: bool, asr_factory, keep_audio: bool) -> list[dict]:  # noqa: ANN001
    """Each talk's transcript and reference, from the cache when its key (and the whisper version)
    match, otherwise built (synthesis or prompt audio, then ASR) and cached."""
    from vidnotes.wer import wer

    out = []
    asr_specs = [s for s in specs if s.set != "languages"]
    todo_s = sum(estimate_seconds(s) for s in asr_specs)
    done_s, t_start, n_asr = 0.0, time.perf_counter(), 0
    asr = None
    for spec in specs:
        if spec.set == "languages":
            tr, bounds = cd.text_transcript(spec)
            out.append({"spec": spec, "transcript": tr, "reference": bounds, "audio_seconds": None, "wer": None})
            continue
        path = cache / spec.set / f"{spec.id}.json"
        if asr is None:
            asr = asr_factory()
        if not refresh and path.is_file():
            data = json.loads(path.read_text())
            if data.get("key") == spec.key() and data["transcript"].get("model") == asr.name:
                out.append({"spec": spec, **{k: data[k] for k in ("transcript", "reference", "audio_seconds", "wer")}})
                todo_s -= estimate_seconds(spec)
                continue
        n_asr += 1
        t0 = time.perf_counter()
        audio, bounds, _ = spoken_audio(spec) if spec.set == "spoken" else real_audio(spec)
        t1 = time.perf_counter()
        transcript = asr.transcribe(audio)
        t2 = time.perf_counter()
        seconds = len(audio) / 16000
        ref_text = " ".join(t for p in spec.parts for t in p.texts)
        w = wer([ref_text], [transcript.text])
        data = {"key": spec.key(), "spec": asdict(spec), "transcript": transcript.to_dict(), "reference": bounds,
                "audio_seconds": round(seconds, 2), "wer": round(w, 4), "synth_s": round(t1 - t0, 2), "asr_s": round(t2 - t1, 2)}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
        tmp.replace(path)
        if keep_audio:
            write_wav(path.with_suffix(".wav"), audio, 16000)
        out.append({"spec": spec, **{k: data[k] for k in ("transcript", "reference", "audio_seconds", "wer")}})
        done_s += estimate_seconds(spec)
        el = time.perf_counter() - t_start
        eta = el / max(done_s, 1e-9) * max(todo_s - done_s, 0)
        print(f"bench: [{n_asr}] {spec.id}: {len(spec.parts)} parts, {seconds / 60:.1f} min audio "
              f"(made in {t1 - t0:.1f} s, ASR {t2 - t1:.1f} s, WER {w:.1%}); about {eta / 60:.1f} min left", file=sys.stderr)  # fmt: skip
    for set_name in {s.set for s in asr_specs}:  # cached talks no longer specified
        ids = {s.id for s in asr_specs if s.set == set_name}
        for f in (cache / set_name).glob("*"):
            if f.suffix in (".json", ".wav") and f.stem not in ids:
                f.unlink()
    return out


# ---------------------------------------------------------------------------------------------
# Units and scoring
# ---------------------------------------------------------------------------------------------
def units(transcript: dict) -> list[tuple[float, float, str]]:
    """(start, end, text) per sentence of each segment; a segment's span is shared out by characters."""
    from vidnotes.summarize import split_sentences

    out = []
    for seg in transcript["segments"]:
        sents = split_sentences(seg["text"])
        if not sents:
            continue
        total = sum(len(s) for s in sents)
        t, span = float(seg["start"]), float(seg["end"]) - float(seg["start"])
        for s in sents:
            d = span * len(s) / total
            out.append((t, t + d, s))
            t += d
    return out


def labels(mids: list[float], boundaries: list[float]) -> list[int]:
    b = sorted(boundaries)
    return [bisect.bisect_right(b, m) for m in mids]


def boundary_string(lab: list[int]) -> str:
    return "".join("1" if lab[i] != lab[i + 1] else "0" for i in range(len(lab) - 1)) + "0"


def score(ref_lab: list[int], hyp_lab: list[int], n_ref: int) -> tuple[float, float, int]:
    from nltk.metrics.segmentation import pk, windowdiff

    n = len(ref_lab)
    k = max(1, min(n - 1, round(n / n_ref / 2)))
    r, h = boundary_string(ref_lab), boundary_string(hyp_lab)
    return pk(r, h, k=k), windowdiff(r, h, k), k


_TRANSLIT = dict(
    zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "a b v g d e e zh z i i k l m n o p r s t u f kh ts ch sh shch _ y _ e iu ia".split())
)


def ascii_fold(text: str) -> str:
    """Lower-case ASCII for TextTiling: accents dropped, Cyrillic transliterated, other letters kept out."""
    out = []
    for ch in text.lower():
        if ch in _TRANSLIT:
            out.append(_TRANSLIT[ch].replace("_", ""))
        else:
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode())
    return "".join(out)


_STOPWORDS: dict[str, set[str]] = {}


def stopwords(lang: str) -> set[str]:
    if lang not in _STOPWORDS:
        if lang == "en":
            words = EN_STOPWORDS
        else:
            from stop_words import get_stop_words

            words = set(get_stop_words(lang))
        _STOPWORDS[lang] = {ascii_fold(w) for w in words} | set(words)
    return _STOPWORDS[lang]


def texttiling_starts(us: list[tuple[float, float, str]], lang: str) -> list[float]:
    from nltk.tokenize.texttiling import TextTilingTokenizer

    texts = [ascii_fold(t) if lang != "en" else t for _, _, t in us]
    text = "\n\n".join(texts)
    offsets, pos = [], 0
    for t in texts:
        offsets.append(pos)
        pos += len(t) + 2
    try:
        chunks = TextTilingTokenizer(stopwords=stopwords(lang)).tokenize(text)
    except Exception:  # noqa: BLE001 - too short for its windows, no gaps, ...: one chapter
        return [0.0]
    starts, c = [0.0], 0
    for chunk in chunks[:-1]:
        c += len(chunk)
        i = bisect.bisect_left(offsets, c)
        if 0 < i < len(us):
            starts.append(us[i][0])
    return sorted(set(starts))


class CachedEmbedder:
    """The MiniLM embedder with a persistent text -> vector cache (build/bench/chapters/embeddings/,
    one file per minilm version): embedding is most of build_notes' time, and the texts of the
    talks do not change between runs. Vectors are the embedder's own; a text embedded in another
    batch may differ from a fresh one in the last float bits only."""

    def __init__(self, embedder, path: Path | None) -> None:  # noqa: ANN001
        import numpy as np

        self.embedder, self.path = embedder, path
        self.vectors: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0
        self._dirty = False
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as z:
                self.vectors = dict(zip(z["texts"].tolist(), z["vectors"]))

    def embed(self, texts):  # noqa: ANN001, ANN201
        import numpy as np

        todo = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        self.misses += len(todo)
        self.hits += len(texts) - len(todo)
        if todo:
            for t, v in zip(todo, np.asarray(self.embedder.embed(todo), dtype=np.float32)):
                self.vectors[t] = v
            self._dirty = True
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.vectors[t] for t in texts])

    def __getattr__(self, name: str):  # noqa: ANN204 (pieces_per_word and the like: the embedder's own)
        return getattr(self.embedder, name)

    def save(self) -> None:
        import numpy as np

        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        texts = list(self.vectors)
        np.savez(tmp, texts=np.array(texts, dtype=str), vectors=np.stack([self.vectors[t] for t in texts]))
        tmp.replace(self.path)


class VidnotesMethod:
    """The notes builder exactly as the summarize function loads it (load_notes_builder), its
    MiniLM behind the persistent cache."""

    def __init__(self, store_root: str, threads: int | None, cache: Path | None = None) -> None:
        from vidnotes.store import ModelStore
        from vidnotes.summarize import NOTES_MAX_TOKENS, load_notes_builder

        store = ModelStore(store_root)
        self.builder = load_notes_builder(store, threads=threads)
        version = store.fetch("minilm")[1]["version"]
        path = cache / "embeddings" / f"minilm-{version}-{NOTES_MAX_TOKENS}.npz" if cache else None
        self.embedder = self.builder.embedder = CachedEmbedder(self.builder.embedder, path)

    def __call__(self, transcript: dict) -> list[float]:
        from vidnotes.types import Transcript

        notes = self.builder.build(Transcript.from_dict(transcript))
        return sorted(float(c.start) for c in notes.chapters) or [0.0]


def run_methods(
    talks: list[dict], methods: list[str], store_root: str, threads: int | None, embed_cache: Path | None = None
) -> tuple[list[dict], dict]:
    notes: dict[str, str] = {}
    vid = None
    if "vidnotes" in methods:
        try:
            vid = VidnotesMethod(store_root, threads, embed_cache)
        except ImportError as e:
            notes["vidnotes"] = f"not scored: {e}"
            print(f"bench: vidnotes method skipped ({e})", file=sys.stderr)
            methods = [m for m in methods if m != "vidnotes"]
    rows = []
    for talk in talks:
        spec: cd.TalkSpec = talk["spec"]
        us = units(talk["transcript"])
        if len(us) < 2:
            print(f"bench: {spec.id}: fewer than 2 units, left out", file=sys.stderr)
            continue
        mids = [(a + b) / 2 for a, b, _ in us]
        n_ref = len(spec.parts)
        ref_lab = labels(mids, talk["reference"])
        duration = float(talk["transcript"]["duration"])
        row = {
            "id": spec.id, "set": spec.set, "subset": spec.subset or spec.set, "split": spec.split, "kind": spec.kind,
            "lang": spec.lang, "voice": spec.voice, "speed": spec.speed, "pause_cue": spec.pause_marked,
            "parts": [p.source for p in spec.parts], "reference_chapters": n_ref, "units": len(us),
            "minutes": round(duration / 60, 2), "asr_wer": talk["wer"], "reference": [round(b, 2) for b in talk["reference"]],
            "methods": {},
        }  # fmt: skip
        for m in methods:
            t0 = time.perf_counter()
            if m == "vidnotes":
                starts = vid(talk["transcript"])
            elif m == "texttiling":
                starts = texttiling_starts(us, spec.lang)
            elif m == "uniform":
                starts = [duration * j / n_ref for j in range(n_ref)]
            else:
                starts = [0.0]
            took = time.perf_counter() - t0
            hyp_lab = labels(mids, sorted(starts)[1:])
            p, wd, k = score(ref_lab, hyp_lab, n_ref)
            row["k"] = k
            row["methods"][m] = {"starts": [round(s, 2) for s in starts], "chapters": len(starts), "pk": round(p, 4),
                                 "windowdiff": round(wd, 4), "count_error": abs(len(starts) - n_ref), "seconds": round(took, 3)}  # fmt: skip
        rows.append(row)
    if vid is not None:
        e = vid.embedder
        e.save()
        notes["vidnotes"] = f"embeddings: {e.hits} from the cache, {e.misses} computed" + ("" if e.path else " (cache off)")
    return rows, notes


def aggregate(rows: list[dict], methods: list[str]) -> list[dict]:
    out = []
    keys = sorted({(r["set"], r["subset"], r["split"]) for r in rows}, key=lambda k: (SETS.index(k[0]), k[1], k[2]))
    for set_name, subset, split in keys:
        mine = [r for r in rows if (r["set"], r["subset"], r["split"]) == (set_name, subset, split)]
        for m in methods:
            have = [r for r in mine if m in r["methods"]]
            if not have:
                continue

            def avg(rs: list[dict], key: str) -> float | None:
                return round(mean(r["methods"][m][key] for r in rs), 4) if rs else None

            controls = [r for r in have if r["kind"] == "control"]
            multi = [r for r in have if r["kind"] != "control"]
            out.append({
                "set": set_name, "subset": subset, "split": split, "method": m, "talks": len(have),
                "pk": avg(have, "pk"), "windowdiff": avg(have, "windowdiff"), "count_error": avg(have, "count_error"),
                "windowdiff_multi_topic": avg(multi, "windowdiff"),
                "windowdiff_no_pause_cue": avg([r for r in multi if not r["pause_cue"]], "windowdiff"),
                "windowdiff_pause_cue": avg([r for r in multi if r["pause_cue"]], "windowdiff"),
                "windowdiff_long": avg([r for r in have if r["kind"] == "long"], "windowdiff"),
                "seconds": round(sum(r["methods"][m]["seconds"] for r in have), 1),
                "controls": len(controls),
                "controls_one_chapter": round(mean(r["methods"][m]["chapters"] == 1 for r in controls), 3) if controls else None,
            })  # fmt: skip
    return out


def sizes(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["set"], r["subset"], r["split"]) for r in rows}, key=lambda k: (SETS.index(k[0]), k[1], k[2]))
    for set_name, subset, split in keys:
        mine = [r for r in rows if (r["set"], r["subset"], r["split"]) == (set_name, subset, split)]
        kinds = {k: sum(r["kind"] == k for r in mine) for k in ("multi", "control", "long")}
        wers = [r["asr_wer"] for r in mine if r["asr_wer"] is not None]
        out.append({
            "set": set_name, "subset": subset, "split": split, "talks": len(mine), **{f"talks_{k}": v for k, v in kinds.items()},
            "units": sum(r["units"] for r in mine), "reference_chapters": sum(r["reference_chapters"] for r in mine),
            "minutes": round(sum(r["minutes"] for r in mine), 1), "asr_wer_mean": round(mean(wers), 4) if wers else None,
            "sources": len({s for r in mine for s in r["parts"]}),
        })  # fmt: skip
    return out


def fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:.0%}" if pct else f"{x:.3f}"


def write_markdown(result: dict, path: Path) -> None:
    agg, methods = result["aggregate"], result["methods"]
    lines = [
        f"Chapter-boundary benchmark, {result['date']}: {result['talks']} talks, {result['minutes']:.0f} min "
        f"({result['asr_minutes']:.0f} min through {result['asr_model']}), {result['machine']['cpus']} CPUs",
        "",
        "Pk and WindowDiff: lower is better (0 = the reference boundaries exactly, over the transcript's sentences; "
        "k = half the mean reference part length). Count error: mean |predicted - reference chapters|. "
        "Controls: share of single-topic talks given exactly 1 chapter. WD multi-topic: all but the controls; "
        "WD no cue / cue: multi-topic talks whose part joins have ordinary / longer pauses. WD long: the 15-minute talks. s: the method's time over the set. "
        "Means over talks. How the data are made: `python bench/bench_chapters.py --help`.",
        "",
    ]
    if result.get("vidnotes_notes"):
        v = result["vidnotes_notes"]
        lines += [f"vidnotes: vidnotes/notes.py sha256 {v['sha256']} (git {v['git']}).", ""]
    for name, note in result.get("notes", {}).items():
        lines += [f"Note: {name}: {note}", ""]
    lines += [
        "| set | split | talks (multi/control/long) | units | ref chapters | minutes | sources | ASR WER |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["sizes"]:
        lines.append(f"| {s['subset']} | {s['split']} | {s['talks']} ({s['talks_multi']}/{s['talks_control']}/{s['talks_long']}) | "
                     f"{s['units']} | {s['reference_chapters']} | {s['minutes']} | {s['sources']} | {fmt(s['asr_wer_mean'], True)} |")  # fmt: skip
    groups: dict[tuple[str, str], list[dict]] = {}
    for a in agg:
        groups.setdefault((a["subset"], a["split"]), []).append(a)
    current_set = None
    for (subset, split), rows in groups.items():
        if rows[0]["set"] != current_set:
            current_set = rows[0]["set"]
            lines += ["", f"## {current_set}"]
        lines += ["", f"### {subset}, {split} ({rows[0]['talks']} talks)", "",
                  "| method | Pk | WindowDiff | count error | WD multi-topic | WD no cue | WD cue | WD long | controls: 1 chapter | s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for a in rows:
            ctl = f"{fmt(a['controls_one_chapter'], True)} of {a['controls']}" if a["controls"] else "–"
            lines.append(f"| {a['method']} | {fmt(a['pk'])} | {fmt(a['windowdiff'])} | {fmt(a['count_error'])} | "
                         f"{fmt(a['windowdiff_multi_topic'])} | {fmt(a['windowdiff_no_pause_cue'])} | {fmt(a['windowdiff_pause_cue'])} | {fmt(a['windowdiff_long'])} | {ctl} | {a['seconds']:.1f} |")  # fmt: skip
        by = {a["method"]: a for a in rows}
        if "vidnotes" in by and "texttiling" in by and by["texttiling"]["windowdiff"]:
            lines += [
                "",
                f"WindowDiff(vidnotes) / WindowDiff(TextTiling) = {by['vidnotes']['windowdiff'] / by['texttiling']['windowdiff']:.2f}",
            ]
    if "vidnotes" not in methods:
        lines += ["", "(vidnotes not scored in this run.)"]
    path.write_text("\n".join(lines) + "\n")


def notes_provenance() -> dict:
    """Which vidnotes/notes.py was scored: its content hash and the commit it sits on."""
    import hashlib
    import subprocess

    path = REPO / "vidnotes" / "notes.py"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "?"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "vidnotes/notes.py"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        head, dirty = "?", ""
    return {"sha256": sha, "git": f"{head}{' + uncommitted changes' if dirty else ''}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated, from: %(default)s")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from: %(default)s")
    ap.add_argument("--refresh", action="store_true", help="rebuild the cached transcripts (synthesis + ASR)")
    ap.add_argument("--plan", action="store_true", help="print the talks that would be built (estimated minutes) and stop")
    ap.add_argument(
        "--store", default=os.environ.get("VIDNOTES_MODEL_STORE", str(REPO / "models")), help="model store (default: %(default)s)"
    )
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    ap.add_argument("--cache-dir", type=Path, default=CACHE, help="transcript cache (default: %(default)s)")
    ap.add_argument("--no-embedding-cache", action="store_true", help="embed every text afresh for vidnotes (no cached MiniLM vectors)")
    ap.add_argument("--keep-audio", action="store_true", help="also keep each built talk's 16 kHz WAV beside its cached transcript")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where chapters.json and chapters.md go (default: %(default)s)")
    args = ap.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    for s in sets:
        if s not in SETS:
            ap.error(f"unknown set {s!r}")
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    random.seed(SEED)

    t0 = time.perf_counter()
    specs = talk_specs(sets)
    if args.plan:
        for s in specs:
            print(f"{s.id:28s} {s.kind:8s} {len(s.parts):2d} parts {sum(len(p.texts) for p in s.parts):4d} items  ~{estimate_seconds(s) / 60:4.1f} min  "
                  f"{s.voice or '-'} {s.speed or ''} {'cue' if s.pause_marked else ''}")  # fmt: skip
        asr_min = sum(estimate_seconds(s) for s in specs if s.set != "languages") / 60
        print(f"{len(specs)} talks, about {asr_min:.0f} min of audio for the ASR")
        return 0
    print(f"bench: {len(specs)} talk specifications in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    asr_holder: dict[str, Asr] = {}

    def asr_factory() -> Asr:
        if "a" not in asr_holder:
            asr_holder["a"] = Asr(args.store, args.threads)
        return asr_holder["a"]

    t1 = time.perf_counter()
    talks = build_talks(specs, cache=args.cache_dir, refresh=args.refresh, asr_factory=asr_factory, keep_audio=args.keep_audio)
    t2 = time.perf_counter()
    print(f"bench: transcripts ready in {t2 - t1:.1f} s; scoring {', '.join(methods)}", file=sys.stderr)
    rows, notes = run_methods(talks, methods, args.store, args.threads, None if args.no_embedding_cache else args.cache_dir)
    scored = sorted({m for r in rows for m in r["methods"]}, key=METHODS.index)
    t3 = time.perf_counter()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "vidnotes_notes": notes_provenance() if "vidnotes" in scored else None,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "seed": SEED, "methods": scored, "notes": notes,
        "asr_model": asr_holder["a"].name if asr_holder else None,
        "talks": len(rows), "minutes": round(sum(r["minutes"] for r in rows), 1),
        "asr_minutes": round(sum(r["minutes"] for r in rows if r["set"] != "languages"), 1),
        "timings_s": {"specs": round(t1 - t0, 1), "transcripts": round(t2 - t1, 1), "scoring": round(t3 - t2, 1)},
        "sizes": sizes(rows), "aggregate": aggregate(rows, scored), "talks_detail": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chapters.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    write_markdown(result, args.out / "chapters.md")
    for a in result["aggregate"]:
        print(
            f"{a['subset']:14s} {a['split']:4s} {a['method']:12s} Pk {fmt(a['pk'])}  WD {fmt(a['windowdiff'])}  count err {fmt(a['count_error'])}",
            file=sys.stderr,
        )
    print(args.out / "chapters.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
