"""Readers' corrections: stored under the job, applied to what the page shows, turned into training data.

A correction is one JSON object under the job's prefix in the results bucket,
``jobs/<job_id>/feedback/<YYYYmmddTHHMMSSffffff>-<id>.json``, never rewritten:

- ``kind: "transcript"``: a transcript segment (its index, ``start``/``end`` in seconds, the
  ``original`` text as the transcript had it, the ``corrected`` text the reader typed);
- ``kind: "summary"``: a flag on the summary (``original``: the flagged sentence or the whole
  summary, ``comment``: what is wrong), kept for people; it is not training data.

The original text and times come from the stored transcript, never from the client, so a
correction always names a real segment. :func:`prepare_dataset` turns the newest transcript
correction of every segment into a training example in the layout of docs/training.md (the
segment's audio cut from the job's chunks, 16 kHz WAV, plus ``manifest.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vidnotes.audio import SAMPLE_RATE
from vidnotes.jobs import Layout
from vidnotes.storage import NotFound, Storage
from vidnotes.types import Transcript

MAX_TEXT = 1000  # characters of a corrected line or a comment
MAX_SEGMENT_SECONDS = 30.0  # a training example is one Whisper window
FEEDBACK_DIR = "feedback/"


class FeedbackError(ValueError):
    """A correction that cannot be stored; the message says why (shown to the reader)."""


class Correction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    job_id: str
    kind: Literal["transcript", "summary"]
    created: str  # ISO 8601, UTC
    segment: int | None = None  # the transcript segment's index (kind transcript)
    start: float | None = None
    end: float | None = None
    original: str = Field(max_length=20_000)
    corrected: str = Field(default="", max_length=MAX_TEXT)
    comment: str = Field(default="", max_length=MAX_TEXT)


def _clean(text: Any, what: str, *, required: bool) -> str:
    """One line of plain text: whitespace collapsed, control characters refused, bounded."""
    if not isinstance(text, str):
        raise FeedbackError(f"{what} must be text")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text) or "\x7f" in text:
        raise FeedbackError(f"{what} contains control characters")
    text = " ".join(text.split())
    if required and not text:
        raise FeedbackError(f"{what} is empty")
    if len(text) > MAX_TEXT:
        raise FeedbackError(f"{what} is {len(text)} characters long; at most {MAX_TEXT} are kept")
    return text


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _key(job_id: str, created: datetime, ident: str) -> str:
    return Layout(job_id).key(f"{FEEDBACK_DIR}{created.strftime('%Y%m%dT%H%M%S%f')}-{ident}.json")


def correct_segment(results: Storage, job_id: str, transcript: Transcript, index: Any, corrected: Any) -> Correction:
    """Store a reader's correction of transcript segment ``index``; the stored correction."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(transcript.segments):
        raise FeedbackError(f"segment must be a number from 0 to {len(transcript.segments) - 1}")
    seg = transcript.segments[index]
    text = _clean(corrected, "the corrected text", required=True)
    if text == " ".join(seg.text.split()):
        raise FeedbackError("the corrected text is the same as the transcript's")
    created, ident = _now(), uuid.uuid4().hex[:8]
    c = Correction(id=ident, job_id=job_id, kind="transcript", created=created.isoformat(), segment=index,
                   start=round(seg.start, 3), end=round(seg.end, 3), original=seg.text, corrected=text)  # fmt: skip
    results.put_bytes(c.model_dump_json(indent=2).encode(), _key(job_id, created, ident), content_type="application/json")
    return c


def flag_summary(results: Storage, job_id: str, summary: str, sentence: Any, comment: Any) -> Correction:
    """Store a reader's flag on the summary (``sentence``: the flagged sentence, or empty for all)."""
    flagged = _clean(sentence if sentence is not None else "", "the flagged sentence", required=False)
    if flagged and flagged not in " ".join(summary.split()):
        raise FeedbackError("the flagged sentence is not in the summary")
    note = _clean(comment, "the comment", required=True)
    created, ident = _now(), uuid.uuid4().hex[:8]
    c = Correction(id=ident, job_id=job_id, kind="summary", created=created.isoformat(), original=flagged or summary, comment=note)
    results.put_bytes(c.model_dump_json(indent=2).encode(), _key(job_id, created, ident), content_type="application/json")
    return c


def corrections(results: Storage, job_id: str) -> list[Correction]:
    """The job's corrections, oldest first (objects that are not corrections are skipped)."""
    out = []
    for key in results.list(Layout(job_id).key(FEEDBACK_DIR)):
        if not key.endswith(".json"):
            continue
        try:
            out.append(Correction.model_validate_json(results.get_bytes(key)))
        except (ValueError, NotFound):
            continue
    return sorted(out, key=lambda c: c.created)


