"""The speech sets of the ASR benchmarks: real recordings with reference transcripts.

- ``asterisk-en``: 60 English Asterisk prompts (one speaker, phone prompts; the training domain)
  joined with 0.6 s pauses, about 6 minutes.
- ``varied-en``: real English speech of other speakers (:func:`vidnotes.datasets.varied_english`).
- ``languages``: 30 clips each of Russian, French, Spanish and Italian Asterisk prompts (3 prompts a
  clip, about 10-20 s), one file per clip: the language is detected per file.

Each set is a list of ``(wav, reference text, seconds, language)``; WAVs are 16 kHz mono, built
once under build/bench/sets/.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "build" / "bench" / "sets"
SETS = ("asterisk-en", "varied-en", "languages")
LANGUAGES = ("ru", "fr", "es", "it")
CLIPS_PER_LANGUAGE = 30  # 10 a language hid a Russian failure of the all-int8 base (docs/languages.md, "Precision")
PROMPTS_PER_CLIP = 3
GAP = 0.6  # seconds of silence between joined recordings

Item = tuple[Path, str, float, str]


def _write(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def _join(paths: list[tuple[Path, str | None]]) -> np.ndarray:
    from vidnotes.audio import decode_audio

    gap = np.zeros(int(GAP * 16000), dtype=np.float32)
    parts: list[np.ndarray] = []
    for p, fmt in paths:
        parts += [decode_audio(p, input_format=fmt), gap]
    return np.concatenate(parts)


def build_set(name: str) -> list[Item]:
    """The items of set ``name`` (built on first use, then read from the cache)."""
    index = CACHE / name / "index.json"
    if index.is_file():
        items = json.loads(index.read_text())
        if all(Path(i[0]).is_file() for i in items):
            return [(Path(w), t, s, lang) for w, t, s, lang in items]
    out: list[Item] = []
    if name == "asterisk-en":
        from vidnotes.datasets import eligible, read_transcripts

        recs = eligible(read_transcripts())[:60]
        audio = _join([(r.path, "g722") for r in recs])
        wav = CACHE / name / "speech.wav"
        _write(wav, audio)
        out.append((wav, " ".join(r.text for r in recs), len(audio) / 16000, "en"))
    elif name == "varied-en":
        from vidnotes.datasets import varied_english

        for utt in varied_english():
            out.append((utt.path, utt.text, utt.seconds, "en"))
        # one file of them all as well: a talk-like stream of several voices
        audio = _join([(u.path, None) for u in varied_english()])
        wav = CACHE / name / "joined.wav"
        _write(wav, audio)
        out = [(wav, " ".join(t for _, t, _, _ in out), len(audio) / 16000, "en")]
    elif name == "languages":
        from vidnotes.datasets import language_prompts

        for lang in LANGUAGES:
            prompts = language_prompts(lang, min_words=4)
            step = max(1, len(prompts) // (CLIPS_PER_LANGUAGE * PROMPTS_PER_CLIP))
            chosen = prompts[::step][: CLIPS_PER_LANGUAGE * PROMPTS_PER_CLIP]
            for k in range(CLIPS_PER_LANGUAGE):
                group = chosen[k * PROMPTS_PER_CLIP : (k + 1) * PROMPTS_PER_CLIP]
                audio = _join([(p.path, None) for p in group])
                wav = CACHE / name / f"{lang}-{k:02d}.wav"
                _write(wav, audio)
                out.append((wav, " ".join(p.text for p in group), len(audio) / 16000, lang))
    else:
        raise SystemExit(f"unknown set {name!r}: one of {', '.join(SETS)}")
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps([[str(w), t, round(s, 3), lang] for w, t, s, lang in out], ensure_ascii=False, indent=1) + "\n")
    return out
