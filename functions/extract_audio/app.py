"""Lambda vidnotes-extract-audio: {"bucket", "key"} of an upload -> chunks under jobs/<id>/."""

from vidnotes.jobs import ExtractRequest
from vidnotes.lambda_io import logger, parse, results_storage, s3_client
from vidnotes.stages import Limits, extract_audio, run_stage
from vidnotes.storage import S3Storage

log = logger("vidnotes-extract-audio")


@log.inject_lambda_context
def handler(event, context):
    req = parse(ExtractRequest, event, stage="extract_audio")
    results = results_storage()
    source = S3Storage(req.bucket, s3_client())
    out = run_stage(
        "extract_audio", results, None,
        lambda work: extract_audio(req, source=source, results=results, limits=Limits.from_env(), work=work),
    )  # fmt: skip
    log.info("extracted", extra={"job_id": out.job_id, "chunks": out.chunks, "duration": out.duration, "duplicate": out.duplicate})
    return out.model_dump()
