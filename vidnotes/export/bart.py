"""BART summarization models for the store: export -> int8 -> parity -> publish (task ``bart``).

:func:`export_bart` takes any BART-family checkpoint (a directory or a hub id such as
``sshleifer/distilbart-cnn-12-6`` or ``facebook/bart-large-cnn``). No BART weights can be installed
offline, so :func:`build_tiny_bart` makes a small randomly initialised one, with a byte-level BPE
tokenizer trained here, that exercises the same export / int8 / parity / decode path in tests.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vidnotes.export.onnx_tools import dir_size_mb, export_onnx, log, quantize_int8
from vidnotes.store import ModelStore

TASK = "bart"
ONNX_TASK = "text2text-generation-with-past"
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as BART's first four
# What inference loads; everything else of the export stays out of the store.
PUBLISH_FILES = (
    "encoder_model.onnx",
    "decoder_model_merged.onnx",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "generation_config.json",
)
PARITY_TEXTS = (
    "The city council met on Tuesday to discuss the new budget. Members argued about funding for "
    "schools and roads, and the vote was postponed until next month.",
    "Please enter your account number followed by the pound key. If you know your party's extension, "
    "you may dial it at any time.",
    "In this lecture we look at how vaccines train the immune system. We cover antibodies, memory "
    "cells and why some vaccines need a booster dose.",
    "The weather will be sunny in the morning with clouds later in the day and a chance of rain.",
)
CORPUS_GZ = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
_BUILTIN_CORPUS = """\
Welcome to this talk. Today we will look at how recorded lectures become transcripts and notes.
First the audio is split into segments, then each segment is transcribed, and finally the text is summarized.
A good summary keeps the key points of the talk and leaves out the details.
The speaker introduced the topic, gave three examples, answered questions and thanked the audience.
"""


# ---------------------------------------------------------------------------------------------
# Tiny BART for tests
# ---------------------------------------------------------------------------------------------
def _corpus_lines(repo_root: Path | None = None) -> list[str]:
    """Offline training text for the tiny tokenizer: the Asterisk prompt transcripts (if
    installed), the repository's README/docs, and a built-in paragraph."""
    lines: list[str] = []
    if CORPUS_GZ.is_file():
        with gzip.open(CORPUS_GZ, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith(";"):
                    continue
                _, sep, text = line.partition(": ")
                lines.append(text if sep else line)
    root = repo_root or Path(__file__).resolve().parents[2]
    for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        if p.is_file():
            lines.extend(x for x in p.read_text(errors="replace").splitlines() if x.strip())
    lines.extend(_BUILTIN_CORPUS.splitlines())
    return lines


def build_tiny_tokenizer(out_dir: Path, *, vocab_size: int = 2000) -> Any:
    """Train a byte-level BPE (BART-style special tokens ``<s>``=0 ``<pad>``=1 ``</s>``=2
    ``<unk>``=3 ``<mask>``=4) and save it as a ``BartTokenizerFast`` in ``out_dir``."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import BartTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(_corpus_lines(), vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    for i, tok in enumerate(SPECIAL_TOKENS):
        if bpe.token_to_id(tok) != i:
            raise RuntimeError(f"tokenizer: {tok} got id {bpe.token_to_id(tok)}, expected {i}")
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "_bpe_tokenizer.json"
    bpe.save(str(raw))
    tok = BartTokenizerFast(tokenizer_file=str(raw), model_max_length=256)
    raw.unlink()
    tok.save_pretrained(out_dir)  # tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab/merges
    return tok


def build_tiny_bart(out_dir: Path, *, seed: int = 0) -> Path:
    """A small, **randomly initialised** BART (d_model 128, 2+2 layers, 4 heads, ffn 256,
    256 positions) with a BPE tokenizer trained here on offline text, saved to ``out_dir``.

    Its summaries are meaningless: it exists only to test the export / int8 / parity / decoding /
    map-reduce path without any downloadable weights. Its generation config sets min/max length,
    ``no_repeat_ngram_size`` and forced BOS/EOS so that all of them are exercised.
    """
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer(out_dir)
    config = BartConfig(
        vocab_size=len(tok),
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_position_embeddings=256,
        init_std=0.05,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config).eval()
    # Nudge </s> up so that greedy decoding sometimes stops by itself (after min_length) and
    # sometimes runs to the forced EOS at max_length: both paths get compared in the parity check.
    with torch.no_grad():
        model.final_logits_bias[0, config.eos_token_id] = 1.3
    model.generation_config = GenerationConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        max_length=40,
        min_length=12,
        no_repeat_ngram_size=3,
        num_beams=1,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    log(f"tiny BART ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, vocab {len(tok)}) in {out_dir}")
    return out_dir


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
def generation_params(config: Any, gen: Any) -> dict[str, Any]:
    """The decoding parameters inference needs, from a ``PretrainedConfig`` and ``GenerationConfig``."""

    def pick(name: str, default: Any = None) -> Any:
        v = getattr(gen, name, None)
        if v is None:
            v = getattr(config, name, None)
        return default if v is None else v

    eos = pick("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0]
    params = {
        "decoder_start_token_id": pick("decoder_start_token_id", eos),
        "bos_token_id": pick("bos_token_id"),
        "eos_token_id": eos,
        "pad_token_id": pick("pad_token_id"),
        "forced_bos_token_id": pick("forced_bos_token_id"),
        "forced_eos_token_id": pick("forced_eos_token_id"),
        "max_position_embeddings": int(config.max_position_embeddings),
        "no_repeat_ngram_size": int(pick("no_repeat_ngram_size", 0)),
        "max_length": int(pick("max_length", 20)),
        "min_length": int(pick("min_length", 0)),
        "max_new_tokens": getattr(gen, "max_new_tokens", None),
    }
    # Set in the checkpoint but not applied by the greedy ONNX decoder (beam search, penalties).
    ignored = {}
    for name, neutral in (
        ("num_beams", 1),
        ("length_penalty", 1.0),
        ("repetition_penalty", 1.0),
        ("encoder_no_repeat_ngram_size", 0),
        ("bad_words_ids", None),
        ("suppress_tokens", None),
        ("begin_suppress_tokens", None),
    ):
        v = getattr(gen, name, None)
        if v is not None and v != neutral:
            ignored[name] = v
    params["ignored"] = ignored
    return params


def _slug(source: str | Path) -> str:
    name = Path(str(source).rstrip("/")).name or "bart"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-") or "bart"


def default_version(source: str | Path) -> str:
    return f"{_slug(source)}-{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}"


def _agreement(a: list[int], b: list[int]) -> float:
    """Fraction of positions (over the longer sequence) where two id sequences agree."""
    n = max(len(a), len(b))
    if n == 0:
        return 1.0
    return sum(1 for x, y in zip(a, b) if x == y) / n


def _torch_greedy(model: Any, tokenizer: Any, texts: tuple[str, ...] | list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """HF tokenizer ids and ``generate(num_beams=1, do_sample=False)`` ids for each text."""
    import torch

    inputs: list[list[int]] = []
    outputs: list[list[int]] = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", truncation=True)
            out = model.generate(**enc, num_beams=1, do_sample=False)
            inputs.append(enc["input_ids"][0].tolist())
            outputs.append(out[0].tolist())
    return inputs, outputs


def parity_report(model_dir: Path, gen: dict[str, Any], ref_inputs: list[list[int]], ref_outputs: list[list[int]], texts: Any) -> dict[str, Any]:
    """Greedy ids of the ONNX model in ``model_dir`` (the torch-free inference decoder) vs reference ids."""
    from vidnotes.summarize import BartSummarizer

    s = BartSummarizer.from_dir(model_dir, {"task": TASK, "version": "parity", "generation": gen})
    per_text = []
    for text, ids_in, ref in zip(texts, ref_inputs, ref_outputs):
        ours_in = s.encode_text(text)
        got = s.generate_ids(ours_in)
        per_text.append(
            {
                "tokenizer_match": ours_in == ids_in,
                "equal": got == ref,
                "agreement": round(_agreement(got, ref), 4),
                "length": len(got),
                "reference_length": len(ref),
            }
        )
    n = len(per_text)
    return {
        "texts": n,
        "equal": sum(p["equal"] for p in per_text),
        "all_equal": all(p["equal"] for p in per_text),
        "tokenizer_match": all(p["tokenizer_match"] for p in per_text),
        "mean_agreement": round(sum(p["agreement"] for p in per_text) / max(n, 1), 4),
        "per_text": per_text,
    }


def _load_torch(source: str | Path) -> tuple[Any, Any]:
    import os

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    local = Path(str(source)).is_dir() or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    tokenizer = AutoTokenizer.from_pretrained(str(source), use_fast=True, local_files_only=local)
    model = AutoModelForSeq2SeqLM.from_pretrained(str(source), local_files_only=local).eval()
    return model, tokenizer


def export_bart(
    source: str | Path,
    store: ModelStore,
    *,
    version: str | None = None,
    work_dir: Path,
    per_channel: bool = True,
    parity_texts: tuple[str, ...] | list[str] = PARITY_TEXTS,
    require_fp32_parity: bool = True,
) -> dict[str, Any]:
    """Export a BART-family checkpoint to ONNX, quantize it to int8, check greedy parity against
    PyTorch (fp32 and int8 ONNX vs ``generate(num_beams=1, do_sample=False)``) and publish the
    int8 model + tokenizer + config to ``store`` as task ``bart``. Returns the published manifest.

    Raises if the fp32 ONNX model does not reproduce PyTorch's greedy ids exactly (an export
    bug) unless ``require_fp32_parity`` is false; int8 disagreement is only recorded.
    ``work_dir`` keeps the intermediate exports (``bart-fp32``, ``bart-int8``, ``bart-publish``).
    Per-channel int8 scales by default: on the tiny test model they gave 4/4 greedy-equal
    parity texts against 3/4 (0.97 token agreement) per-tensor.
    """
    t0 = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    version = version or default_version(source)
    fp32_dir, int8_dir, pub_dir = work_dir / "bart-fp32", work_dir / "bart-int8", work_dir / "bart-publish"

    export_onnx(source, fp32_dir, task=ONNX_TASK)
    quantize_int8(fp32_dir, int8_dir, per_channel=per_channel)

    model, tokenizer = _load_torch(source)  # after the export: one copy of the weights at a time
    if not getattr(tokenizer, "is_fast", False):
        raise RuntimeError(f"{source}: no fast tokenizer; inference needs tokenizer.json")
    gen = generation_params(model.config, model.generation_config)
    for d in (fp32_dir, int8_dir):  # tokenizer.json exactly as transformers loads it
        tokenizer.save_pretrained(d)

    log("parity: PyTorch greedy generate ...")
    ref_in, ref_out = _torch_greedy(model, tokenizer, parity_texts)
    log("parity: ONNX fp32 and int8 greedy decode ...")
    parity = {
        "reference": "transformers generate(num_beams=1, do_sample=False)",
        "fp32": parity_report(fp32_dir, gen, ref_in, ref_out, parity_texts),
        "int8": parity_report(int8_dir, gen, ref_in, ref_out, parity_texts),
    }
    log(
        f"parity fp32 {parity['fp32']['equal']}/{parity['fp32']['texts']} equal, "
        f"int8 {parity['int8']['equal']}/{parity['int8']['texts']} equal "
        f"(token agreement {parity['int8']['mean_agreement']:.3f})"
    )
    if require_fp32_parity and not (parity["fp32"]["all_equal"] and parity["fp32"]["tokenizer_match"]):
        raise RuntimeError(f"{source}: fp32 ONNX greedy ids differ from PyTorch: {parity['fp32']}")

    if pub_dir.exists():
        shutil.rmtree(pub_dir)
    pub_dir.mkdir(parents=True)
    for name in PUBLISH_FILES:
        if (int8_dir / name).is_file():
            shutil.copy2(int8_dir / name, pub_dir / name)
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx", "tokenizer.json", "config.json"):
        if not (pub_dir / name).is_file():
            raise RuntimeError(f"export of {source} has no {name}")

    cfg = model.config
    manifest = {
        "source": str(source),
        "model_type": cfg.model_type,
        "format": "onnx",
        "precision": "int8",
        "quantization": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "QInt8",
            "per_channel": per_channel,
            "size_mb": {"fp32": round(dir_size_mb(fp32_dir, pattern="*.onnx"), 2), "int8": round(dir_size_mb(int8_dir, pattern="*.onnx"), 2)},
        },
        "onnx": {"encoder": "encoder_model.onnx", "decoder": "decoder_model_merged.onnx", "tokenizer": "tokenizer.json"},
        "architecture": {
            "d_model": cfg.d_model,
            "encoder_layers": cfg.encoder_layers,
            "decoder_layers": cfg.decoder_layers,
            "decoder_attention_heads": cfg.decoder_attention_heads,
            "vocab_size": cfg.vocab_size,
        },
        "generation": gen,
        "parity": parity,
        "export_seconds": round(time.perf_counter() - t0, 1),
    }
    published = store.publish(TASK, version, pub_dir, manifest)
    log(f"published {TASK}/{version} ({dir_size_mb(pub_dir):.1f} MiB) to {store.root}")
    return published


def main(argv: list[str] | None = None) -> int:
    import argparse

    from vidnotes.store import default_store

    ap = argparse.ArgumentParser(description="Export a BART checkpoint to the model store (task bart).")
    ap.add_argument("source", help="checkpoint directory or hub id, or 'tiny' for the random test model")
    ap.add_argument("--version")
    ap.add_argument("--work-dir", type=Path, default=Path("build/export"))
    ap.add_argument("--per-tensor", action="store_true", help="per-tensor int8 scales (default per-channel)")
    args = ap.parse_args(argv)
    source: str | Path = args.source
    if args.source == "tiny":
        source = build_tiny_bart(args.work_dir / "tiny-bart")
    manifest = export_bart(source, default_store(), version=args.version, work_dir=args.work_dir, per_channel=not args.per_tensor)
    print(json.dumps({k: manifest[k] for k in ("task", "version", "quantization", "parity")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
