"""Structured notes from a transcript: chapters with titles and key points, a summary, key terms
and the transcript as paragraphs. Faithful by construction: every sentence in the notes is a
sentence of the transcript (lightly trimmed of leading fillers), every title and key term a
phrase of it; an abstractive model (BART), when the store has one, may only add sentences that
pass :func:`supported` against the part of the transcript they summarize.

Torch-free: numpy, onnxruntime (through :class:`~vidnotes.summarize.MiniLMEmbedder`), the
``stop-words`` lists and the standard library.

How (details and measurements: docs/notes.md):

* **Units**: sentences with times (:func:`transcript_units`); a run without end punctuation is
  cut at segment ends.
* **Chapters** (:func:`segment`): kernel change-point detection over the units. The kernel mixes
  MiniLM sentence embeddings with TF-IDF over word prefixes (a language-neutral stand-in for
  stems); dynamic programming finds the best split for every chapter count, and the count is the
  one whose split beats the same talk with its sentences shuffled (a null that knows the talk's
  own noise level) by a margin per chapter. Discourse cues ("next, let us talk about ...",
  "перейдём к ...") and long pauses make a boundary cheaper at their position; the talk's length
  bounds the count (chapters of at least ~10 s, at most ~12 minutes, at most 15).
* **Titles**: KeyBERT-style: candidate n-grams of the chapter, none starting or ending with a
  stop word, ranked by similarity to the chapter's centroid minus similarity to the other
  chapters, one or two diverse phrases; a topic the speaker announces ("let us talk about
  bridges") is a candidate of its own.
* **Summary and key points**: per chapter, greedy coverage selection over the chapter's content
  sentences: the first picks go to the summary (every chapter represented while the budget
  allows), the next ones are the chapter's key points, so no key point repeats a summary
  sentence. Greetings, thanks, questions and transition-only sentences are never content.
* **Key terms**: n-grams of the whole talk ranked like titles, diverse, each with the time it is
  first said.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from vidnotes.types import Transcript

SCHEMA = "vidnotes.notes/1"
MAX_CHAPTERS = 15
MIN_CHAPTER_SECONDS = 10.0
MIN_CHAPTER_UNITS = 2
MAX_CHAPTER_SECONDS = 12 * 60.0
MAX_SUMMARY_SENTENCES = 10
MAX_PIECES_PER_WORD = 3.0


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class Abstractive(Protocol):
    """What the notes need of an abstractive model (BartSummarizer)."""

    model: str

    def summarize_text(self, text: str) -> str: ...


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Unit:
    """A sentence of the transcript with its time span and the silence before it (seconds)."""

    text: str
    start: float
    end: float
    pause: float = 0.0
    speaker: str | None = None  # of a diarized transcript (its segment's), else None


@dataclass(slots=True)
class Sentence:
    text: str
    start: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": round(self.start, 2)}


@dataclass(slots=True)
class Paragraph:
    start: float
    end: float
    text: str
    speaker: str | None = None  # one speaker's turn (a diarized transcript), else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": round(self.start, 2), "end": round(self.end, 2), "text": self.text}
        if self.speaker is not None:
            d["speaker"] = self.speaker
        return d


@dataclass(slots=True)
class Chapter:
    start: float
    end: float
    title: str
    key_points: list[Sentence] = field(default_factory=list)
    paragraphs: list[Paragraph] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": round(self.start, 2),
            "end": round(self.end, 2),
            "title": self.title,
            "key_points": [k.text for k in self.key_points],
            "key_point_starts": [round(k.start, 2) for k in self.key_points],
            "paragraphs": [p.to_dict() for p in self.paragraphs],
        }


@dataclass(slots=True)
class KeyTerm:
    term: str
    first: float  # seconds: when it is first said
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "first": round(self.first, 2), "count": self.count}


@dataclass(slots=True)
class Notes:
    language: str
    duration: float
    summary: list[Sentence]
    chapters: list[Chapter]
    key_terms: list[KeyTerm]
    summarizer: str  # "extractive", or "bart" when abstractive sentences passed the check
    model: str  # "<task>/<version>" of each model used, comma separated
    speech_model: str = ""
    message: str = ""  # why the notes are thin (empty or very short transcript), else ""
    abstractive: dict[str, int] = field(default_factory=dict)  # BART sentences kept / rejected

    @property
    def summary_text(self) -> str:
        return " ".join(s.text for s in self.summary)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "language": self.language,
            "duration": round(self.duration, 2),
            "summary": self.summary_text,
            "summary_sentences": [s.to_dict() for s in self.summary],
            "chapters": [c.to_dict() for c in self.chapters],
            "key_terms": [k.to_dict() for k in self.key_terms],
            "summarizer": self.summarizer,
            "model": self.model,
            "speech_model": self.speech_model,
            "message": self.message,
            "abstractive": dict(self.abstractive),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notes:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {d.get('schema')!r})")
        chapters = [
            Chapter(
                start=float(c["start"]),
                end=float(c["end"]),
                title=str(c["title"]),
                key_points=[Sentence(str(t), float(s)) for t, s in zip(c["key_points"], c.get("key_point_starts") or [c["start"]] * len(c["key_points"]))],
                paragraphs=[
                    Paragraph(float(p["start"]), float(p["end"]), str(p["text"]), None if p.get("speaker") is None else str(p["speaker"]))
                    for p in c.get("paragraphs", [])
                ],
            )
            for c in d["chapters"]
        ]
        return cls(
            language=str(d.get("language", "en")),
            duration=float(d.get("duration", 0.0)),
            summary=[Sentence(str(s["text"]), float(s["start"])) for s in d.get("summary_sentences", [])],
            chapters=chapters,
            key_terms=[KeyTerm(str(k["term"]), float(k["first"]), int(k.get("count", 1))) for k in d.get("key_terms", [])],
            summarizer=str(d.get("summarizer", "")),
            model=str(d.get("model", "")),
            speech_model=str(d.get("speech_model", "")),
            message=str(d.get("message", "")),
            abstractive={str(k): int(v) for k, v in (d.get("abstractive") or {}).items()},
        )


# ---------------------------------------------------------------------------------------------
# Language: stop words and discourse cues
# ---------------------------------------------------------------------------------------------
_STOP_LANGS = {
    "ar": "arabic", "bg": "bulgarian", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german",
    "el": "greek", "en": "english", "es": "spanish", "fa": "persian", "fi": "finnish", "fr": "french",
    "hi": "hindi", "hu": "hungarian", "id": "indonesian", "it": "italian", "nl": "dutch", "no": "norwegian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sk": "slovak", "sv": "swedish",
    "tr": "turkish", "uk": "ukrainian", "vi": "vietnamese",
}  # fmt: skip
# English: function words only (the stop-words package's English list, 1333 words, holds terms
# such as "system", "value" or "information" that a lecture's key terms need).
_ENGLISH = set("""
a about above after again against all am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't
my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't she she'd
she'll she's should shouldn't so some such than that that's the their theirs them themselves then there
there's these they they'd they'll they're they've this those through to too under until up very was wasn't we
we'd we'll we're we've were weren't what what's when when's where where's which while who who's whom why why's
with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves will shall may might must
also just even still yet ever every much many quite rather really one ones get gets got getting go goes going
gone make makes made take takes took come comes came say says said see sees saw seen use used using thing
things something anything everything nothing way ways lot lots bit kind sort like well back around another
""".split())
# Speech fillers, never a title, key term or the start of a key point.
_FILLERS = {
    "en": {"um", "uh", "er", "erm", "ah", "oh", "okay", "ok", "yeah", "like", "so", "well", "right", "alright", "actually", "basically", "really", "just", "thing", "things", "lot", "kind", "sort", "way", "going", "gonna", "want", "let", "us", "know", "mean", "yes", "also", "today", "now"},
    "ru": {"ну", "вот", "это", "значит", "как", "бы", "типа", "короче", "давайте", "итак", "сегодня", "теперь", "также"},
}  # fmt: skip


def base_language(language: str) -> str:
    return (language or "en").split("-")[0].split("_")[0].lower()


@lru_cache(maxsize=32)
def stop_words(language: str) -> frozenset[str]:
    """The ``stop-words`` list of the language (empty where there is none: the data-driven
    filters in :func:`_tokens` then carry it) plus speech fillers."""
    lang = base_language(language)
    words: set[str] = set(_FILLERS.get(lang, set()))
    name = _STOP_LANGS.get(lang)
    if lang == "en":
        words |= _ENGLISH
    elif name:
        try:
            from stop_words import get_stop_words

            words |= {w.lower() for w in get_stop_words(name)}
        except Exception:  # a language the installed list lacks: no list, the filters still work
            pass
    return frozenset(words)


# Transitions: a sentence starting with one is a boundary cue; if little follows the cue it is
# transition-only (never content), and what follows is the topic the speaker announces.
_CUES = {
    "en": (
        r"next(?:\s+up)?|moving on(?:\s+to)?|finally|lastly|last but not least|in (?:summary|conclusion|closing)|"
        r"to (?:sum up|summari[sz]e|conclude|wrap up)|turning (?:now )?to|now|okay|ok|alright|all right|so|and|well|"
        r"(?:let'?s|let us|let me|i'?d like to|i want to|we(?:'ll| will)|i(?:'ll| will))\s+(?:now\s+)?"
        r"(?:talk|turn|look|move|go|switch|get|come|focus|discuss|consider|say a (?:few words|word))(?:\s+(?:on|back|over))?(?:\s+(?:to|about|at|into|on))?|"
        r"(?:a|one|a few) (?:more )?words? (?:about|on)|(?:that|which) brings (?:us|me) to|"
        r"the (?:next|second|third|fourth|last|final|other) (?:topic|part|point|thing|section|question|step|idea|example)(?:\s+(?:is|was))?|"
        r"first(?:ly)?|second(?:ly)?|third(?:ly)?|another (?:topic|thing|point)|"
        r"part (?:one|two|three|four|five|\d+)|chapter (?:one|two|three|\d+)"
    ),
    "ru": (
        r"итак|так|ну|а|и|хорошо|теперь|сейчас|далее|дальше|наконец|в заключение|в завершение|подвед[её]м итоги?|подводя итоги?|"
        r"(?:давайте\s+)?(?:поговорим|перейд[её]м|рассмотрим|обсудим|посмотрим|вернёмся|вернемся)(?:\s+(?:теперь|сейчас))?(?:\s+(?:о|об|к|на|про))?|"
        r"(?:следующ(?:ий|ая|ее|ей)|друг(?:ой|ая|ое)|последн(?:ий|яя|ее))\s+(?:тема|вопрос|часть|пункт|шаг|пример)|"
        r"во-первых|во-вторых|в-третьих|несколько слов о|пару слов о|часть (?:первая|вторая|третья|\d+)"
    ),
    "fr": r"ensuite|enfin|pour finir|en (?:résumé|conclusion)|maintenant|alors|passons (?:maintenant )?(?:à|au|aux)|parlons (?:maintenant )?(?:de|du|des)|voyons",
    "es": r"a continuación|finalmente|por último|en (?:resumen|conclusión)|ahora|bueno|pasemos (?:ahora )?a|hablemos (?:ahora )?(?:de|del|sobre)|veamos",
    "it": r"infine|in (?:sintesi|conclusione)|adesso|ora|passiamo (?:ora )?(?:a|al|alla|ai)|parliamo (?:ora )?(?:di|del|della)|vediamo",
    "de": r"als nächstes|schließlich|zum schluss|abschließend|zusammenfassend|nun|jetzt|kommen wir (?:nun |jetzt )?zu|sprechen wir (?:nun |jetzt )?über",
}  # fmt: skip
# A cue only counts if it is not one of these alone ("So the rover ..." is no transition).
_WEAK = {"now", "okay", "ok", "alright", "all right", "so", "and", "well", "итак", "так", "ну", "а", "и", "хорошо", "теперь", "сейчас", "maintenant", "alors", "ahora", "bueno", "adesso", "ora", "nun", "jetzt"}
_SOCIAL = {
    "en": r"(?:hello|hi|hey|good (?:morning|afternoon|evening)|welcome|thank(?:s| you)|many thanks|see you|bye|goodbye|cheers|any questions|are there (?:any )?questions|let'?s (?:get started|begin|start)|my name is|i am|i'm)\b",
    "ru": r"(?:здравствуйте|привет|добрый (?:день|вечер)|доброе утро|добро пожаловать|спасибо|благодарю|до свидания|до встречи|всем привет|меня зовут|есть (?:ли )?вопросы|начн[её]м)",
    "fr": r"(?:bonjour|bonsoir|salut|bienvenue|merci|au revoir|à bientôt|des questions)",
    "es": r"(?:hola|buenos días|buenas (?:tardes|noches)|bienvenid[oa]s?|gracias|adiós|hasta luego|alguna pregunta)",
    "it": r"(?:ciao|buongiorno|buonasera|benvenut[ie]|grazie|arrivederci|domande)",
    "de": r"(?:hallo|guten (?:morgen|tag|abend)|willkommen|danke|vielen dank|tschüss|auf wiedersehen|fragen)",
}  # fmt: skip


@lru_cache(maxsize=32)
def _cue_re(language: str) -> re.Pattern[str] | None:
    pat = _CUES.get(base_language(language))
    return re.compile(r"^\W*(?:(?:" + pat + r")(?=\W|$)[,.;:!]?\s*)+", re.IGNORECASE) if pat else None


@lru_cache(maxsize=32)
def _social_re(language: str) -> re.Pattern[str] | None:
    pat = _SOCIAL.get(base_language(language))
    return re.compile(r"^\W*" + pat, re.IGNORECASE) if pat else None


_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


@dataclass(frozen=True, slots=True)
class Role:
    """What a sentence is to the notes."""

    kind: str  # content | transition | social | question | repetitive | short
    cue: bool  # opens with a discourse cue: boundary evidence
    announced: str = ""  # the topic a transition names ("bridges"), else ""

    @property
    def content(self) -> bool:
        return self.kind == "content"

    def phrase_text(self, text: str) -> str:
        """The part of the sentence titles and key terms may come from."""
        return self.announced if self.kind == "transition" else "" if self.kind in ("social", "repetitive") else text


def repetitive(text: str, *, threshold: float = 2.4) -> bool:
    """A run of repeated words ("line-line-line-..."), as speech recognizers write on noise or
    when they loop: text that compresses more than ``threshold`` times (Whisper's own test)."""
    raw = text.encode("utf-8")
    return len(raw) >= 40 and len(raw) / len(zlib.compress(raw)) > threshold


def classify(text: str, language: str, *, min_words: int = 6) -> Role:
    """content, or one of the kinds that never are: a transition ("Next, let us talk about
    bridges.": a cue and at most five more words), a greeting or thanks, a question, a repetitive
    run (:func:`repetitive`), a sentence of fewer than ``min_words`` words."""
    n = len(words(text))
    cue_re, social_re = _cue_re(language), _social_re(language)
    m = cue_re.match(text) if cue_re else None
    cue = False
    if m:
        atoms = {a.lower() for a in re.split(r"[,.;:!\s]+", m.group(0).strip(" ,.;:!")) if a}
        cue = bool(atoms) and not atoms <= _WEAK and " ".join(words(m.group(0).lower())) not in _WEAK
    if cue and m:
        rest = words(text[m.end() :])
        if len(rest) <= 5:
            return Role("transition", True, " ".join(rest))
    if social_re and social_re.match(text) and n <= 14:
        return Role("social", cue)
    if text.rstrip().endswith(("?", "\uff1f")):
        return Role("question", cue)
    if repetitive(text):
        return Role("repetitive", cue)
    if n < min_words:
        return Role("short", cue)
    return Role("content", cue)


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|Prof|St|vs|etc|e\.g|i\.e|No|Fig|approx|т\.е|т\.д|т\.п|др|г)\.$", re.IGNORECASE)
_PIECE = re.compile(r".+?(?:[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019\u00bb)\]]*(?=\s|$)|[\u3002\uff01\uff1f]|$)", re.DOTALL)


