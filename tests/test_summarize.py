"""Models behind the notes: tiny-BART export/parity/map-reduce, MiniLM export, choosing them
(the notes builder over what the store has), BART in the notes behind the faithfulness check,
torch-freedom.

The module fixtures build a tiny random BART and the packaged MiniLM into temporary model stores
(offline, ~20 s in all); tests that need them are marked ``models``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from vidnotes.notes import NotesBuilder, coverage_select  # noqa: E402
from vidnotes.store import ModelStore, ModelStoreError  # noqa: E402
from vidnotes.summarize import (  # noqa: E402
    BartSummarizer,
    MiniLMEmbedder,
    load_notes_builder,
    normalize_ws,
    split_sentences,
    text_units,
)
from vidnotes.types import Segment, Transcript  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

TOPICS: dict[str, list[str]] = {
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
    ],
}
TOPIC_OF = {s: t for t, sents in TOPICS.items() for s in sents}
TALK = " ".join(s for sents in TOPICS.values() for s in sents)  # 20 sentences, 3 topics in blocks


def long_text(n_sentences: int) -> str:
    sents = list(TOPIC_OF)
    return " ".join(f"In part {i} the speaker said that {sents[i % len(sents)][0].lower()}{sents[i % len(sents)][1:]}" for i in range(n_sentences))


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bart(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from vidnotes.export.bart import build_tiny_bart, export_bart

    root = tmp_path_factory.mktemp("bart")
    tiny = build_tiny_bart(root / "tiny-bart", seed=0)
    store = ModelStore(root / "store")
    manifest = export_bart(tiny, store, version="tiny-test", work_dir=root / "work")
    return SimpleNamespace(tiny=tiny, store=store, manifest=manifest, fp32_dir=root / "work" / "bart-fp32")


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from vidnotes.export.minilm import export_minilm

    root = tmp_path_factory.mktemp("minilm")
    store = ModelStore(root / "store")  # minilm only: no bart
    manifest = export_minilm(store, work_dir=root / "work", version="minilm-test")
    return SimpleNamespace(store=store, manifest=manifest)


@pytest.fixture(scope="module")
def full_store(bart: SimpleNamespace, minilm: SimpleNamespace) -> ModelStore:
    """The BART store with the MiniLM version copied in: both summarizers available."""
    d, m = minilm.store.fetch("minilm")
    bart.store.publish("minilm", m["version"], d, m)
    return bart.store


@pytest.fixture(scope="module")
def bart_summarizer(bart: SimpleNamespace) -> BartSummarizer:
    d, m = bart.store.fetch("bart")
    return BartSummarizer.from_dir(d, m)


def talk_transcript(sentences: list[str]) -> Transcript:
    segs = [Segment(3.0 * i, 3.0 * i + 2.7, s) for i, s in enumerate(sentences)]
    return Transcript(segments=segs, duration=3.0 * len(sentences))


class _EncoderSpy:
    """Wraps an InferenceSession and records the token count of every encoder input."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.lengths: list[int] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.lengths.append(int(feeds["input_ids"].shape[1]))
        return self.session.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


class _NoRun:
    def run(self, *a: Any, **k: Any) -> Any:
        raise AssertionError("a model ran on empty text")


