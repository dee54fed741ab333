"""Typed results shared by the inference core, the writers and the functions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_SPEAKERS = 32  # the most speakers a run may ask for (--speakers, payloads, DAG params)


def speaker_count(value: str | int) -> int | None:
    """``"auto"`` -> None (estimate the count), ``"3"`` or ``3`` -> 3; anything else, a bool, or a
    count outside 1-``MAX_SPEAKERS`` raises ValueError. The one rule for ``speakers`` everywhere."""
    v = value.strip().lower() if isinstance(value, str) else value
    if v == "auto":
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if isinstance(v, str) and v.isdigit() and 1 <= int(v) <= MAX_SPEAKERS:
        return int(v)
    raise ValueError(f'speakers must be "auto" or a count from 1 to {MAX_SPEAKERS}, got {value!r}')


def speaker_number(value: str | int) -> int:
    """A speaker's number as readers see it (``"2"`` -> 2, "Speaker 2"), 1-``MAX_SPEAKERS``; the
    keys of ``speaker_names``. Anything else raises ValueError."""
    try:
        n = None if str(value).strip().lower() == "auto" else speaker_count(value)
    except ValueError:
        n = None
    if n is None:
        raise ValueError(f"a speaker number is 1 to {MAX_SPEAKERS}, got {value!r}")
    return n


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of speech with its text; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    speaker: str | None = None  # "Speaker 1", ... when diarized (vidnotes.diarize), else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if self.speaker is not None:
            d["speaker"] = self.speaker
        return d


@dataclass(slots=True)
class Transcript:
    segments: list[Segment]
    duration: float
    language: str = "en"
    model: str = ""  # "<task>/<version>" of the model that produced it

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "duration": round(self.duration, 3),
            "model": self.model,
            "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        return cls(
            segments=[
                Segment(float(s["start"]), float(s["end"]), str(s["text"]), None if s.get("speaker") is None else str(s["speaker"]))
                for s in data["segments"]
            ],
            duration=float(data["duration"]),
            language=str(data.get("language", "en")),
            model=str(data.get("model", "")),
        )


@dataclass(slots=True)
class Summary:
    text: str
    key_points: list[str] = field(default_factory=list)
    summarizer: str = ""  # backend: "bart" or "extractive"
    model: str = ""  # "<task>/<version>" of the model used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