def _pieces(text: str) -> list[tuple[str, bool]]:
    """Sentence pieces of one segment's text: (piece, ends a sentence)."""
    text = " ".join(text.split())
    out: list[tuple[str, bool]] = []
    for m in _PIECE.finditer(text):
        p = m.group(0).strip()
        if not p:
            continue
        ends = bool(re.search(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019\u00bb)\]]*$", p)) and not _ABBREV.search(p)
        if out and not out[-1][1]:  # an abbreviation: the sentence goes on
            out[-1] = (out[-1][0] + " " + p, ends)
        else:
            out.append((p, ends))
    return out


def transcript_units(transcript: Transcript, *, max_words: int = 40) -> list[Unit]:
    """Sentences of the transcript with times. A piece's time inside its segment is interpolated
    by characters; a sentence without end punctuation is closed at a segment end once it has
    ``max_words`` words (an unpunctuated transcript becomes segment-sized units), and at a change
    of speaker (a diarized transcript)."""
    units: list[Unit] = []
    buf: list[str] = []
    b_start = b_end = 0.0
    prev_end = 0.0
    speaker: str | None = None

    def flush() -> None:
        nonlocal buf, prev_end
        text = " ".join(buf).strip()
        if text:
            units.append(Unit(text, b_start, max(b_end, b_start), max(0.0, b_start - prev_end), speaker))
            prev_end = max(b_end, b_start)
        buf = []

    for seg in transcript.segments:
        if seg.speaker != speaker:
            flush()
            speaker = seg.speaker
        pieces = _pieces(seg.text)
        total = sum(len(p) for p, _ in pieces) or 1
        pos = 0
        span = max(0.0, seg.end - seg.start)
        for p, ends in pieces:
            p_start = seg.start + span * pos / total
            pos += len(p)
            p_end = seg.start + span * pos / total
            if not buf:
                b_start = p_start
            buf.append(p)
            b_end = p_end
            n = sum(len(words(x)) for x in buf)
            if ends or n >= 2 * max_words:
                flush()
        if buf and sum(len(words(x)) for x in buf) >= max_words:
            flush()
    flush()
    return units


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------
def _stem(w: str) -> str:
    return w[:6]


