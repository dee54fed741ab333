"""Lambda vidnotes-summarize: {"job_id"} -> transcript.{json,txt,srt,vtt} and summary.json."""

from functools import lru_cache

from vidnotes.jobs import JobRequest
from vidnotes.lambda_io import logger, parse, results_storage
from vidnotes.stages import run_stage, summarize
from vidnotes.store import default_store
from vidnotes.summarize import Summarizer, load_summarizer

log = logger("vidnotes-summarize")


@lru_cache(maxsize=1)
def summarizer() -> Summarizer:
    return load_summarizer(default_store())


@log.inject_lambda_context
def handler(event, context):
    req = parse(JobRequest, event, stage="summarize")
    results = results_storage()
    out = run_stage("summarize", results, req.job_id, lambda work: summarize(req, results=results, summarizer=summarizer()))
    log.info("summarized", extra={"job_id": out.job_id, "summarizer": out.summarizer, "model": out.model})
    return out.model_dump()
