"""Generic ONNX export helpers for building the model store (Whisper, BART, MiniLM).

Export-time only: may import torch / transformers / optimum (inside the functions, so that
importing this module stays cheap).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What inference loads for each export task; everything else optimum writes as ONNX is dropped.
SEQ2SEQ_ONNX = ("encoder_model.onnx", "decoder_model_merged.onnx")
KEEP_ONNX: dict[str, tuple[str, ...]] = {
    "automatic-speech-recognition-with-past": SEQ2SEQ_ONNX,
    "text2text-generation-with-past": SEQ2SEQ_ONNX,
    "feature-extraction": ("model.onnx",),
}
# Suffixes ONNX external-data files get next to their model.
_EXTERNAL_DATA_SUFFIXES = (".onnx_data", ".onnx.data", ".data")


def log(msg: str) -> None:
    """A progress message on stderr."""
    print(f"[vidnotes.export] {msg}", file=sys.stderr, flush=True)


def installed_package_dir(module: str, *, install_hint: str = "pip install -e '.[export]'") -> Path:
    """The directory of the installed package ``module``, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {module} package is not installed: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def package_license(dist: str) -> Path | None:
    """The LICENSE file the distribution ``dist`` installed, if any."""
    d = importlib.metadata.distribution(dist)
    for f in d.files or []:
        if f.name.upper().startswith("LICENSE"):
            return Path(str(d.locate_file(f)))
    return None


def dir_size_mb(path: Path, *, pattern: str = "*") -> float:
    """Total size in MiB of the files under ``path`` whose names match ``pattern``."""
    return sum(p.stat().st_size for p in Path(path).rglob(pattern) if p.is_file()) / 2**20


def onnx_files(path: Path) -> list[Path]:
    return sorted(Path(path).glob("*.onnx"))


def is_onnx_artifact(p: Path) -> bool:
    """An ONNX model or one of its external-data files."""
    return p.suffix == ".onnx" or (".onnx" in p.name and p.name.endswith(_EXTERNAL_DATA_SUFFIXES))


def node_names(model: Path, *, op_type: str | None = None, pattern: str | None = None) -> list[str]:
    """Names of the nodes of an ONNX model (top-level graph), filtered by op type and/or a regex
    searched in the name: e.g. the nodes to keep in fp32 when quantizing."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    rx = re.compile(pattern) if pattern else None
    return [
        n.name
        for n in graph.node
        if (op_type is None or n.op_type == op_type) and (rx is None or rx.search(n.name))
    ]


def copy_non_onnx(src: Path, dst: Path) -> list[Path]:
    """Copy config / tokenizer / preprocessor files (every non-ONNX file) from ``src`` to ``dst``."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    copied: list[Path] = []
    for p in sorted(src.rglob("*")):
        if not p.is_file() or is_onnx_artifact(p):
            continue
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
        copied.append(target)
    return copied


def _prune(out_dir: Path, keep: tuple[str, ...]) -> None:
    keep_stems = {Path(k).stem for k in keep}
    for p in sorted(out_dir.iterdir()):
        if not p.is_file() or not is_onnx_artifact(p):
            continue
        stem = p.name.split(".onnx")[0]
        if stem not in keep_stems:
            p.unlink()


def export_onnx(
    model: str | Path,
    out_dir: Path,
    *,
    task: str,
    library_name: str | None = "transformers",
    opset: int | None = None,
    **kwargs: Any,
) -> list[Path]:
    """Export ``model`` (a local directory or a hub id) to ONNX with optimum into ``out_dir``.

    Keeps only what inference needs: ``encoder_model.onnx`` + ``decoder_model_merged.onnx``
    for the ``*-with-past`` seq2seq tasks, ``model.onnx`` for ``feature-extraction``, plus the
    config / generation-config / tokenizer / preprocessor files. ``out_dir`` is replaced.
    Returns the kept ONNX files. optimum's own validation is off: callers check parity.
    ``library_name="transformers"`` exports the bare transformer even for a sentence-transformers
    directory (pooling is then done by the caller).
    """
    if task not in KEEP_ONNX:
        raise ValueError(f"unsupported task {task!r}; one of {sorted(KEEP_ONNX)}")
    from optimum.exporters.onnx import main_export

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    log(f"exporting {model} ({task}) to ONNX ...")
    t0 = time.perf_counter()
    main_export(
        str(model),
        output=tmp,
        task=task,
        opset=opset,
        device="cpu",
        do_validation=False,
        library_name=library_name,
        local_files_only=offline or Path(str(model)).is_dir(),
        **kwargs,
    )
    keep = KEEP_ONNX[task]
    missing = [k for k in keep if not (tmp / k).is_file()]
    if missing:
        raise RuntimeError(f"ONNX export of {model} produced no {', '.join(missing)} (got {sorted(os.listdir(tmp))})")
    _prune(tmp, keep)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    log(f"exported {', '.join(keep)} in {time.perf_counter() - t0:.1f}s ({dir_size_mb(out_dir, pattern='*.onnx'):.1f} MiB)")
    return [out_dir / k for k in keep]


def quantize_int8(
    src: Path,
    dst: Path,
    *,
    per_channel: bool = False,
    nodes_to_exclude: Sequence[str] = (),
    fp32_files: Sequence[str] = (),
) -> None:
    """Dynamic int8 quantization (QInt8 weights) of every ``*.onnx`` in ``src`` into ``dst``,
    If-subgraphs included (merged decoders); the non-ONNX files are copied alongside.
    ``nodes_to_exclude`` names nodes left in fp32 (sensitive layers); ``fp32_files`` names models
    copied unquantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    models = onnx_files(src)
    if not models:
        raise FileNotFoundError(f"no .onnx files in {src}")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    t0 = time.perf_counter()
    for m in models:
        if m.name in fp32_files:
            log(f"keeping {m.name} fp32")
            shutil.copy2(m, dst / m.name)
            continue
        note = (" per-channel" if per_channel else "") + (f", {len(nodes_to_exclude)} nodes kept fp32" if nodes_to_exclude else "")
        log(f"quantizing {m.name} to int8{note} ...")
        external = any((src / (m.name + s)).exists() or (src / (m.stem + s)).exists() for s in _EXTERNAL_DATA_SUFFIXES)
        quantize_dynamic(
            m,
            dst / m.name,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            use_external_data_format=external,
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={"EnableSubgraph": True},
        )
    copy_non_onnx(src, dst)
    log(
        f"int8 in {time.perf_counter() - t0:.1f}s: {dir_size_mb(src, pattern='*.onnx*'):.1f} MiB -> "
        f"{dir_size_mb(dst, pattern='*.onnx*'):.1f} MiB"
    )
