"""Data of the chapter-boundary benchmark (bench/bench_chapters.py): talks made of parts about distinct
topics, with the times where the parts join as the reference chapter boundaries.

Where the text comes from (Debian packages, nothing downloaded, nothing large committed):

* English prose: ``debian-handbook`` (The Debian Administrator's Handbook, GPL-2+ or CC-BY-SA-3.0;
  one document = one section, ``html/en-US/sect.*.html``, grouped by chapter) and ``python3.11-doc``
  (the Python documentation, PSF License; one document = one page of ``tutorial/`` or ``howto/``).
  Paragraph text only (no code, screens, tables, sidebars, notes or headings), split into sentences;
  a sentence is kept when it has 6-40 words, ends with . ! or ?, and reads as prose (no paths,
  options, markup, version numbers or cross-references; 90 % of its words alphabetic). A part of a
  talk is a passage of consecutive kept sentences that steps over at most MAX_SKIPPED (2) dropped
  sentences at a time (paragraphs dropped whole, i.e. code or lists, are stepped over freely) and
  starts at a paragraph start.
* Russian, French and Spanish prose: the translations of the same handbook (``html/ru-RU``, ``fr-FR``,
  ``es-ES``), only paragraphs that really are in that language (untranslated ones fall back to English);
  for Russian also the DESCRIPTION sections of ``manpages-ru`` (GPL-2+ and other free licenses, one
  document = one page).
* Asterisk prompts (``asterisk-core-sounds-{en,ru,fr,es}``, CC-BY-SA-3.0): ``name: text`` lines of
  ``/usr/share/doc/asterisk-core-sounds-XX/core-sounds-XX.txt.gz``; English audio from
  ``asterisk-core-sounds-en-g722`` (one female speaker). Prompts are grouped into topic families by
  their name (see FAMILIES); a family is one topic.

Dev/test: every document group (handbook chapter, Python page, man page, Asterisk family) belongs to
exactly one split, fixed by a seeded hash of the group's name (``group_split``), so a method tuned on dev is reported
on topics it has not seen.

Everything is deterministic for a seed and the installed package versions (Debian bookworm).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import random
import re
import subprocess
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path

HANDBOOK = Path("/usr/share/doc/debian-handbook/html")
PYDOC_GLOB = "/usr/share/doc/python3.*/html"
MANPAGES_RU = Path("/usr/share/man/ru")
ASTERISK_TEXT = "/usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
ASTERISK_AUDIO_EN = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
DEBIAN_PACKAGES = {
    "spoken": ["debian-handbook", "python3.11-doc", "espeak-ng"],
    "real": ["asterisk-core-sounds-en", "asterisk-core-sounds-en-g722"],
    "languages": ["debian-handbook", "manpages-ru", "asterisk-core-sounds-ru", "asterisk-core-sounds-fr", "asterisk-core-sounds-es"],
}
MIN_WORDS, MAX_WORDS = 6, 40
SECONDS_PER_WORD = 0.4  # synthetic times of the text-only (languages) transcripts


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Doc:
    """One source document = one topic: its kept sentences, in order, with the index of the
    paragraph each comes from (parts start at a paragraph start where they can) and how many
    sentences were dropped before it (a part never steps over more than MAX_SKIPPED)."""

    id: str  # e.g. "handbook:sect.apparmor", "python:howto/sorting"
    group: str  # documents of one group are never in one talk and share a split
    lang: str
    title: str
    sentences: tuple[str, ...]
    paragraph: tuple[int, ...]
    skipped: tuple[int, ...]  # sentences dropped between sentence i-1 and i (see make_doc)

    def runs(self) -> list[tuple[int, int]]:
        """Maximal stretches whose gaps skip at most MAX_SKIPPED dropped sentences: (first, length)."""
        out: list[tuple[int, int]] = []
        for i, k in enumerate(self.skipped):
            if i == 0 or k > MAX_SKIPPED:
                out.append((i, 1))
            else:
                out[-1] = (out[-1][0], out[-1][1] + 1)
        return out

    def longest_run(self) -> int:
        return max((n for _, n in self.runs()), default=0)


class _Paragraphs(HTMLParser):
    """Text of paragraph elements (``<p>``, ``<div class="para">``), skipping code, tables,
    sidebars, notes, headings and navigation."""

    SKIP_TAGS = {"pre", "script", "style", "table", "h1", "h2", "h3", "h4", "h5", "h6", "head", "title", "dt"}
    SKIP_CLASSES = {"sidebar", "highlight", "screen", "programlisting", "docnav", "toc", "footnotes", "sphinxsidebar",
                    "related", "footer", "navigation", "admonition", "note", "warning", "seealso", "important", "tip",
                    "literal-block-wrapper", "line-block", "figure", "caption", "mediaobject", "example", "informalexample"}  # fmt: skip
    VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, skipping, is paragraph)
        self.paras: list[str] = []
        self.buf: list[str] = []

    def _skipping(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def _flush(self) -> None:
        text = " ".join("".join(self.buf).split())
        if text:
            self.paras.append(text)
        self.buf = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        skip = self._skipping() or tag in self.SKIP_TAGS or bool(classes & self.SKIP_CLASSES)
        is_para = tag == "p" or (tag == "div" and "para" in classes)
        if is_para or tag in ("li", "ul", "ol", "dl", "dd"):
            self._flush()
        self.stack.append((tag, skip, is_para))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        while self.stack:
            t, _, is_para = self.stack.pop()
            if is_para or t in ("li", "ul", "ol", "dl", "dd"):
                self._flush()
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._skipping() and any(p for _, _, p in self.stack):
            self.buf.append(data)


def html_paragraphs(path: Path) -> list[str]:
    p = _Paragraphs()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    p.close()
    p._flush()
    return p.paras


_ABBREV = re.compile(
    r"(\b(e\.g|i\.e|etc|vs|cf|Mr|Mrs|Dr|Prof|St|No|approx|resp|incl|al|Fig|Sec|ch|p\. ex|p\.ej|ej|т\.\s?е|т\.\s?д|т\.\s?п|т\.\s?к|др|см|напр|стр|гл)\.)$",
    re.IGNORECASE,
)
_SENT_SPLIT = re.compile(r"(?<=[.!?…])[\"»”)]?\s+")


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph: a split after . ! ? followed by space, undone after a known
    abbreviation or before a lower-case letter."""
    pieces = [p for p in _SENT_SPLIT.split(paragraph.strip()) if p]
    out: list[str] = []
    for piece in pieces:
        if out and (_ABBREV.search(out[-1]) or piece[:1].islower() or piece[:1].isdigit()):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return [s.strip() for s in out]


