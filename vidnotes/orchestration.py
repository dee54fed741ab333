"""What the Airflow DAGs (``dags/video_to_notes.py``) decide, kept free of Airflow and of anything
heavy: the standard library (and vidnotes.types) only, so the DAG file parses in milliseconds and all of this is
tested without a scheduler.

- :func:`uploads_from_asset_extras`, :func:`uploads_from_sqs_messages`, :func:`uploads_from_body`,
  :func:`uploads_from_conf`: S3 ``ObjectCreated`` notifications (as SQS delivers them, and as the
  SQS asset watcher wraps them into an asset event's ``extra``) or a hand-written conf -> uploads.
  Keys arrive URL-encoded (``unquote_plus``); ``s3:TestEvent`` messages and non-create records are
  skipped; every record is its own upload.
- :func:`run_id_for`: one pipeline run per upload, with an id derived from the S3 event, so a
  message SQS delivers twice starts one run.
- :func:`stage_outcome`: the run's outcome from its task states (which task failed, with which
  message) for ``record_outcome``.
- :class:`Settings`: the DAG's configuration: defaults, ``VIDNOTES_AIRFLOW_*`` environment
  variables, then the Airflow Variable ``vidnotes`` (JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_plus

from vidnotes.types import MAX_SPEAKERS, speaker_count, speaker_number

STAGES = ("parse_trigger", "extract_audio", "transcribe", "diarize", "summarize", "render_pdf")
TEST_EVENT = "s3:TestEvent"
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.~:+-]+")
_JOB_IN_MESSAGE = re.compile(r"\(job ([0-9a-f]{16}):")


class BadTrigger(ValueError):
    """The trigger (conf or message) names no usable upload."""


@dataclass(frozen=True)
class Upload:
    """One uploaded object to turn into notes."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None
    event_time: str | None = None

    def conf(self) -> dict[str, Any]:
        """The pipeline DAG's conf for this upload (what a person would type, plus the event's facts)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def payload(self) -> dict[str, str]:
        """The extract_audio function's payload."""
        return {"bucket": self.bucket, "key": self.key}


