"""What the web page can do, as plain typed functions over the buckets and the Airflow REST API.

The page never calls a stage: an upload goes to the inbox bucket (so S3 -> SQS -> Airflow runs
it as any upload), the jobs list reads the inbox, the upload records and the jobs' status.json in
the results bucket and the pipeline's DAG runs from Airflow's REST API, and a job's page reads
its outputs from the results bucket. Corrections go to ``jobs/<id>/feedback/`` (vidnotes.feedback).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from vidnotes import feedback
from vidnotes.airflow_client import Airflow
from vidnotes.jobs import Layout
from vidnotes.media import InputError, probe
from vidnotes.orchestration import upload_record_key
from vidnotes.storage import LocalStorage, NotFound, S3Storage, Storage
from vidnotes.types import Transcript, speaker_count

log = logging.getLogger(__name__)

PIPELINE_DAG = "video_to_notes"
STAGES = ("extract_audio", "transcribe", "diarize", "summarize", "render_pdf")
# what a browser is offered to download, and under which name
DOWNLOADS = {
    "pdf": ("notes.pdf", "application/pdf", "PDF"),
    "md": ("notes.md", "text/markdown; charset=utf-8", "Markdown"),
    "srt": ("transcript.srt", "application/x-subrip; charset=utf-8", "SRT"),
    "vtt": ("transcript.vtt", "text/vtt; charset=utf-8", "VTT"),
    "json": ("transcript.json", "application/json", "JSON (transcript)"),
    "notes-json": ("notes.json", "application/json", "JSON (notes)"),
}
# the uploads the page takes (ffprobe decides the rest: vidnotes.media.probe)
MEDIA_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".avi": "video/x-msvideo", ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".ts": "video/mp2t",
    ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".aac": "audio/aac", ".wav": "audio/wav", ".flac": "audio/flac",
    ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg", ".wma": "audio/x-ms-wma",
}  # fmt: skip
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
WEB_PREFIX = "web/"  # the page's uploads: web/<job id>/<file name>
MAX_NAME = 120


class WebError(Exception):
    """A request the page answers with ``status`` and a message a reader can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def safe_name(filename: str) -> str:
    """The file name a browser sent, as data: the last path part only (no folders, no ``..``),
    control characters dropped, whitespace collapsed, at most 120 characters (extension kept)."""
    name = re.split(r"[/\\]", filename or "")[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C")
    name = " ".join(name.split()).strip(". ")
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME - len(ext) - 1] + "." + ext) if dot and len(ext) <= 8 else name[:MAX_NAME]
    return name or "upload"