_BAD_CHARS = re.compile(r"[/\\_=<>{}\[\]|@#$%^&*~`+]|https?:|www\.|\.\w{2,4}\b|\d+\.\d+|::|->|\(\)")
_XREF = re.compile(
    r"\b(section|chapter|figure|table|example|sidebar|appendix|раздел|глава|рисунок|таблица|chapitre|figure|tableau|sección|capítulo|figura|tabla|see below|see above)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"^[(\"'“«„]*[^\W\d_]+(?:['’-][^\W\d_]+)*[)\"'”»,;:.!?…]*$")


def prose_sentence(s: str, lang: str = "en") -> bool:
    """Whether ``s`` reads as natural prose a speaker would say (see the module docstring)."""
    words = s.split()
    if not (MIN_WORDS <= len(words) <= MAX_WORDS) or s[-1] not in ".!?" or not (s[0].isupper() or s[0] in '"“«'):
        return False
    if _BAD_CHARS.search(s) or _XREF.search(s) or s.count("(") != s.count(")") or '"' in s and s.count('"') % 2:
        return False
    alpha = sum(1 for w in words if _WORD.match(w))
    if alpha < 0.9 * len(words):
        return False
    return in_language(s, lang)


_CYR = re.compile(r"[\u0400-\u04FF]")
_LAT = re.compile(r"[A-Za-z]")
_FUNCTION_WORDS = {
    "en": {"the", "and", "of", "to", "is", "that", "this", "with", "for", "are", "which", "it", "be", "by", "on", "can", "an", "or", "not"},
    "fr": {
        "le",
        "la",
        "les",
        "des",
        "et",
        "est",
        "un",
        "une",
        "du",
        "que",
        "qui",
        "dans",
        "pour",
        "pas",
        "sur",
        "au",
        "par",
        "ce",
        "il",
        "se",
    },
    "es": {"el", "la", "los", "las", "de", "del", "y", "es", "un", "una", "que", "en", "para", "por", "con", "se", "no", "lo", "su", "al"},
}


def in_language(s: str, lang: str) -> bool:
    """A cheap language check, enough to drop the untranslated paragraphs of a translation."""
    if lang == "ru":
        cyr, lat = len(_CYR.findall(s)), len(_LAT.findall(s))
        return cyr >= 0.85 * (cyr + lat)
    if _CYR.search(s):
        return False
    words = [w.strip(".,;:!?()\"'«»“”").lower() for w in s.split()]
    score = {k: sum(w in v for w in words) for k, v in _FUNCTION_WORDS.items()}
    return score[lang] >= 1 and score[lang] > max(v for k, v in score.items() if k != lang)


MAX_SKIPPED = 2  # dropped sentences a part may step over (whole dropped paragraphs do not count)


def make_doc(id_: str, group: str, lang: str, title: str, paragraphs: list[str], seen: set[str]) -> Doc:
    """Keep the prose sentences. ``skipped[i]`` = how many sentences were dropped between kept
    sentence i-1 and i inside paragraphs that keep some sentence (a paragraph dropped whole, i.e.
    code, a list, a table, is stepped over for free)."""
    sents: list[str] = []
    paras: list[int] = []
    skipped: list[int] = []
    pending = 0  # dropped since the last kept sentence, in paragraphs that keep something
    for i, p in enumerate(paragraphs):
        pieces = [raw.replace("\u00a0", " ").replace("\u2019", "'") for raw in split_sentences(html.unescape(p))]
        keep = [prose_sentence(s, lang) and s not in seen for s in pieces]
        if not any(keep):
            continue
        trailing = 0
        for s, k in zip(pieces, keep):
            if not k:
                pending += 1
                continue
            seen.add(s)
            skipped.append(pending if sents else 0)
            sents.append(s)
            paras.append(i)
            pending = 0
        # sentences dropped after the paragraph's last kept one count towards the next gap
        for k in reversed(keep):
            if k:
                break
            trailing += 1
        pending = trailing
    return Doc(id_, group, lang, title, tuple(sents), tuple(paras), tuple(skipped))


def _title(path: Path) -> str:
    m = re.search(r"<title[^>]*>(.*?)</title>", path.read_text(encoding="utf-8", errors="replace"), re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).split()) if m else path.stem


def handbook_docs(lang: str = "en") -> list[Doc]:
    """One document per section of the Debian Administrator's Handbook; group = its chapter."""
    root = HANDBOOK / {"en": "en-US", "ru": "ru-RU", "fr": "fr-FR", "es": "es-ES"}[lang]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: apt-get install debian-handbook")
    seen: set[str] = set()
    docs = []
    for path in sorted(root.glob("sect.*.html")):
        text = path.read_text(encoding="utf-8", errors="replace")
        up = re.search(r'<link rel="up" href="([^"]+)\.html"', text)
        chapter = up.group(1) if up else "?"
        docs.append(make_doc(f"handbook-{lang}:{path.stem}", f"handbook:{chapter}", lang, _title(path), html_paragraphs(path), seen))
    return docs


PYTHON_PAGES = {  # page -> group (pages about one subject share a group)
    "tutorial/appetite": "py:intro", "tutorial/interpreter": "py:intro", "tutorial/introduction": "py:introduction",
    "tutorial/controlflow": "py:controlflow", "tutorial/datastructures": "py:datastructures", "tutorial/modules": "py:modules",
    "tutorial/inputoutput": "py:inputoutput", "tutorial/errors": "py:errors", "tutorial/classes": "py:classes",
    "tutorial/stdlib": "py:stdlib", "tutorial/stdlib2": "py:stdlib", "tutorial/venv": "py:venv",
    "tutorial/interactive": "py:interactive", "tutorial/floatingpoint": "py:floatingpoint",
    "howto/functional": "py:functional", "howto/sorting": "py:sorting", "howto/unicode": "py:unicode", "howto/regex": "py:regex",
    "howto/sockets": "py:sockets", "howto/logging": "py:logging", "howto/logging-cookbook": "py:logging",
    "howto/descriptor": "py:descriptor", "howto/curses": "py:curses", "howto/ipaddress": "py:ipaddress",
    "howto/argparse": "py:argparse", "howto/enum": "py:enum", "howto/annotations": "py:annotations",
    "howto/urllib2": "py:urllib", "howto/pyporting": "py:porting", "howto/cporting": "py:porting",
    "howto/isolating-extensions": "py:extensions", "howto/instrumentation": "py:instrumentation",
}  # fmt: skip


def python_docs() -> list[Doc]:
    roots = sorted(Path("/").glob(PYDOC_GLOB.lstrip("/")))
    if not roots:
        raise FileNotFoundError(f"{PYDOC_GLOB} not found: apt-get install python3.11-doc")
    root = roots[-1]
    seen: set[str] = set()
    docs = []
    for page, group in PYTHON_PAGES.items():
        path = root / f"{page}.html"
        if path.is_file():
            docs.append(make_doc(f"python:{page}", group, "en", _title(path), html_paragraphs(path), seen))
    return docs


def _man_description(path: Path) -> list[str]:
    """The DESCRIPTION section of a man page as paragraphs (troff requests dropped)."""
    try:
        raw = gzip.open(path, "rt", encoding="utf-8", errors="replace").read() if path.suffix == ".gz" else path.read_text()
    except OSError:
        return []
    paras, cur, inside = [], [], False
    for line in raw.splitlines():
        if line.startswith(".SH"):
            if inside:
                break
            inside = "ОПИСАНИЕ" in line.upper() or "DESCRIPTION" in line.upper()
            continue
        if not inside:
            continue
        if line.startswith((".PP", ".P", ".LP", ".TP", ".IP", ".SS", ".sp", ".br")) or not line.strip():
            if cur:
                paras.append(" ".join(cur))
            cur = []
            continue
        if line.startswith((".nf", ".EX")):
            cur = []
            continue
        if line.startswith((".B ", ".I ", ".BR ", ".IR ", ".RB ", ".RI ", ".BI ", ".IB ")):
            line = line.split(" ", 1)[1].replace('"', "")
        elif line.startswith((".", "'")):
            continue
        line = re.sub(r"\\f[BIRP]|\\f\(..|\\&|\\\(..|\\[-e]|\\s[-+]?\d", lambda m: "-" if m.group(0) == "\\-" else "", line)
        cur.append(line.strip())
    if cur:
        paras.append(" ".join(cur))
    return paras


def manpage_docs_ru() -> list[Doc]:
    """Russian man pages (manpages-ru), one document per page, DESCRIPTION only."""
    if not MANPAGES_RU.is_dir():
        raise FileNotFoundError(f"{MANPAGES_RU} not found: apt-get install manpages-ru")
    seen: set[str] = set()
    docs = []
    for path in sorted(MANPAGES_RU.glob("man*/*.gz")):
        name = path.name.removesuffix(".gz")
        docs.append(make_doc(f"man-ru:{name}", f"man-ru:{name}", "ru", name, _man_description(path), seen))
    return docs


def english_docs(min_sentences: int = 12) -> list[Doc]:
    return [d for d in handbook_docs("en") + python_docs() if len(d.sentences) >= min_sentences]


def prose_docs(lang: str, min_sentences: int = 12) -> list[Doc]:
    docs = handbook_docs(lang) + (manpage_docs_ru() if lang == "ru" else [])
    return [d for d in docs if len(d.sentences) >= min_sentences]


def group_split(group: str, seed: int = 0) -> str:
    """ "dev" or "test" for a document group: a seeded hash of its name, so the split of a group
    never changes when other documents are added or removed."""
    h = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return "dev" if h[0] % 2 == 0 else "test"


# ---------------------------------------------------------------------------------------------
# Asterisk prompt families
# ---------------------------------------------------------------------------------------------
# family -> (split, name patterns). Families are one topic each; conf-* (MeetMe) and confbridge-*
# speak about the same thing (conferences) and so are one family. The split is fixed by hand so that
# each side has one big family (voicemail / conferences) and a few small ones.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "voicemail": ("dev", (r"vm-",)),
    "directory": ("dev", (r"dir-",)),
    "demo": ("dev", (r"demo-",)),
    "dictation": ("dev", (r"dictate/",)),
    "tt-jokes": ("dev", (r"tt-", r"something-terribly-wrong")),
    "conference": ("test", (r"conf-", r"confbridge-")),
    "queues-agents": ("test", (r"queue-", r"agent-")),
    "privacy-screening": ("test", (r"priv-", r"privacy-", r"screen-")),
    "followme": ("test", (r"followme/",)),
    "call-errors": ("test", (r"all-circuits", r"cannot-complete", r"check-number", r"please-try-call-later", r"pls-try-call-later",
                             r"number-not-answering", r"ss-noservice", r"invalid$", r"pbx-invalid", r"simul-call-limit",
                             r"feature-not-avail", r"sorry-youre-having", r"speed-dial-empty", r"pm-invalid-option",
                             r"unidentified-no-callback", r"transfer$", r"pls-hold-while-try")),
}  # fmt: skip
ASTERISK_MIN_WORDS = 4
MAX_PROMPT_SECONDS = 12.0  # the real recordings leave out the few long demo monologues


