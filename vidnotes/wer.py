"""Word error rate with one documented normalizer.

Normalization (applied to reference and hypothesis alike): Unicode NFKC, lowercase, "&" -> "and",
every character that is not a letter, digit, apostrophe or space becomes a space, apostrophes at
word edges are dropped, whitespace collapses. Numbers are *not* rewritten ("1" and "one" differ),
so number formatting counts as an error: a real difference in a transcript a person reads.
Hesitation sounds (uh, um, hm, mm, er, ah, ...) are dropped: references of spontaneous speech
write them and Whisper mostly does not, as in Whisper's own English normalizer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_NON_WORD = re.compile(r"[^\w' ]+|_")
_EDGE_APOS = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")
FILLERS = frozenset({"uh", "um", "umm", "uhm", "hm", "hmm", "mm", "mhm", "er", "erm", "ah", "eh"})


def normalize(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower().replace("&", " and ").replace("\u2019", "'")
    t = _NON_WORD.sub(" ", t)
    t = _EDGE_APOS.sub(" ", t)
    return " ".join(w for w in t.split() if w not in FILLERS)


def edit_counts(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) after normalization: Levenshtein over words."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits over total reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for r, h in zip(references, hypotheses):
        e, n = edit_counts(r, h)
        edits += e
        words += n
    return edits / words if words else 0.0
