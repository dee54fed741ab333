"""Real speech with reference transcripts: Debian's Asterisk prompts (one speaker, CC-BY-SA-3.0).

Audio: ``asterisk-core-sounds-en-g722`` (16 kHz G.722, ``/usr/share/asterisk/sounds/en_US_f_Allison``).
Transcripts: ``asterisk-core-sounds-en`` (``core-sounds-en.txt.gz``, ``name: transcript`` lines).
The fixed train/test split lives in ``vidnotes/data/asterisk_split.json`` (see :func:`make_split`).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass
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


def read_transcripts(path: Path = TRANSCRIPTS) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: apt-get install asterisk-core-sounds-en asterisk-core-sounds-en-g722")
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