def read_prompts(lang: str) -> dict[str, str]:
    path = Path(ASTERISK_TEXT.format(lang=lang))
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: apt-get install asterisk-core-sounds-{lang}")
    out: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, _, text = line.partition(":")
            out[name.strip()] = " ".join(text.split())
    return out


def prompt_families(lang: str, *, need_audio: bool = False) -> dict[str, list[tuple[str, str]]]:
    """family -> [(prompt name, text)] of prompts with at least 4 words and no bracketed sound
    descriptions (with ``need_audio``: only those whose English G.722 audio is installed and at most
    12 s long)."""
    fams: dict[str, list[tuple[str, str]]] = {f: [] for f in FAMILIES}
    for name, text in sorted(read_prompts(lang).items()):
        if re.search(r"[\[\]]", text) or len(text.split()) < ASTERISK_MIN_WORDS or text.startswith("("):
            continue
        if need_audio:
            audio = ASTERISK_AUDIO_EN / f"{name}.g722"
            if not audio.is_file() or audio.stat().st_size / 8000 > MAX_PROMPT_SECONDS:
                continue
        for fam, (_, pats) in FAMILIES.items():
            if any(re.match(p, name) for p in pats):
                fams[fam].append((name, text))
                break
    return {f: v for f, v in fams.items() if len(v) >= 5}