# -- S3 event notifications ------------------------------------------------------------------
def uploads_from_body(body: str | Mapping[str, Any]) -> list[Upload]:
    """The uploads in one SQS message body: an S3 event notification (``Records``), possibly
    wrapped by SNS (``Type: Notification``). ``s3:TestEvent`` and non-``ObjectCreated`` records
    give nothing; a body that is not an S3 notification raises :class:`BadTrigger`."""
    doc: Any = body
    if isinstance(body, (str, bytes)):
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise BadTrigger(f"message body is not JSON: {str(body)[:200]!r}") from e
    if not isinstance(doc, Mapping):
        raise BadTrigger(f"message body is not a JSON object: {str(doc)[:200]!r}")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # S3 -> SNS -> SQS
        return uploads_from_body(doc["Message"])
    if doc.get("Event") == TEST_EVENT:
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        raise BadTrigger(f"message is not an S3 event notification (no Records): {json.dumps(doc)[:200]}")
    out = []
    for rec in records:
        if not str(rec.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = rec.get("s3") or {}
        obj = s3.get("object") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        key = obj.get("key")
        if not bucket or not key:
            raise BadTrigger(f"S3 record without bucket or key: {json.dumps(rec)[:200]}")
        key = unquote_plus(key)
        if key.endswith("/"):  # a "folder" placeholder, not a file
            continue
        out.append(
            Upload(
                bucket=bucket,
                key=key,
                size=obj.get("size"),
                etag=obj.get("eTag") or obj.get("etag"),
                sequencer=obj.get("sequencer"),
                event_time=rec.get("eventTime"),
            )
        )
    return out


def uploads_from_sqs_messages(messages: Iterable[Mapping[str, Any]]) -> list[Upload]:
    """Uploads in SQS messages as ``ReceiveMessage`` returns them (each with a ``Body``)."""
    out: list[Upload] = []
    for m in messages:
        out += uploads_from_body(m["Body"])
    return dedupe(out)


def uploads_from_asset_extras(extras: Iterable[Mapping[str, Any] | None]) -> list[Upload]:
    """Uploads in the ``extra`` of the asset events that triggered a run. The SQS asset watcher
    (``SqsSensorTrigger``) fires ``{"status": "success", "message_batch": [message, ...]}``; the
    triggerer stores it as ``extra = {"from_trigger": true, "payload": <that>}``. An event posted
    by hand (REST API, another DAG) may carry ``{"bucket", "key"}`` or ``{"uploads": [...]}``."""
    out: list[Upload] = []
    for extra in extras:
        if not extra:
            continue
        payload = extra.get("payload", extra) if extra.get("from_trigger") else extra
        if isinstance(payload, Mapping) and "message_batch" in payload:
            out += uploads_from_sqs_messages(payload["message_batch"])
        elif isinstance(payload, Mapping):
            out += uploads_from_conf(payload, allow_empty=True)
    return dedupe(out)


def uploads_from_conf(conf: Mapping[str, Any] | None, *, allow_empty: bool = False) -> list[Upload]:
    """A conf given by hand: ``{"bucket", "key"}``, ``{"uploads": [{"bucket", "key"}, ...]}``, or
    an S3 event notification (``{"Records": ...}``, e.g. a message body pasted from SQS)."""
    conf = dict(conf or {})
    if "Records" in conf or conf.get("Event") == TEST_EVENT or conf.get("Type") == "Notification":
        return uploads_from_body(conf)
    items = conf.get("uploads")
    if items is None:
        items = [conf] if conf.get("key") else []
    out = []
    for item in items:
        if not isinstance(item, Mapping) or not item.get("bucket") or not item.get("key"):
            raise BadTrigger(f'each upload needs "bucket" and "key", got {json.dumps(item, default=str)[:200]}')
        known = {f.name for f in fields(Upload)}
        out.append(Upload(**{k: v for k, v in item.items() if k in known and v is not None}))
    if not out and not allow_empty:
        raise BadTrigger('no upload given: trigger with conf {"bucket": "vidnotes-inbox", "key": "talks/talk.mp4"}')
    return dedupe(out)


def dedupe(uploads: Iterable[Upload]) -> list[Upload]:
    """Each (bucket, key, version of the object) once, in order of arrival: SQS delivers at least
    once, so the same notification can come twice."""
    seen, out = set(), []
    for u in uploads:
        ident = (u.bucket, u.key, u.sequencer, u.etag, u.event_time)
        if ident not in seen:
            seen.add(ident)
            out.append(u)
    return out


def run_id_for(upload: Upload) -> str:
    """The pipeline run id for an upload: readable (the key's name) and unique per object version
    (the event's sequencer or ETag), so a redelivered notification maps to the same run."""
    ident = f"{upload.bucket}/{upload.key}/{upload.sequencer or ''}/{upload.etag or ''}/{upload.event_time or ''}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    name = _RUN_ID_UNSAFE.sub("_", upload.key.rsplit("/", 1)[-1]).strip("_")[:60] or "upload"
    return f"upload__{name}__{digest}"


# -- reconciliation: uploads whose message was lost -------------------------------------------------
ACTIVE_RUN_STATES = ("queued", "running")


def upload_record_key(bucket: str, key: str) -> str:
    """Where the results bucket records the runs of one inbox object (``uploads/<hash>.json``:
    bucket, key, etag, run_id, job_id), written by the pipeline's extract_audio task."""
    return f"uploads/{hashlib.sha256(f'{bucket}/{key}'.encode()).hexdigest()[:32]}.json"


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


@dataclass(frozen=True)
class LostUpload:
    """An inbox object that needs a pipeline run nobody started, and why."""

    upload: Upload
    reason: str
    previous_run: str | None = None

    def run_id(self) -> str:
        """Unique per object version and per run it replaces, so two looks start one run."""
        ident = f"{self.upload.bucket}/{self.upload.key}/{self.upload.etag or ''}/{self.previous_run or ''}"
        name = _RUN_ID_UNSAFE.sub("_", self.upload.key.rsplit("/", 1)[-1]).strip("_")[:60] or "upload"
        return f"reconcile__{name}__{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def lost_uploads(
    bucket: str,
    objects: Iterable[Mapping[str, Any]],
    records: Callable[[str], Mapping[str, Any] | None],
    run_state: Callable[[str], str | None],
    job_status: Callable[[str], Mapping[str, Any]],
    *,
    now: datetime,
    min_age: float,
    max_age: float,
) -> list[LostUpload]:
    """The inbox ``objects`` (``ListObjectsV2`` entries: Key, Size, ETag, LastModified) that need a
    run: never run (no record: the S3 event was lost, e.g. a triggerer that died after taking the
    message off the queue), replaced since their last run (another ETag), or whose job a run left
    ``running`` when it ended without an outcome. ``records(key)``: the upload's record
    (:func:`upload_record_key`); ``run_state(run_id)``: the pipeline run's state (None when it does
    not exist); ``job_status(job_id)``: the job's status.json. Objects younger than ``min_age`` s
    (a message may be on its way) or older than ``max_age`` s, and folder keys, are left alone."""
    out = []
    for obj in objects:
        key = str(obj["Key"])
        age = (now - obj["LastModified"]).total_seconds()
        if key.endswith("/") or not min_age <= age <= max_age:
            continue
        upload = Upload(bucket=bucket, key=key, size=obj.get("Size"), etag=_etag(obj.get("ETag")) or None)
        rec = records(key) or {}
        if not rec:
            out.append(LostUpload(upload, "no run was started for it"))
            continue
        if _etag(rec.get("etag")) != _etag(obj.get("ETag")):
            out.append(LostUpload(upload, "it was replaced after its last run", rec.get("run_id")))
            continue
        state = run_state(str(rec.get("run_id") or ""))
        if state in ACTIVE_RUN_STATES:
            continue
        status = job_status(str(rec["job_id"])) if rec.get("job_id") else {}
        owner = (status.get("airflow") or {}).get("run_id")
        if status.get("state") == "running" and owner in (None, rec.get("run_id")):
            out.append(LostUpload(upload, f"its run {rec.get('run_id')} ended ({state or 'gone'}) and left the job running", rec.get("run_id")))
        elif state is None and not rec.get("job_id"):
            out.append(LostUpload(upload, f"its run {rec.get('run_id')} does not exist", rec.get("run_id")))
    return out


