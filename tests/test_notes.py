"""Notes: units with times, sentence roles, chapters, titles, key points, summary, key terms,
paragraphs, the four outputs (JSON, Markdown, WebVTT chapters, PDF), other languages, bad input.

On the store's real MiniLM (``make models``); transcripts are built here with known topics."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from vidnotes.notes import SCHEMA, Notes, NotesBuilder, classify, clean_sentence, stop_words, supported, transcript_units, words
from vidnotes.report import NotesDocument, render_chapters_vtt, render_markdown, render_notes
from vidnotes.types import Segment, Transcript

EN = {
    "bread": [
        "Good sourdough bread starts with a lively starter made from flour and water.",
        "Feed the starter the night before so it is bubbly when you mix the dough.",
        "Mix the flour, water, salt and starter, then let the dough rest for an hour.",
        "Stretch and fold the dough every half hour to build gluten strength.",
        "Shape the loaf tightly and let it proof overnight in the fridge.",
        "Bake the bread in a hot Dutch oven so the crust turns dark and crisp.",
        "Let the loaf cool completely before slicing or the crumb will be gummy.",
    ],
    "mars": [
        "The rover landed in Jezero crater on Mars in February.",
        "Its mission is to search the ancient lake bed for signs of past microbial life.",
        "The rover drills rock cores and seals them in tubes for a future return mission.",
        "A small helicopter flew alongside it, the first powered flight on another planet.",
        "Radio signals take up to twenty minutes to travel between Earth and Mars.",
        "Engineers plan each day's drive from images the rover sends back to Earth.",
        "Dust storms on the red planet can cover the solar panels and block sunlight.",
    ],
    "tax": [
        "Your income tax return is due at the end of April.",
        "Collect your salary statements, bank interest and receipts for deductible expenses.",
        "Charitable donations and some medical costs can reduce your taxable income.",
        "If you are self-employed you must also pay quarterly estimated taxes.",
        "Filing electronically gets your refund to you faster than mailing paper forms.",
        "Late filing can lead to penalties and interest on the tax you owe.",
        "Keep copies of your tax returns and receipts for at least seven years.",
    ],
}
EN_TALK = (
    ["Hello everyone, and welcome.", *EN["bread"], "Next, let us talk about Mars.", *EN["mars"]]
    + ["Finally, a few words about taxes.", *EN["tax"], "Thank you for listening."]
)
RU = {
    "bread": [
        "Хороший хлеб начинается с живой закваски из муки и воды.",
        "Закваску подкармливают накануне вечером, чтобы утром она была пузырчатой.",
        "Муку, воду, соль и закваску смешивают и оставляют тесто отдыхать на час.",
        "Каждые полчаса тесто растягивают и складывают, чтобы укрепить клейковину.",
        "Буханку плотно формуют и оставляют расстаиваться на ночь в холодильнике.",
        "Хлеб выпекают в горячей чугунной кастрюле, и корка становится тёмной и хрустящей.",
    ],
    "mars": [
        "Марсоход совершил посадку в кратере Езеро на Марсе в феврале.",
        "Его задача состоит в поиске следов древней микробной жизни на дне высохшего озера.",
        "Марсоход бурит породу и запечатывает образцы в пробирки для будущей доставки на Землю.",
        "Рядом с марсоходом летал небольшой вертолёт, совершивший первый полёт на другой планете.",
        "Радиосигнал идёт от Земли до Марса до двадцати минут.",
        "Пыльные бури на красной планете покрывают солнечные панели марсохода.",
    ],
    "tax": [
        "Декларацию о подоходном налоге нужно подать до конца апреля.",
        "Соберите справки о зарплате, банковских процентах и квитанции о налоговых вычетах.",
        "Благотворительные пожертвования и расходы на лечение уменьшают налогооблагаемый доход.",
        "Индивидуальные предприниматели платят авансовые платежи по налогу каждый квартал.",
        "Электронная подача налоговой декларации ускоряет возврат налога.",
        "За опоздание с декларацией начисляются штрафы и пени на сумму налога.",
    ],
}
RU_TALK = ["Здравствуйте, коллеги.", *RU["bread"], "Теперь поговорим о Марсе.", *RU["mars"], "Перейдём к налогам.", *RU["tax"], "Спасибо за внимание."]


def as_transcript(sentences: list[str], language: str = "en", *, gap: float = 0.3, per_word: float = 0.4) -> Transcript:
    segs, t = [], 0.0
    for s in sentences:
        d = per_word * len(words(s))
        segs.append(Segment(t, t + d, s))
        t += d + gap
    return Transcript(segments=segs, duration=t, language=language, model="whisper/test")


@pytest.fixture(scope="module")
def builder(store) -> NotesBuilder:
    from vidnotes.summarize import load_notes_builder

    b = load_notes_builder(store)
    assert b.embedder is not None and b.abstractive is None
    return b


def chapter_of(notes: Notes, t: float) -> int:
    return max(i for i, c in enumerate(notes.chapters) if c.start <= t + 1e-6)


def start_of(tr: Transcript, text: str) -> float:
    return next(s.start for s in tr.segments if s.text == text)


def doc_of(notes: Notes, tr: Transcript, title: str = "A talk") -> NotesDocument:
    return NotesDocument(title=title, source="s3://inbox/talk.mp4", duration=tr.duration, transcript=tr, notes=notes, job_id="0123456789abcdef")


# ---------------------------------------------------------------------------------------------
# Model-free parts
# ---------------------------------------------------------------------------------------------
def test_units_carry_times_across_segments_and_unpunctuated_runs() -> None:
    tr = Transcript(
        segments=[Segment(0.0, 4.0, "The first sentence ends here. The second one"), Segment(5.0, 7.0, "goes on into the next segment."), Segment(9.0, 10.0, "Dr. Smith agrees.")],
        duration=10.0,
    )
    units = transcript_units(tr)
    assert [u.text for u in units] == ["The first sentence ends here.", "The second one goes on into the next segment.", "Dr. Smith agrees."]
    assert units[0].start == 0.0 and units[0].end == pytest.approx(4.0 * 29 / 43)  # interpolated by characters
    assert units[1].start == units[0].end and units[1].end == 7.0
    assert units[2].pause == pytest.approx(2.0)
    flat = Transcript(segments=[Segment(i * 10.0, i * 10.0 + 9.0, " ".join(["word"] * 35)) for i in range(4)], duration=40.0)
    units = transcript_units(flat)  # no punctuation at all: closed at segment ends once long enough
    assert len(units) == 2 and all(len(words(u.text)) == 70 for u in units)
    assert transcript_units(Transcript(segments=[], duration=0.0)) == []


@pytest.mark.parametrize(
    ("text", "lang", "kind", "announced"),
    [
        ("Next, let us talk about bridges.", "en", "transition", "bridges"),
        ("Finally, a few words about taxes.", "en", "transition", "taxes"),
        ("Okay, so now let's move on to the results.", "en", "transition", "the results"),
        ("So the rover drills rock cores and seals them in tubes.", "en", "content", ""),
        ("Now the dough rests for one hour in a warm place.", "en", "content", ""),
        ("In summary, rivers carve valleys and carry sand to the sea.", "en", "content", ""),
        ("Thank you for listening.", "en", "social", ""),
        ("Hello everyone, and welcome.", "en", "social", ""),
        ("Why does the crust turn dark in a hot oven?", "en", "question", ""),
        ("It works.", "en", "short", ""),
        ("If it is done this way, the first non-" + "line-" * 30 + "line", "en", "repetitive", ""),
        ("Теперь поговорим о Марсе.", "ru", "transition", "Марсе"),
        ("Перейдём к налогам.", "ru", "transition", "налогам"),
        ("Спасибо за внимание.", "ru", "social", ""),
        ("Марсоход бурит породу и запечатывает образцы в пробирки.", "ru", "content", ""),
        ("Passons maintenant aux impôts.", "fr", "transition", "impôts"),
    ],
)
def test_sentence_roles(text: str, lang: str, kind: str, announced: str) -> None:
    role = classify(text, lang)
    assert (role.kind, role.announced) == (kind, announced)
    assert role.cue == (kind == "transition" or text.startswith("In summary"))


def test_clean_sentence_and_faithfulness_check() -> None:
    assert clean_sentence("So, and the rover drills rock cores.", "en") == "The rover drills rock cores."
    assert clean_sentence("Finally, engineers test every bridge with heavy trucks.", "en") == "Engineers test every bridge with heavy trucks."
    assert clean_sentence("ok", "en") == "Ok"
    src = " ".join(EN["mars"])
    stop = stop_words("en")
    assert supported("The rover drills rock cores and seals them in tubes.", src, stop)
    assert not supported("The rover found microbial life in twenty tubes.", src, stop)  # "found": the talk never said it
    assert not supported("The rover landed in 2021 in Jezero crater.", src, stop)  # a number the talk never said
    assert not supported("Astronauts will build a colony near the crater.", src, stop)
    assert "the" in stop and "system" not in stop and "и" in stop_words("ru") and stop_words("xx") >= set()


# ---------------------------------------------------------------------------------------------
# Notes on the real MiniLM
# ---------------------------------------------------------------------------------------------
@pytest.mark.models
def test_chapters_titles_points_summary_terms(builder: NotesBuilder) -> None:
    tr = as_transcript(EN_TALK)
    notes = builder.build(tr)
    assert len(notes.chapters) == 3
    # boundaries at the transitions, which open their chapters
    assert [c.start for c in notes.chapters[1:]] == [start_of(tr, "Next, let us talk about Mars."), start_of(tr, "Finally, a few words about taxes.")]
    assert notes.chapters[0].start == 0.0 and notes.chapters[-1].end == tr.duration
    assert all(a.end == b.start for a, b in zip(notes.chapters, notes.chapters[1:]))
    texts = {topic: " ".join(s).lower() for topic, s in EN.items()}
    for c, topic in zip(notes.chapters, EN):
        # the title is words of its chapter; an announced topic is preferred
        assert c.title and all(w in words(texts[topic]) or w in ("mars", "taxes") for w in words(c.title.lower())), c.title
        assert 1 <= len(c.key_points) <= 3
        assert all(k.text in EN[topic] for k in c.key_points)
        assert all(c.start <= k.start < c.end for k in c.key_points)
        assert " ".join(p.text for p in c.paragraphs).count(".") >= len(EN[topic])
    assert notes.chapters[1].title.lower().startswith("mars") and notes.chapters[2].title.lower().startswith("taxes")
    assert len({c.title for c in notes.chapters}) == 3
    # the summary covers every chapter, holds only content, repeats no key point
    assert 3 <= len(notes.summary) <= 10
    assert {chapter_of(notes, s.start) for s in notes.summary} == {0, 1, 2}
    points = {k.text for c in notes.chapters for k in c.key_points}
    assert not points & {s.text for s in notes.summary}
    assert all(classify(s.text, "en").content for s in notes.summary)
    # key terms: said in the talk, at the time given (the start of the sentence or later within it)
    assert 5 <= len(notes.key_terms) <= 20
    for t in notes.key_terms:  # said first in the first sentence that has its words, with any ending
        need = {w[:6] for w in words(t.term.lower())}
        first = next(s for s in tr.segments if need <= {w[:6] for w in words(s.text.lower())})
        assert first.start <= t.first <= first.end, t
    assert [t.first for t in notes.key_terms] == sorted(t.first for t in notes.key_terms)
    assert notes.summarizer == "extractive" and notes.model.startswith("minilm/") and notes.speech_model == "whisper/test"
    assert Notes.from_dict(json.loads(json.dumps(notes.to_dict()))).to_dict() == notes.to_dict()


@pytest.mark.models
def test_one_topic_is_one_chapter(builder: NotesBuilder) -> None:
    more = [
        "Whole wheat flour absorbs more water than white flour, so add a little extra.",
        "A kitchen scale makes the recipe far more reliable than measuring cups.",
        "The dough should feel soft and slightly sticky after the first folds.",
        "Score the top of the loaf with a razor so it can expand in the oven.",
        "Steam during the first twenty minutes keeps the crust from setting too early.",
    ]
    tr = as_transcript([*EN["bread"], *more])
    notes = builder.build(tr)
    assert len(notes.chapters) == 1
    assert len(notes.summary) >= 2 and len(notes.chapters[0].key_points) >= 1


@pytest.mark.models
def test_russian_talk_gets_russian_notes(builder: NotesBuilder) -> None:
    tr = as_transcript(RU_TALK, "ru")
    notes = builder.build(tr)
    assert notes.language == "ru" and len(notes.chapters) == 3
    assert notes.model == ""  # MiniLM's English vocabulary cuts Russian into 5+ pieces a word: lexical features only
    assert [c.start for c in notes.chapters[1:]] == [start_of(tr, "Теперь поговорим о Марсе."), start_of(tr, "Перейдём к налогам.")]
    # titles in the dictionary form (pymorphy3): the announced "о Марсе", "к налогам" become Марс, Налоги
    assert [c.title for c in notes.chapters][1:] == ["Марс", "Налоги"]
    assert re.fullmatch(r"[А-ЯЁ][а-яё ,-]+", notes.chapters[0].title)
    assert {"марсоход", "декларация"} <= {k.term for k in notes.key_terms}  # merged over endings, nominative
    assert not {s.text for s in notes.summary} & {"Здравствуйте, коллеги.", "Спасибо за внимание."}
    md = render_markdown(doc_of(notes, tr, "Лекция"))
    assert "## Содержание" in md and "## Краткое содержание" in md and "## Ключевые термины" in md and "## Расшифровка" in md
    assert "Summary" not in md


@pytest.mark.models
def test_lexical_features_alone_still_find_the_chapters() -> None:
    tr = as_transcript(EN_TALK)
    notes = NotesBuilder(embedder=None).build(tr)
    assert [c.start for c in notes.chapters[1:]] == [start_of(tr, "Next, let us talk about Mars."), start_of(tr, "Finally, a few words about taxes.")]
    assert notes.model == "" and notes.key_terms


@pytest.mark.models
def test_empty_and_one_sentence_transcripts(builder: NotesBuilder, tmp_path) -> None:
    empty = Transcript(segments=[], duration=12.0)
    notes = builder.build(empty)
    assert (notes.chapters, notes.summary, notes.key_terms, notes.message) == ([], [], [], "empty")
    one = as_transcript(["The rover landed in Jezero crater on Mars in February."])
    n1 = builder.build(one)
    assert len(n1.chapters) == 1 and n1.message == "one_sentence"
    assert [k.text for k in n1.chapters[0].key_points] == ["The rover landed in Jezero crater on Mars in February."] and n1.summary == []
    for i, (n, tr) in enumerate(((notes, empty), (n1, one))):
        doc = doc_of(n, tr)
        md = render_markdown(doc)
        assert ("No speech was recognized" in md) == (i == 0) and ("single sentence" in md) == (i == 1)
        assert render_chapters_vtt(n).startswith("WEBVTT")
        text = subprocess.run(["pdftotext", str(render_notes(doc, tmp_path / f"{i}.pdf")), "-"], capture_output=True, text=True, check=True).stdout
        assert "Summary" in text and "Transcript" in text


# ---------------------------------------------------------------------------------------------
# The outputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.models
def test_outputs_pdf_markdown_vtt(builder: NotesBuilder, tmp_path) -> None:
    hostile = '<script>alert("x")</script> and **bold** [link](http://x) # not a heading --> & more'
    tr = as_transcript([*EN_TALK[:8], hostile + " flour water salt dough.", *EN_TALK[8:]])
    notes = builder.build(tr)
    doc = doc_of(notes, tr, "Bread, Mars & <b>taxes</b>")
    pdf = render_notes(doc, tmp_path / "notes.pdf")
    raw = pdf.read_bytes()
    assert raw.count(b"/Subtype /Link") >= len(notes.chapters) and b"/Outlines" in raw  # contents link to chapters
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for label in ("Contents", "Summary", "Chapters", "Key terms", "Transcript"):
        assert label in text
    flat = " ".join(text.split())
    assert all(" ".join(c.title.split()) in flat for c in notes.chapters)
    assert '<script>alert("x")</script>' in flat and "Bread, Mars & <b>taxes</b>" in flat  # shown as text
    md = render_markdown(doc)
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\*\\*bold\\*\\*" in md and "\\[link\\]" in md
    assert md.count('<a id="chapter-') == len(notes.chapters)
    assert all(f"](#chapter-{i})" in md for i in range(1, len(notes.chapters) + 1))
    vtt = render_chapters_vtt(notes)
    cues = re.findall(r"^chapter-(\d+)\n(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)$", vtt, re.MULTILINE)
    assert vtt.startswith("WEBVTT\n\n") and len(cues) == len(notes.chapters)
    assert [c[3] for c in cues] == [c.title.replace("&", "&amp;").replace("<", "&lt;") for c in notes.chapters]
    assert cues[0][1] == "00:00:00.000" and all(a[2] == b[1] for a, b in zip(cues, cues[1:]))
    data = notes.to_dict()
    assert data["schema"] == SCHEMA and {"summary", "chapters", "key_terms"} <= set(data)
    assert {"start", "end", "title", "key_points"} <= set(data["chapters"][0])


def test_russian_dictionary_forms() -> None:
    from vidnotes.notes import display_form, phrase_ok, variant_key

    assert display_form("налоговой декларации", "ru") == "налоговая декларация"
    assert display_form("огромных страниц", "ru") == "огромные страницы"
    assert display_form("Марсе", "ru") == "Марс" and display_form("возврат налога", "ru") == "возврат налога"
    assert display_form("bridges", "en") == "bridges"  # English stays as said
    assert phrase_ok("налоговая декларация", "ru") and not phrase_ok("подкармливают накануне", "ru")
    assert variant_key("файлы", "ru") == variant_key("файлов", "ru") and variant_key("tax returns", "en") == variant_key("tax return", "en")
