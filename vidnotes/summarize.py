"""The models behind the notes (:mod:`vidnotes.notes`): BART (abstractive, map-reduce) and
MiniLM sentence embeddings.

Torch-free: numpy, onnxruntime, tokenizers and the standard library only. Models come from the
:class:`~vidnotes.store.ModelStore` (tasks ``bart`` and ``minilm``, built by ``vidnotes.export``).

* :class:`BartSummarizer`: encoder + merged decoder ONNX, greedy decoding with a numpy KV cache
  (honouring min/max length, forced BOS/EOS and ``no_repeat_ngram_size``). A transcript longer
  than the encoder's limit is split into sentence-aligned chunks, each chunk is summarized, and
  the joined partial summaries are summarized again until they fit (map-reduce).
* :class:`MiniLMEmbedder`: all-MiniLM-L6-v2 sentence embeddings (mean pooled, unit length).
* :func:`load_notes_builder`: a :class:`~vidnotes.notes.NotesBuilder` over what the store has.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from vidnotes.onnxutil import input_names, make_session, output_names
from vidnotes.store import ModelStore

if TYPE_CHECKING:
    from vidnotes.notes import NotesBuilder

SUMMARIZER_ENV = "VIDNOTES_SUMMARIZER"
NOTES_MAX_TOKENS = 128
MAX_REDUCE_ROUNDS = 4

_WS = re.compile(r"\s+")
# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u201d\u2019)\]])\s+")


# ---------------------------------------------------------------------------------------------
# Text units
# ---------------------------------------------------------------------------------------------
def normalize_ws(text: str) -> str:
    return _WS.sub(" ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Sentences by end punctuation (whitespace normalized, empties dropped)."""
    text = normalize_ws(text)
    if not text:
        return []
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def word_windows(text: str, size: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


def text_units(text: str, *, max_words: int = 60, window_words: int = 25) -> list[str]:
    """Sentences, with any run longer than ``max_words`` words (a transcript without
    punctuation) cut into windows of ``window_words`` words."""
    units: list[str] = []
    for s in split_sentences(text):
        if len(s.split()) > max_words:
            units.extend(word_windows(s, window_words))
        else:
            units.append(s)
    return units


def _model_label(manifest: dict[str, Any], default_task: str) -> str:
    return f"{manifest.get('task', default_task)}/{manifest.get('version', 'unversioned')}"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------
# BART
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Greedy decoding parameters (as recorded in the ``bart`` manifest's ``generation``)."""

    decoder_start_token_id: int
    eos_token_id: int
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    max_position_embeddings: int = 1024
    no_repeat_ngram_size: int = 0
    max_length: int = 20  # total decoder length, decoder start token included (as transformers)
    min_length: int = 0
    max_new_tokens: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationParams:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> GenerationParams:
        """Fallback when a manifest carries no ``generation``: config.json + generation_config.json."""
        merged = {**_read_json(model_dir / "config.json"), **{k: v for k, v in _read_json(model_dir / "generation_config.json").items() if v is not None}}
        eos = merged.get("eos_token_id", 2)
        eos = eos[0] if isinstance(eos, list) else eos
        merged["eos_token_id"] = eos
        merged.setdefault("decoder_start_token_id", eos)
        return cls.from_dict(merged)

    @property
    def total_max_length(self) -> int:
        return self.max_new_tokens + 1 if self.max_new_tokens else self.max_length


@dataclass(slots=True)
class MapReduceTrace:
    """What a BART summary took: chunks per round (round 0 = the transcript) and the token count
    of every encoder input."""

    chunks_per_round: list[int] = field(default_factory=list)
    encoder_tokens: list[int] = field(default_factory=list)


class _NGramBan:
    """Tokens that would repeat an n-gram already generated (transformers' NoRepeatNGram)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: dict[tuple[int, ...], set[int]] = {}

    def add(self, seq: Sequence[int]) -> None:
        if self.n > 0 and len(seq) >= self.n:
            gram = tuple(seq[len(seq) - self.n :])
            self.seen.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self, seq: Sequence[int]) -> list[int]:
        if self.n <= 0 or len(seq) + 1 < self.n:
            return []
        return sorted(self.seen.get(tuple(seq[len(seq) - (self.n - 1) :]), ()))


def _pack(items: list[tuple[str, int]], budget: int) -> list[str]:
    """Join (text, tokens) items in order into space-separated groups of at most ``budget``
    tokens each (an item larger than the budget makes a group of its own)."""
    groups: list[str] = []
    cur: list[str] = []
    n = 0
    for text, k in items:
        if cur and n + k > budget:
            groups.append(" ".join(cur))
            cur, n = [], 0
        cur.append(text)
        n += k
    if cur:
        groups.append(" ".join(cur))
    return groups


class BartSummarizer:
    """Abstractive summaries from a BART ONNX export (``encoder_model.onnx`` +
    ``decoder_model_merged.onnx``), map-reduce over long transcripts."""

    def __init__(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        tokenizer: Tokenizer,
        gen: GenerationParams,
        *,
        model: str,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.gen = gen
        self.model = model
        self.max_input_tokens = int(gen.max_position_embeddings)
        self._enc_inputs = set(input_names(encoder))
        self._dec_inputs = input_names(decoder)
        if "use_cache_branch" not in self._dec_inputs:
            raise ValueError("decoder is not a merged decoder (no use_cache_branch input)")
        self._dec_outputs = output_names(decoder)
        self._past_names = [n for n in self._dec_inputs if n.startswith("past_key_values.")]
        self._empty_past = self._make_empty_past(config or {})

    @classmethod
    def from_dir(cls, model_dir: Path, manifest: dict[str, Any], *, threads: int | None = None) -> BartSummarizer:
        model_dir = Path(model_dir)
        files = manifest.get("onnx", {})
        gen_d = manifest.get("generation")
        gen = GenerationParams.from_dict(gen_d) if gen_d else GenerationParams.from_model_dir(model_dir)
        return cls(
            make_session(model_dir / files.get("encoder", "encoder_model.onnx"), threads=threads),
            make_session(model_dir / files.get("decoder", "decoder_model_merged.onnx"), threads=threads),
            Tokenizer.from_file(str(model_dir / files.get("tokenizer", "tokenizer.json"))),
            gen,
            model=_model_label(manifest, "bart"),
            config=_read_json(model_dir / "config.json"),
        )

    # -- tokens --------------------------------------------------------------------------------
    def _make_empty_past(self, config: dict[str, Any]) -> dict[str, np.ndarray]:
        heads = int(config.get("decoder_attention_heads", 0) or 0)
        d_model = int(config.get("d_model", 0) or 0)
        past: dict[str, np.ndarray] = {}
        for inp in self.decoder.get_inputs():
            if not inp.name.startswith("past_key_values."):
                continue
            h = inp.shape[1] if isinstance(inp.shape[1], int) else heads
            d = inp.shape[3] if isinstance(inp.shape[3], int) else (d_model // heads if heads else 0)
            if not h or not d:
                raise ValueError(f"cannot tell the shape of {inp.name}: {inp.shape}")
            past[inp.name] = np.zeros((1, h, 0, d), dtype=np.float32)
        return past

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_text(self, text: str) -> list[int]:
        """``<s> tokens </s>``, cut to the encoder's limit."""
        ids = self._ids(normalize_ws(text))[: self.max_input_tokens - 2]
        bos = self.gen.bos_token_id if self.gen.bos_token_id is not None else 0
        return [bos, *ids, self.gen.eos_token_id]

    def decode(self, ids: Sequence[int]) -> str:
        return normalize_ws(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    # -- decoding -----------------------------------------------------------------------------
    def _run_encoder(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.encoder.run(None, {k: v for k, v in feeds.items() if k in self._enc_inputs})[0]

    def _next_token(self, logits: np.ndarray, seq: list[int], bans: _NGramBan) -> int:
        g, cur = self.gen, len(seq)
        if g.forced_bos_token_id is not None and cur == 1:
            return int(g.forced_bos_token_id)
        if g.forced_eos_token_id is not None and cur == g.total_max_length - 1:
            return int(g.forced_eos_token_id)
        scores = logits.astype(np.float32, copy=True)
        banned = bans.banned(seq)
        if banned:
            scores[banned] = -np.inf
        if cur < g.min_length:
            scores[g.eos_token_id] = -np.inf
        return int(np.argmax(scores))

    def generate_ids(self, input_ids: Sequence[int]) -> list[int]:
        """Greedy decoder ids for one encoder input, decoder start token first (as
        transformers' ``generate(num_beams=1, do_sample=False)`` returns them)."""
        if len(input_ids) > self.max_input_tokens:
            raise ValueError(f"{len(input_ids)} input tokens, the encoder takes at most {self.max_input_tokens}")
        ids = np.asarray([list(input_ids)], dtype=np.int64)
        mask = np.ones_like(ids)
        hidden = self._run_encoder(ids, mask)
        g = self.gen
        seq = [int(g.decoder_start_token_id)]
        bans = _NGramBan(g.no_repeat_ngram_size)
        bans.add(seq)
        past = dict(self._empty_past)
        use_cache = np.array([False])
        while len(seq) < g.total_max_length:
            feeds = {
                "input_ids": np.asarray([[seq[-1]]], dtype=np.int64),
                "encoder_attention_mask": mask,
                "encoder_hidden_states": hidden,
                "use_cache_branch": use_cache,
                **past,
            }
            outs = self.decoder.run(self._dec_outputs, feeds)
            for name, value in zip(self._dec_outputs[1:], outs[1:]):
                past_name = "past_key_values." + name.removeprefix("present.")
                # Encoder keys/values are computed once, on the first step.
                if ".decoder." in name or not use_cache[0]:
                    past[past_name] = value
            use_cache = np.array([True])
            token = self._next_token(outs[0][0, -1], seq, bans)
            seq.append(token)
            bans.add(seq)
            if token == g.eos_token_id:
                break
        return seq

    # -- map-reduce ---------------------------------------------------------------------------
    def _split_long(self, sentence: str, budget: int) -> list[str]:
        """A sentence too long for one chunk, cut into word windows that fit."""
        return _pack([(w, len(self._ids(" " + w))) for w in sentence.split()], budget)

    def plan_chunks(self, text: str) -> list[str]:
        """Sentence-aligned pieces of ``text`` that each fit the encoder (with ``<s>``/``</s>``)."""
        budget = self.max_input_tokens - 3  # <s>, </s>, and one token of slack for re-encoding
        pieces: list[tuple[str, int]] = []
        for sent in split_sentences(text):
            k = len(self._ids(" " + sent))
            if k <= budget:
                pieces.append((sent, k))
            else:
                pieces.extend((p, len(self._ids(" " + p))) for p in self._split_long(sent, budget))
        return _pack(pieces, budget)

    def _summarize_chunks(self, chunks: list[str], trace: MapReduceTrace) -> list[str]:
        trace.chunks_per_round.append(len(chunks))
        out: list[str] = []
        for chunk in chunks:
            ids = self.encode_text(chunk)
            trace.encoder_tokens.append(len(ids))
            text = self.decode(self.generate_ids(ids))
            if text:
                out.append(text)
        return out

    def summarize_detailed(self, text: str) -> tuple[str, MapReduceTrace]:
        """The summary of ``text`` and what it took (map-reduce over encoder-sized chunks)."""
        trace = MapReduceTrace()
        text = normalize_ws(text)
        if not text:
            return "", trace
        partials = self._summarize_chunks(self.plan_chunks(text), trace)
        rounds = 0
        while len(partials) > 1 and rounds < MAX_REDUCE_ROUNDS:
            partials = self._summarize_chunks(self.plan_chunks(" ".join(partials)), trace)
            rounds += 1
        if len(partials) > 1:  # did not converge: summarize what fits of the joined partials
            partials = self._summarize_chunks([" ".join(partials)], trace)
        return (partials[0] if partials else ""), trace

    def summarize_text(self, text: str) -> str:
        return self.summarize_detailed(text)[0]


# ---------------------------------------------------------------------------------------------
# MiniLM embeddings
# ---------------------------------------------------------------------------------------------
class MiniLMEmbedder:
    """Sentence embeddings from the all-MiniLM-L6-v2 ONNX export: mean pooling over the attention
    mask, L2-normalized (as sentence-transformers)."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, *, max_seq_length: int = 256, batch_tokens: int = 2048) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self._inputs = set(input_names(session))
        self._pad_id = int((tokenizer.padding or {}).get("pad_id", 0))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_seq_length)

    @classmethod
    def from_dir(cls, model_dir: Path, manifest: dict[str, Any], *, threads: int | None = None, max_seq_length: int | None = None) -> MiniLMEmbedder:
        """``max_seq_length``: cut texts to this many tokens (default: the manifest's, 256)."""
        model_dir = Path(model_dir)
        onnx = manifest.get("onnx", {})
        return cls(
            make_session(model_dir / onnx.get("model", "model.onnx"), threads=threads),
            Tokenizer.from_file(str(model_dir / onnx.get("tokenizer", "tokenizer.json"))),
            max_seq_length=max_seq_length or int(manifest.get("max_seq_length", 256)),
        )

    def _embed_ids(self, seqs: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in seqs)
        ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for r, x in enumerate(seqs):
            ids[r, : len(x)] = x
            mask[r, : len(x)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def pieces_per_word(self, texts: Sequence[str]) -> float:
        """Word pieces per whitespace word over ``texts`` (special tokens aside): how well the
        vocabulary covers their language."""
        n_words = sum(len(t.split()) for t in texts)
        if not n_words:
            return 1.0
        return sum(max(0, len(e.ids) - 2) for e in self.tokenizer.encode_batch(list(texts))) / n_words

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, unit rows. Texts are sorted by token count and batched
        up to ``batch_tokens`` padded tokens, so one long text does not pad a whole batch."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        seqs = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out: np.ndarray | None = None
        start = 0
        while start < len(order):
            width = len(seqs[order[start]])
            end = start + 1
            # grow the batch while its padded size (rows x longest) stays within the budget
            while end < len(order) and (end - start + 1) * len(seqs[order[end]]) <= max(self.batch_tokens, width):
                end += 1
            idx = order[start:end]
            emb = self._embed_ids([seqs[i] for i in idx])
            if out is None:
                out = np.zeros((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
            start = end
        assert out is not None
        return out


# ---------------------------------------------------------------------------------------------
# Choosing one
# ---------------------------------------------------------------------------------------------
def load_notes_builder(store: ModelStore, *, threads: int | None = None) -> NotesBuilder:
    """The notes builder the store supports: MiniLM embeddings for chapters, titles and
    sentence selection (lexical features alone if the store has no ``minilm``), and BART for
    abstractive sentences if the store has a current ``bart``. ``$VIDNOTES_SUMMARIZER=bart|extractive``
    forces one (bart without a BART in the store is an error)."""
    from vidnotes.notes import NotesBuilder

    choice = os.environ.get(SUMMARIZER_ENV, "").strip().lower() or "auto"
    if choice not in {"auto", "bart", "extractive"}:
        raise ValueError(f"{SUMMARIZER_ENV} must be bart, extractive or auto, got {choice!r}")
    if choice == "auto":
        choice = "bart" if store.current("bart") else "extractive"
    bart = None
    if choice == "bart":
        model_dir, manifest = store.fetch("bart")
        bart = BartSummarizer.from_dir(model_dir, manifest, threads=threads)
    embedder, label = None, ""
    if store.current("minilm"):
        model_dir, manifest = store.fetch("minilm")
        # 128 tokens, the length all-MiniLM-L6-v2 was trained on: a longer unit (a run without
        # punctuation, or a non-Latin script the English vocabulary cuts into pieces) costs
        # quadratically more and says little more about its topic
        embedder = MiniLMEmbedder.from_dir(model_dir, manifest, threads=threads, max_seq_length=NOTES_MAX_TOKENS)
        label = _model_label(manifest, "minilm")
    return NotesBuilder(embedder=embedder, abstractive=bart, embedder_model=label)