# -- what a run is asked to make ------------------------------------------------------------------
_LANGUAGE = re.compile(r"^(auto|[a-z]{2,3})$")


def run_options(params: Mapping[str, Any] | None, settings: Settings, upload: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The options of one pipeline run. ``language`` and ``speakers`` come from the run's
    params/conf when given there, else from the upload's own metadata (``upload``: what
    extract_audio read from ``x-amz-meta-vidnotes-language`` / ``-speakers``), else from the
    deployment's settings; ``speaker_names`` from the params. ``speakers``: None (no speaker
    labels), ``"auto"`` or a count as a string; ``speaker_names``: ``{"1": "Ada"}``. A bad value
    raises :class:`BadTrigger` naming it and where it came from."""
    params, upload = params or {}, upload or {}

    def pick(name: str) -> tuple[Any, str]:
        if params.get(name) not in (None, ""):
            return params[name], "the run's conf"
        if upload.get(name) not in (None, ""):
            return upload[name], f"the upload's metadata (x-amz-meta-vidnotes-{name})"
        return getattr(settings, name), f"the setting {name}"

    raw_language, where = pick("language")
    language = str(raw_language).strip().lower()
    if not _LANGUAGE.match(language):
        raise BadTrigger(f'language must be "auto" or a Whisper language code such as "ru", got {raw_language!r} from {where}')
    raw, where = pick("speakers")
    speakers: str | None = None
    if isinstance(raw, bool) or str(raw).strip().lower() not in ("", "off", "none"):
        try:
            speakers = str(speaker_count(raw) or "auto")
        except ValueError:
            raise BadTrigger(f'speakers must be "auto", a speaker count from 1 to {MAX_SPEAKERS}, or "off", got {raw!r} from {where}') from None
    names = params.get("speaker_names") or {}
    try:
        if not isinstance(names, Mapping) or not all(isinstance(v, str) and v.strip() and len(v) <= 80 for v in names.values()):
            raise ValueError
        speaker_names = {str(speaker_number(k)): v.strip() for k, v in names.items()}
    except ValueError:
        raise BadTrigger(
            f'speaker_names must map speaker numbers (1 to {MAX_SPEAKERS}) to names of at most 80 characters, like {{"1": "Ada", "2": "Grace"}}, '
            f"got {json.dumps(names, default=str)[:200]}"
        ) from None
    if speaker_names and speakers is None:
        raise BadTrigger('speaker_names needs speakers ("auto" or a count)')
    return {"language": language, "speakers": speakers, "speaker_names": speaker_names}


def same_options(done: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether notes made with ``done`` (a job's recorded options; None for a job recorded before
    options were) are what a run asking for ``wanted`` would make."""
    if done is None:
        return wanted.get("speakers") is None
    return dict(done) == dict(wanted)