# ---------------------------------------------------------------------------------------------
# Talk specifications
# ---------------------------------------------------------------------------------------------
# espeak-ng voices and variants the ASR understands well enough: Scottish, West Midlands, Lancaster
# and Caribbean voices and the +f1/+f4 variants gave 25-50 % WER with tiny.en and are left out
VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-us-nyc"]
VARIANTS = ["", "+m1", "+m2", "+m3", "+m7", "+f2"]


@dataclass(slots=True)
class Part:
    source: str  # document id or Asterisk family
    title: str
    items: list[str]  # sentences (or prompt names, for the real recordings)
    texts: list[str]  # what is said


@dataclass(slots=True)
class TalkSpec:
    id: str
    set: str  # spoken | real | languages
    split: str
    kind: str  # multi | control | long
    lang: str
    parts: list[Part]
    voice: str = ""
    speed: int = 0  # espeak-ng words per minute
    pause_marked: bool = False  # joins get a longer pause than sentence gaps
    seed: int = 0
    subset: str = ""  # languages: e.g. asterisk-ru, prose-ru
    meta: dict = field(default_factory=dict)

    def key(self) -> str:
        """What the cached transcript depends on."""
        return hashlib.sha256(repr((asdict(self), CACHE_VERSION)).encode()).hexdigest()[:16]