def latest_per_segment(items: list[Correction]) -> dict[int, Correction]:
    """The newest transcript correction of each segment."""
    out: dict[int, Correction] = {}
    for c in items:
        if c.kind == "transcript" and c.segment is not None:
            out[c.segment] = c  # items are oldest first
    return out


def jobs_with_feedback(results: Storage) -> list[str]:
    """Job ids that have at least one stored correction."""
    found = set()
    for key in results.list("jobs/"):
        parts = key.split("/")
        if len(parts) >= 4 and parts[2] + "/" == FEEDBACK_DIR:
            found.add(parts[1])
    return sorted(found)


def _segment_audio(results: Storage, chunks: list[dict[str, Any]], start: float, end: float, work: Path) -> np.ndarray:
    """The job's audio from ``start`` to ``end`` s, pieced together from its ``chunks`` (chunks.json;
    a span between two chunks, skipped as non-speech, is silence)."""
    from vidnotes.media import read_wav

    n = int(round((end - start) * SAMPLE_RATE))
    out = np.zeros(n, dtype=np.float32)
    for ch in chunks:
        c0, c1 = float(ch["start"]), float(ch["end"])
        if c1 <= start or c0 >= end:
            continue
        path = results.download(ch["key"], work / f"chunk-{int(ch['index']):05d}.wav")
        audio = read_wav(path)
        path.unlink()
        a = max(start, c0)
        src0 = int(round((a - c0) * SAMPLE_RATE))
        dst0 = int(round((a - start) * SAMPLE_RATE))
        take = min(len(audio) - src0, n - dst0, int(round((min(end, c1) - a) * SAMPLE_RATE)))
        if take > 0:
            out[dst0 : dst0 + take] = audio[src0 : src0 + take]
    return out


@dataclass
class FeedbackDataset:
    root: Path
    train: int
    test: int
    skipped: list[str]  # why corrections were left out
    jobs: int


def _split_of(job_id: str, segment: int) -> str:
    """Held out (``test``) for one correction in five, chosen by a hash: stable across runs, so an
    example never moves from test into train as corrections accumulate."""
    return "test" if hashlib.sha256(f"{job_id}:{segment}".encode()).digest()[0] % 5 == 0 else "train"


def prepare_dataset(
    results: Storage, out: Path, *, job_ids: list[str] | None = None, progress: Callable[[str], None] = lambda _m: None
) -> FeedbackDataset:
    """Every job's newest correction per transcript segment as a training example under ``out``
    (``audio/<job>-<segment>.wav`` + ``manifest.jsonl``, docs/training.md). At least one example
    is held out when there are two or more, so the training gate has a test split."""
    from vidnotes.media import write_wav

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    ids = job_ids if job_ids is not None else jobs_with_feedback(results)
    with tempfile.TemporaryDirectory() as tmp:
        for job_id in ids:
            latest = latest_per_segment(corrections(results, job_id))
            progress(f"job {job_id}: {len(latest)} corrected segment(s)")
            try:
                chunks = json.loads(results.get_bytes(Layout(job_id).chunks)) if latest else []
            except NotFound as e:
                skipped += [f"job {job_id} segment {index}: its audio is gone ({e})" for index in sorted(latest)]
                continue
            for index, c in sorted(latest.items()):
                assert c.start is not None and c.end is not None
                if c.end - c.start > MAX_SEGMENT_SECONDS:
                    skipped.append(f"job {job_id} segment {index}: {c.end - c.start:.1f} s is longer than one {MAX_SEGMENT_SECONDS:.0f} s window")
                    continue
                try:
                    audio = _segment_audio(results, chunks, c.start, c.end, Path(tmp))
                except NotFound as e:
                    skipped.append(f"job {job_id} segment {index}: its audio is gone ({e})")
                    continue
                rel = f"audio/{job_id}-{index:05d}.wav"
                write_wav(out / rel, audio)
                rows.append({"audio": rel, "text": c.corrected, "split": _split_of(job_id, index), "job_id": job_id,
                             "segment": index, "start": c.start, "end": c.end, "correction": c.id})  # fmt: skip
    if len(rows) >= 2 and all(r["split"] == "train" for r in rows):
        rows[-1]["split"] = "test"
    if len(rows) >= 2 and all(r["split"] == "test" for r in rows):
        rows[0]["split"] = "train"
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    train = sum(r["split"] == "train" for r in rows)
    return FeedbackDataset(root=out, train=train, test=len(rows) - train, skipped=skipped, jobs=len({r["job_id"] for r in rows}))
