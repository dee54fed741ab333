"""Lambda vidnotes-render-pdf: {"job_id"} -> jobs/<id>/notes.pdf, notes.md, chapters.vtt; the job marked succeeded."""

from vidnotes.jobs import JobRequest
from vidnotes.lambda_io import logger, parse, results_storage
from vidnotes.stages import render_pdf, run_stage

log = logger("vidnotes-render-pdf")


@log.inject_lambda_context
def handler(event, context):
    req = parse(JobRequest, event, stage="render_pdf")
    results = results_storage()
    out = run_stage("render_pdf", results, req.job_id, lambda work: render_pdf(req, results=results, work=work))
    log.info("rendered", extra={"job_id": out.job_id, "pdf": out.pdf_key})
    return out.model_dump()