def ownerless_and_stale(status: Mapping[str, Any], after: float, now: datetime | None = None) -> bool:
    """Is the job ``running`` with no Airflow run owning it and no update for ``after`` seconds?
    Such a job was started outside Airflow (a direct invocation of extract_audio) or by a run that
    died between extract_audio and its claim; none of its stages can still be running once
    ``after`` is past the longest function timeout, so a run may take it over."""
    if status.get("state") != "running" or (status.get("airflow") or {}).get("run_id"):
        return False
    try:
        updated = datetime.fromisoformat(str(status.get("updated")))
    except ValueError:
        return True  # no time recorded: nothing says a stage is working on it
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - updated).total_seconds() > after


# -- outcome ------------------------------------------------------------------------------------
def job_id_from_error(message: str | None) -> str | None:
    """The job id a stage names in its error (``... (job 0123456789abcdef: s3://...)``)."""
    m = _JOB_IN_MESSAGE.search(message or "")
    return m.group(1) if m else None


def stage_of(name: str) -> tuple[str, int] | None:
    """``"transcribe_3"`` -> ``("transcribe", 3)``, ``"summarize"`` -> ``("summarize", -1)``, as the
    execution API's task-state map names task instances."""
    if name in STAGES:
        return name, -1
    base, _, idx = name.rpartition("_")
    if base in STAGES and idx.isdigit():
        return base, int(idx)
    return None


def stage_outcome(states: Mapping[str, str | None], errors: Mapping[tuple[str, int], str] | None = None) -> dict[str, Any]:
    """The outcome of one pipeline run from its task states (``{"transcribe_2": "failed", ...}``)
    and the error messages the stage tasks recorded (``{("transcribe", 2): "..."}``).

    ``succeeded`` when every stage succeeded; otherwise ``failed`` with the first failed task in
    pipeline order (the cause; later tasks are ``upstream_failed``) and its message."""
    errors = errors or {}
    parsed = []
    for name, state in states.items():
        st = stage_of(name)
        if st is not None:
            parsed.append((STAGES.index(st[0]), st[1], st[0], state))
    parsed.sort()
    tasks = {(f"{s}[{i}]" if i >= 0 else s): state for _, i, s, state in parsed}
    if parsed and all(state == "success" for *_, state in parsed) and {p[2] for p in parsed} >= set(STAGES):
        return {"state": "succeeded", "tasks": tasks}
    for wanted in ("failed", "upstream_failed", "skipped", "removed", None):
        for _, idx, stage, state in parsed:
            if state == wanted:
                label = f"{stage}[{idx}]" if idx >= 0 else stage
                msg = errors.get((stage, idx))
                if msg is None:
                    msg = {
                        "failed": f"task {label} failed (timed out, killed, or an error outside the function: see its log)",
                        "upstream_failed": f"task {label} did not run: an upstream task failed",
                        "skipped": f"task {label} was skipped",
                    }.get(str(state), f"task {label} ended in state {state}")
                return {"state": "failed", "failed_task": label, "stage": stage, "message": msg, "tasks": tasks}
    missing = [s for s in STAGES if s not in {p[2] for p in parsed}]
    return {"state": "failed", "failed_task": missing[0] if missing else None, "stage": missing[0] if missing else None,
            "message": f"tasks {missing} have no state", "tasks": tasks}  # fmt: skip


