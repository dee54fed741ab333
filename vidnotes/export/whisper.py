"""Whisper into the model store: source -> transformers -> ONNX (encoder + merged decoder with
KV cache) -> dynamic int8 -> parity and quality checks on real recordings -> publish.

Parity: greedy tokens (no timestamps) of the ONNX model, decoded by vidnotes' own torch-free
decoder, against transformers' ``generate`` in PyTorch on the same recordings. Quality: WER on the
held-out Asterisk test split for PyTorch fp32, ONNX fp32 and ONNX int8.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.asr import TranscriptionOptions, WhisperOnnx
from vidnotes.audio import decode_audio
from vidnotes.datasets import Recording, load_split
from vidnotes.export.ct2 import resolve_whisper_source
from vidnotes.export.onnx_tools import dir_size_mb, export_onnx, log, quantize_int8
from vidnotes.features import log_mel_batch
from vidnotes.store import ModelStore, sha256_file
from vidnotes.tokenizer import WhisperTokenizer
from vidnotes.wer import wer

TASK = "whisper"
NO_TS = TranscriptionOptions(timestamps=False, batch_size=8)


def load_recordings(recs: list[Recording]) -> list[np.ndarray]:
    return [decode_audio(r.path, input_format="g722") for r in recs]


def onnx_greedy(model: WhisperOnnx, audios: list[np.ndarray], opts: TranscriptionOptions = NO_TS) -> list[list[int]]:
    """Greedy text tokens of each (<= 30 s) recording, batched."""
    out: list[list[int]] = []
    for i in range(0, len(audios), opts.batch_size):
        feats = log_mel_batch(audios[i : i + opts.batch_size], n_mels=model.n_mels)
        out += [toks for toks, _, _ in model.decode(model.encode(feats), opts)]
    return out


def torch_greedy(hf_dir: Path | str, audios: list[np.ndarray], *, max_new_tokens: int = 224) -> list[list[int]]:
    """Greedy tokens from transformers' ``generate`` in PyTorch fp32 (the reference)."""
    import torch
    from transformers import WhisperForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # generate() warns about the converted generation config
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    n_mels = model.config.num_mel_bins
    eot = model.generation_config.eos_token_id
    out: list[list[int]] = []
    with torch.inference_mode():
        for a in audios:
            feats = torch.from_numpy(log_mel_batch([a], n_mels=n_mels))
            ids = model.generate(feats, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)[0].tolist()
            # drop the decoder prompt (start, language/task, no-timestamps) and the end token
            body = [t for t in ids if t < eot]
            out.append(body)
    return out


def parity_report(reference: list[list[int]], candidate: list[list[int]], names: list[str]) -> dict[str, Any]:
    identical = [a == b for a, b in zip(reference, candidate)]
    return {
        "recordings": len(identical),
        "identical": int(sum(identical)),
        "differing": [n for n, same in zip(names, identical) if not same],
    }


