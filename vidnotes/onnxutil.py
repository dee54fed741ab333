"""ONNX Runtime helpers shared by the inference code (speech and summarization).

Torch-free: only the standard library and onnxruntime.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

import onnxruntime as ort

THREADS_ENV = "VIDNOTES_THREADS"
# Allocations of at least this size are mmap'ed, and so given back to the system when freed.
# glibc's default threshold grows with every large block freed (up to 32 MiB), after which
# onnxruntime's per-run buffers (the cross-attention keys/values of a batch, encoder activations)
# come from the heap and stay resident: transcribe's peak RSS at batch 8 was 480 MB with the
# default, 396 MB with 1 MiB (docs/pipeline.md, "Memory").
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)


def thread_count(threads: int | None = None) -> int:
    """The intra-op thread count: ``threads`` if given, else ``$VIDNOTES_THREADS``, else 0
    (0 lets onnxruntime pick, one per physical core)."""
    if threads is not None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        return threads
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError as e:
        raise ValueError(f"{THREADS_ENV} must be an integer, got {raw!r}") from e
    if value < 0:
        raise ValueError(f"{THREADS_ENV} must be >= 0, got {value}")
    return value


def session_options(*, threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = thread_count(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    opts.enable_cpu_mem_arena = False
    return opts


@functools.cache
def release_large_buffers(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (once; what
    ``MALLOC_MMAP_THRESHOLD_`` does at start-up), so freed large buffers leave the resident set.
    False where the C library is not glibc (nothing changes there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def make_session(path: Path, *, threads: int | None = None) -> ort.InferenceSession:
    """A CPU inference session for the ONNX model at ``path``.

    ``threads`` (or ``$VIDNOTES_THREADS``) sets the intra-op thread count; full graph
    optimizations, sequential execution.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    release_large_buffers()
    return ort.InferenceSession(
        str(path), sess_options=session_options(threads=threads), providers=["CPUExecutionProvider"]
    )


def input_names(session: ort.InferenceSession) -> list[str]:
    return [i.name for i in session.get_inputs()]


def output_names(session: ort.InferenceSession) -> list[str]:
    return [o.name for o in session.get_outputs()]