def lexical_vectors(texts: Sequence[str], stop: frozenset[str]) -> np.ndarray:
    """TF-IDF rows (L2-normalized) over 6-character word prefixes without stop words: a crude,
    language-neutral stemmer that joins "bridge"/"bridges" and "мост"/"моста"."""
    docs = [[_stem(w) for w in (x.lower() for x in words(t)) if w not in stop and len(w) > 1 and not w.isdigit()] for t in texts]
    df = Counter(s for d in docs for s in set(d))
    vocab = {s: i for i, s in enumerate(sorted(s for s, c in df.items() if c >= 1))}
    n = len(texts)
    m = np.zeros((n, max(1, len(vocab))), dtype=np.float32)
    idf = np.zeros(max(1, len(vocab)), dtype=np.float32)
    for s, i in vocab.items():
        idf[i] = math.log((1 + n) / (1 + df[s])) + 1.0
    for r, d in enumerate(docs):
        for s, c in Counter(d).items():
            m[r, vocab[s]] = (1.0 + math.log(c)) * idf[vocab[s]]
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.clip(norms, 1e-9, None)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9, None)


# ---------------------------------------------------------------------------------------------
# Chapters: kernel change-point detection
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SegmentParams:
    min_units: int = MIN_CHAPTER_UNITS
    min_seconds: float = MIN_CHAPTER_SECONDS
    max_seconds: float = MAX_CHAPTER_SECONDS
    max_chapters: int = MAX_CHAPTERS
    shuffles: int = 8
    margin: float = 1.3  # a boundary must gain this many times what the best split of a shuffled talk gains
    cue_discount: float = 0.3  # a cue at a boundary takes this share off its price
    pause_discount: float = 0.25  # so does a long pause (scaled: 2 s and more is a full one)
    seed: int = 0