# -- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The DAG's configuration. Each field can be set by ``VIDNOTES_AIRFLOW_<FIELD>`` in the
    environment of the Airflow processes, or by the key of the same name in the Airflow Variable
    ``vidnotes`` (JSON), which wins. At parse time only the environment is read (including
    ``AIRFLOW_VAR_VIDNOTES``): no metadata-database access while parsing."""

    aws_conn_id: str = "aws_vidnotes"
    inbox_bucket: str = "vidnotes-inbox"
    results_bucket: str = "vidnotes-results"
    queue_url: str = "http://localhost:4566/000000000000/vidnotes-uploads"
    fn_extract_audio: str = "vidnotes-extract-audio"
    fn_transcribe: str = "vidnotes-transcribe"
    fn_diarize: str = "vidnotes-diarize"
    fn_summarize: str = "vidnotes-summarize"
    fn_render_pdf: str = "vidnotes-render-pdf"
    timeout_extract_audio: int = 960  # seconds per task try (execution_timeout); functions time out at 900
    timeout_transcribe: int = 960
    timeout_diarize: int = 960
    timeout_summarize: int = 960
    timeout_render_pdf: int = 360
    retries: int = 3
    retry_delay: int = 10  # seconds, doubled each try (exponential backoff) up to max_retry_delay
    max_retry_delay: int = 300
    sqs_wait_seconds: int = 10  # long polling of the watcher
    sqs_poll_delay: int = 1  # pause between empty polls
    sqs_max_messages: int = 10
    duplicate_wait: int = 3600  # seconds a run waits for another run processing the same content
    duplicate_poll: int = 10  # seconds between its looks (the task is rescheduled: no slot held)
    orphan_after: int = 960  # a running job no run owns and nothing updated for this long is taken over
    reconcile_every: int = 300  # seconds between looks of video_to_notes_reconcile for uploads no run took
    reconcile_min_age: int = 120  # an upload younger than this may still be on its way through SQS
    reconcile_max_age: int = 86400  # ... one older than this is left alone (start it by hand)
    reconcile_prefix: str = ""  # only keys under this prefix of the inbox ("" = all)
    language: str = "auto"  # the talks' language when a run's conf names none: auto (detected) or a code
    speakers: str = ""  # speaker labels when a run's conf names none: "" (off), "auto" or a count (docs/speakers.md)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, variable: Mapping[str, Any] | str | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if variable is None:
            variable = env.get("AIRFLOW_VAR_VIDNOTES")
        if isinstance(variable, str):
            variable = json.loads(variable) if variable.strip() else {}
        for f in fields(cls):
            raw = env.get(f"VIDNOTES_AIRFLOW_{f.name.upper()}")
            if raw not in (None, ""):
                values[f.name] = raw
            if variable and f.name in variable:
                values[f.name] = variable[f.name]
        unknown = set(variable or {}) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Variable vidnotes: unknown keys {sorted(unknown)}")
        for f in fields(cls):
            if f.name in values and f.type == "int":
                values[f.name] = int(values[f.name])
        return cls(**values)

    def function(self, stage: str) -> str:
        return getattr(self, f"fn_{stage}")

    def timeout(self, stage: str) -> int:
        return getattr(self, f"timeout_{stage}")
