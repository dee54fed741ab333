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
SPINNING_ENV = "VIDNOTES_ORT_SPINNING"
# $VIDNOTES_MMAP_THRESHOLD (bytes): allocations of at least this size are mmap'ed, and so given
# back to the system when freed. Off (0) by default: glibc's own threshold grows with every large
# block freed (up to 32 MiB), after which onnxruntime's per-run buffers come from the heap and stay
# resident, which costs memory and saves page faults. Measured on varied-en/asterisk-en (tiny.en,
# batch 8, 2 threads): peak RSS 480-506 MB by default, 398-428 MB at 1 MiB, but transcription 35-45%
# slower at 1 MiB and ~20% at 16 MiB on this 2-core VM, where page faults are dear (README, "Quality and speed").
MMAP_THRESHOLD = 0
MMAP_THRESHOLD_ENV = "VIDNOTES_MMAP_THRESHOLD"
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
    if not spinning():
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def spinning() -> bool:
    """Do ONNX Runtime's intra-op threads spin while they wait for work (its default)? Off where
    ``$VIDNOTES_ORT_SPINNING`` is 0: the local stack sets that for its function processes, which
    share the host's cores, where spinning threads of one process take the cores the others need
    (three transcribe invocations at once on 2 cores: 1.14-1.55x faster with spinning off in four runs;
    docs/airflow.md). A Lambda instance has its cores to itself and keeps the default."""
    raw = os.environ.get(SPINNING_ENV, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"{SPINNING_ENV} must be 0 or 1, got {raw!r}")
    return raw != "0"


@functools.cache
def release_large_buffers(threshold: int | None = None) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (default ``$VIDNOTES_MMAP_THRESHOLD``,
    else ``MMAP_THRESHOLD``: off) for this process, once (what ``MALLOC_MMAP_THRESHOLD_`` does at
    start-up), so freed large buffers leave the resident set. False where it is 0 or the C
    library is not glibc (nothing changes then)."""
    if threshold is None:
        raw = os.environ.get(MMAP_THRESHOLD_ENV, "").strip()
        try:
            threshold = int(raw) if raw else MMAP_THRESHOLD
        except ValueError as e:
            raise ValueError(f"{MMAP_THRESHOLD_ENV} must be a number of bytes, got {raw!r}") from e
    if threshold <= 0:
        return False
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
