"""vidnotes on Airflow: an upload to the inbox bucket becomes a transcript and notes (PDF, Markdown, chapters).

Three DAGs (docs/airflow.md):

``video_to_notes_uploads`` (event-driven, ``schedule=[VIDNOTES_UPLOADS]``)
    S3 ``ObjectCreated`` on the inbox bucket -> SQS queue -> the asset ``vidnotes_uploads``, whose
    ``AssetWatcher`` (``MessageQueueTrigger(scheme="sqs")``, run by the triggerer) turns each batch
    of queue messages into an asset event. ``parse_trigger`` reads the uploads out of the events'
    ``extra`` (S3 notifications, keys URL-decoded, ``s3:TestEvent`` skipped, every record its own
    upload); ``start_jobs`` (``TriggerDagRunOperator`` mapped over the uploads) starts one
    ``video_to_notes`` run per upload, with a run id derived from the S3 event (a message SQS
    delivers twice starts one run).

``video_to_notes`` (one upload per run; also triggered by hand with conf ``{"bucket", "key"}``)
    parse_trigger -> extract_audio -> transcribe (mapped over the chunk batches) and, beside it,
    diarize (speaker turns, when the run asks for ``speakers``) -> summarize -> render_pdf -> record_outcome (ALL_DONE: writes the outcome to the job's status.json, then
    fails the run if a stage failed). Each stage invokes its Lambda function synchronously through
    the Amazon provider's ``LambdaHook``; a function error fails the task with the function's
    errorMessage. Input errors (errorType ``StageFailed``: not a video, too large, ...) fail at
    once; anything else (timeouts, throttling, crashes) is retried with exponential backoff.

``video_to_notes_reconcile`` (every ``reconcile_every`` s, and when ``make airflow`` starts)
    the safety net of the event path: a ``video_to_notes`` run for every inbox upload no run took
    (its S3 event lost, e.g. by a triggerer that died after taking the message off the queue), was
    replaced since its run, or whose job a run left ``running`` when it ended.

Why one run per upload rather than mapping over uploads inside one run: the transcribe fan-out
is itself a mapped task, and Airflow does not map inside a mapped task group ("operator
expansion in an expanded task group is not yet supported"); one run per upload also gives every
job its own state, retries, outcome and a conf that can be re-run by hand.

Nothing heavy is imported here (no numpy/onnxruntime/torch, no vidnotes.asr): the stages run in
the Lambda functions; this file parses in well under a second.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.amazon.aws.operators.lambda_function import LambdaInvokeFunctionOperator
from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, AssetWatcher, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from vidnotes.orchestration import (
    ACTIVE_RUN_STATES,
    STAGES,
    BadTrigger,
    Settings,
    job_id_from_error,
    lost_uploads,
    ownerless_and_stale,
    run_id_for,
    run_options,
    same_options,
    stage_of,
    stage_outcome,
    upload_record_key,
    uploads_from_asset_extras,
    uploads_from_conf,
)

log = logging.getLogger(__name__)
CFG = Settings.load()  # environment only at parse time; tasks re-read it with the Variable `vidnotes`
PIPELINE_DAG_ID = "video_to_notes"
UPLOADS_DAG_ID = "video_to_notes_uploads"
RECONCILE_DAG_ID = "video_to_notes_reconcile"

VIDNOTES_UPLOADS = Asset(
    name="vidnotes_uploads",
    uri=f"s3://{CFG.inbox_bucket}/",
    group="vidnotes",
    watchers=[
        AssetWatcher(
            name="vidnotes_uploads_sqs",
            trigger=MessageQueueTrigger(
                scheme="sqs",
                sqs_queue=CFG.queue_url,
                aws_conn_id=CFG.aws_conn_id,
                max_messages=CFG.sqs_max_messages,
                wait_time_seconds=CFG.sqs_wait_seconds,  # long polling: an upload is seen within ~1 s
                waiter_delay=CFG.sqs_poll_delay,
            ),
        )
    ],
)

DEFAULT_ARGS = {
    "owner": "vidnotes",
    "retries": CFG.retries,
    "retry_delay": timedelta(seconds=CFG.retry_delay),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(seconds=CFG.max_retry_delay),
}


class LambdaFunctionError(RuntimeError):
    """A function error worth retrying (timeout, crash, internal error)."""


def settings() -> Settings:
    """The configuration at run time: environment, then the Airflow Variable `vidnotes` (JSON)."""
    from airflow.sdk import Variable

    return Settings.load(variable=Variable.get("vidnotes", default=None, deserialize_json=True))


class StageOperator(LambdaInvokeFunctionOperator):
    """One pipeline stage: the Amazon provider's ``LambdaInvokeFunctionOperator`` (synchronous,
    ``LogType=Tail``, the function's log tail in the task log), plus what the pipeline needs of it:

    - the function comes from the settings at run time (the Variable ``vidnotes`` can re-point a
      stage); the boto read timeout is the stage's timeout + 60 s (as on AWS, a synchronous call
      lasts as long as the function), botocore retries throttling (429);
    - the result is the function's JSON, parsed;
    - a function error fails the task with ``"<function> failed (<errorType>): <errorMessage>"``,
      kept as the XCom ``error`` for record_outcome; an ``errorType`` of ``StageFailed`` (the input
      is wrong) fails at once, anything else (timeouts, crashes) is retried;
    - after a job found done before (extract_audio's XCom ``already_done``) it is skipped, and an
      empty payload (diarize when no speakers are asked for) invokes nothing;
    - ``chunk_range`` names a mapped transcribe in the UI (``map_index_template="{{ task.chunk_range }}"``)."""

    template_fields: Sequence[str] = (*LambdaInvokeFunctionOperator.template_fields, "chunk_range")

    def __init__(self, *, stage: str, chunk_range: str = "", payload: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("execution_timeout", timedelta(seconds=CFG.timeout(stage)))
        super().__init__(
            function_name=CFG.function(stage),
            payload=payload,
            invocation_type="RequestResponse",
            log_type="Tail",
            aws_conn_id=CFG.aws_conn_id,
            botocore_config={"read_timeout": CFG.timeout(stage) + 60, "connect_timeout": 10, "retries": {"max_attempts": 4, "mode": "standard"}},
            **kwargs,
        )
        self.stage, self.chunk_range = stage, chunk_range

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        if self.stage != "extract_audio" and ti.xcom_pull(task_ids="extract_audio", key="already_done"):
            raise AirflowSkipException("the same content already has these notes")
        if not self.payload:
            log.info("nothing asked of %s in this run: not invoking it", self.stage)
            return {"invoked": False}
        self.function_name = settings().function(self.stage)
        try:
            body = super().execute(context)
        except ValueError as e:  # the operator's "Lambda function execution resulted in error"
            detail = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], dict) else None
            if detail is None or "Payload" not in detail:
                raise
            self._fail(ti, detail["Payload"])
        return json.loads(body)

    def _fail(self, ti: Any, body: str) -> None:
        try:
            err = json.loads(body)
        except ValueError:
            err = {"errorMessage": body}
        err = err if isinstance(err, dict) else {"errorMessage": body}
        etype, message = err.get("errorType", "Unhandled"), err.get("errorMessage", body)
        ti.xcom_push(key="error", value={"function": self.function_name, "type": etype, "message": message})
        text = f"{self.function_name} failed ({etype}): {message}"
        if etype == "StageFailed":  # the input or the payload is wrong: trying again cannot help
            raise AirflowFailException(text)
        raise LambdaFunctionError(text)


# -- the pipeline: one upload per run -------------------------------------------------------------
def _job_status(job_id: str) -> dict[str, Any]:
    """The job's status.json in the results bucket ({} when there is none or it is unreadable)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    cfg = settings()
    s3 = S3Hook(aws_conn_id=cfg.aws_conn_id)
    key = f"jobs/{job_id}/status.json"
    if not s3.check_for_key(key, bucket_name=cfg.results_bucket):
        return {}
    try:
        status = json.loads(s3.read_key(key, bucket_name=cfg.results_bucket))
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _claim_job(job_id: str, upload: dict[str, Any], options: dict[str, Any]) -> bool:
    """Note in the job's status.json that this run processes it, so that a run for the same
    content (a duplicate upload) waits for this one instead of doing the work again. Atomic: the
    write is conditional on the status.json it read (S3's If-Match on its ETag, If-None-Match
    when there was none), so of two runs claiming at once one wins and the other gets False (and
    looks again); False too when another run that is still active holds the job."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.exceptions import ClientError

    cfg = settings()
    ti = get_current_context()["ti"]
    client = S3Hook(aws_conn_id=cfg.aws_conn_id).get_conn()
    key = f"jobs/{job_id}/status.json"
    try:
        obj = client.get_object(Bucket=cfg.results_bucket, Key=key)
        body, etag = obj["Body"].read(), obj["ETag"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        body, etag = b"", None
    try:
        status = json.loads(body) if body else {}
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    owner = (status.get("airflow") or {}).get("run_id")
    if status.get("state") == "running" and owner and owner != ti.run_id and _run_state(owner) in ACTIVE_RUN_STATES:
        return False
    status.pop("error", None)  # a failed job uploaded again is being processed again
    status.update(state="running", options=options, airflow={"dag_id": ti.dag_id, "run_id": ti.run_id, "outcome": "running", "upload": upload})
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=cfg.results_bucket, Key=key, Body=json.dumps(status, indent=2, ensure_ascii=False).encode(), **condition)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            return False
        raise
    return True


def _record_upload(upload: dict[str, Any], job_id: str | None = None) -> None:
    """Note in the results bucket which run took this inbox object (and, once known, its job), so
    video_to_notes_reconcile can tell an upload no run took from one in hand."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    cfg = settings()
    s3 = S3Hook(aws_conn_id=cfg.aws_conn_id)
    head = s3.head_object(upload["key"], bucket_name=upload["bucket"])
    if head is None:  # extract_audio reports a missing upload itself
        return
    record = {"bucket": upload["bucket"], "key": upload["key"], "etag": str(head.get("ETag", "")).strip('"'),
              "run_id": get_current_context()["ti"].run_id, "job_id": job_id,
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    s3.load_string(json.dumps(record, ensure_ascii=False), upload_record_key(upload["bucket"], upload["key"]), bucket_name=cfg.results_bucket, replace=True)


def _run_state(run_id: str) -> str | None:
    """The state of a video_to_notes run, or None when there is no such run."""
    ti = get_current_context()["ti"]
    if not run_id or not ti.get_dr_count(dag_id=PIPELINE_DAG_ID, run_ids=[run_id]):
        return None
    state = ti.get_dagrun_state(dag_id=PIPELINE_DAG_ID, run_id=run_id)
    return str(getattr(state, "value", state))


class ExtractAudioOperator(StageOperator):
    """extract_audio, and what follows from its result: the run's options (conf, else the upload's
    metadata, else the settings), whether the job is done already or in another run's hands
    (duplicates: docs/airflow.md), the atomic claim of the job, and the payloads of the later
    stages. Returns the transcribe fan-out: one ``{"payload", "chunk_range"}`` per batch of chunks.
    XComs: ``extract`` (the function's result), ``job_id``, ``options``, ``already_done``,
    ``diarize_payload`` / ``summarize_payload`` / ``render_payload`` (JSON text)."""

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        upload = ti.xcom_pull(task_ids="parse_trigger")
        self.payload = json.dumps({"bucket": upload["bucket"], "key": upload["key"]})
        _record_upload(upload)
        result = super().execute(context)
        job_id = result["job_id"]
        _record_upload(upload, job_id)
        ti.xcom_push(key="extract", value=result)
        ti.xcom_push(key="job_id", value=job_id)
        log.info(
            "job %s: %s s, %d chunks in %d batches%s", job_id, result["duration"], result["chunks"],
            len(result["batches"]), " (same content as an earlier upload)" if result.get("duplicate") else "",
        )  # fmt: skip
        cfg = settings()
        try:  # the run's conf, else what the uploader put in the object's metadata, else the settings
            options = run_options(context["params"], cfg, result.get("options"))
        except BadTrigger as e:
            msg = f"{e} (job {job_id}: s3://{result['results_bucket']}/{result['prefix']}status.json)"
            ti.xcom_push(key="error", value={"function": None, "type": "BadOptions", "message": msg})
            raise AirflowFailException(msg) from e
        ti.xcom_push(key="options", value=options)
        status = _job_status(job_id) if result.get("duplicate") else {}
        if status.get("state") == "succeeded" and same_options(status.get("options"), options):
            # the same content was turned into the same notes before: nothing to redo, the run succeeds
            ti.xcom_push(key="already_done", value=True)
            log.info("job %s already succeeded: skipping transcribe, diarize, summarize and render_pdf", job_id)
            return []
        owner = (status.get("airflow") or {}).get("run_id")
        if owner and owner != ti.run_id and status.get("state") == "running" and _run_state(owner) not in ACTIVE_RUN_STATES:
            log.warning("job %s was left running by run %s, which has ended: processing it here", job_id, owner)
        elif ownerless_and_stale(status, cfg.orphan_after):
            log.warning("job %s is marked running since %s but no Airflow run owns it: processing it here", job_id, status.get("updated"))
        elif status.get("state") == "running" and owner != ti.run_id and not (owner is None and ti.try_number > 1):
            # another run is turning the same content into notes right now: wait for its outcome
            # (rescheduled, so no worker slot is held), then skip if it succeeded
            now = datetime.now(timezone.utc)
            first = ti.get_first_reschedule_date(context) or now
            if (now - first).total_seconds() < cfg.duplicate_wait:
                log.info("job %s is being processed by run %s: looking again in %d s", job_id, owner or "?", cfg.duplicate_poll)
                raise AirflowRescheduleException(now + timedelta(seconds=cfg.duplicate_poll))
            log.warning("job %s has been running for over %d s without an outcome: processing it again", job_id, cfg.duplicate_wait)
        if not _claim_job(job_id, upload, options):
            log.info("job %s: another run claimed it at the same moment: looking again in %d s", job_id, cfg.duplicate_poll)
            raise AirflowRescheduleException(datetime.now(timezone.utc) + timedelta(seconds=cfg.duplicate_poll))
        summarize: dict[str, Any] = {"job_id": job_id}
        if options["speakers"] is not None:
            summarize.update(speakers=True, speaker_names=options["speaker_names"])
            ti.xcom_push(key="diarize_payload", value=json.dumps({"job_id": job_id, "speakers": options["speakers"]}))
        ti.xcom_push(key="summarize_payload", value=json.dumps(summarize))
        ti.xcom_push(key="render_payload", value=json.dumps({"job_id": job_id}))
        return [
            {"payload": json.dumps({"job_id": job_id, "chunks": batch, "language": options["language"]}), "chunk_range": f"chunks {batch[0]}-{batch[-1]}"}
            for batch in result["batches"]
        ]


@dag(
    dag_id=PIPELINE_DAG_ID,
    description="One upload -> transcript and notes: notes.pdf, notes.md, notes.json, chapters.vtt (the Lambda stages)",
    schedule=None,
    catchup=False,
    max_active_runs=4,
    max_active_tasks=4,
    default_args=DEFAULT_ARGS,
    is_paused_upon_creation=False,
    tags=["vidnotes"],
    params={
        "bucket": Param(CFG.inbox_bucket, type="string", description="bucket of the upload"),
        "key": Param(None, type=["null", "string"], description="key of the upload, e.g. talks/talk.mp4"),
        "language": Param(
            None,
            type=["null", "string"],
            pattern=r"^(auto|[a-z]{2,3})$",
            description='the talk\'s language: "auto" (detected by a multilingual model), a Whisper code such as "ru", '
            "or empty for the deployment's default (setting `language`, default auto)",
        ),
        "speakers": Param(
            None,
            type=["null", "string"],
            pattern=r"^(|auto|off|[1-9][0-9]?)$",
            description='speaker labels in the transcript and the notes: "auto" (count estimated), a count such as "2", '
            '"off", or empty for the deployment\'s default (setting `speakers`, default off)',
        ),
        "speaker_names": Param(
            {},
            type=["null", "object"],
            description='names for the speakers found, by number: {"1": "Ada", "2": "Grace"} (needs speakers)',
        ),
    },
    doc_md=__doc__,
)
def video_to_notes():
    @task(retries=0)
    def parse_trigger(**context) -> dict[str, Any]:
        """The upload from the run's conf ({"bucket", "key"}, as video_to_notes_uploads sends it)."""
        conf = context["dag_run"].conf or {}  # the trigger form fills it from the params
        try:  # the upload, and what to make of it: the run's params (the conf), else the settings
            uploads = uploads_from_conf(conf)
            options = run_options({**context["params"], **conf}, settings())
        except BadTrigger as e:
            context["ti"].xcom_push(key="error", value={"message": str(e)})
            raise AirflowFailException(str(e)) from e
        if len(uploads) != 1:
            msg = f"one upload per run, got {len(uploads)}: trigger {UPLOADS_DAG_ID} to start one run each"
            context["ti"].xcom_push(key="error", value={"message": msg})
            raise AirflowFailException(msg)
        log.info("options from the conf and the settings: %s (the upload's metadata may add to them)", options)
        return uploads[0].conf()

    upload = parse_trigger()
    ext = ExtractAudioOperator(task_id="extract_audio", stage="extract_audio")
    parts = StageOperator.partial(
        task_id="transcribe", stage="transcribe", execution_timeout=timedelta(seconds=CFG.timeout_transcribe), map_index_template="{{ task.chunk_range }}"
    ).expand_kwargs(ext.output)
    turns = StageOperator(task_id="diarize", stage="diarize", payload="{{ ti.xcom_pull(task_ids='extract_audio', key='diarize_payload') or '' }}")
    summary = StageOperator(task_id="summarize", stage="summarize", payload="{{ ti.xcom_pull(task_ids='extract_audio', key='summarize_payload') }}")
    pdf = StageOperator(task_id="render_pdf", stage="render_pdf", payload="{{ ti.xcom_pull(task_ids='extract_audio', key='render_payload') }}")

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=2)
    def record_outcome(**context) -> dict[str, Any]:
        """Write the run's outcome into the job's status.json (results bucket), then fail the run
        if a stage failed, so the failure shows in S3 and in Airflow alike."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        ti = context["ti"]
        cfg = settings()
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=list(STAGES)).get(ti.run_id, {})
        errors: dict[tuple[str, int], str] = {}
        for name, state in states.items():
            if state == "failed" and (where := stage_of(name)) is not None:
                err = ti.xcom_pull(task_ids=where[0], key="error", map_indexes=where[1])
                if err:
                    errors[where] = err["message"]
        out = stage_outcome(states, errors)
        if states.get("extract_audio") == "success" and ti.xcom_pull(task_ids="extract_audio", key="already_done"):
            out = {"state": "succeeded", "tasks": out["tasks"], "duplicate": True}
        # (pull only what exists: a missing XCom is logged as an error, which would mislead)
        upload = ti.xcom_pull(task_ids="parse_trigger") if states.get("parse_trigger") == "success" else {}
        job_id = ti.xcom_pull(task_ids="extract_audio", key="job_id") if states.get("extract_audio") == "success" else None
        job_id = job_id or job_id_from_error(out.get("message"))
        record = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "outcome": out["state"],
            "tasks": out["tasks"],
            "upload": upload,
            "duplicate": bool(out.get("duplicate")),
            "recorded_by": "record_outcome",
        }
        s3 = S3Hook(aws_conn_id=cfg.aws_conn_id)
        key = f"jobs/{job_id}/status.json" if job_id else f"runs/{PIPELINE_DAG_ID}/{ti.run_id}.json"
        status: dict[str, Any] = {}
        if s3.check_for_key(key, bucket_name=cfg.results_bucket):
            try:
                status = json.loads(s3.read_key(key, bucket_name=cfg.results_bucket))
            except ValueError:
                status = {}
        status.update({"job_id": job_id, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "airflow": record})
        if out["state"] == "succeeded":
            status["state"] = "succeeded"
            status.pop("error", None)
        else:
            # the function's own record of this failure (its error code), when it wrote one
            previous = status.get("error") if status.get("state") == "failed" and status.get("stage") == out["stage"] else None
            status["state"] = "failed"
            status["stage"] = out["stage"]
            status["error"] = {
                "code": (previous or {}).get("code", "task_failed"),
                "message": (previous or {}).get("message", out["message"]) if out["stage"] != "parse_trigger" else out["message"],
                "task": out["failed_task"],
                "airflow_message": out["message"],
            }
        s3.load_string(json.dumps(status, indent=2, ensure_ascii=False), key, bucket_name=cfg.results_bucket, replace=True)
        log.info("outcome %s recorded in s3://%s/%s", out["state"], cfg.results_bucket, key)
        ti.xcom_push(key="status_key", value=key)  # kept when the task fails below
        if out["state"] != "succeeded":
            raise AirflowFailException(f"{out['failed_task']} failed: {out['message']}")
        return {"status_key": key, **out}

    upload >> ext >> [parts, turns]
    [parts, turns] >> summary >> pdf
    [upload, ext, parts, turns, summary, pdf] >> record_outcome()


video_to_notes()


# -- the event-driven entry: S3 -> SQS -> asset event -> one pipeline run per upload ---------------
@dag(
    dag_id=UPLOADS_DAG_ID,
    description="Uploads to the inbox bucket (S3 -> SQS -> asset watcher) -> one video_to_notes run each",
    schedule=[VIDNOTES_UPLOADS],
    catchup=False,
    max_active_runs=4,
    default_args={**DEFAULT_ARGS, "retries": 2},
    is_paused_upon_creation=False,
    tags=["vidnotes"],
    doc_md=__doc__,
)
def video_to_notes_uploads():
    @task
    def parse_trigger(**context) -> list[dict[str, Any]]:
        """Uploads named by the triggering asset events (SQS messages), or by a conf given by hand."""
        extras = [e.extra for events in context["triggering_asset_events"].values() for e in events]
        uploads = uploads_from_asset_extras(extras)
        uploads += uploads_from_conf(context["dag_run"].conf, allow_empty=True)
        log.info("%d asset event(s) -> %d upload(s): %s", len(extras), len(uploads), [u.key for u in uploads])
        return [{"trigger_run_id": run_id_for(u), "conf": u.conf()} for u in uploads]

    TriggerDagRunOperator.partial(
        task_id="start_jobs",
        trigger_dag_id=PIPELINE_DAG_ID,
        skip_when_already_exists=True,  # the same S3 event delivered twice
        wait_for_completion=False,
        map_index_template="{{ task.conf['key'] }}",
    ).expand_kwargs(parse_trigger())


video_to_notes_uploads()


# -- the safety net: uploads whose S3 event never became a run ----------------------------------
@dag(
    dag_id=RECONCILE_DAG_ID,
    description="Every few minutes (and when make airflow starts): a run for every inbox upload that no run took",
    schedule=timedelta(seconds=CFG.reconcile_every),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    is_paused_upon_creation=False,
    tags=["vidnotes"],
    doc_md="""The SQS watcher deletes a message when it receives it, so an upload whose message the
triggerer took but never turned into an asset event (it died in between) would wait forever.
This DAG lists the inbox and starts a `video_to_notes` run (run id `reconcile__...`) for every
upload aged `reconcile_min_age`..`reconcile_max_age` s that no run took, that was replaced since
its run, or whose job a run left `running` when it ended. It skips a round while the upload
queue still holds messages (the watcher has them to deliver first). docs/reliability.md.""",
)
def video_to_notes_reconcile():
    @task
    def find_lost_uploads() -> list[dict[str, Any]]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        cfg = settings()
        attrs = SqsHook(aws_conn_id=cfg.aws_conn_id).get_conn().get_queue_attributes(
            QueueUrl=cfg.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        waiting = sum(int(v) for v in attrs.values())
        if waiting:
            log.info("the upload queue holds %d message(s): the watcher delivers them first; looking again next round", waiting)
            return []
        s3 = S3Hook(aws_conn_id=cfg.aws_conn_id)
        client = s3.get_conn()
        objects = [o for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.inbox_bucket, Prefix=cfg.reconcile_prefix)
                   for o in page.get("Contents", [])]  # fmt: skip

        def record(key: str) -> dict[str, Any] | None:
            rkey = upload_record_key(cfg.inbox_bucket, key)
            if not s3.check_for_key(rkey, bucket_name=cfg.results_bucket):
                return None
            try:
                return json.loads(s3.read_key(rkey, bucket_name=cfg.results_bucket))
            except ValueError:
                return None

        lost = lost_uploads(cfg.inbox_bucket, objects, record, _run_state, _job_status, now=datetime.now(timezone.utc),
                            min_age=cfg.reconcile_min_age, max_age=cfg.reconcile_max_age)  # fmt: skip
        log.info("%d object(s) under s3://%s/%s, %d without a run", len(objects), cfg.inbox_bucket, cfg.reconcile_prefix, len(lost))
        for item in lost:
            log.warning("s3://%s/%s: %s -> run %s", item.upload.bucket, item.upload.key, item.reason, item.run_id())
        return [{"trigger_run_id": item.run_id(), "conf": item.upload.conf()} for item in lost]

    TriggerDagRunOperator.partial(
        task_id="start_runs",
        trigger_dag_id=PIPELINE_DAG_ID,
        skip_when_already_exists=True,  # a run this DAG started before for the same object version
        wait_for_completion=False,
        map_index_template="{{ task.conf['key'] }}",
    ).expand_kwargs(find_lost_uploads())


video_to_notes_reconcile()
