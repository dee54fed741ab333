"""Lambda vidnotes-diarize: {"job_id", "speakers": "auto"|N} -> jobs/<id>/speakers.json.

Runs beside the transcribe fan-out (it needs only extract_audio's chunks and their speech
regions); summarize assigns the turns to the transcript when its payload says ``speakers``.
The speaker encoder (ONNX, fp32) is loaded once per container from the model store;
VIDNOTES_SPEAKER_VERSION pins a version, otherwise the store's CURRENT is used. docs/speakers.md.
"""

import os
import time
from functools import lru_cache

from vidnotes.diarize import SpeakerEncoder
from vidnotes.jobs import DiarizeRequest
from vidnotes.lambda_io import logger, parse, results_storage
from vidnotes.stages import diarize, run_stage
from vidnotes.store import default_store

log = logger("vidnotes-diarize")


@lru_cache(maxsize=1)
def encoder() -> SpeakerEncoder:
    t0 = time.perf_counter()
    enc = SpeakerEncoder.from_store(default_store(), os.environ.get("VIDNOTES_SPEAKER_VERSION") or None)
    log.info("model loaded", extra={"model": enc.name, "seconds": round(time.perf_counter() - t0, 2)})
    return enc


@log.inject_lambda_context
def handler(event, context):
    req = parse(DiarizeRequest, event, stage="diarize")
    results = results_storage()
    out = run_stage("diarize", results, req.job_id, lambda work: diarize(req, results=results, encoder=encoder(), work=work))
    log.info("diarized", extra={"job_id": out.job_id, "speakers": out.speakers, "turns": out.turns, "model": out.model})
    return out.model_dump()
