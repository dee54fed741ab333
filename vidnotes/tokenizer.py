"""Whisper's tokenizer on the ``tokenizers`` library: special ids, timestamp tokens, decoding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

TIME_PRECISION = 0.02  # seconds per timestamp token


@dataclass(frozen=True)
class WhisperTokenizer:
    tokenizer: Tokenizer
    eot: int
    sot: int
    no_timestamps: int
    no_speech: int
    timestamp_begin: int
    transcribe: int | None
    language_ids: dict[str, int]
    multilingual: bool

    @classmethod
    def from_dir(cls, model_dir: Path) -> WhisperTokenizer:
        tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))

        def tid(name: str) -> int:
            i = tok.token_to_id(name)
            if i is None:
                raise ValueError(f"{model_dir}/tokenizer.json lacks the special token {name}")
            return i

        no_ts = tid("<|notimestamps|>")
        langs: dict[str, int] = {}
        gen = Path(model_dir) / "generation_config.json"
        if gen.is_file():
            langs = {k.strip("<|>"): int(v) for k, v in json.loads(gen.read_text()).get("lang_to_id", {}).items()}
        nospeech = tok.token_to_id("<|nospeech|>") or tid("<|nocaptions|>")
        return cls(
            tokenizer=tok,
            eot=tid("<|endoftext|>"),
            sot=tid("<|startoftranscript|>"),
            no_timestamps=no_ts,
            no_speech=nospeech,
            timestamp_begin=no_ts + 1,
            transcribe=tok.token_to_id("<|transcribe|>"),
            language_ids=langs,
            multilingual=bool(langs),
        )

    def sot_sequence(self, language: str | None = "en") -> list[int]:
        """The decoder prompt: ``<|startoftranscript|>`` (+ language and task on multilingual models)."""
        if not self.multilingual:
            return [self.sot]
        lang = language or "en"
        if lang not in self.language_ids:
            raise ValueError(f"language {lang!r} is not known to this model")
        assert self.transcribe is not None
        return [self.sot, self.language_ids[lang], self.transcribe]

    def decode(self, ids: list[int]) -> str:
        """Text of the ids, with every special and timestamp token left out."""
        return self.tokenizer.decode([i for i in ids if i < self.eot])