CACHE_VERSION = 1


def _starts(doc: Doc, first: int, length: int, room: int) -> list[int]:
    """Paragraph starts inside a run that leave ``room`` sentences before it ends."""
    return [i for i in range(first, first + length - room + 1) if i == first or doc.paragraph[i] != doc.paragraph[i - 1]]


def _spans_lasting(doc: Doc, seconds: float, lo: int, hi: int, wpm: float) -> list[tuple[int, int]]:
    """(start, count) of passages of ``lo``-``hi`` sentences, inside one run, from a paragraph start,
    that last at least ``seconds`` (the shortest such count for each start)."""
    words = [0]
    for x in doc.sentences:
        words.append(words[-1] + len(x.split()))

    def dur(i: int, k: int) -> float:
        return (words[i + k] - words[i]) * 60.0 / wpm + 0.5 * k

    out = []
    for first, length in doc.runs():
        if length < lo:
            continue
        end = first + length
        for i in _starts(doc, first, length, lo):
            k = lo
            while k < hi and i + k < end and dur(i, k) < seconds:
                k += 1
            if dur(i, k) >= seconds:
                out.append((i, k))
    return out


def _passage(doc: Doc, rng: random.Random, lo: int, hi: int, *, n: int | None = None, seconds: float | None = None,
             wpm: float = 160) -> list[str]:  # fmt: skip
    """A passage of ``doc``: consecutive sentences of one run (see Doc.runs) from a paragraph start,
    either ``n`` sentences (fewer where no run is that long, never under ``lo``) or the fewest that
    last ``seconds`` (the longest passage there is, if none does)."""
    if seconds is not None:
        spans = _spans_lasting(doc, seconds, lo, hi, wpm)
        if spans:
            i, k = rng.choice(spans)
            return list(doc.sentences[i : i + k])
        first, length = max(doc.runs(), key=lambda r: r[1])
        return list(doc.sentences[first : first + min(length, hi)])
    assert n is not None
    want = max(lo, min(n, hi))
    runs = [r for r in doc.runs() if r[1] >= want] or [r for r in doc.runs() if r[1] >= lo]
    if not runs:
        raise ValueError(f"{doc.id}: no run of {lo} sentences")
    first, length = rng.choice(runs)
    take = min(want, length)
    i = rng.choice(_starts(doc, first, length, take) or [first])
    return list(doc.sentences[i : i + take])


