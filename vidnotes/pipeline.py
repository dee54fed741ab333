"""``vidnotes run``: the four stages in one process on local files, no AWS at all.

The same stage code as the Lambda functions, with directories for buckets: the video's folder
is the inbox, ``--out`` the results bucket (``<out>/jobs/<job_id>/...``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from vidnotes import jobs, stages
from vidnotes.storage import LocalStorage
from vidnotes.store import ModelStore

Say = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_local(
    video: Path,
    out_dir: Path,
    *,
    store: ModelStore,
    say: Say = _stderr,
    limits: stages.Limits | None = None,
    language: str = "auto",
    whisper_version: str | None = None,
    speakers: str | None = None,
    speaker_names: dict[str, str] | None = None,
) -> Path:
    """Notes for ``video``; returns the PDF's path. Raises :class:`~vidnotes.stages.StageFailed`.
    ``language``: "auto" (detected by a multilingual model) or a code such as "ru"."""
    from vidnotes.asr import WhisperOnnx
    from vidnotes.summarize import load_notes_builder
    from vidnotes.vad import SileroVad

    video = Path(video).resolve()
    limits = limits or stages.Limits.from_env()
    source = LocalStorage(video.parent, bucket="local")
    results = LocalStorage(out_dir, bucket="local")
    t0 = time.perf_counter()
    req = jobs.ExtractRequest(bucket="local", key=video.name)
    vad = SileroVad.from_store(store)
    ext = stages.run_stage(
        "extract_audio", results, None, lambda w: stages.extract_audio(req, source=source, results=results, limits=limits, work=w, vad=vad)
    )
    speech = f", {ext.speech_seconds:.1f} s of it speech" if ext.speech_seconds is not None else ""
    say(f"[1/4] extract_audio: {ext.duration:.1f} s of audio{speech} in {ext.chunks} chunks, job {ext.job_id}" + (" (seen before)" if ext.duplicate else ""))
    model_dir, manifest = store.fetch("whisper", whisper_version)
    model = WhisperOnnx(model_dir, name=f"whisper/{manifest['version']}", vad=vad)
    for i, batch in enumerate(ext.batches, start=1):
        treq = jobs.TranscribeRequest(job_id=ext.job_id, chunks=batch, language=language)
        tr = stages.run_stage("transcribe", results, ext.job_id, lambda w: stages.transcribe(treq, results=results, model=model, work=w, vad=vad))
        lang = tr.language + (f" (detected, p={tr.language_probability:.2f})" if tr.language_probability is not None else "")
        say(f"[2/4] transcribe: batch {i}/{len(ext.batches)} ({len(batch)} chunks), {lang}")
    if speakers is not None:  # docs/speakers.md: its own stage (on Lambda beside transcribe)
        from vidnotes.diarize import SpeakerEncoder

        dreq = jobs.DiarizeRequest(job_id=ext.job_id, speakers=speakers)
        enc = SpeakerEncoder.from_store(store)
        d = stages.run_stage("diarize", results, ext.job_id, lambda w: stages.diarize(dreq, results=results, encoder=enc, work=w))
        say(f"[2/4] diarize: {d.speakers} speaker{'s' if d.speakers != 1 else ''} ({enc.name})")
    sreq = jobs.SummarizeRequest(job_id=ext.job_id, speakers=speakers is not None, speaker_names=speaker_names or {})
    jreq = jobs.JobRequest(job_id=ext.job_id)
    builder = load_notes_builder(store)
    s = stages.run_stage("summarize", results, ext.job_id, lambda w: stages.summarize(sreq, results=results, builder=builder))
    say(f"[3/4] summarize: {s.chapters} chapters, {s.summarizer} ({s.model})")
    r = stages.run_stage("render_pdf", results, ext.job_id, lambda w: stages.render_pdf(jreq, results=results, work=w))
    say(f"[4/4] render_pdf: notes.pdf, notes.md, chapters.vtt in {time.perf_counter() - t0:.1f} s")
    return Path(results.uri(r.pdf_key))