def _block_sums(k: np.ndarray) -> np.ndarray:
    """2-D prefix sums: P[i, j] = sum of k[:i, :j]."""
    p = np.zeros((k.shape[0] + 1, k.shape[1] + 1), dtype=np.float64)
    p[1:, 1:] = np.cumsum(np.cumsum(k, axis=0), axis=1)
    return p


def _costs_dp(k: np.ndarray, allowed: np.ndarray, kmax: int, price: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal segmentations of units 0..n into 1..kmax segments under kernel ``k``.

    cost(a, b) = (b - a) - sum(k[a:b, a:b]) / (b - a) (within-segment scatter for a unit-diagonal
    kernel). ``allowed[a, b]``: may [a, b) be a segment. ``price[a]``: added when a segment starts
    at a > 0 (cue/pause discounts). Returns (best cost per segment count, back pointers)."""
    n = k.shape[0]
    p = _block_sums(k)
    diag = np.concatenate([[0.0], np.cumsum(np.diag(k).astype(np.float64))])
    idx = np.arange(n + 1)
    inf = np.inf
    cost = np.full((kmax + 1, n + 1), inf)
    back = np.zeros((kmax + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    extra = np.zeros(n + 1) if price is None else np.asarray(price, dtype=np.float64)
    for b in range(1, n + 1):
        a = idx[:b]
        length = (b - a).astype(np.float64)
        block = p[b, b] - p[a, b] - p[b, a] + p[a, a]
        seg = (diag[b] - diag[a]) - block / length
        seg = np.where(allowed[a, b], seg, inf) + np.where(a > 0, extra[a], 0.0)
        tot = cost[:kmax, :b] + seg[None, :]
        i = np.argmin(tot, axis=1)
        cost[1:, b] = tot[np.arange(kmax), i]
        back[1:, b] = i
    return cost[:, n], back


def _starts_from(back: np.ndarray, n: int, j: int) -> list[int]:
    starts: list[int] = []
    b = n
    for jj in range(j, 0, -1):
        a = int(back[jj, b])
        starts.append(a)
        b = a
    return sorted(starts)


def segment(
    units: Sequence[Unit], kernel: np.ndarray, *, cues: Sequence[bool] | None = None, params: SegmentParams = SegmentParams()
) -> list[int]:
    """Chapter starts (unit indices, the first 0) for ``units`` under the similarity ``kernel``
    (unit diagonal, n x n)."""
    n = len(units)
    if n == 0:
        return []
    starts_t = np.array([u.start for u in units] + [units[-1].end], dtype=np.float64)
    a = np.arange(n + 1)[:, None]
    b = np.arange(n + 1)[None, :]
    dur = starts_t[b] - starts_t[a]
    allowed = (b - a >= params.min_units) & (dur >= params.min_seconds)
    allowed |= (a == 0) & (b == n)  # the whole talk is always one chapter
    duration = float(starts_t[-1] - starts_t[0])
    kmax = max(1, min(params.max_chapters, n // max(1, params.min_units), int(duration // params.min_seconds) or 1))
    kmin = min(kmax, max(1, math.ceil(duration / params.max_seconds)))
    if kmax == 1:
        return [0]
    pause = np.array([min(1.0, u.pause / 2.0) for u in units] + [0.0])
    cue = np.array([float(c) for c in (cues or [False] * n)] + [0.0])
    discount = np.clip(params.cue_discount * cue + params.pause_discount * pause, 0.0, 0.9)

    # the null: the same units in shuffled order have no chapters; the gain of the best single
    # split there is what noise alone buys a boundary, so a boundary must buy `margin` times that
    rng = np.random.default_rng(params.seed)
    null = []
    for _ in range(params.shuffles):
        perm = rng.permutation(n)
        c0, _ = _costs_dp(kernel[np.ix_(perm, perm)], allowed, 2)
        null.append(c0[1] - c0[2] if np.isfinite(c0[2]) else 0.0)
    price = params.margin * float(np.mean(null))
    # re-solve with each boundary's price discounted by the evidence at its position
    priced, back = _costs_dp(kernel, allowed, kmax, price=price * (1.0 - discount))
    feasible = [j for j in range(kmin, kmax + 1) if np.isfinite(priced[j])] or [1]
    best_j = min(feasible, key=lambda j: priced[j])
    return _starts_from(back, n, best_j)


def similarity_kernel(emb: np.ndarray | None, lex: np.ndarray, *, semantic_weight: float = 0.4) -> np.ndarray:
    """Cosine kernel of the units: MiniLM and lexical similarity mixed (lexical alone without an
    embedder). Unit diagonal; rows without any word get similarity 0 to the rest."""
    k = lex @ lex.T
    if emb is not None and emb.size:
        e = _unit_rows(emb.astype(np.float32))
        k = semantic_weight * (e @ e.T) + (1.0 - semantic_weight) * k
    k = k.astype(np.float64)
    np.fill_diagonal(k, 1.0)
    return k


# ---------------------------------------------------------------------------------------------
# Phrases: titles and key terms
# ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Phrase:
    text: str  # as first said (original case)
    key: str  # lowercased
    count: int
    first_unit: int
    variants: list[str] = field(default_factory=list)  # the keys merged into this one (first said first)


def candidate_phrases(texts: Sequence[str], stop: frozenset[str], *, max_n: int = 3, offset: int = 0) -> dict[str, _Phrase]:
    """n-grams (1..max_n words) without stop words or digits-only words, inside one clause,
    keyed by their lowercased form."""
    out: dict[str, _Phrase] = {}
    for ui, t in enumerate(texts):
        # phrases do not cross clause punctuation
        for clause in re.split(r"[,;:()\u2013\u2014\"\u201c\u201d\u00ab\u00bb]|\s-\s", t):
            ws = words(clause)
            low = [w.lower() for w in ws]
            for i in range(len(ws)):
                for n in range(1, max_n + 1):
                    if i + n > len(ws):
                        break
                    g = low[i : i + n]
                    if any(w in stop or w.isdigit() for w in g) or len(g[0]) < 2 or len(g[-1]) < 2 or g[-1].endswith(("'s", "\u2019s")):
                        continue
                    if n == 1 and len(g[0]) < 3:
                        continue
                    key = " ".join(g)
                    ph = out.get(key)
                    if ph is None:
                        out[key] = _Phrase(" ".join(ws[i : i + n]), key, 1, offset + ui)
                    else:
                        ph.count += 1
    return out


def _mmr(cand_emb: np.ndarray, relevance: np.ndarray, k: int, *, diversity: float = 0.5, exclude: Sequence[set[str]] = (), keys: Sequence[str] = ()) -> list[int]:
    """Maximal marginal relevance: relevant yet unlike what is already picked; a candidate whose
    words overlap an earlier pick's (or an ``exclude`` set's) is skipped."""
    chosen: list[int] = []
    pool = list(np.argsort(-relevance))
    taken_words: list[set[str]] = [set(e) for e in exclude]
    sims = cand_emb @ cand_emb.T if cand_emb.size else np.zeros((len(relevance), len(relevance)))
    while pool and len(chosen) < k:
        best, best_score = None, -np.inf
        for c in pool[: 200]:
            red = max((sims[c, j] for j in chosen), default=0.0)
            score = (1 - diversity) * relevance[c] - diversity * red
            if score > best_score:
                best, best_score = c, score
        assert best is not None
        pool.remove(best)
        if keys:
            ws = {_stem(w) for w in keys[best].split()}
            if any(ws & t for t in taken_words):
                continue
            taken_words.append(ws)
        chosen.append(best)
    return chosen


class _Spread:
    """In how many units a phrase occurs (by word prefixes, so "bridge" counts "bridges")."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.stems = [{_stem(w.lower()) for w in words(t)} for t in texts]

    def __call__(self, key: str, a: int = 0, b: int | None = None) -> int:
        need = {_stem(w) for w in key.split()}
        return sum(need <= st for st in self.stems[a:b])


