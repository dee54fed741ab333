"""Word error rate with one documented normalizer.

Normalization (applied to reference and hypothesis alike): Unicode NFKC, lowercase, "&" -> "and",
every character that is not a letter, digit, apostrophe or space becomes a space, apostrophes at
word edges are dropped, whitespace collapses. Numbers are *not* rewritten ("1" and "one" differ),
so number formatting counts as an error: a real difference in a transcript a person reads.
Hesitation sounds (uh, um, hm, mm, er, ah, ...) are dropped: references of spontaneous speech
write them and Whisper mostly does not, as in Whisper's own English normalizer.

A second normalizer, ``whisper`` (:func:`normalizer`), is Whisper's own text normalizer (the
``whisper-normalizer`` package: the normalizer of the Whisper paper and of the Open ASR
leaderboard): for English it also writes numbers as digits ("eight" -> "8"), expands contractions
and colloquial forms ("we're gonna" -> "we are going to") and standardizes British spellings, so it
scores what was recognized, not how it was formatted; for other languages it is Whisper's basic
normalizer. The training gate scores with it and records the literal WER beside it
(docs/training.md, "Formatting is not forgetting"). It is a training/evaluation dependency, never
imported by the inference functions.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache

_NON_WORD = re.compile(r"[^\w' ]+|_")
_EDGE_APOS = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")
FILLERS = frozenset({"uh", "um", "umm", "uhm", "hm", "hmm", "mm", "mhm", "er", "erm", "ah", "eh"})


def normalize(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower().replace("&", " and ").replace("\u2019", "'")
    t = _NON_WORD.sub(" ", t)
    t = _EDGE_APOS.sub(" ", t)
    return " ".join(w for w in t.split() if w not in FILLERS)


NORMALIZERS = ("whisper", "vidnotes")  # names for normalizer(): Whisper's, and normalize() above (literal)


@cache
def normalizer(name: str = "vidnotes", language: str = "en") -> Callable[[str], str]:
    """The text normalizer called ``name`` (:data:`NORMALIZERS`) for ``language``."""
    if name == "vidnotes":
        return normalize
    if name != "whisper":
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, not {name!r}")
    try:
        if language == "en":
            from whisper_normalizer.english import EnglishTextNormalizer as Normalizer
        else:
            from whisper_normalizer.basic import BasicTextNormalizer as Normalizer
    except ImportError as e:  # pragma: no cover - the train extra installs it
        raise RuntimeError("the 'whisper' normalizer needs the whisper-normalizer package (pip install '.[train]')") from e
    whisper = Normalizer()
    return lambda text: normalize(whisper(text))


def edit_counts(reference: str, hypothesis: str, norm: Callable[[str], str] = normalize) -> tuple[int, int]:
    """(word edits, reference words) after normalization (``norm``): Levenshtein over words."""
    ref, hyp = norm(reference).split(), norm(hypothesis).split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(references: Sequence[str], hypotheses: Sequence[str], norm: Callable[[str], str] = normalize) -> float:
    """Corpus WER: total word edits over total reference words, after ``norm``."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for r, h in zip(references, hypotheses):
        e, n = edit_counts(r, h, norm)
        edits += e
        words += n
    return edits / words if words else 0.0
