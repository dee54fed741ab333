"""The notes PDF (reportlab): title, source, duration, date, model versions, summary, key points
and the full transcript with timestamps. DejaVu fonts cover non-ASCII text; every piece of text
from the transcript is escaped, since reportlab paragraphs parse markup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import ListFlowable, ListItem, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from vidnotes.formats import format_timestamp
from vidnotes.types import Summary, Transcript

FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"), Path(__file__).with_name("fonts")]


@dataclass(frozen=True)
class NotesDocument:
    title: str
    source: str
    duration: float
    transcript: Transcript
    summary: Summary
    job_id: str = ""


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
    return {
        "title": ParagraphStyle("t", parent=base["Title"], fontName=bold, fontSize=20, leading=24),
        "h": ParagraphStyle("h", parent=base["Heading2"], fontName=bold, spaceBefore=8),
        "body": ParagraphStyle("b", parent=base["BodyText"], fontName=regular, fontSize=10.5, leading=14),
        "meta": ParagraphStyle("m", parent=base["BodyText"], fontName=regular, fontSize=9, textColor=colors.HexColor("#444444")),
        "time": ParagraphStyle("ts", parent=base["BodyText"], fontName=regular, fontSize=9, textColor=colors.HexColor("#1d3557")),
    }


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def render_notes(doc: NotesDocument, out: Path) -> Path:
    st = _styles()
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    story: list = [_p(doc.title, st["title"])]
    meta = [
        ("Source", doc.source),
        ("Duration", format_timestamp(doc.duration, always_hours=True).split(".")[0]),
        ("Date", generated),
        ("Speech model", doc.transcript.model or "unknown"),
        ("Summary", f"{doc.summary.summarizer or 'none'} ({doc.summary.model or 'no model'})"),
    ]
    if doc.job_id:
        meta.append(("Job", doc.job_id))
    table = Table([[_p(k, st["meta"]), _p(v, st["meta"])] for k, v in meta], colWidths=[30 * mm, 140 * mm])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    story += [table, Spacer(1, 6 * mm), _p("Summary", st["h"])]
    story.append(_p(doc.summary.text or "(the transcript is empty: nothing to summarize)", st["body"]))
    if doc.summary.key_points:
        story += [_p("Key points", st["h"])]
        story.append(ListFlowable([ListItem(_p(k, st["body"])) for k in doc.summary.key_points], bulletType="bullet"))
    story += [_p("Transcript", st["h"])]
    if not doc.transcript.segments:
        story.append(_p("(no speech was recognized)", st["body"]))
    rows = [[_p(format_timestamp(s.start, always_hours=True).split(".")[0], st["time"]), _p(s.text.strip(), st["body"])] for s in doc.transcript.segments]
    if rows:
        t = Table(rows, colWidths=[20 * mm, 150 * mm], repeatRows=0)
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
        story.append(t)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    SimpleDocTemplate(
        str(tmp), pagesize=A4, title=doc.title, author="vidnotes", subject=f"Notes of {doc.source}",
        leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm, bottomMargin=18 * mm,
    ).build(story)  # fmt: skip
    tmp.replace(out)
    return out