# ---------------------------------------------------------------------------------------------
# Model-free
# ---------------------------------------------------------------------------------------------
def test_import_is_torch_free() -> None:
    code = (
        "import sys, vidnotes.summarize, vidnotes.onnxutil\n"
        "bad = [m for m in ('torch', 'transformers', 'optimum', 'sentence_transformers') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_split_sentences_and_unpunctuated_fallback() -> None:
    assert split_sentences('He said "stop." Then left!  Why?\nOk.') == ['He said "stop."', "Then left!", "Why?", "Ok."]
    assert split_sentences("  \n ") == []
    words = " ".join(f"word{i}" for i in range(130))  # a transcript without punctuation
    units = text_units(words, max_words=60, window_words=25)
    assert [len(u.split()) for u in units] == [25, 25, 25, 25, 25, 5]
    assert " ".join(units) == words


def test_coverage_select_covers_clusters_before_repeating() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:3]
    sizes = [10, 4, 3]  # unequal topics: the big one must not take every pick
    emb = np.concatenate([c + 0.15 * rng.standard_normal((n, 8)) for c, n in zip(centers, sizes)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [i for i, n in enumerate(sizes) for _ in range(n)]
    picked = coverage_select(emb, 3)
    assert sorted(labels[i] for i in picked) == [0, 1, 2]
    assert coverage_select(emb, 2, candidates=[0, 11, 15])[0] in (0, 11, 15)


# ---------------------------------------------------------------------------------------------
# BART
# ---------------------------------------------------------------------------------------------
@pytest.mark.models
def test_tiny_bart_onnx_fp32_greedy_matches_pytorch(bart: SimpleNamespace) -> None:
    import torch
    from transformers import BartForConditionalGeneration, BartTokenizerFast

    tok = BartTokenizerFast.from_pretrained(bart.tiny)
    model = BartForConditionalGeneration.from_pretrained(bart.tiny).eval()
    onnx = BartSummarizer.from_dir(bart.fp32_dir, bart.manifest)
    texts = [
        "Hi.",
        "Thank you for calling. Please hold while we connect you to an operator.",
        "The rover landed in Jezero crater; its mission is to look for signs of past life.",
        ("Your call is important to us. " * 5).strip(),
        long_text(40),  # longer than the 256-token encoder: truncated the same way on both sides
    ]
    natural = 40  # the tiny model's generation config: max_length 40, min_length 12
    lengths = []
    with torch.inference_mode():
        for text in texts:
            enc = tok(text, return_tensors="pt", truncation=True)
            ref = model.generate(**enc, num_beams=1, do_sample=False)[0].tolist()
            ids = onnx.encode_text(text)
            assert ids == enc["input_ids"][0].tolist()
            assert onnx.generate_ids(ids) == ref, text[:60]
            lengths.append(len(ref))
        assert len(ids) == 256
        assert min(lengths) < natural, lengths  # </s> chosen by the model itself was compared
        # EOS forced at max_length, and min_length holding </s> back, on every text: a budget
        # shorter than any natural stop
        onnx.gen = dataclasses.replace(onnx.gen, max_length=9, min_length=6)
        for text in texts:
            enc = tok(text, return_tensors="pt", truncation=True)
            ref = model.generate(**enc, num_beams=1, do_sample=False, max_length=9, min_length=6)[0].tolist()
            assert len(ref) == 9 and ref[-1] == model.generation_config.eos_token_id
            assert onnx.generate_ids(onnx.encode_text(text)) == ref, text[:60]


@pytest.mark.models
def test_bart_manifest_records_generation_quantization_parity(bart: SimpleNamespace) -> None:
    m = bart.manifest
    assert m["task"] == "bart" and m["version"] == "tiny-test" and m["precision"] == "int8"
    assert set(m["files"]) == {
        "encoder_model.onnx",
        "decoder_model_merged.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
        "generation_config.json",
    }
    g = m["generation"]
    assert (g["decoder_start_token_id"], g["bos_token_id"], g["eos_token_id"], g["pad_token_id"]) == (2, 0, 2, 1)
    assert (g["forced_bos_token_id"], g["forced_eos_token_id"], g["max_position_embeddings"]) == (0, 2, 256)
    assert (g["no_repeat_ngram_size"], g["min_length"], g["max_length"]) == (3, 12, 40)
    q = m["quantization"]
    assert q["weight_type"] == "QInt8" and q["size_mb"]["int8"] < q["size_mb"]["fp32"]
    assert m["parity"]["fp32"]["all_equal"] and m["parity"]["fp32"]["tokenizer_match"]
    assert 0.0 <= m["parity"]["int8"]["mean_agreement"] <= 1.0
    assert len(m["parity"]["int8"]["per_text"]) == m["parity"]["int8"]["texts"] >= 3


@pytest.mark.models
def test_bart_map_reduce_keeps_encoder_inputs_within_limit(bart_summarizer: BartSummarizer, monkeypatch: pytest.MonkeyPatch) -> None:
    s = bart_summarizer
    limit = s.max_input_tokens
    assert limit == 256
    text = long_text(150)
    chunks = s.plan_chunks(text)
    assert len(chunks) > 1
    assert " ".join(chunks) == normalize_ws(text)  # nothing lost or reordered
    sentences = set(split_sentences(text))
    assert all(set(split_sentences(c)) <= sentences for c in chunks)  # sentence-aligned

    spy = _EncoderSpy(s.encoder)
    monkeypatch.setattr(s, "encoder", spy)
    summary, trace = s.summarize_detailed(text)
    assert trace.chunks_per_round[0] == len(chunks) > 1
    assert len(trace.chunks_per_round) >= 3 and trace.chunks_per_round[-1] == 1  # reduced more than once
    assert spy.lengths == trace.encoder_tokens
    assert max(spy.lengths) <= limit
    assert summary and s.summarize_text(text) == summary


@pytest.mark.models
def test_bart_unpunctuated_transcript_is_cut_to_fit(bart_summarizer: BartSummarizer) -> None:
    words = " ".join(f"word{i % 97} thing" for i in range(700))
    chunks = bart_summarizer.plan_chunks(words)
    assert len(chunks) > 1
    assert all(len(bart_summarizer.encode_text(c)) <= bart_summarizer.max_input_tokens for c in chunks)
    assert all(len(bart_summarizer._ids(c)) <= bart_summarizer.max_input_tokens - 2 for c in chunks)  # no truncation


# ---------------------------------------------------------------------------------------------
# MiniLM / extractive
# ---------------------------------------------------------------------------------------------
@pytest.mark.models
def test_minilm_onnx_matches_sentence_transformers(minilm: SimpleNamespace) -> None:
    from vidnotes.export.minilm import package_model_dir, reference_embeddings

    m = minilm.manifest
    assert m["task"] == "minilm" and m["pooling"] == "mean" and m["normalize"] is True
    assert m["parity"]["cosine_published"]["min"] >= 0.99
    attempts = m["quantization"]["attempts"]  # every int8 variant tried, with its measured cosine
    assert attempts and all(0.0 < a["cosine"]["min"] <= 1.0 for a in attempts)
    passed = attempts[-1]["cosine"]["min"] >= 0.99
    assert m["precision"] == ("int8" if passed else "fp32") and m["quantization"]["applied"] is passed
    sentences = [
        "The meeting moved to Thursday because the projector was broken.",
        "Neural networks learn by adjusting weights with gradient descent.",
        "ok so",
        TOPICS["mars"][1],
        " ".join(["long"] * 300),  # truncated at max_seq_length on both sides
    ]
    d, man = minilm.store.fetch("minilm")
    emb = MiniLMEmbedder.from_dir(d, man).embed(sentences)
    ref = reference_embeddings(package_model_dir(), sentences)
    assert emb.shape == ref.shape == (len(sentences), 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert float((emb * ref).sum(axis=1).min()) >= 0.99


# ---------------------------------------------------------------------------------------------
# Choosing the models of the notes
# ---------------------------------------------------------------------------------------------
@pytest.mark.models
def test_notes_without_bart_are_extractive(minilm: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDNOTES_SUMMARIZER", raising=False)
    assert minilm.store.current("bart") is None
    b = load_notes_builder(minilm.store)
    assert isinstance(b, NotesBuilder) and b.abstractive is None and isinstance(b.embedder, MiniLMEmbedder)
    notes = b.build(talk_transcript(list(TOPIC_OF)))
    assert (notes.summarizer, notes.model) == ("extractive", "minilm/minilm-test")
    assert {TOPIC_OF[s.text] for s in notes.summary} == set(TOPICS)
    monkeypatch.setenv("VIDNOTES_SUMMARIZER", "bart")
    with pytest.raises(ModelStoreError):
        load_notes_builder(minilm.store)


@pytest.mark.models
def test_bart_notes_have_the_same_structure_and_pass_the_check(full_store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny BART has random weights: whatever it writes is not in the talk, so the check
    keeps none of it and the notes stay extractive, with the same chapters."""
    monkeypatch.delenv("VIDNOTES_SUMMARIZER", raising=False)
    b = load_notes_builder(full_store)
    assert isinstance(b.abstractive, BartSummarizer) and b.embedder is not None
    tr = talk_transcript(list(TOPIC_OF))
    notes = b.build(tr)
    plain = NotesBuilder(embedder=b.embedder, embedder_model=b.embedder_model).build(tr)
    assert notes.model == "minilm/minilm-test, bart/tiny-test"
    assert [(c.start, c.end, c.title) for c in notes.chapters] == [(c.start, c.end, c.title) for c in plain.chapters]
    assert notes.abstractive["kept"] == 0 and notes.abstractive["rejected"] > 0
    assert notes.summarizer == "extractive" and notes.summary_text == plain.summary_text
    assert [[k.text for k in c.key_points] for c in notes.chapters] == [[k.text for k in c.key_points] for c in plain.chapters]
    monkeypatch.setenv("VIDNOTES_SUMMARIZER", "extractive")
    assert load_notes_builder(full_store).abstractive is None
    monkeypatch.setenv("VIDNOTES_SUMMARIZER", "gpt")
    with pytest.raises(ValueError):
        load_notes_builder(full_store)


class _Copycat:
    """An abstractive model that answers with the first sentence of what it is given, plus one
    sentence of invented fact: the check must keep the first and drop the second."""

    model = "copycat/1"

    def summarize_text(self, text: str) -> str:
        return split_sentences(text)[0] + " The speaker won the Nobel prize in 1999."


@pytest.mark.models
def test_abstractive_sentences_are_kept_only_where_supported(minilm: SimpleNamespace) -> None:
    d, m = minilm.store.fetch("minilm")
    b = NotesBuilder(embedder=MiniLMEmbedder.from_dir(d, m), abstractive=_Copycat(), embedder_model="minilm/minilm-test")
    notes = b.build(talk_transcript(list(TOPIC_OF)))
    text = " ".join(notes.summary_text.split() + [k.text for c in notes.chapters for k in c.key_points])
    assert "Nobel" not in text
    assert notes.summarizer == "bart" and notes.abstractive["kept"] >= len(notes.chapters) and notes.abstractive["rejected"] >= len(notes.chapters)
    for c in notes.chapters:
        assert c.key_points and all(k.text in TOPIC_OF for k in c.key_points)
    assert not {k.text for c in notes.chapters for k in c.key_points} & {s.text for s in notes.summary}


@pytest.mark.models
def test_empty_text_runs_no_model(bart_summarizer: BartSummarizer, minilm: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bart_summarizer, "encoder", _NoRun())
    monkeypatch.setattr(bart_summarizer, "decoder", _NoRun())
    for text in ("", "   \n\t "):
        assert bart_summarizer.summarize_detailed(text)[0] == ""
    d, m = minilm.store.fetch("minilm")
    emb = MiniLMEmbedder.from_dir(d, m)
    monkeypatch.setattr(emb, "session", _NoRun())
    notes = NotesBuilder(embedder=emb, abstractive=bart_summarizer).build(Transcript(segments=[Segment(0, 1, "  ")], duration=1.0))
    assert notes.message == "empty" and notes.chapters == []