def _pick_docs(docs: list[Doc], n: int, rng: random.Random, need: int = 4, *, seconds: float = 0, lo: int = 4, hi: int = 25,
               wpm: float = 160) -> list[Doc]:  # fmt: skip
    """``n`` documents of distinct groups, each with a run of at least ``need`` sentences (and, with
    ``seconds``, a passage of ``lo``-``hi`` sentences lasting that long)."""
    pool = [d for d in docs if d.longest_run() >= need and (not seconds or _spans_lasting(d, seconds, lo, hi, wpm))]
    rng.shuffle(pool)
    out, groups = [], set()
    for d in pool:
        if d.group not in groups:
            out.append(d)
            groups.add(d.group)
        if len(out) == n:
            break
    return out


def _words_seconds(sents: list[str], wpm: float) -> float:
    return sum(len(s.split()) for s in sents) * 60.0 / wpm + 0.5 * len(sents)


def part_lengths(n_parts: int, rng: random.Random, total: int, lo: int = 4, hi: int = 25) -> list[int]:
    """Sentences per part: ``lo`` each plus a share of what is left of ``total``, shared out by
    exponential weights, so parts of one talk differ (equal parts would favour ``uniform``)."""
    extra = max(0, total - lo * n_parts)
    w = [rng.expovariate(1.0) for _ in range(n_parts)]
    return [min(hi, lo + round(extra * x / sum(w))) for x in w]


