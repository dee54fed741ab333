"""The stages of the inference pipeline, written once for Lambda (S3) and local runs:
extract_audio, transcribe (fanned out), diarize (beside transcribe, when asked), summarize, render_pdf.

Each stage reads and writes through :class:`~vidnotes.storage.Storage` under the job prefix
(``jobs/<job_id>/``), takes a validated request and returns a small result. An input the
pipeline cannot use raises :class:`~vidnotes.media.InputError`; the caller records it in the
job's ``status.json`` (see :func:`run_stage`). The upload itself is only ever read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vidnotes import jobs
from vidnotes.audio import split_at_silences
from vidnotes.formats import FORMATS, get_writer
from vidnotes.jobs import Layout
from vidnotes.media import InputError, load_speech, probe, read_wav, write_wav
from vidnotes.storage import Forbidden, NotFound, Storage
from vidnotes.store import sha256_file
from vidnotes.types import Segment, Transcript

if TYPE_CHECKING:
    from vidnotes.vad import SileroVad, SpeechMap

CONTENT_TYPES = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 2 * 2**30
    max_seconds: float = 4 * 3600.0
    chunk_seconds: float = 30.0
    chunks_per_batch: int = 8  # chunks per transcribe invocation (about 4 minutes of audio)
    ffmpeg_timeout: float = 600.0

    @classmethod
    def from_env(cls) -> Limits:
        env = os.environ
        return cls(
            max_upload_bytes=int(env.get("VIDNOTES_MAX_UPLOAD_BYTES", cls.max_upload_bytes)),
            max_seconds=float(env.get("VIDNOTES_MAX_SECONDS", cls.max_seconds)),
            chunks_per_batch=int(env.get("VIDNOTES_CHUNKS_PER_BATCH", cls.chunks_per_batch)),
            ffmpeg_timeout=float(env.get("VIDNOTES_FFMPEG_TIMEOUT", cls.ffmpeg_timeout)),
        )


def job_id_for(sha256: str) -> str:
    return sha256[:16]


# -- 1. extract_audio -------------------------------------------------------------------------
def extract_audio(
    req: jobs.ExtractRequest, *, source: Storage, results: Storage, limits: Limits, work: Path, vad: SileroVad | None = None
) -> jobs.ExtractResult:
    """Probe the upload, decode it to 16 kHz mono, cut it into <= 30 s chunks.

    With ``vad`` (what the function and ``vidnotes run`` use) the chunks are cut at the pauses
    between speech regions (:meth:`~vidnotes.vad.SpeechMap.windows`), each chunk in
    ``chunks.json`` lists its speech regions (``speech``: ``[[start, end], ...]`` in seconds of
    the whole audio; transcribe decodes only chunks with speech), and ``source.json`` and the
    result give the speech and non-speech seconds. Without one, chunks are cut at the quietest
    moments and carry no speech regions."""
    try:
        size = source.size(req.key)
    except NotFound as e:
        raise InputError("not_found", f"s3://{req.bucket}/{req.key} does not exist") from e
    except Forbidden as e:
        raise InputError("no_access", f"s3://{req.bucket}/{req.key} may not be read by this function (access denied): uploads belong in the inbox bucket") from e
    if size > limits.max_upload_bytes:
        # rejected before download: the job id derives from where the upload is and its size
        err = InputError("too_large", f"the upload is {size / 2**20:.0f} MiB; the limit is {limits.max_upload_bytes / 2**20:.0f} MiB")
        err.job_id = job_id_for(hashlib.sha256(f"{req.bucket}/{req.key}/{size}".encode()).hexdigest())  # type: ignore[attr-defined]
        err.input = {"bucket": req.bucket, "key": req.key, "size": size}  # type: ignore[attr-defined]
        raise err
    meta = source.metadata(req.key)
    options = {name: meta[f"vidnotes-{name}"][:100] for name in jobs.UPLOAD_OPTIONS if f"vidnotes-{name}" in meta}
    # the local name is ours: only the key's extension, letters and digits, survives
    suffix = "".join(c for c in Path(req.key).suffix if c.isascii() and c.isalnum())[:16]
    local = source.download(req.key, work / ("input." + suffix if suffix else "input"))
    digest = sha256_file(local)
    job = Layout(job_id_for(digest))
    input_info = {"bucket": req.bucket, "key": req.key, "uri": source.uri(req.key), "size": size, "sha256": digest}
    if results.exists(job.chunks):
        # same content as an earlier upload: its chunks are final, nothing is redone
        return _extract_result(job, results, read_chunks(results, job), limits, duplicate=True, options=options)
    try:
        info = probe(local, max_bytes=limits.max_upload_bytes, max_seconds=limits.max_seconds)
        audio = load_speech(local, timeout=limits.ffmpeg_timeout, max_seconds=limits.max_seconds)
        decoded = len(audio) / 16000
        declared = info.audio_duration  # not the container's: a video may run on after its sound ends
        if declared > 0 and decoded < 0.9 * declared - 1.0:
            raise InputError(
                "truncated",
                f"the file ends early: its audio declares {declared:.1f} s but only {decoded:.1f} s could be "
                "decoded; the upload may be incomplete, upload the whole file again",
            )
    except InputError as e:
        e.job_id = job.job_id  # type: ignore[attr-defined]
        e.input = input_info  # type: ignore[attr-defined]
        raise
    jobs.write_status(results, job.job_id, "running", stage="extract_audio", input=input_info)
    speech: SpeechMap | None = None
    if vad is not None:
        from vidnotes.vad import WindowOptions

        speech = vad.speech(audio)
        windows = speech.windows(WindowOptions(max_seconds=limits.chunk_seconds))
    else:
        windows = split_at_silences(audio, max_seconds=limits.chunk_seconds)
    chunks: list[dict[str, Any]] = []
    for i, w in enumerate(windows):
        path = work / f"chunk-{i:05d}.wav"
        write_wav(path, audio[w.start : w.end])
        results.upload(path, job.chunk(i), content_type="audio/wav")
        path.unlink()
        chunk: dict[str, Any] = {"index": i, "key": job.chunk(i), "start": w.start / 16000, "end": w.end / 16000}
        if speech is not None:
            chunk["speech"] = [[r.start / 16000, r.end / 16000] for r in speech.within(w.start, w.end)]
        chunks.append(chunk)
    src: dict[str, Any] = {"input": input_info, "duration": len(audio) / 16000, "media": asdict(info)}
    if speech is not None:
        src.update(
            speech_seconds=round(speech.speech_seconds, 3),
            non_speech_seconds=round(speech.non_speech_seconds, 3),
            speech_regions=len(speech.regions),
            vad=speech.model,
        )
    jobs.put_json(results, job.source, src)
    jobs.put_json(results, job.chunks, chunks)  # written last: its presence means extraction finished
    return _extract_result(job, results, chunks, limits, duplicate=False, options=options)


def read_chunks(results: Storage, job: Layout) -> list[dict[str, Any]]:
    return list(jobs.read_json(results, job.chunks))


def _extract_result(
    job: Layout, results: Storage, chunks: list[dict[str, Any]], limits: Limits, *, duplicate: bool, options: dict[str, str]
) -> jobs.ExtractResult:
    n = len(chunks)
    step = max(1, min(limits.chunks_per_batch, jobs.MAX_CHUNKS_PER_BATCH))
    duration = round(chunks[-1]["end"] if chunks else 0.0, 3)
    speech = None
    if chunks and all("speech" in c for c in chunks):  # extracted with the VAD
        speech = round(sum(b - a for c in chunks for a, b in c["speech"]), 3)
    return jobs.ExtractResult(
        job_id=job.job_id,
        results_bucket=results.bucket,
        prefix=job.prefix,
        duration=duration,
        chunks=n,
        batches=[list(range(i, min(i + step, n))) for i in range(0, n, step)],
        duplicate=duplicate,
        speech_seconds=speech,
        non_speech_seconds=None if speech is None else round(max(0.0, duration - speech), 3),
        options=options,
    )


# -- 2. transcribe ----------------------------------------------------------------------------
def transcribe(req: jobs.TranscribeRequest, *, results: Storage, model: Any, work: Path, vad: SileroVad | None = None) -> jobs.TranscribeResult:
    """Transcribe a batch of chunks (decoded together) into timed segments of the whole audio.

    The speech regions come from ``chunks.json`` (found by extract_audio's VAD): a chunk without
    speech is not even downloaded, and ``model`` decodes only speech. For a job extracted without
    them, ``vad`` (else the model's own detector, if any) finds them in the batch's audio."""
    from vidnotes.asr import TranscriptionOptions
    from vidnotes.audio import SAMPLE_RATE, Window
    from vidnotes.vad import SpeechMap

    job = Layout(req.job_id)
    try:
        table = {c["index"]: c for c in read_chunks(results, job)}
    except NotFound as e:
        raise InputError("no_job", f"job {req.job_id} has no extracted audio; run extract_audio first") from e
    missing = [i for i in req.chunks if i not in table]
    if missing:
        raise InputError("bad_chunks", f"job {req.job_id} has no chunks {missing[:10]} (it has {len(table)})")
    wanted = sorted(set(req.chunks))
    known = all("speech" in table[i] for i in wanted)
    use = [i for i in wanted if table[i]["speech"]] if known else wanted
    audio_parts, windows, regions, pos = [], [], [], 0
    for i in use:
        path = results.download(table[i]["key"], work / f"{i:05d}.wav")
        part = read_wav(path)
        audio_parts.append(part)
        windows.append(Window(pos, pos + len(part)))
        if known:  # chunk regions, in seconds of the whole audio, into the batch's samples
            t0 = round(table[i]["start"] * SAMPLE_RATE)
            regions += [
                Window(max(pos, pos + round(a * SAMPLE_RATE) - t0), min(pos + len(part), pos + round(b * SAMPLE_RATE) - t0))
                for a, b in table[i]["speech"]
            ]
        pos += len(part)
    import numpy as np

    audio = np.concatenate(audio_parts) if audio_parts else np.zeros(0, dtype=np.float32)
    speech = None
    if known:
        speech = SpeechMap(tuple(r for r in regions if r.end > r.start), len(audio))
    elif vad is not None:
        speech = vad.speech(audio)
    segments: list[dict[str, Any]] = []
    starts = {w.start: table[i]["start"] for w, i in zip(windows, use)}
    bounds = sorted(starts)
    try:
        model.check_language(req.language)
    except ValueError as e:
        raise InputError("bad_language", str(e)) from e
    info: dict[str, Any] = {}
    opts = TranscriptionOptions(language=req.language)
    for seg in model.segments(audio, opts, windows=windows, speech=speech, stats=info):  # 8 windows per ONNX batch
        # map from the concatenated batch back to the time in the original audio
        w0 = max(b for b in bounds if b <= seg.start * SAMPLE_RATE + 1e-6)
        shift = starts[w0] - w0 / SAMPLE_RATE
        segments.append(Segment(seg.start + shift, seg.end + shift, seg.text).to_dict())
    key = job.segments(min(req.chunks))
    language = str(info.get("language") or "en")
    detected = info.get("language_probability") if info.get("language_windows") else None
    jobs.put_json(
        results,
        key,
        {
            "job_id": req.job_id,
            "chunks": sorted(set(req.chunks)),
            "model": model.name,
            "language": language,
            "language_probability": detected,
            "speech_seconds": round(speech.speech_seconds, 3) if speech is not None else None,
            "segments": segments,
        },
    )
    return jobs.TranscribeResult(
        job_id=req.job_id, segments_key=key, segments=len(segments), model=model.name, language=language, language_probability=detected
    )


# -- 2b. diarize (beside transcribe) ------------------------------------------------------------
def diarize(req: jobs.DiarizeRequest, *, results: Storage, encoder: Any, work: Path) -> jobs.DiarizeResult:
    """Speaker turns of the whole job (``encoder``: a :class:`~vidnotes.diarize.SpeakerEncoder`)
    over the speech regions extract_audio found (``chunks.json``: no second VAD pass), written to
    ``speakers.json``, which summarize assigns to the transcript when asked to. Needs only
    extract_audio's output, so it runs beside the transcribe fan-out. Same chunks, model and
    ``speakers``: the same file (a rerun rewrites it with the same content)."""
    import numpy as np

    from vidnotes.audio import SAMPLE_RATE
    from vidnotes.diarize import diarize as diarize_audio
    from vidnotes.diarize import parse_speakers

    job = Layout(req.job_id)
    try:
        table = sorted(read_chunks(results, job), key=lambda c: c["index"])
    except NotFound as e:
        raise InputError("no_job", f"job {req.job_id} has no extracted audio; run extract_audio first") from e
    parts, regions = [], []
    for c in table:
        parts.append(read_wav(results.download(c["key"], work / f"{c['index']:05d}.wav")))
        regions += [(round(a * SAMPLE_RATE), round(b * SAMPLE_RATE)) for a, b in c.get("speech") or []]
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    d = diarize_audio(audio, encoder, regions=regions, speakers=parse_speakers(req.speakers))
    data = d.to_dict()
    data["stats"].pop("seconds", None)  # timings vary between runs: keep the file a function of its input
    data["stats"].pop("times_real_time", None)
    data["requested"] = req.speakers
    jobs.put_json(results, job.speakers, data)
    return jobs.DiarizeResult(job_id=req.job_id, speakers_key=job.speakers, speakers=d.speakers, turns=len(d.turns), model=d.model)


# -- 3. summarize -----------------------------------------------------------------------------
def merge_segments(results: Storage, job: Layout) -> Transcript:
    """All segment files of the job, checked complete against its chunks, in time order."""
    chunks = read_chunks(results, job)
    covered: set[int] = set()
    segments: list[Segment] = []
    models: set[str] = set()
    languages: dict[str, float] = {}
    for key in results.list(job.key("segments/")):
        part = jobs.read_json(results, key)
        covered.update(part["chunks"])
        models.add(part["model"])
        # a batch's vote: its speech (or its text, for files written before speech was recorded)
        weight = part.get("speech_seconds")
        weight = float(weight) if weight is not None else float(sum(len(s["text"]) for s in part["segments"]) or 1)
        lang = str(part.get("language") or "en")
        languages[lang] = languages.get(lang, 0.0) + weight
        segments += [Segment(float(s["start"]), float(s["end"]), str(s["text"])) for s in part["segments"]]
    missing = sorted({c["index"] for c in chunks} - covered)
    if missing:
        raise InputError("incomplete", f"job {job.job_id}: chunks {missing[:10]} are not transcribed yet")
    segments.sort(key=lambda s: (s.start, s.end))
    duration = chunks[-1]["end"] if chunks else 0.0
    # the language most of the speech was transcribed in (a segment file without one is English)
    language = max(sorted(languages), key=languages.__getitem__) if languages else "en"
    return Transcript(segments=segments, duration=duration, language=language, model=", ".join(sorted(models)))


def summarize(req: jobs.SummarizeRequest | jobs.JobRequest, *, results: Storage, builder: Any) -> jobs.SummarizeResult:
    """The job's transcript in every format, and its notes (``notes.json``) from ``builder``
    (a :class:`~vidnotes.notes.NotesBuilder`). With ``req.speakers`` every segment carries its
    speaker from the job's ``speakers.json`` (diarize), named by ``req.speaker_names``; without
    it a diarization an earlier run left for the same content is not used."""
    job = Layout(req.job_id)
    try:
        transcript = merge_segments(results, job)
    except NotFound as e:
        raise InputError("no_job", f"job {req.job_id} has no extracted audio; run extract_audio first") from e
    speakers: int | None = None
    if isinstance(req, jobs.SummarizeRequest) and req.speakers:
        from vidnotes.diarize import Diarization, assign_speakers

        try:
            d = Diarization.from_dict(jobs.read_json(results, job.speakers))
        except NotFound as e:
            raise InputError("no_speakers", f"job {req.job_id} has no speakers.json; run diarize first (or summarize without speakers)") from e
        names = {int(k) - 1: v.strip() for k, v in req.speaker_names.items() if v.strip()}
        unknown = sorted(k + 1 for k in names if k >= d.speakers)
        if unknown:
            raise InputError(
                "bad_speaker_names",
                f"speaker_names names speaker(s) {unknown}, but the diarization found {d.speakers} speaker(s); number them 1-{d.speakers}",
            )
        transcript = assign_speakers(transcript, d.turns, names=names)
        speakers = d.speakers
    keys = {}
    for fmt in FORMATS:
        keys[fmt] = job.transcript(fmt)
        results.put_bytes(get_writer(fmt).render(transcript).encode("utf-8"), keys[fmt], content_type=CONTENT_TYPES[fmt])
    notes = builder.build(transcript)
    jobs.put_json(results, job.notes, notes.to_dict())
    return jobs.SummarizeResult(
        job_id=req.job_id, transcript_keys=keys, notes_key=job.notes, chapters=len(notes.chapters), summarizer=notes.summarizer,
        model=notes.model, speakers=speakers,
    )  # fmt: skip


# -- 4. render_pdf ----------------------------------------------------------------------------
def render_pdf(req: jobs.JobRequest, *, results: Storage, work: Path) -> jobs.RenderResult:
    """The notes for readers: ``notes.pdf``, ``notes.md`` and ``chapters.vtt``; the job succeeds."""
    from vidnotes.notes import Notes
    from vidnotes.report import NotesDocument, render_chapters_vtt, render_markdown, render_notes

    job = Layout(req.job_id)
    try:
        transcript = Transcript.from_dict(jobs.read_json(results, job.transcript("json")))
        notes_data = jobs.read_json(results, job.notes)
        source = jobs.read_json(results, job.source)
    except NotFound as e:
        raise InputError("no_transcript", f"job {req.job_id} has no transcript and notes yet; run summarize first") from e
    try:
        notes = Notes.from_dict(notes_data)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError("bad_notes", f"job {req.job_id}: notes.json is not valid ({e}); run summarize again") from e
    doc = NotesDocument(
        title=title_of(source["input"]["key"]),
        source=source["input"]["uri"],
        duration=float(source["duration"]),
        transcript=transcript,
        notes=notes,
        job_id=req.job_id,
    )
    path = render_notes(doc, work / "notes.pdf")
    results.upload(path, job.pdf, content_type="application/pdf")
    results.put_bytes(render_markdown(doc).encode("utf-8"), job.markdown, content_type="text/markdown; charset=utf-8")
    results.put_bytes(render_chapters_vtt(notes).encode("utf-8"), job.chapters_vtt, content_type=CONTENT_TYPES["vtt"])
    jobs.write_status(
        results,
        req.job_id,
        "succeeded",
        stage="render_pdf",
        notes={"summarizer": notes.summarizer, "model": notes.model, "chapters": len(notes.chapters), "language": notes.language},
        outputs={
            "pdf": job.pdf, "markdown": job.markdown, "chapters": job.chapters_vtt, "notes": job.notes,
            **{f"transcript_{f}": job.transcript(f) for f in FORMATS},
        },
    )  # fmt: skip
    return jobs.RenderResult(job_id=req.job_id, pdf_key=job.pdf, markdown_key=job.markdown, chapters_key=job.chapters_vtt)


def title_of(key: str) -> str:
    """A readable title from the upload's name: ``talks/rivers_and-bridges.mp4`` -> ``rivers and bridges``."""
    return Path(key).stem.replace("_", " ").replace("-", " ").strip() or "Notes"


# -- error recording --------------------------------------------------------------------------
R = TypeVar("R")


class StageFailed(RuntimeError):
    """What a handler raises for a failed stage: Lambda reports it as the function error."""


def run_stage(stage: str, results: Storage, job_id: str | None, fn: Callable[[Path], R]) -> R:
    """Run ``fn(workdir)``; on a failure, record it in the job's status.json and raise
    :class:`StageFailed` with a message a user can act on."""
    with tempfile.TemporaryDirectory(prefix=f"vidnotes-{stage}-") as tmp:
        try:
            return fn(Path(tmp))
        except InputError as e:
            jid = getattr(e, "job_id", None) or job_id
            msg = f"{stage}: {e}"
            if jid:
                extra = {"input": e.input} if hasattr(e, "input") else {}
                jobs.write_status(results, jid, "failed", stage=stage, error={"code": e.code, "message": str(e)}, **extra)
                msg += f" (job {jid}: s3://{results.bucket}/jobs/{jid}/status.json)"
            raise StageFailed(msg) from e
        except Exception as e:
            if job_id:
                jobs.write_status(
                    results, job_id, "failed", stage=stage, error={"code": "internal", "message": f"{type(e).__name__}: {e}"}
                )
            raise