def _options(speakers: str | None, language: str | None) -> dict[str, str]:
    """The upload's options as the pipeline reads them (x-amz-meta-vidnotes-<name>), checked here
    so a bad one is refused at once instead of failing the run."""
    out: dict[str, str] = {}
    speakers = (speakers or "").strip().lower()
    if speakers:
        try:
            count = speaker_count(speakers)
        except ValueError as e:
            raise WebError(400, f"speakers: {e}") from None
        out["vidnotes-speakers"] = str(count) if count else "auto"
    language = (language or "").strip().lower()
    if language:
        if not re.fullmatch(r"auto|[a-z]{2,3}", language):
            raise WebError(400, f"language: {language[:20]!r} is neither 'auto' nor a language code such as 'en' or 'ru'")
        out["vidnotes-language"] = language
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Library:
    """The buckets and Airflow as the page sees them."""

    inbox: Storage
    results: Storage
    airflow: Airflow | None = None
    max_upload_bytes: int = 2 * 2**30
    max_seconds: float = 4 * 3600.0
    _finished_tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _outcomes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    _diarize: dict[str, bool] = field(default_factory=dict)

    # -- uploads ------------------------------------------------------------------------------
    def upload(self, path: Path, filename: str, *, speakers: str | None = None, language: str | None = None) -> dict[str, Any]:
        """Check the file a reader sent (type, size, ffprobe) and put it into the inbox bucket at
        ``web/<job id>/<name>``; nothing reaches the bucket unless every check passed."""
        name = safe_name(filename)
        ext = Path(name).suffix.lower()
        if ext not in MEDIA_TYPES:
            kinds = ", ".join(sorted(e[1:] for e in MEDIA_TYPES))
            raise WebError(415, f"{name}: '{ext or 'no extension'}' is not a video or audio file this page takes ({kinds})")
        meta = _options(speakers, language)
        try:
            info = probe(path, max_bytes=self.max_upload_bytes, max_seconds=self.max_seconds)
        except InputError as e:
            raise WebError(413 if e.code in ("too_large", "too_long") else 422, f"{name}: {e}") from None
        digest = _sha256(path)
        job_id = digest[:16]
        key = f"{WEB_PREFIX}{job_id}/{name}"
        self.inbox.upload(path, key, content_type=MEDIA_TYPES[ext], metadata=meta or None)
        log.info("uploaded %s (%d bytes) to %s", name, info.size, self.inbox.uri(key))
        return {"key": key, "job_id": job_id, "name": name, "size": info.size, "duration": round(info.duration, 1), "options": meta}

    # -- the jobs list ------------------------------------------------------------------------
    def _inbox_objects(self) -> list[dict[str, Any]]:
        if isinstance(self.inbox, S3Storage):
            objs: list[dict[str, Any]] = []
            for page in self.inbox.client.get_paginator("list_objects_v2").paginate(Bucket=self.inbox.bucket):
                objs += [{"key": o["Key"], "size": int(o["Size"]), "modified": o["LastModified"]} for o in page.get("Contents", [])]
            return objs
        assert isinstance(self.inbox, LocalStorage)
        return [
            {"key": k, "size": (self.inbox.root / k).stat().st_size,
             "modified": datetime.fromtimestamp((self.inbox.root / k).stat().st_mtime, timezone.utc)}
            for k in self.inbox.list("")
        ]  # fmt: skip

    def _json(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.results.get_bytes(key))
        except (NotFound, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _runs_by_key(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        """The newest pipeline run of each upload key (Airflow), and why there are none if Airflow
        could not be asked."""
        if self.airflow is None:
            return {}, "Airflow is not configured for this page"
        try:
            runs = self.airflow.dag_runs(PIPELINE_DAG)
        except Exception as e:  # the API down or restarting: the list still shows S3's view
            return {}, f"Airflow's API did not answer ({type(e).__name__}: {str(e)[:120]})"
        out: dict[str, dict[str, Any]] = {}
        for run in runs:  # newest first
            key = (run.get("conf") or {}).get("key")
            if key and key not in out:
                out[key] = run
        return out, None

    def _tasks(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        run_id = run["dag_run_id"]
        if run_id in self._finished_tasks:
            return self._finished_tasks[run_id]
        assert self.airflow is not None
        try:
            tasks = self.airflow.task_instances(PIPELINE_DAG, run_id)
        except Exception:
            return []
        if run.get("state") in ("success", "failed"):
            self._finished_tasks[run_id] = tasks
        return tasks

    def _outcome(self, run_id: str) -> dict[str, Any] | None:
        """The status record_outcome wrote for a finished run (its XCom ``status_key`` names it)."""
        if run_id not in self._outcomes:
            key = None
            try:
                key = self.airflow.xcom(PIPELINE_DAG, run_id, "record_outcome", "status_key") if self.airflow else None
            except Exception:
                pass
            self._outcomes[run_id] = self._json(key) if isinstance(key, str) and key else None
        return self._outcomes[run_id]

    def _diarize_off(self, run_id: str, tasks: list[dict[str, Any]]) -> bool:
        """Whether the run asked no speaker labels (extract_audio left diarize's payload empty):
        diarize then succeeds without being invoked, which the page shows as "off"."""
        if not any(t["task_id"] == "extract_audio" and t.get("state") == "success" for t in tasks) or self.airflow is None:
            return False
        if run_id not in self._diarize:
            try:
                self._diarize[run_id] = not self.airflow.xcom(PIPELINE_DAG, run_id, "extract_audio", "diarize_payload")
            except Exception:
                return False
        return self._diarize[run_id]

    @staticmethod
    def stage_states(tasks: list[dict[str, Any]], *, diarize_off: bool = False) -> list[dict[str, Any]]:
        """Each stage's state from the run's task instances; transcribe's mapped tasks counted;
        diarize "off" when the run asked no speaker labels."""
        out = []
        for stage in STAGES:
            mine = [t for t in tasks if t["task_id"] == stage]
            states = [str(t.get("state") or "none") for t in mine]
            if stage == "diarize" and diarize_off:
                state, detail = "off", ""
            elif not mine:
                state, detail = "waiting", ""
            elif all(s == "success" for s in states):
                state, detail = "success", ""
            elif "failed" in states:
                state, detail = "failed", ""
            elif all(s in ("skipped", "upstream_failed") for s in states):
                state, detail = "skipped", ""  # not run: an earlier stage failed, or the same content was done before
            elif any(s in ("running", "up_for_retry", "queued", "scheduled", "deferred", "restarting") for s in states):
                state, detail = "running", ""
            else:
                state, detail = "waiting", ""
            if len(mine) > 1:
                detail = f"{states.count('success')}/{len(mine)}"
            out.append({"stage": stage, "state": state, "detail": detail})
        return out

    def jobs(self, limit: int = 30) -> dict[str, Any]:
        """The newest uploads with their job, run and stage states, newest first."""
        objects = sorted(self._inbox_objects(), key=lambda o: o["modified"], reverse=True)[:limit]
        runs, airflow_note = self._runs_by_key()
        rows = []
        for obj in objects:
            key = obj["key"]
            parts = key.split("/")
            job_id = parts[1] if key.startswith(WEB_PREFIX) and len(parts) == 3 and JOB_ID.match(parts[1]) else None
            record = self._json(upload_record_key(self.inbox.bucket, key)) or {}
            job_id = job_id or record.get("job_id")
            status = self._json(Layout(job_id).status) if job_id else None
            run = runs.get(key)
            tasks = self._tasks(run) if run else []
            if status is None and run is not None and run.get("state") == "failed":
                status = self._outcome(run["dag_run_id"])  # a run that failed before its job was recorded
                job_id = job_id or (status or {}).get("job_id")
            if status and status.get("state") in ("succeeded", "failed") and not (run and run.get("state") in ("queued", "running")):
                state = status["state"]
            elif run is not None:
                state = {"success": "succeeded", "failed": "failed"}.get(run.get("state") or "", "running")
            else:
                state = "waiting"
            error = (status or {}).get("error") or {}
            rows.append({
                "key": key, "name": parts[-1], "size": obj["size"], "uploaded": obj["modified"].isoformat(timespec="seconds"),
                "job_id": job_id, "state": state, "stage": (status or {}).get("stage"),
                "error": error.get("message") if state == "failed" else None,
                "run_id": run["dag_run_id"] if run else None, "stages": self.stage_states(tasks, diarize_off=bool(run) and self._diarize_off(run["dag_run_id"], tasks)),
                "notes": bool(job_id and state == "succeeded" and self.results.exists(Layout(job_id).notes)),
            })  # fmt: skip
        return {"jobs": rows, "airflow": airflow_note}

    # -- one job ------------------------------------------------------------------------------
    def _job_id(self, job_id: str) -> Layout:
        if not JOB_ID.match(job_id or ""):
            raise WebError(404, "no such job (a job id is 16 hex digits)")
        return Layout(job_id)

    def transcript(self, job_id: str) -> Transcript:
        layout = self._job_id(job_id)
        try:
            return Transcript.from_dict(json.loads(self.results.get_bytes(layout.transcript("json"))))
        except NotFound:
            raise WebError(404, f"job {job_id} has no transcript yet") from None

    def job(self, job_id: str) -> dict[str, Any]:
        """Everything the job's page shows: status, notes, the transcript with the readers'
        corrections applied, the media to play, the downloads."""
        layout = self._job_id(job_id)
        status = self._json(layout.status)
        if status is None:
            raise WebError(404, f"no job {job_id} (not uploaded, or not started yet)")
        source = self._json(layout.source) or {}
        present = set(self.results.list(layout.prefix))
        notes = self._json(layout.notes) if layout.notes in present else None
        segments: list[dict[str, Any]] = []
        items = feedback.corrections(self.results, job_id)
        if layout.transcript("json") in present:
            latest = feedback.latest_per_segment(items)
            for i, seg in enumerate(self.transcript(job_id).segments):
                row: dict[str, Any] = {"index": i, "start": seg.start, "end": seg.end, "text": seg.text, "speaker": seg.speaker}
                if i in latest:
                    row.update(text=latest[i].corrected, original=seg.text, corrected=True)
                segments.append(row)
        media = (source.get("input") or {})
        key = str(media.get("key") or "")
        ext = Path(key).suffix.lower()
        return {
            "job_id": job_id,
            "name": key.rsplit("/", 1)[-1] or job_id,
            "status": status,
            "notes": notes,
            "segments": segments,
            "flags": [c.model_dump() for c in items if c.kind == "summary"],
            "media": {"available": media.get("bucket") == self.inbox.bucket and bool(key),
                      "kind": "video" if (source.get("media") or {}).get("has_video") else "audio",
                      "type": MEDIA_TYPES.get(ext, "application/octet-stream")},
            "downloads": [{"name": n, "label": label, "url": f"/api/jobs/{job_id}/files/{n}"}
                          for n, (fname, _t, label) in DOWNLOADS.items() if layout.key(fname) in present],
        }  # fmt: skip

    def download(self, job_id: str, name: str) -> tuple[bytes, str, str]:
        """A job's output by its short name (``pdf``, ``md``, ...): bytes, content type, file name."""
        layout = self._job_id(job_id)
        if name not in DOWNLOADS:
            raise WebError(404, f"no download {name[:40]!r}; there are {', '.join(DOWNLOADS)}")
        fname, ctype, _label = DOWNLOADS[name]
        try:
            data = self.results.get_bytes(layout.key(fname))
        except NotFound:
            raise WebError(404, f"job {job_id} has no {fname} (yet)") from None
        source = self._json(layout.source) or {}
        stem = Path(str((source.get("input") or {}).get("key") or job_id)).stem
        return data, ctype, f"{safe_name(stem)}.{fname}" if not fname.startswith("notes.") else f"{safe_name(stem)}{fname[5:]}"

    def media(self, job_id: str, range_header: str | None) -> tuple[int, dict[str, str], Iterator[bytes]]:
        """The job's upload from the inbox bucket for the player, honouring one ``Range`` (a
        browser seeks with them): HTTP status, headers, body."""
        layout = self._job_id(job_id)
        source = (self._json(layout.source) or {}).get("input") or {}
        key = str(source.get("key") or "")
        if source.get("bucket") != self.inbox.bucket or not key:
            raise WebError(404, f"job {job_id}'s upload is not in the inbox bucket")
        try:
            size = self.inbox.size(key)
        except NotFound:
            raise WebError(404, f"job {job_id}'s upload is no longer in the inbox") from None
        start, end, status = 0, size - 1, 200
        if range_header:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise WebError(416, "only one byte range is served")
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # the last N bytes
                start = max(0, size - int(m.group(2)))
            if start > end or start >= size:
                raise WebError(416, f"range outside the file ({size} bytes)")
            status = 206
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1),
                   "Content-Type": MEDIA_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")}  # fmt: skip
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return status, headers, self._read_range(key, start, end)

    def _read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        if isinstance(self.inbox, S3Storage):
            body = self.inbox.client.get_object(Bucket=self.inbox.bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
            yield from body.iter_chunks(1 << 16)
            return
        assert isinstance(self.inbox, LocalStorage)
        with (self.inbox.root / key).open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (block := f.read(min(left, 1 << 16))):
                left -= len(block)
                yield block

    # -- corrections --------------------------------------------------------------------------
    def correct(self, job_id: str, segment: Any, text: Any) -> dict[str, Any]:
        try:  # (transcript() checks the job id)
            return feedback.correct_segment(self.results, job_id, self.transcript(job_id), segment, text).model_dump()
        except feedback.FeedbackError as e:
            raise WebError(400, str(e)) from None

    def flag(self, job_id: str, sentence: Any, comment: Any) -> dict[str, Any]:
        layout = self._job_id(job_id)
        notes = self._json(layout.notes)
        if notes is None:
            raise WebError(404, f"job {job_id} has no notes yet")
        try:
            return feedback.flag_summary(self.results, job_id, str(notes.get("summary") or ""), sentence, comment).model_dump()
        except feedback.FeedbackError as e:
            raise WebError(400, str(e)) from None