def prose_talks(docs: list[Doc], *, set_name: str, lang: str, split: str, n_multi: int, n_control: int, n_long: int,
                seed: int, subset: str = "", spoken: bool = True) -> list[TalkSpec]:  # fmt: skip
    """Talk specs from documents of one split: ``n_multi`` talks of 2-8 parts of 4-25 sentences
    (12-20 sentences in all, at least 4 a part, so a talk lasts 1-4 minutes), ``n_control`` single-document
    talks of 2-2.5 minutes, ``n_long`` talks of 6-12 parts lasting 15-16 minutes. Parts of a
    talk come from documents of distinct groups."""
    rng = random.Random(f"{set_name}-{subset}-{split}-{seed}")
    talks: list[TalkSpec] = []
    prefix = f"{subset or set_name}-{split}"

    def voice() -> tuple[str, int]:
        if not spoken:
            return "", 0
        return rng.choice(VOICES) + rng.choice(VARIANTS), rng.randint(150, 180)

    for i in range(n_multi):
        n_parts = rng.choice([2, 2, 3, 3, 3, 4, 4, 5, 6, 8])
        lengths = part_lengths(n_parts, rng, rng.randint(12, 20))
        v, s = voice()
        parts: list[Part] = []
        used: set[str] = set()
        for n in lengths:
            cands = [d for d in docs if d.group not in used]
            picked = _pick_docs(cands, 1, rng, n) or _pick_docs(cands, 1, rng, 4)
            if not picked:
                break
            used.add(picked[0].group)
            sents = _passage(picked[0], rng, 4, 25, n=n)
            parts.append(Part(picked[0].id, picked[0].title, sents, sents))
        talks.append(TalkSpec(f"{prefix}-multi-{i:02d}", set_name, split, "multi", lang, parts, v, s, i % 3 == 2, seed, subset))
    for i in range(n_control):
        v, s = voice()
        target = rng.uniform(120, 150)
        (d,) = _pick_docs(docs, 1, rng, seconds=target, lo=12, hi=60, wpm=s or 160)
        sents = _passage(d, rng, 12, 60, seconds=target, wpm=s or 160)
        talks.append(
            TalkSpec(
                f"{prefix}-control-{i:02d}",
                set_name,
                split,
                "control",
                lang,
                [Part(d.id, d.title, sents, sents)],
                v,
                s,
                False,
                seed,
                subset,
            )
        )
    for i in range(n_long):
        v, s = voice()
        n_parts = rng.randint(6, 12)
        total = rng.uniform(960, 1000)  # estimated seconds (espeak-ng is a little faster): 15-16 minutes
        w = [rng.expovariate(1.0) + 0.5 for _ in range(n_parts)]
        parts: list[Part] = []
        used: set[str] = set()
        while len(parts) < 12:
            done = sum(_words_seconds(p.texts, s or 160) for p in parts)
            if len(parts) >= n_parts and done >= total:
                break
            want = total * w[len(parts)] / sum(w) if len(parts) < n_parts else total - done
            cands = [d for d in docs if d.group not in used]
            picked = _pick_docs(cands, 1, rng, seconds=want, wpm=s or 160) or _pick_docs(cands, 1, rng, 8)
            if not picked:
                break
            used.add(picked[0].group)
            sents = _passage(picked[0], rng, 4, 25, seconds=want, wpm=s or 160)
            parts.append(Part(picked[0].id, picked[0].title, sents, sents))
        talks.append(TalkSpec(f"{prefix}-long-{i:02d}", set_name, split, "long", lang, parts, v, s, i % 2 == 1, seed, subset))
    return talks