def version_id(name: str, onnx_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(onnx_dir.glob("*.onnx")):
        h.update(sha256_file(p).encode())
    return f"{name}-{h.hexdigest()[:10]}"


@dataclass
class EvalSet:
    """Recordings (each <= 30 s) with reference transcripts, for parity and WER."""

    names: list[str]
    audios: list[np.ndarray]
    texts: list[str]
    description: str


def asterisk_test_set() -> EvalSet:
    """The held-out Asterisk test split: what `make models` checks every build on."""
    test = load_split("test")
    return EvalSet(
        names=[r.name for r in test],
        audios=load_recordings(test),
        texts=[r.text for r in test],
        description=f"asterisk test split ({len(test)} recordings, vidnotes/data/asterisk_split.json)",
    )


@dataclass
class ExportedWhisper:
    """An exported, quantized and checked model, ready to publish."""

    name: str
    version: str
    fp32_dir: Path
    int8_dir: Path
    fields: dict[str, Any]  # manifest fields: precision, quantization, runtime, sizes, parity, quality
    int8_texts: list[str] = field(default_factory=list)  # the int8 model's greedy transcripts of the eval set (no timestamps)


def export_int8(hf: Path | str, fp32: Path, int8: Path) -> list[str]:
    """A transformers Whisper checkpoint -> ONNX fp32 in ``fp32`` -> int8 per-channel in ``int8``;
    a multilingual checkpoint keeps its decoder fp32 (:func:`serves_fp32_decoder`). Returns the
    decoder files kept fp32."""
    export_onnx(hf, fp32, task="automatic-speech-recognition-with-past")
    multilingual = serves_fp32_decoder(hf)
    decoders = [p.name for p in fp32.glob("decoder*.onnx")] if multilingual else []
    quantize_int8(fp32, int8, per_channel=True, fp32_files=decoders, nodes_to_exclude=encoder_fp32_nodes(fp32) if multilingual else ())
    return decoders


def encoder_fp32_nodes(fp32: Path) -> list[str]:
    """The encoder's nodes a multilingual model keeps fp32: each layer's ``fc2`` (the MLP's
    down-projection, whose input after GELU has the outliers that one int8 scale per tensor
    handles worst). Base on 30 Italian clips: 19.0% WER all int8, 17.7% with these fp32, 17.5%
    all fp32; one 30 s window 0.26 / 0.33 / 0.42 s (docs/languages.md, "Precision")."""
    import onnx

    graph = onnx.load(str(Path(fp32) / "encoder_model.onnx"), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and "/fc2/" in n.name]


def export_whisper(
    hf: Path | str,
    *,
    work_dir: Path,
    name: str,
    eval_set: EvalSet | None = None,
    parity_count: int | None = None,
    quality: bool = True,
) -> ExportedWhisper:
    """A transformers Whisper checkpoint -> ONNX fp32 -> int8 -> parity and WER on ``eval_set``
    (default: the Asterisk test split); a multilingual checkpoint keeps its decoder fp32
    (:func:`serves_fp32_decoder`). Nothing is published."""
    work_dir = Path(work_dir)
    fp32, int8 = work_dir / f"{name}-onnx-fp32", work_dir / f"{name}-onnx-int8"
    for d in (fp32, int8):
        if d.exists():
            shutil.rmtree(d)
    decoders = export_int8(hf, fp32, int8)

    test = eval_set or asterisk_test_set()
    audios, names, refs = test.audios, test.names, test.texts
    log(f"parity: PyTorch generate vs ONNX greedy on {len(names)} real recordings ...")
    torch_tokens = torch_greedy(hf, audios)
    m32 = WhisperOnnx(fp32, name=name)
    m8 = WhisperOnnx(int8, name=name)
    fp32_tokens = onnx_greedy(m32, audios)
    int8_tokens = onnx_greedy(m8, audios)
    k = min(parity_count or len(names), len(names))
    parity = {
        "method": "greedy tokens without timestamps; reference: transformers generate (PyTorch fp32)",
        "onnx_fp32": parity_report(torch_tokens[:k], fp32_tokens[:k], names[:k]),
        "onnx_int8": parity_report(torch_tokens[:k], int8_tokens[:k], names[:k]),
    }
    log(f"parity fp32: {parity['onnx_fp32']['identical']}/{k} identical; int8: {parity['onnx_int8']['identical']}/{k}")
    metrics: dict[str, Any] = {}
    if quality:
        dec = m32.tokenizer.decode
        metrics = {
            "dataset": test.description,
            "normalizer": "vidnotes.wer.normalize",
            "wer_pytorch_fp32": round(wer(refs, [dec(t) for t in torch_tokens]), 4),
            "wer_onnx_fp32": round(wer(refs, [dec(t) for t in fp32_tokens]), 4),
            "wer_onnx_int8": round(wer(refs, [dec(t) for t in int8_tokens]), 4),
        }
        log(f"WER on the test split: {metrics}")
    languages = WhisperTokenizer.from_dir(int8).language_ids
    fields = {
        "name": name,
        "multilingual": bool(languages),  # decodes (and detects) the languages of its tokenizer, else English only
        "languages": sorted(languages) or ["en"],
        "precision": "int8 encoder (fc2 fp32), fp32 decoder" if decoders else "int8",
        "quantization": "dynamic int8 (QInt8 per-channel weights, onnxruntime quantize_dynamic)"
        + ("; the decoder fp32 (encoder only int8, its fc2 layers fp32)" if decoders else ""),
        "runtime": {"encoder": "encoder_model.onnx", "decoder": "decoder_model_merged.onnx"},
        "sizes_mib": {"fp32": round(dir_size_mb(fp32, pattern="*.onnx"), 1), "int8": round(dir_size_mb(int8, pattern="*.onnx"), 1)},
        "parity": parity,
        "quality": metrics,
    }
    return ExportedWhisper(name=name, version=version_id(name, int8), fp32_dir=fp32, int8_dir=int8, fields=fields,
                           int8_texts=[m8.tokenizer.decode(t) for t in int8_tokens])


def source_info(spec: str, hf: Path | str) -> dict[str, Any]:
    """The manifest's ``source``: the spec plus the checkpoint's ``vidnotes_source.json``."""
    info: dict[str, Any] = {"spec": spec}
    prov = Path(hf) / "vidnotes_source.json" if isinstance(hf, Path) else None
    if prov is not None and prov.is_file():
        info.update(json.loads(prov.read_text()))
    return info


def publish_whisper(
    store: ModelStore,
    built: ExportedWhisper,
    *,
    source: dict[str, Any],
    build_seconds: float,
    metadata: dict[str, Any] | None = None,
    make_current: bool = True,
) -> dict[str, Any]:
    """Publish the int8 directory as ``whisper/<version>`` with its manifest."""
    manifest = store.publish(
        TASK,
        built.version,
        built.int8_dir,
        {**built.fields, "source": source, **(metadata or {}), "build_seconds": round(build_seconds, 1)},
        make_current=make_current,
    )
    log(f"published {TASK}/{built.version} to {store.root} in {manifest['build_seconds']} s" + ("" if make_current else " (not CURRENT)"))
    return manifest


def build_whisper(
    source: str,
    store: ModelStore,
    *,
    work_dir: Path,
    name: str | None = None,
    parity_count: int | None = None,
    quality: bool = True,
    eval_set: EvalSet | None = None,
    metadata: dict[str, Any] | None = None,
    make_current: bool = True,
) -> dict[str, Any]:
    """Build, check and publish one Whisper model; returns the published manifest.

    ``source``: a package name, a CTranslate2 or transformers directory (e.g. a fine-tuned
    checkpoint) or a hub id. ``metadata`` is merged into the manifest (e.g. training metrics).
    """
    t0 = time.perf_counter()
    work_dir = Path(work_dir)
    hf = resolve_whisper_source(source, cache_dir=work_dir / "sources")
    built = export_whisper(hf, work_dir=work_dir, name=name or _model_name(hf), eval_set=eval_set, parity_count=parity_count, quality=quality)
    return publish_whisper(
        store, built, source=source_info(str(source), hf), build_seconds=time.perf_counter() - t0, metadata=metadata, make_current=make_current
    )


def serves_fp32_decoder(hf: Path | str) -> bool:
    """Is ``hf`` a multilingual checkpoint (a vocabulary of 51865 tokens and more; English-only:
    51864)? Those are served with an fp32 decoder: int8 weights of the decoder's token embeddings
    and output projection cost the base model 53% WER on Russian against 22% in fp32
    (docs/languages.md, "Precision"); the encoder is int8 in every model."""
    config = Path(hf) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("vocab_size", 0) > 51864


def _model_name(hf: Path | str) -> str:
    if isinstance(hf, str):
        return hf.rsplit("/", 1)[-1]
    cfg = json.loads((hf / "config.json").read_text())
    base = {(384, 4): "tiny", (512, 6): "base", (768, 12): "small", (1024, 24): "medium"}.get(
        (cfg["d_model"], cfg["encoder_layers"]), f"d{cfg['d_model']}"
    )
    return base + (".en" if cfg["vocab_size"] == 51864 else "")
