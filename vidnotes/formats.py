"""Transcript writers, one class per format (TXT, SRT, VTT, JSON), chosen by :func:`get_writer`."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, TextIO

from vidnotes.types import Transcript

FORMATS = ("txt", "srt", "vtt", "json")


def format_timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = False) -> str:
    """``[HH:]MM:SS.mmm`` (or with a comma for SRT)."""
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    head = f"{h:02d}:" if always_hours or h else ""
    return f"{head}{m:02d}:{s:02d}{decimal}{ms:03d}"


def _cue_text(text: str) -> str:
    # a blank line ends a cue in SRT and VTT: keep each cue on non-empty lines
    return "\n".join(line for line in text.strip().splitlines() if line.strip()) or "..."


def _speaker_prefix(speaker: str | None) -> str:
    """``[Speaker 1] `` before a diarized segment's text (TXT, SRT); nothing without a speaker."""
    return f"[{' '.join(speaker.split())}] " if speaker else ""


class ResultWriter(ABC):
    extension: ClassVar[str]

    @abstractmethod
    def write(self, transcript: Transcript, file: TextIO) -> None: ...

    def render(self, transcript: Transcript) -> str:
        import io

        buf = io.StringIO()
        self.write(transcript, buf)
        return buf.getvalue()

    def save(self, transcript: Transcript, path: Path) -> Path:
        path = Path(path)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            self.write(transcript, f)
        return path


class WriteTXT(ResultWriter):
    extension = "txt"

    def write(self, transcript: Transcript, file: TextIO) -> None:
        for seg in transcript.segments:
            print(_speaker_prefix(seg.speaker) + seg.text.strip(), file=file)


class WriteSRT(ResultWriter):
    extension = "srt"

    def write(self, transcript: Transcript, file: TextIO) -> None:
        for i, seg in enumerate(transcript.segments, start=1):
            start = format_timestamp(seg.start, decimal=",", always_hours=True)
            end = format_timestamp(seg.end, decimal=",", always_hours=True)
            # a line of the text that looks like a timing line would start a cue of its own, and
            # SRT has no escapes: "-->" inside the text becomes "->"
            text = _speaker_prefix(seg.speaker) + _cue_text(seg.text).replace("-->", "->")
            print(f"{i}\n{start} --> {end}\n{text}\n", file=file)


class WriteVTT(ResultWriter):
    extension = "vtt"

    def write(self, transcript: Transcript, file: TextIO) -> None:
        print("WEBVTT\n", file=file)
        for seg in transcript.segments:
            # "-->" inside a cue would end its timing line; "<" and "&" are markup in VTT
            text = _cue_text(seg.text).replace("&", "&amp;").replace("<", "&lt;").replace("-->", "--&gt;")
            if seg.speaker:
                # a voice span: <v Speaker 1>text (the annotation ends at ">", so none in the name)
                name = " ".join(seg.speaker.replace(">", "").replace("&", "&amp;").replace("<", "&lt;").split())
                text = f"<v {name}>{text}"
            print(f"{format_timestamp(seg.start)} --> {format_timestamp(seg.end)}\n{text}\n", file=file)


class WriteJSON(ResultWriter):
    extension = "json"

    def write(self, transcript: Transcript, file: TextIO) -> None:
        json.dump(transcript.to_dict(), file, ensure_ascii=False, indent=2)
        file.write("\n")


_WRITERS: dict[str, type[ResultWriter]] = {w.extension: w for w in (WriteTXT, WriteSRT, WriteVTT, WriteJSON)}


def get_writer(fmt: str) -> ResultWriter:
    try:
        return _WRITERS[fmt.lower()]()
    except KeyError:
        raise ValueError(f"unknown transcript format {fmt!r}; choose one of {', '.join(FORMATS)}") from None