def _phrase_prior(p: _Phrase, spread: int) -> float:
    """How term-like a phrase is before any embedding: said in several sentences, several words
    long when it recurs; a one-off long n-gram ("bread starts with") is rarely a term."""
    n_words = len(p.key.split())
    return math.log1p(spread) * (1.0 + 0.3 * (n_words - 1) if p.count >= 2 else 1.0 / (1.0 + 0.3 * (n_words - 1)))


def _capitalize(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


# ---------------------------------------------------------------------------------------------
# Morphology: Russian titles and terms as a dictionary would write them
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _morph(language: str) -> Any | None:
    """pymorphy3's analyzer for Russian (None for other languages, or if it is not installed)."""
    if base_language(language) != "ru":
        return None
    try:
        import pymorphy3

        return pymorphy3.MorphAnalyzer()
    except Exception:  # not installed: phrases stay as said
        return None


_NOUNISH = {"NOUN"}
_NOT_IN_TERMS = {"VERB", "INFN", "GRND", "PRTS", "ADVB", "PRED", "COMP", "NPRO", "CONJ", "PRCL", "PREP", "INTJ", "NUMR"}


def phrase_ok(key: str, language: str) -> bool:
    """Whether a phrase can be a title or term: in Russian, a noun phrase (a noun in it, no verb,
    adverb, pronoun or function word); any phrase elsewhere."""
    morph = _morph(language)
    if morph is None:
        return True
    tags = [_parse(morph, w).tag.POS for w in key.split()]
    return any(t in _NOUNISH for t in tags) and not any(t in _NOT_IN_TERMS for t in tags)


@lru_cache(maxsize=65536)
def _parse(morph: Any, word: str) -> Any:
    return morph.parse(word)[0]


def display_form(text: str, language: str) -> str:
    """A phrase in its dictionary form where the language has one. In Russian the head (the first
    noun) goes to the nominative, keeping its number, and the adjectives before it agree with it
    ("налоговой декларации" -> "налоговая декларация", "огромных страниц" -> "огромные страницы");
    words after the head keep their case ("возврат налога")."""
    morph = _morph(language)
    if morph is None:
        return text
    ws = text.split()
    parses = [_parse(morph, w) for w in ws]
    head = next((i for i, p in enumerate(parses) if p.tag.POS == "NOUN"), None)
    if head is None:
        return text
    noun = parses[head].inflect({"nomn"}) or parses[head]
    agree = {"nomn", noun.tag.number} if noun.tag.number else {"nomn"}
    if noun.tag.number == "sing" and noun.tag.gender:
        agree.add(noun.tag.gender)
    out = []
    for i, (w, p) in enumerate(zip(ws, parses)):
        if i < head:
            form = p.inflect(agree) or p.inflect({"nomn"})
        elif i == head:
            form = noun
        else:
            form = None
        new = form.word if form is not None else w
        out.append(new[:1].upper() + new[1:] if w[:1].isupper() else new)
    return " ".join(out)


def variant_key(key: str, language: str) -> tuple[str, ...]:
    """What makes two phrases the same term: their words' lemmas in Russian (pymorphy3), their
    6-letter prefixes elsewhere."""
    morph = _morph(language)
    if morph is None:
        return tuple(_stem(w) for w in key.split())
    return tuple(_parse(morph, w).normal_form for w in key.split())


# ---------------------------------------------------------------------------------------------
# Sentences for the notes
# ---------------------------------------------------------------------------------------------
# A sentence that opens with one of these leans on the one before ("They are executed ...",
# "However, ..."): a weaker note out of context, picked only when nothing better is left.
_DEPENDENT = {
    "en": re.compile(r"^\W*(?:it|its|they|them|their|this|these|those|that|he|she|his|her|such|however|but|so|also|otherwise|then|therefore|thus|here|there|instead|both|either|neither|another|other|which)\b", re.IGNORECASE),
    "ru": re.compile(r"^\W*(?:это|этот|эта|эти|этого|он|она|оно|они|его|её|их|такой|такая|такие|однако|но|поэтому|тогда|там|здесь|также|тоже|зато|при этом)(?![^\W_])", re.IGNORECASE),
}


def dependent(text: str, language: str) -> bool:
    pat = _DEPENDENT.get(base_language(language))
    return bool(pat and pat.match(text))


_LEADING = {
    "en": re.compile(r"^(?:(?:so|and|okay|ok|um|uh|well|alright|all right|now|right)\b[,.]?\s+)+", re.IGNORECASE),
    "ru": re.compile(r"^(?:(?:ну|вот|итак|так вот|и|а)\b[,.]?\s+)+", re.IGNORECASE),
}


def clean_sentence(text: str, language: str) -> str:
    """A transcript sentence as a note: a leading discourse cue or filler ("Finally, ...",
    "So, and ...") dropped where enough is left, capitalized."""
    out = text.strip()
    cue = _cue_re(language)
    m = cue.match(out) if cue else None
    if m and len(words(out[m.end() :])) >= 5:
        out = out[m.end() :].lstrip(" ,;:-")
    pat = _LEADING.get(base_language(language))
    if pat and len(words(pat.sub("", out))) >= 3:
        out = pat.sub("", out).strip()
    return _capitalize(out)


def coverage_select(emb: np.ndarray, k: int, *, candidates: Sequence[int] | None = None) -> list[int]:
    """Greedy facility-location selection of ``k`` rows of unit embeddings ``emb``.

    Each pick maximizes how much better the chosen set represents the whole document:
    ``sum_i max(0, sim(i, c) - best_i)``, where ``best_i`` is row i's similarity to its closest
    pick so far. The first pick is therefore the sentence most central to the document
    (highest similarity to the centroid); later ones favour parts of the talk that are not yet
    covered, so a second sentence on an already covered topic gains little (diversity, like MMR,
    without MMR's bias towards the largest topic). Only ``candidates`` (default: all) may be
    picked, but every row counts for coverage. Returns indices in selection (importance) order.
    """
    n = emb.shape[0]
    pool = np.zeros(n, dtype=bool)
    pool[list(range(n)) if candidates is None else list(candidates)] = True
    k = min(k, int(pool.sum()))
    sims = np.clip(emb @ emb.T, 0.0, None)
    best = np.zeros(n, dtype=sims.dtype)
    chosen: list[int] = []
    for _ in range(k):
        gain = np.maximum(sims - best[:, None], 0.0).sum(axis=0)
        gain[~pool] = -np.inf
        c = int(np.argmax(gain))
        chosen.append(c)
        pool[c] = False
        best = np.maximum(best, sims[:, c])
    return chosen


def supported(sentence: str, source: str, stop: frozenset[str], *, min_share: float = 0.9) -> bool:
    """Whether a generated sentence stays inside its source: at least ``min_share`` of its
    content words (by 6-letter prefix) and every number in it occur in the source."""
    src = {_stem(w.lower()) for w in words(source)}
    content = [w.lower() for w in words(sentence) if w.lower() not in stop]
    if len(words(sentence)) < 4 or not content:
        return False
    nums = [w for w in content if any(ch.isdigit() for ch in w)]
    if any(_stem(n) not in src for n in nums):
        return False
    return sum(_stem(w) in src for w in content) / len(content) >= min_share


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------
def summary_budget(minutes: float, chapters: int) -> int:
    return int(max(2, min(MAX_SUMMARY_SENTENCES, max(chapters, round(2 + minutes / 5)))))


def key_point_count(content_units: int) -> int:
    return 1 if content_units < 6 else 2 if content_units < 15 else 3


def term_count(minutes: float) -> int:
    return int(max(5, min(20, round(5 + minutes / 3))))


@dataclass
class NotesBuilder:
    """Notes from a transcript. ``embedder``: MiniLM (None: lexical features only);
    ``abstractive``: BART (None: extractive only)."""

    embedder: Embedder | None = None
    abstractive: Abstractive | None = None
    embedder_model: str = ""
    params: SegmentParams = field(default_factory=SegmentParams)
    _cache: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _lang: str = field(default="en", init=False, repr=False)
    _use_embedder: bool = field(default=True, init=False, repr=False)

    @property
    def model(self) -> str:
        parts = [self.embedder_model] if self.embedder is not None and self._use_embedder and self.embedder_model else []
        if self.abstractive is not None:
            parts.append(self.abstractive.model)
        return ", ".join(parts)

    def _covers(self, texts: Sequence[str]) -> bool:
        """Whether the embedder's vocabulary covers the talk's language: at most
        ``MAX_PIECES_PER_WORD`` word pieces a word on a sample (all-MiniLM-L6-v2's English
        vocabulary: English 1.3, French 2.0, Spanish 2.1, Russian 5.5). Where it does not, its
        vectors say little and cost a lot: the notes use the lexical features alone."""
        count = getattr(self.embedder, "pieces_per_word", None)
        return count is None or count(texts[:200]) <= MAX_PIECES_PER_WORD

    def _embed(self, texts: Sequence[str]) -> np.ndarray | None:
        """Unit-length embeddings; phrases are cached for the build (titles and key terms share
        candidates)."""
        if self.embedder is None or not self._use_embedder or not texts:
            return None
        cache = self._cache
        todo = list(dict.fromkeys(t for t in texts if t not in cache))
        if todo:
            for t, v in zip(todo, _unit_rows(np.asarray(self.embedder.embed(todo), dtype=np.float32))):
                cache[t] = v
        return np.stack([cache[t] for t in texts])

    def build(self, transcript: Transcript) -> Notes:
        self._cache = {}
        lang = self._lang = base_language(transcript.language)
        stop = stop_words(lang)
        units = transcript_units(transcript)
        self._use_embedder = self.embedder is not None
        base = dict(language=lang, duration=transcript.duration, speech_model=transcript.model, model=self.model)
        if not units:
            return Notes(summary=[], chapters=[], key_terms=[], summarizer="extractive", message="empty", **base)
        texts = [u.text for u in units]
        roles = [classify(t, lang) for t in texts]
        self._use_embedder = self.embedder is not None and self._covers(texts)
        base["model"] = self.model
        emb = self._embed(texts)
        lex = lexical_vectors(texts, stop)
        feats = emb if emb is not None else lex
        kernel = similarity_kernel(emb, lex)
        starts = segment(units, kernel, cues=[r.cue for r in roles], params=self.params)
        bounds = list(zip(starts, starts[1:] + [len(units)]))

        # -- summary and key points: per chapter, coverage order over its content sentences
        picks: list[list[int]] = []
        for a, b in bounds:
            content = [i for i in range(a, b) if roles[i].content]
            if not content:
                content = [i for i in range(a, b) if roles[i].kind in {"short", "question"} and len(words(texts[i])) >= 3]
            if not content:
                picks.append([])
                continue
            # sentences that stand on their own first, in coverage order; the others after them
            alone = [i for i in content if not dependent(texts[i], lang)]
            first = coverage_select(feats[a:b], len(alone), candidates=[i - a for i in alone]) if alone else []
            rest = [i - a for i in content if dependent(texts[i], lang)]
            later = coverage_select(feats[a:b], len(rest), candidates=rest) if rest else []
            picks.append([a + i for i in first + later])
        minutes = transcript.duration / 60.0
        budget = summary_budget(minutes, len(bounds))
        in_summary: list[int] = []
        # round-robin: every chapter's best sentence first (longest chapters first), then seconds
        order = sorted(range(len(bounds)), key=lambda c: -(units[bounds[c][1] - 1].end - units[bounds[c][0]].start))
        depth = 0
        while len(in_summary) < budget and any(len(p) > depth for p in picks):
            for c in order:
                if len(in_summary) >= budget:
                    break
                # a chapter keeps at least one sentence for its key points
                if len(picks[c]) > depth + 1:
                    in_summary.append(picks[c][depth])
            depth += 1
        summary_set = set(in_summary)
        chapters: list[Chapter] = []
        titles_taken: list[set[str]] = []
        ptexts = [r.phrase_text(t) for r, t in zip(roles, texts)]
        spread = _Spread(ptexts)
        chapter_phrases = [{k: p for k, p in candidate_phrases(ptexts[a:b], stop, offset=a).items() if phrase_ok(k, lang)} for a, b in bounds]
        centroids = np.stack([_unit_rows(feats[a:b].mean(axis=0)) for a, b in bounds]) if emb is not None else None
        for ci, (a, b) in enumerate(bounds):
            rest = [i for i in picks[ci] if i not in summary_set]
            k = key_point_count(len(picks[ci]))
            key_points = [Sentence(clean_sentence(texts[i], lang), units[i].start) for i in sorted(rest[:k])]
            title = self._title(ci, bounds, roles, chapter_phrases, spread, centroids, titles_taken, stop)
            chapters.append(
                Chapter(
                    start=0.0 if ci == 0 else units[a].start,
                    end=transcript.duration if ci == len(bounds) - 1 else units[b].start,
                    title=title,
                    key_points=key_points,
                    paragraphs=paragraphs(units[a:b]),
                )
            )
        summary = [Sentence(clean_sentence(texts[i], lang), units[i].start) for i in sorted(in_summary)]
        key_terms = self._key_terms(units, ptexts, stop, spread, centroids, minutes)
        notes = Notes(summary=summary, chapters=chapters, key_terms=key_terms, summarizer="extractive", **base)
        if len(units) == 1:
            notes.message = "one_sentence"
        if self.abstractive is not None:
            self._abstract(notes, units, bounds, stop)
        return notes

    # -- titles ---------------------------------------------------------------------------------
    def _title(
        self,
        ci: int,
        bounds: list[tuple[int, int]],
        roles: list[Role],
        chapter_phrases: list[dict[str, _Phrase]],
        spread: _Spread,
        centroids: np.ndarray | None,
        taken: list[set[str]],
        stop: frozenset[str],
    ) -> str:
        """The topic the speaker announced for the chapter ("let us talk about bridges"), else one
        or two key phrases of it: close to its centroid, far from the other chapters', said in
        several of its sentences."""
        a, b = bounds[ci]
        phrases = dict(chapter_phrases[ci])
        announced = ""
        for i in range(a, min(b, a + 2)):
            if roles[i].announced:
                low = [w.lower() for w in words(roles[i].announced)]
                while low and low[0] in stop:
                    low = low[1:]
                while low and low[-1] in stop:
                    low = low[:-1]
                announced = " ".join(low)
                break
        if announced and len(announced.split()) <= 4 and phrase_ok(announced, self._lang):
            # the speaker named the chapter's topic: that is its title
            text = next((p.text for p in phrases.values() if p.key == announced), announced)
            taken.append({_stem(w) for w in announced.split()})
            return _capitalize(display_form(text, self._lang))
        if not phrases:
            return str(ci + 1)
        n_ch = len(bounds)
        prior = {k: _phrase_prior(p, spread(k, a, b)) * (1.0 + math.log(n_ch / max(1, sum(k in cp for cp in chapter_phrases)))) for k, p in phrases.items()}
        cands = sorted(phrases.values(), key=lambda p: prior[p.key], reverse=True)[:24]
        emb = self._embed([c.text for c in cands])
        pri = np.array([prior[c.key] for c in cands])
        if emb is not None and centroids is not None:
            own = emb @ centroids[ci]
            others = np.delete(centroids, ci, axis=0)
            other = (emb @ others.T).max(axis=1) if len(others) else np.zeros(len(cands))
            rel = own - 0.5 * np.clip(other, 0, None) + 0.1 * pri
        else:
            rel = pri / max(1e-9, float(pri.max()))
            emb = np.zeros((0, 0))
        picked = _mmr(emb, rel, 2, diversity=0.6, exclude=taken, keys=[c.key for c in cands]) or [int(np.argmax(rel))]
        names = [cands[picked[0]].text]
        # a second phrase only if it is nearly as relevant as the first
        if len(picked) > 1 and rel[picked[1]] >= 0.8 * rel[picked[0]]:
            names.append(cands[picked[1]].text)
        taken.append({_stem(w) for n in names for w in n.lower().split()})
        return _capitalize(", ".join(display_form(n, self._lang) for n in names))

    # -- key terms ------------------------------------------------------------------------------
    def _key_terms(
        self, units: Sequence[Unit], texts: Sequence[str], stop: frozenset[str], spread: _Spread, centroids: np.ndarray | None, minutes: float
    ) -> list[KeyTerm]:
        """The talk's terms: each close to some chapter's centroid and said in several sentences,
        diverse (MMR), with the time each is first said."""
        phrases = _merge_variants({k: p for k, p in candidate_phrases(texts, stop).items() if phrase_ok(k, self._lang)}, self._lang)
        if len(units) >= 30:
            phrases = {k: p for k, p in phrases.items() if p.count >= 2} or phrases
        if not phrases:
            return []
        prior = {k: _phrase_prior(p, spread(k)) for k, p in phrases.items()}
        cands = sorted(phrases.values(), key=lambda p: prior[p.key], reverse=True)[:100]
        pri = np.array([prior[c.key] for c in cands])
        cemb = self._embed([c.text for c in cands])
        if cemb is not None and centroids is not None:
            rel = (cemb @ centroids.T).max(axis=1) + 0.1 * pri
        else:
            rel = pri / max(1e-9, float(pri.max()))
            cemb = np.zeros((0, 0))
        picked = _mmr(cemb, rel, min(term_count(minutes), len(cands)), diversity=0.4, keys=[c.key for c in cands])
        out = []
        for i in picked:
            c = cands[i]
            term = display_form(c.text if _always_capitalized(c, texts) else c.key, self._lang)
            out.append(KeyTerm(term, _first_time(units[c.first_unit], c.variants), spread(c.key)))
        return sorted(out, key=lambda t: t.first)

    # -- abstractive (BART) ---------------------------------------------------------------------
    def _abstract(self, notes: Notes, units: Sequence[Unit], bounds: list[tuple[int, int]], stop: frozenset[str]) -> None:
        """Map-reduce with the abstractive model: each chapter's text -> its key points, the
        chapters' outputs -> the summary. A generated sentence is kept only if it passes
        :func:`supported` against its source; where none does, the extractive sentences stay."""
        from vidnotes.summarize import split_sentences

        assert self.abstractive is not None
        kept = rejected = 0
        mapped: list[str] = []
        for ch, (a, b) in zip(notes.chapters, bounds):
            source = " ".join(u.text for u in units[a:b])
            gen = list(dict.fromkeys(split_sentences(self.abstractive.summarize_text(source))))
            good = [_capitalize(x) for x in gen if supported(x, source, stop)]
            kept, rejected = kept + len(good), rejected + len(gen) - len(good)
            mapped += good
            if good:
                ch.key_points = [Sentence(x, ch.start) for x in good[:3]]
        whole = " ".join(u.text for u in units)
        gen = list(dict.fromkeys(split_sentences(self.abstractive.summarize_text(" ".join(mapped))))) if mapped else []
        good = [_capitalize(x) for x in gen if supported(x, whole, stop)]
        kept, rejected = kept + len(good), rejected + len(gen) - len(good)
        points = {k.text for ch in notes.chapters for k in ch.key_points}
        summary = [Sentence(x, 0.0) for x in good if x not in points][:MAX_SUMMARY_SENTENCES]
        notes.summary = summary or [x for x in notes.summary if x.text not in points]
        notes.abstractive = {"kept": kept, "rejected": rejected}
        notes.summarizer = "bart" if kept else "extractive"


def _always_capitalized(p: _Phrase, texts: Sequence[str]) -> bool:
    """Whether the phrase is capitalized wherever it is said (a name: "Jezero crater"), not only
    at the start of a sentence."""
    pat = re.compile(r"(?<![^\W_])" + re.escape(p.key) + r"(?![^\W_])", re.IGNORECASE)
    forms = [m.group(0) for t in texts for m in pat.finditer(t)]
    return bool(forms) and all(f[:1].isupper() for f in forms) and any(m.start() > 0 for t in texts for m in pat.finditer(t))


def _merge_variants(phrases: dict[str, _Phrase], language: str) -> dict[str, _Phrase]:
    """Phrases that differ only in their endings ("tax return"/"tax returns", "марсоход"/"марсохода")
    as one: the most frequent form speaks for them, counts add up, the first time is the earliest."""
    groups: dict[tuple[str, ...], list[_Phrase]] = {}
    for p in phrases.values():
        groups.setdefault(variant_key(p.key, language), []).append(p)
    out: dict[str, _Phrase] = {}
    for members in groups.values():
        best = max(members, key=lambda p: (p.count, -p.first_unit))
        merged = _Phrase(best.text, best.key, sum(p.count for p in members), min(p.first_unit for p in members), [p.key for p in sorted(members, key=lambda p: p.first_unit)])
        out[merged.key] = merged
    return out


def _first_time(unit: Unit, keys: Sequence[str]) -> float:
    """When the first of ``keys`` found in ``unit`` is said: the unit's start, moved by the
    phrase's character offset."""
    low = unit.text.lower()
    pos = min((i for i in (low.find(k) for k in keys) if i >= 0), default=-1)
    if pos <= 0 or not unit.text:
        return unit.start
    return unit.start + (unit.end - unit.start) * pos / len(unit.text)


def paragraphs(units: Sequence[Unit], *, target_words: int = 80, min_words: int = 30, pause: float = 1.2) -> list[Paragraph]:
    """Units packed into paragraphs: a new one after ``target_words`` words, or after
    ``min_words`` words at a pause of ``pause`` seconds or more, and at every change of speaker
    (a diarized transcript: one paragraph per turn at least)."""
    out: list[Paragraph] = []
    cur: list[Unit] = []
    n = 0
    for u in units:
        if cur and (n >= target_words or (n >= min_words and u.pause >= pause) or u.speaker != cur[-1].speaker):
            out.append(Paragraph(cur[0].start, cur[-1].end, " ".join(x.text for x in cur), cur[0].speaker))
            cur, n = [], 0
        cur.append(u)
        n += len(words(u.text))
    if cur:
        out.append(Paragraph(cur[0].start, cur[-1].end, " ".join(x.text for x in cur), cur[0].speaker))
    return out


