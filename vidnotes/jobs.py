"""Jobs: the payloads between stages (validated), the key layout under a job prefix, status.

Payloads are small JSON documents naming S3 keys, never the bytes (Lambda's synchronous payload
limit is 6 MB). Every stage writes under ``jobs/<job_id>/`` in the results bucket; the job id is
the first 16 hex digits of the upload's sha256, so the same content is one job, however often
it is uploaded and under whatever name.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from vidnotes.storage import Storage, StorageError, check_key
from vidnotes.types import speaker_count, speaker_number


def _object_key(key: str) -> str:
    """A key the storage layer accepts (no '..' parts, absolute paths or control characters):
    refused with the payload, so a bad key is an input error, not a failure worth retrying."""
    try:
        return check_key(key)
    except StorageError as e:
        raise ValueError(str(e)) from None


JobId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
S3Key = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_object_key)]
Bucket = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")]
MAX_CHUNKS_PER_BATCH = 64
# "auto" (detect; English on an English-only model) or a Whisper language code ("ru", "fr", "haw")
Language = Annotated[
    str, BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v), StringConstraints(pattern=r"^(auto|[a-z]{2,3})$")
]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExtractRequest(_Payload):
    """Input of extract_audio: the uploaded object."""

    bucket: Bucket
    key: S3Key


UPLOAD_OPTIONS = ("language", "speakers")  # read from an upload's x-amz-meta-vidnotes-<name>


class ChunkInfo(_Payload):
    index: int
    key: str
    start: float
    end: float


class ExtractResult(_Payload):
    job_id: JobId
    results_bucket: str
    prefix: str
    duration: float
    chunks: int
    batches: list[list[int]]  # chunk indexes per transcribe invocation
    duplicate: bool = False  # this content was already extracted: nothing was redone
    # seconds the voice activity detector found speech / no speech in (None: extracted without it)
    speech_seconds: float | None = None
    non_speech_seconds: float | None = None
    # what the uploader asked for in the object's metadata (x-amz-meta-vidnotes-speakers, ...-language),
    # unchecked: the orchestration validates it with the run's other options
    options: dict[str, str] = Field(default_factory=dict)


class TranscribeRequest(_Payload):
    job_id: JobId
    chunks: list[Annotated[int, Field(ge=0, lt=100_000)]] = Field(min_length=1, max_length=MAX_CHUNKS_PER_BATCH)
    language: Language = "auto"


class TranscribeResult(_Payload):
    job_id: JobId
    segments_key: str
    segments: int
    model: str
    language: str = "en"  # the language decoded in
    language_probability: float | None = None  # Whisper's, when it was detected


class JobRequest(_Payload):
    """Input of render_pdf (and the base of the others): the job, everything else is under its prefix."""

    job_id: JobId


Speakers = Annotated[str, BeforeValidator(lambda v: str(speaker_count(v) or "auto"))]  # "auto" or "2" (types.speaker_count)
# the names readers see for the diarized speakers: {"1": "Ada", "2": "Grace"} (Speaker 1 -> Ada)
SpeakerNames = dict[
    Annotated[str, AfterValidator(lambda k: str(speaker_number(k)))], Annotated[str, StringConstraints(min_length=1, max_length=80)]
]


class DiarizeRequest(_Payload):
    """Input of diarize: the job (its chunks and speech regions) and how many speakers."""

    job_id: JobId
    speakers: Speakers = "auto"


class DiarizeResult(_Payload):
    job_id: JobId
    speakers_key: str
    speakers: int  # how many were found (or given)
    turns: int
    model: str


class SummarizeRequest(_Payload):
    """Input of summarize. ``speakers``: assign the job's diarization (``speakers.json``, written by
    diarize) to the transcript; without it an earlier diarization of the same content is ignored.
    ``speaker_names``: what to call them (``{"1": "Ada"}``; renaming needs no new diarization)."""

    job_id: JobId
    speakers: bool = False
    speaker_names: SpeakerNames = Field(default_factory=dict)


class SummarizeResult(_Payload):
    job_id: JobId
    transcript_keys: dict[str, str]
    notes_key: str
    chapters: int
    summarizer: str  # "extractive", or "bart" when abstractive sentences passed the faithfulness check
    model: str  # the models that made the notes
    speakers: int | None = None  # speakers in the transcript (None: not diarized)


class RenderResult(_Payload):
    job_id: JobId
    pdf_key: str
    markdown_key: str
    chapters_key: str


class Layout:
    """Key names under one job's prefix."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.prefix = f"jobs/{job_id}/"

    def key(self, name: str) -> str:
        return self.prefix + name

    @property
    def status(self) -> str:
        return self.key("status.json")

    @property
    def source(self) -> str:
        return self.key("source.json")

    @property
    def chunks(self) -> str:
        return self.key("chunks.json")

    def chunk(self, index: int) -> str:
        return self.key(f"chunks/{index:05d}.wav")

    def segments(self, first_chunk: int) -> str:
        return self.key(f"segments/{first_chunk:05d}.json")

    def transcript(self, fmt: str) -> str:
        return self.key(f"transcript.{fmt}")

    @property
    def speakers(self) -> str:
        return self.key("speakers.json")

    @property
    def notes(self) -> str:
        return self.key("notes.json")

    @property
    def pdf(self) -> str:
        return self.key("notes.pdf")

    @property
    def markdown(self) -> str:
        return self.key("notes.md")

    @property
    def chapters_vtt(self) -> str:
        return self.key("chapters.vtt")


State = Literal["running", "succeeded", "failed"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_status(
    results: Storage, job_id: str, state: State, *, stage: str, error: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """Record the job's state next to its outputs (``status.json``), merged with what was there."""
    layout = Layout(job_id)
    current: dict[str, Any] = {}
    if results.exists(layout.status):
        try:
            current = json.loads(results.get_bytes(layout.status))
        except (ValueError, UnicodeDecodeError):
            current = {}
    current.update({"job_id": job_id, "state": state, "stage": stage, "updated": now(), **extra})
    if error is not None:
        current["error"] = error
    elif state != "failed":
        current.pop("error", None)
    results.put_bytes(json.dumps(current, indent=2, ensure_ascii=False).encode(), layout.status, content_type="application/json")
    return current


def read_json(results: Storage, key: str) -> Any:
    return json.loads(results.get_bytes(key))


def put_json(results: Storage, key: str, data: Any) -> None:
    results.put_bytes(json.dumps(data, indent=2, ensure_ascii=False).encode(), key, content_type="application/json")
