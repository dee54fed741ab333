"""Lambda vidnotes-transcribe: {"job_id", "chunks": [...]} -> jobs/<id>/segments/<first>.json.

The models are loaded once per container (from the model store, S3 -> /tmp, sha256-verified):
Whisper and the Silero VAD (for jobs whose chunks.json has no speech regions; the others carry
them from extract-audio). VIDNOTES_WHISPER_VERSION / VIDNOTES_VAD_VERSION pin versions;
otherwise the store's CURRENT is used.
"""

import os
import time
from functools import lru_cache

from vidnotes.asr import WhisperOnnx
from vidnotes.jobs import TranscribeRequest
from vidnotes.lambda_io import logger, parse, results_storage
from vidnotes.stages import run_stage, transcribe
from vidnotes.store import default_store
from vidnotes.vad import SileroVad

log = logger("vidnotes-transcribe")


@lru_cache(maxsize=1)
def vad() -> SileroVad:
    return SileroVad.from_store(default_store(), os.environ.get("VIDNOTES_VAD_VERSION") or None)


@lru_cache(maxsize=1)
def model() -> WhisperOnnx:
    t0 = time.perf_counter()
    model_dir, manifest = default_store().fetch("whisper", os.environ.get("VIDNOTES_WHISPER_VERSION") or None)
    m = WhisperOnnx(model_dir, name=f"whisper/{manifest['version']}", vad=vad())
    log.info("model loaded", extra={"model": m.name, "vad": m.vad.name if m.vad else None, "seconds": round(time.perf_counter() - t0, 2)})
    return m


@log.inject_lambda_context
def handler(event, context):
    req = parse(TranscribeRequest, event, stage="transcribe")
    results = results_storage()
    out = run_stage("transcribe", results, req.job_id, lambda work: transcribe(req, results=results, model=model(), work=work, vad=vad()))
    log.info("transcribed", extra={"job_id": out.job_id, "chunks": len(req.chunks), "segments": out.segments})
    return out.model_dump()
