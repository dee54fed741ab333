"""ONNX Runtime helpers shared by the inference code (speech and summarization).

Torch-free: only the standard library and onnxruntime.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Iterator
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
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))


# Inside mapped_allocations(): allocations of at least this many bytes are mmap'ed; after it,
# the heap takes everything below HEAP_MMAP_THRESHOLD (glibc's own ceiling for its dynamic
# threshold on 64-bit, where it ends up once onnxruntime has freed a few large buffers) and the
# heap's top is given back past HEAP_TRIM_THRESHOLD (twice that, as the dynamic rule sets it).
MAPPED_THRESHOLD = 1 << 20
HEAP_MMAP_THRESHOLD = 32 << 20
HEAP_TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD = -1


# In the environment at start-up (glibc 2.35 and later; older ones ignore it): glibc asks for
# transparent huge pages for the buffers it maps, so mapping the first step's buffers costs a few
# hundred page faults a batch, not ~60,000 (measured here: with mapped_allocations, transcription
# 5-8% slower than before without it, as fast with it). The local stack sets it for its function
# processes, the transcribe image too, and bench/bench_asr.py for the vidnotes engines.
HUGEPAGE_TUNABLES = "glibc.malloc.hugetlb=1"


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None  # not glibc
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


@contextlib.contextmanager
def mapped_allocations(threshold: int = MAPPED_THRESHOLD) -> Iterator[None]:
    """Within: buffers of at least ``threshold`` bytes come from mmap, so they leave the resident
    set when freed and never fragment the heap. For the few runs that allocate much at once and
    keep part of it (the decoder's first step of a batch: the cross-attention keys and values of
    every window, 147 MB at batch 8 on tiny.en, and as much again in intermediates), not for every
    run: mapping every large buffer costs page faults on each decoder step (35-45% slower,
    ``$VIDNOTES_MMAP_THRESHOLD``). Peak RSS of tiny.en at batch 8, README "Quality and speed".
    A fixed ``$VIDNOTES_MMAP_THRESHOLD`` is left as it is; a C library without mallopt changes nothing."""
    mallopt = _mallopt()
    if mallopt is None or release_large_buffers():
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, threshold)
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)


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
