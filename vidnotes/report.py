"""The notes as a reader gets them: ``notes.pdf`` (reportlab), ``notes.md`` and ``chapters.vtt``.

The PDF: title, metadata, a table of contents whose entries link to the chapters (and a PDF
outline), the summary, each chapter with its time span and key points, the key terms with the
time each is first said, and the transcript as paragraphs under the chapter headings. Fixed
labels follow the transcript's language (English and Russian; English otherwise). DejaVu fonts
cover non-ASCII text. Everything taken from the transcript is escaped for its format: reportlab
paragraphs, Markdown/HTML and WebVTT all parse markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import KeepTogether, ListFlowable, ListItem, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from vidnotes.formats import format_timestamp
from vidnotes.notes import Notes
from vidnotes.types import Transcript

FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"), Path(__file__).with_name("fonts")]

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "source": "Source", "duration": "Duration", "date": "Date", "language": "Language", "speech_model": "Speech model",
        "notes_by": "Notes", "job": "Job", "contents": "Contents", "summary": "Summary", "chapters": "Chapters",
        "key_points": "Key points", "key_terms": "Key terms", "transcript": "Transcript", "chapter": "Chapter",
        "empty": "No speech was recognized: there is nothing to summarize.",
        "one_sentence": "The transcript is a single sentence: these notes are that sentence.",
        "no_summary": "(no sentence of the talk stands as a summary)", "no_speech": "(no speech was recognized)",
    },
    "ru": {
        "source": "Источник", "duration": "Длительность", "date": "Дата", "language": "Язык", "speech_model": "Модель речи",
        "notes_by": "Конспект", "job": "Задание", "contents": "Содержание", "summary": "Краткое содержание", "chapters": "Главы",
        "key_points": "Ключевые мысли", "key_terms": "Ключевые термины", "transcript": "Расшифровка", "chapter": "Глава",
        "empty": "Речь не распознана: конспектировать нечего.",
        "one_sentence": "Расшифровка состоит из одного предложения: конспект и есть это предложение.",
        "no_summary": "(ни одно предложение доклада не годится для краткого содержания)", "no_speech": "(речь не распознана)",
    },
}  # fmt: skip


def labels(language: str) -> dict[str, str]:
    return LABELS.get((language or "en").split("-")[0].lower(), LABELS["en"])


def clock(seconds: float) -> str:
    """``M:SS`` or ``H:MM:SS``."""
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


@dataclass(frozen=True)
class NotesDocument:
    title: str
    source: str
    duration: float
    transcript: Transcript
    notes: Notes
    job_id: str = ""

    def meta(self, generated: str) -> list[tuple[str, str]]:
        lab = labels(self.notes.language)
        n = self.notes
        rows = [
            (lab["source"], self.source),
            (lab["duration"], format_timestamp(self.duration, always_hours=True).split(".")[0]),
            (lab["date"], generated),
            (lab["language"], n.language),
            (lab["speech_model"], self.transcript.model or n.speech_model or "unknown"),
            (lab["notes_by"], f"{n.summarizer or 'none'} ({n.model or 'no model'})"),
        ]
        if self.job_id:
            rows.append((lab["job"], self.job_id))
        return rows

    def message(self) -> str:
        return labels(self.notes.language).get(self.notes.message, "") if self.notes.message else ""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _fonts() -> tuple[str, str]:
    """(regular, bold) font names: DejaVu Sans where installed, else Helvetica (Latin-1 only)."""
    for d in FONT_DIRS:
        regular, bold = d / "DejaVuSans.ttf", d / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
            pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
            return "DejaVuSans", "DejaVuSans-Bold"
    return "Helvetica", "Helvetica-Bold"


def _styles() -> dict[str, ParagraphStyle]:
    regular, bold = _fonts()
    base = getSampleStyleSheet()
    ink, muted, accent = colors.HexColor("#1b1b1b"), colors.HexColor("#555555"), colors.HexColor("#1d3557")
    return {
        "title": ParagraphStyle("t", parent=base["Title"], fontName=bold, fontSize=20, leading=24, alignment=0, textColor=ink),
        "h": ParagraphStyle("h", parent=base["Heading2"], fontName=bold, fontSize=14, leading=18, spaceBefore=10, spaceAfter=4, textColor=accent, keepWithNext=1),
        "h3": ParagraphStyle("h3", parent=base["Heading3"], fontName=bold, fontSize=11.5, leading=15, spaceBefore=8, spaceAfter=2, textColor=ink, keepWithNext=1),
        "body": ParagraphStyle("b", parent=base["BodyText"], fontName=regular, fontSize=10.5, leading=14.5, textColor=ink),
        "summary": ParagraphStyle("s", parent=base["BodyText"], fontName=regular, fontSize=11, leading=16, textColor=ink),
        "meta": ParagraphStyle("m", parent=base["BodyText"], fontName=regular, fontSize=8.5, leading=11, textColor=muted),
        "toc": ParagraphStyle("toc", parent=base["BodyText"], fontName=regular, fontSize=10.5, leading=15, textColor=ink),
        "time": ParagraphStyle("ts", parent=base["BodyText"], fontName=regular, fontSize=8.5, leading=14.5, textColor=accent),
        "terms": ParagraphStyle("kt", parent=base["BodyText"], fontName=regular, fontSize=10, leading=15, textColor=ink),
        "note": ParagraphStyle("n", parent=base["BodyText"], fontName=regular, fontSize=10, leading=14, textColor=muted),
    }


def _x(text: str) -> str:
    return escape(text).replace("\n", "<br/>")


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(_x(text), style)


def _turn(p: Any, style: ParagraphStyle) -> Paragraph:
    """A transcript paragraph, its speaker in bold before it when the transcript is diarized."""
    who = f'<b><font color="#1d3557">{_x(p.speaker)}:</font></b> ' if getattr(p, "speaker", None) else ""
    return Paragraph(who + _x(p.text), style)


class _Doc(SimpleDocTemplate):
    """Adds a PDF outline entry for every flowable that carries ``_outline`` (title, key, level)."""

    def afterFlowable(self, flowable: Any) -> None:  # noqa: N802 (reportlab's name)
        entry = getattr(flowable, "_outline", None)
        if entry:
            title, key, level = entry
            self.canv.bookmarkPage(key)
            self.canv.addOutlineEntry(title, key, level=level, closed=False)


def _outlined(p: Paragraph, title: str, key: str, level: int) -> Paragraph:
    p._outline = (title, key, level)  # type: ignore[attr-defined]
    return p


def _chapter_label(i: int, title: str) -> str:
    return f"{i}. {title}"


def render_notes(doc: NotesDocument, out: Path) -> Path:
    st = _styles()
    n = doc.notes
    lab = labels(n.language)
    story: list[Any] = [_p(doc.title, st["title"])]
    meta = Table([[_p(k, st["meta"]), _p(v, st["meta"])] for k, v in doc.meta(_now())], colWidths=[32 * mm, 138 * mm], hAlign="LEFT")
    meta.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 0), ("TOPPADDING", (0, 0), (-1, -1), 0), ("LEFTPADDING", (0, 0), (0, -1), 0)]))
    story += [meta, Spacer(1, 4 * mm)]
    if doc.message():
        story.append(_p(doc.message(), st["note"]))
    if n.chapters:
        story.append(_outlined(_p(lab["contents"], st["h"]), lab["contents"], "contents", 0))
        rows = [
            [Paragraph(f'<a href="#ch{i}" color="#1d3557">{clock(c.start)}</a>', st["time"]),
             Paragraph(f'<a href="#ch{i}">{_x(_chapter_label(i, c.title))}</a>', st["toc"])]
            for i, c in enumerate(n.chapters, start=1)
        ]  # fmt: skip
        toc = Table(rows, colWidths=[16 * mm, 154 * mm], hAlign="LEFT")
        toc.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1), ("TOPPADDING", (0, 0), (-1, -1), 0), ("LEFTPADDING", (0, 0), (0, -1), 0)]))
        story.append(toc)
    story.append(_outlined(_p(lab["summary"], st["h"]), lab["summary"], "summary", 0))
    story.append(_p(n.summary_text or (lab["empty"] if n.message == "empty" else lab["no_summary"]), st["summary"]))
    if n.chapters:
        story.append(_outlined(_p(lab["chapters"], st["h"]), lab["chapters"], "chapters", 0))
        for i, c in enumerate(n.chapters, start=1):
            head = Paragraph(f'<a name="ch{i}"/>{_x(_chapter_label(i, c.title))} <font size="9" color="#555555">{clock(c.start)}–{clock(c.end)}</font>', st["h3"])
            block: list[Any] = [_outlined(head, _chapter_label(i, c.title), f"chapter{i}", 1)]
            if c.key_points:
                block.append(ListFlowable([ListItem(_p(k.text, st["body"]), leftIndent=12) for k in c.key_points], bulletType="bullet", start="•", leftIndent=12))
            story.append(KeepTogether(block))
    if n.key_terms:
        story.append(_outlined(_p(lab["key_terms"], st["h"]), lab["key_terms"], "terms", 0))
        terms = " · ".join(f'<b>{_x(t.term)}</b> <font size="8.5" color="#1d3557">{clock(t.first)}</font>' for t in n.key_terms)
        story.append(Paragraph(terms, st["terms"]))
    story.append(_outlined(_p(lab["transcript"], st["h"]), lab["transcript"], "transcript", 0))
    if not any(c.paragraphs for c in n.chapters):
        story.append(_p(lab["no_speech"], st["body"]))
    for i, c in enumerate(n.chapters, start=1):
        if not c.paragraphs:
            continue
        story.append(Paragraph(f'<a name="tr{i}"/>{_x(_chapter_label(i, c.title))}', st["h3"]))
        rows = [[_p(clock(p.start), st["time"]), _turn(p, st["body"])] for p in c.paragraphs]
        t = Table(rows, colWidths=[14 * mm, 156 * mm], hAlign="LEFT")
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 4), ("LEFTPADDING", (0, 0), (0, -1), 0)]))
        story.append(t)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    _Doc(
        str(tmp), pagesize=A4, title=doc.title, author="vidnotes", subject=f"Notes of {doc.source}",
        leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm, bottomMargin=18 * mm,
    ).build(story)  # fmt: skip
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: str) -> str:
    """Transcript text as literal Markdown: HTML escaped, Markdown punctuation backslashed, and
    a line that would start a list, quote or heading neutralized."""
    out = escape(" ".join(text.split()), {'"': "&quot;"})
    out = _MD_SPECIAL.sub(r"\\\1", out)
    out = re.sub(r"^(\d+)([.)])", r"\1\\\2", out)
    out = re.sub(r"^([-=>])", r"\\\1", out)
    return out


def render_markdown(doc: NotesDocument) -> str:
    n = doc.notes
    lab = labels(n.language)
    lines = [f"# {md_escape(doc.title)}", ""]
    lines += [f"- **{k}:** {md_escape(v)}" for k, v in doc.meta(_now())]
    lines.append("")
    if doc.message():
        lines += [f"_{md_escape(doc.message())}_", ""]
    if n.chapters:
        lines += [f"## {lab['contents']}", ""]
        lines += [f"{i}. [{md_escape(c.title)}](#chapter-{i}) ({clock(c.start)})" for i, c in enumerate(n.chapters, start=1)]
        lines.append("")
    lines += [f"## {lab['summary']}", "", md_escape(n.summary_text) or md_escape(lab["empty"] if n.message == "empty" else lab["no_summary"]), ""]
    if n.chapters:
        lines += [f"## {lab['chapters']}", ""]
        for i, c in enumerate(n.chapters, start=1):
            lines += [f'<a id="chapter-{i}"></a>', "", f"### {i}. {md_escape(c.title)} ({clock(c.start)}–{clock(c.end)})", ""]
            lines += [f"- {md_escape(k.text)}" for k in c.key_points]
            lines.append("")
    if n.key_terms:
        lines += [f"## {lab['key_terms']}", ""]
        lines += [f"- **{md_escape(t.term)}** ({clock(t.first)})" for t in n.key_terms]
        lines.append("")
    lines += [f"## {lab['transcript']}", ""]
    if not any(c.paragraphs for c in n.chapters):
        lines += [md_escape(lab["no_speech"]), ""]
    for i, c in enumerate(n.chapters, start=1):
        if not c.paragraphs:
            continue
        lines += [f"### {i}. {md_escape(c.title)}", ""]
        for p in c.paragraphs:
            who = f" {md_escape(p.speaker)}:" if p.speaker else ""
            lines += [f"**[{clock(p.start)}]{who}** {md_escape(p.text)}", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# WebVTT chapters
# ---------------------------------------------------------------------------------------------
def render_chapters_vtt(notes: Notes) -> str:
    """A WebVTT chapters track (``<track kind="chapters">``): one cue per chapter, its title."""
    out = ["WEBVTT", ""]
    for i, c in enumerate(notes.chapters, start=1):
        end = max(c.end, c.start + 0.001)
        title = " ".join(c.title.split()).replace("&", "&amp;").replace("<", "&lt;").replace("-->", "--&gt;") or str(i)
        out += [f"chapter-{i}", f"{format_timestamp(c.start, always_hours=True)} --> {format_timestamp(end, always_hours=True)}", title, ""]
    return "\n".join(out)
