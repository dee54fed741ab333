"""Lambda vidnotes-extract-audio: {"bucket", "key"} of an upload -> chunks under jobs/<id>/.

The Silero VAD is loaded once per container from the model store (task ``vad``, S3 -> /tmp,
sha256-verified; VIDNOTES_VAD_VERSION pins a version): chunks are cut at the pauses between
speech regions, and chunks.json / source.json record where the speech is.
"""

import os
import time
from functools import lru_cache

from vidnotes.jobs import ExtractRequest
from vidnotes.lambda_io import logger, parse, results_storage, s3_client
from vidnotes.stages import Limits, extract_audio, run_stage
from vidnotes.storage import S3Storage
from vidnotes.store import default_store
from vidnotes.vad import SileroVad

log = logger("vidnotes-extract-audio")


@lru_cache(maxsize=1)
def vad() -> SileroVad:
    t0 = time.perf_counter()
    v = SileroVad.from_store(default_store(), os.environ.get("VIDNOTES_VAD_VERSION") or None)
    log.info("vad loaded", extra={"model": v.name, "seconds": round(time.perf_counter() - t0, 2)})
    return v


@log.inject_lambda_context
def handler(event, context):
    req = parse(ExtractRequest, event, stage="extract_audio")
    results = results_storage()
    source = S3Storage(req.bucket, s3_client())
    out = run_stage(
        "extract_audio", results, None,
        lambda work: extract_audio(req, source=source, results=results, limits=Limits.from_env(), work=work, vad=vad()),
    )  # fmt: skip
    log.info("extracted", extra={"job_id": out.job_id, "chunks": out.chunks, "duration": out.duration, "speech_seconds": out.speech_seconds,
                                 "duplicate": out.duplicate})  # fmt: skip
    return out.model_dump()
