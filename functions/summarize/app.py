"""Lambda vidnotes-summarize: {"job_id", "speakers": bool, "speaker_names": {"1": "Ada"}} -> transcript.{json,txt,srt,vtt} and notes.json."""

from functools import lru_cache

from vidnotes.jobs import SummarizeRequest
from vidnotes.lambda_io import logger, parse, results_storage
from vidnotes.notes import NotesBuilder
from vidnotes.stages import run_stage, summarize
from vidnotes.store import default_store
from vidnotes.summarize import load_notes_builder

log = logger("vidnotes-summarize")


@lru_cache(maxsize=1)
def builder() -> NotesBuilder:
    return load_notes_builder(default_store())


@log.inject_lambda_context
def handler(event, context):
    req = parse(SummarizeRequest, event, stage="summarize")
    results = results_storage()
    out = run_stage("summarize", results, req.job_id, lambda work: summarize(req, results=results, builder=builder()))
    log.info("summarized", extra={"job_id": out.job_id, "speakers": out.speakers, "chapters": out.chapters, "summarizer": out.summarizer, "model": out.model})
    return out.model_dump()