def asterisk_talks(fams: dict[str, list[tuple[str, str]]], *, set_name: str, lang: str, split: str, n: int, seed: int,
                   subset: str = "") -> list[TalkSpec]:  # fmt: skip
    """``n`` talks of 2-6 families of this split, each part 5-15 prompts of one family (no prompt
    twice in a talk; small families give all they have)."""
    rng = random.Random(f"{set_name}-{subset}-{split}-{seed}")
    mine = sorted(f for f in fams if FAMILIES[f][0] == split)
    talks = []
    for i in range(n):
        k = rng.randint(2, min(6, len(mine)))
        order = rng.sample(mine, k)
        parts = []
        for fam in order:
            prompts = fams[fam]
            m = min(rng.randint(5, 15 if k <= 3 else 10), len(prompts))
            chosen = rng.sample(prompts, m)
            parts.append(Part(fam, fam, [p for p, _ in chosen], [t for _, t in chosen]))
        talks.append(
            TalkSpec(f"{subset or set_name}-{split}-{i:02d}", set_name, split, "multi", lang, parts, "", 0, i % 3 == 2, seed, subset)
        )
    return talks


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------
ESPEAK_RATE = 22050


def espeak(text: str, voice: str, speed: int, timeout: float = 60.0):  # noqa: ANN201
    """float32 mono samples at 22.05 kHz of ``text`` read by espeak-ng, silence at both ends trimmed."""
    import numpy as np

    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True, timeout=timeout)
    data = proc.stdout
    idx = data.find(b"data")
    pcm = np.frombuffer(data[idx + 8 :], dtype="<i2").astype(np.float32) / 32768.0 if idx >= 0 else np.zeros(0, np.float32)
    return trim(pcm, ESPEAK_RATE)


def trim(x, rate: int, threshold: float = 2e-3):  # noqa: ANN001, ANN201
    import numpy as np

    loud = np.flatnonzero(np.abs(x) > threshold)
    if loud.size == 0:
        return x[:0]
    pad = int(0.02 * rate)
    return x[max(0, loud[0] - pad) : loud[-1] + pad]


def gap_seconds(rng: random.Random, join: bool, marked: bool) -> float:
    """Pause before the next sentence (prompt); at a part join it is longer only in marked talks."""
    if join and marked:
        return rng.uniform(1.2, 1.8)
    return rng.uniform(0.25, 0.7)


def assemble(pieces_per_part: list[list], rate: int, spec: TalkSpec):  # noqa: ANN001, ANN201
    """Join the pieces (arrays at ``rate``) with pauses; returns (audio, reference boundaries in
    seconds, part spans [(start, end)] in seconds). A boundary is the middle of the pause between
    two parts."""
    import numpy as np

    rng = random.Random(f"gaps-{spec.id}-{spec.seed}")
    out, pos, bounds, spans = [], 0, [], []
    lead = int(0.3 * rate)
    out.append(np.zeros(lead, np.float32))
    pos += lead
    for pi, pieces in enumerate(pieces_per_part):
        if pi > 0:
            g = int(gap_seconds(rng, True, spec.pause_marked) * rate)
            bounds.append((pos + g / 2) / rate)
            out.append(np.zeros(g, np.float32))
            pos += g
        start = pos
        for j, x in enumerate(pieces):
            if j > 0:
                g = int(gap_seconds(rng, False, spec.pause_marked) * rate)
                out.append(np.zeros(g, np.float32))
                pos += g
            out.append(x.astype(np.float32))
            pos += len(x)
        spans.append((start / rate, pos / rate))
    tail = int(0.5 * rate)
    out.append(np.zeros(tail, np.float32))
    return np.concatenate(out), bounds, spans


def text_transcript(spec: TalkSpec) -> tuple[dict, list[float]]:
    """A transcript with synthetic times (0.4 s a word, 0.5 s between segments) for the text path:
    one segment per prompt or sentence. Returns (Transcript.to_dict(), reference boundaries)."""
    t, segs, bounds = 0.0, [], []
    for pi, part in enumerate(spec.parts):
        if pi > 0:
            bounds.append(t - 0.25)
        for text in part.texts:
            dur = SECONDS_PER_WORD * len(text.split())
            segs.append({"start": round(t, 3), "end": round(t + dur, 3), "text": text})
            t += dur + 0.5
    return {"language": spec.lang, "duration": round(t, 3), "model": "reference-text", "segments": segs}, bounds
