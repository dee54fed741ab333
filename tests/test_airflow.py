"""The Airflow DAGs (dags/video_to_notes.py) against the live local stack.

- the DAG file parses fast, without errors and without heavy modules (in a fresh interpreter);
- the S3 notification parsing, on real messages from LocalStack's SQS, fetched by the real SQS
  trigger the asset watcher runs (keys with spaces and non-ASCII, several uploads, the TestEvent);
- ``dag.test()`` end to end: a real video -> PDF in the results bucket, transcribe fanned out;
- a text file uploaded as .mp4 fails the run with the function's message, and record_outcome
  leaves status.json failed with the failing task;
- the system: `aws s3 cp` alone -> S3 event -> SQS -> asset watcher (triggerer) -> scheduler ->
  PDF, through `scripts/airflow.sh up` (api-server, scheduler, dag-processor, triggerer);
- the web page over that system, in headless Chromium (web_page_over_the_stack).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stackutil import REPO, airflow_up, aws_cli, client, drain_queue, free_ports, log_tails, run_dag, running
from vidnotes.orchestration import Settings, Upload, run_id_for, uploads_from_asset_extras, uploads_from_body, uploads_from_conf
from vidnotes.sample import make_sample_video

sys.path.insert(0, str(REPO / "scripts"))
from airflow_client import Airflow  # noqa: E402

HEAVY = ("numpy", "torch", "onnxruntime", "transformers", "tokenizers", "vidnotes.asr", "vidnotes.stages", "faster_whisper")
PIPELINE = ["parse_trigger", "extract_audio", "transcribe", "diarize", "summarize", "render_pdf", "record_outcome"]


def pdf_text(path: Path) -> str:
    out = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split()).lower()


def s3_json(stack, bucket: str, key: str) -> dict:
    return json.loads(client("s3", stack["s3"]).get_object(Bucket=bucket, Key=key)["Body"].read())


# -- parsing the DAG file ---------------------------------------------------------------------
def test_dag_file_parses_fast_without_heavy_imports(tmp_path):
    code = f"""
import json, os, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder={str(REPO / "dags")!r})
t2 = time.perf_counter()
dags = {{d.dag_id: sorted(t.task_id for t in d.tasks) for d in bag.dags.values()}}
print(json.dumps({{"errors": {{k: str(v)[-500:] for k, v in bag.import_errors.items()}}, "dags": dags,
    "import_airflow_s": t1 - t0, "parse_s": t2 - t1,
    "file_s": [s.duration.total_seconds() for s in bag.dagbag_stats],
    "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["errors"] == {}
    assert set(out["dags"]) == {"video_to_notes", "video_to_notes_uploads", "video_to_notes_reconcile", "train_and_redeploy"}
    assert out["dags"]["video_to_notes"] == sorted(PIPELINE)
    assert out["heavy"] == [], f"heavy modules imported at parse time: {out['heavy']}"
    assert max(out["file_s"]) < 2.0, out  # the dag-processor's own measure of the file (~0.3 s here)
    assert out["parse_s"] < 5.0, out


# -- in-process Airflow: dag.test() against the live stack (fixtures airflow_home, dagbag: conftest.py)
def test_dag_structure(dagbag):
    from airflow.sdk import Asset

    dag = dagbag.dags["video_to_notes"]
    assert dag.schedule is None and set(dag.params.keys()) == {"bucket", "key", "language", "speakers", "speaker_names"}
    tasks = {t.task_id: t for t in dag.tasks}
    assert tasks["record_outcome"].trigger_rule == "all_done"
    assert set(tasks["record_outcome"].upstream_task_ids) == set(PIPELINE[:-1])
    assert type(tasks["transcribe"]).__name__.endswith("MappedOperator")  # the fan-out over batches
    # every stage is the Amazon provider's LambdaInvokeFunctionOperator (a subclass: docs/airflow.md)
    from airflow.providers.amazon.aws.operators.lambda_function import LambdaInvokeFunctionOperator

    for stage in ("extract_audio", "diarize", "summarize", "render_pdf"):
        assert isinstance(tasks[stage], LambdaInvokeFunctionOperator), stage
    assert issubclass(tasks["transcribe"].operator_class, LambdaInvokeFunctionOperator)
    # diarize runs beside the transcribe fan-out (both need only extract_audio), summarize after both
    assert set(tasks["diarize"].upstream_task_ids) == {"extract_audio"}
    assert set(tasks["summarize"].upstream_task_ids) == {"transcribe", "diarize"}
    for stage in ("extract_audio", "transcribe", "diarize", "summarize", "render_pdf"):
        t = tasks[stage]
        assert t.retries >= 1 and t.retry_exponential_backoff and t.execution_timeout is not None, stage
    uploads = dagbag.dags["video_to_notes_uploads"]
    schedule = uploads.schedule
    assert isinstance(schedule, list) and isinstance(schedule[0], Asset)
    (watcher,) = schedule[0].watchers
    trigger_path, kwargs = watcher.trigger.serialize()
    assert trigger_path.endswith("SqsSensorTrigger") and kwargs["sqs_queue"].endswith("/000000000000/vidnotes-uploads")
    assert kwargs["aws_conn_id"] == "aws_vidnotes"
    reconcile = dagbag.dags["video_to_notes_reconcile"]
    assert reconcile.max_active_runs == 1 and {t.task_id for t in reconcile.tasks} == {"find_lost_uploads", "start_runs"}


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> Path:
    # the default sample talk, about 40 s: two chunks
    return make_sample_video(tmp_path_factory.mktemp("talk") / "talk.mp4")


def test_dag_test_video_to_pdf(live_stack, dagbag, talk, tmp_path):
    key = f"talks/Vortrag über Flüsse & Brücken {uuid.uuid4().hex[:6]}.mp4"
    assert aws_cli(live_stack["s3"], "s3", "cp", str(talk), f"s3://vidnotes-inbox/{key}").returncode == 0
    lam = client("lambda", live_stack["lambda"])
    env = lam.get_function_configuration(FunctionName="vidnotes-extract-audio")["Environment"]["Variables"]
    # one chunk per transcribe invocation: the ~40 s talk fans out into two mapped tasks
    lam.update_function_configuration(FunctionName="vidnotes-extract-audio", Environment={"Variables": {**env, "VIDNOTES_CHUNKS_PER_BATCH": "1"}})
    try:
        t0 = time.monotonic()
        dr, states = run_dag(dagbag, "video_to_notes", {"bucket": "vidnotes-inbox", "key": key})
        took = time.monotonic() - t0
    finally:
        lam.update_function_configuration(FunctionName="vidnotes-extract-audio", Environment={"Variables": env})
    assert dr.state == "success", states
    job_id = hashlib.sha256(talk.read_bytes()).hexdigest()[:16]
    transcribes = sorted(i for (t, i) in states if t == "transcribe")
    assert len(transcribes) >= 2 and all(states[("transcribe", i)] == "success" for i in transcribes), states
    status = s3_json(live_stack, "vidnotes-results", f"jobs/{job_id}/status.json")
    assert status["state"] == "succeeded" and status["airflow"]["outcome"] == "succeeded"
    assert status["airflow"]["upload"]["key"] == key and status["airflow"]["run_id"] == dr.run_id
    assert status["input"]["key"] == key
    pdf = tmp_path / "notes.pdf"
    client("s3", live_stack["s3"]).download_file("vidnotes-results", status["outputs"]["pdf"], str(pdf))
    text = pdf_text(pdf)
    assert "bridges" in text and "rivers" in text, text[:500]
    print(f"dag.test video -> PDF: {took:.1f} s, {len(transcribes)} transcribe tasks")
    # the same content again under another key: recognised by content, nothing is redone
    again = f"talks/copy of the talk {uuid.uuid4().hex[:6]}.mp4"
    assert aws_cli(live_stack["s3"], "s3", "cp", str(talk), f"s3://vidnotes-inbox/{again}").returncode == 0
    dr2, states2 = run_dag(dagbag, "video_to_notes", {"bucket": "vidnotes-inbox", "key": again})
    assert dr2.state == "success", states2
    assert not [i for (t, i) in states2 if t == "transcribe" and states2[(t, i)] == "success"], states2
    assert states2[("summarize", -1)] != "success" and states2[("render_pdf", -1)] != "success", states2
    status = s3_json(live_stack, "vidnotes-results", f"jobs/{job_id}/status.json")
    assert status["state"] == "succeeded" and status["airflow"]["duplicate"] is True and status["airflow"]["run_id"] == dr2.run_id
    assert states2[("diarize", -1)] == "skipped" and states[("diarize", -1)] == "success", (states, states2)
    assert not client("s3", live_stack["s3"]).list_objects_v2(Bucket="vidnotes-results", Prefix=f"jobs/{job_id}/speakers.json").get("Contents")
    # the same content asking for speaker labels is not "done": diarize (beside transcribe) and the
    # later stages run again; the one espeak voice is one speaker, named as the conf says
    dr3, states3 = run_dag(dagbag, "video_to_notes", {"bucket": "vidnotes-inbox", "key": again, "speakers": "auto", "speaker_names": {"1": "Ada Lovelace"}})
    assert dr3.state == "success", states3
    assert states3[("diarize", -1)] == "success" and states3[("summarize", -1)] == "success", states3
    status = s3_json(live_stack, "vidnotes-results", f"jobs/{job_id}/status.json")
    assert status["options"] == {"language": "auto", "speakers": "auto", "speaker_names": {"1": "Ada Lovelace"}}, status
    turns = s3_json(live_stack, "vidnotes-results", f"jobs/{job_id}/speakers.json")
    assert turns["speakers"] == 1 and turns["requested"] == "auto" and turns["model"].startswith("speaker/"), turns
    transcript = s3_json(live_stack, "vidnotes-results", status["outputs"]["transcript_json"])
    assert transcript["segments"] and {s.get("speaker") for s in transcript["segments"]} == {"Ada Lovelace"}, transcript["segments"][:3]
    client("s3", live_stack["s3"]).download_file("vidnotes-results", status["outputs"]["markdown"], str(tmp_path / "notes.md"))
    assert "Ada Lovelace" in (tmp_path / "notes.md").read_text()


def test_dag_test_bad_upload_fails_with_the_function_message(live_stack, dagbag, tmp_path, capfd):
    bad = tmp_path / "slides.mp4"
    bad.write_text(f"speaker notes, not a video {uuid.uuid4()}\n")
    key = f"bad/slides {uuid.uuid4().hex[:6]}.mp4"
    assert aws_cli(live_stack["s3"], "s3", "cp", str(bad), f"s3://vidnotes-inbox/{key}").returncode == 0
    dr, states = run_dag(dagbag, "video_to_notes", {"bucket": "vidnotes-inbox", "key": key})
    assert dr.state == "failed"
    assert states[("extract_audio", -1)] == "failed"
    assert states[("record_outcome", -1)] == "failed"  # it ran (ALL_DONE), recorded, then failed the run
    assert {states[(t, -1)] for t in ("transcribe", "summarize", "render_pdf")} == {"upstream_failed"}
    job_id = hashlib.sha256(bad.read_bytes()).hexdigest()[:16]
    status = s3_json(live_stack, "vidnotes-results", f"jobs/{job_id}/status.json")
    assert status["state"] == "failed" and status["stage"] == "extract_audio"
    assert status["error"]["task"] == "extract_audio" and status["error"]["code"] == "not_media"
    assert "not a readable audio or video file" in status["error"]["message"]
    assert status["airflow"]["outcome"] == "failed" and status["airflow"]["tasks"]["transcribe"] == "upstream_failed"
    # the function's errorMessage is the task's exception (and so in its log), with no retry
    logs = capfd.readouterr()
    assert "vidnotes-extract-audio failed (StageFailed): extract_audio: the upload is not a readable audio or video file" in logs.out + logs.err


def test_dag_test_without_an_upload_fails_clearly(dagbag):
    dr, states = run_dag(dagbag, "video_to_notes", {})
    assert dr.state == "failed" and states[("parse_trigger", -1)] == "failed"
    assert states[("record_outcome", -1)] == "failed"


# -- SQS messages, as the watcher gets them ------------------------------------------------------
def test_real_sqs_messages_become_one_upload_each(live_stack, dagbag, tmp_path):
    from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger

    s3, sqs = client("s3", live_stack["s3"]), client("sqs", live_stack["s3"])
    url = sqs.get_queue_url(QueueName="vidnotes-uploads")["QueueUrl"]
    drain_queue(live_stack["s3"])
    # the TestEvent: S3 sends one whenever the notification configuration is put
    conf = s3.get_bucket_notification_configuration(Bucket="vidnotes-inbox")
    conf.pop("ResponseMetadata")
    s3.put_bucket_notification_configuration(Bucket="vidnotes-inbox", NotificationConfiguration=conf)
    keys = [
        "talks/my talk – café ü 1+1.mp4",
        "talks/Vortrag über Gletscher & Brücken (v2).mp4",
        f"plain-{uuid.uuid4().hex[:6]}.mp4",
    ]
    (tmp_path / "f.mp4").write_bytes(b"not really a video")
    for k in keys:
        assert aws_cli(live_stack["s3"], "s3", "cp", str(tmp_path / "f.mp4"), f"s3://vidnotes-inbox/{k}").returncode == 0

    # fetched by the trigger the asset watcher runs (MessageQueueTrigger(scheme="sqs") delegates to it)
    trigger = SqsSensorTrigger(sqs_queue=url, aws_conn_id="aws_vidnotes", max_messages=10, wait_time_seconds=2, waiter_delay=1)

    async def collect() -> list[dict]:
        events: list[dict] = []
        deadline = time.monotonic() + 30
        while sum(len(e["message_batch"]) for e in events) < len(keys) + 1 and time.monotonic() < deadline:
            async with await trigger.hook.get_async_conn() as c:
                batch = await trigger.poke(client=c)
            if batch:
                events.append({"status": "success", "message_batch": list(batch)})
        return events

    payloads = asyncio.run(collect())
    messages = [m for p in payloads for m in p["message_batch"]]
    bodies = [json.loads(m["Body"]) for m in messages]
    assert any(b.get("Event") == "s3:TestEvent" for b in bodies), bodies
    assert sum(1 for b in bodies if "Records" in b) == len(keys)
    raw_keys = [r["s3"]["object"]["key"] for b in bodies for r in b.get("Records", [])]
    from urllib.parse import unquote_plus

    assert sorted(unquote_plus(k) for k in raw_keys) == sorted(keys) and not set(raw_keys) & set(keys[:2])  # URL-encoded

    # each message body: the TestEvent gives nothing, each record one upload, keys decoded
    for m in messages:
        body = json.loads(m["Body"])
        ups = uploads_from_body(m["Body"])
        assert ups == [] if body.get("Event") == "s3:TestEvent" else len(ups) == 1
    # the asset events' extra, as the triggerer stores them
    uploads = uploads_from_asset_extras([{"from_trigger": True, "payload": p} for p in payloads])
    assert sorted(u.key for u in uploads) == sorted(keys)
    assert all(u.bucket == "vidnotes-inbox" and u.size == len(b"not really a video") for u in uploads)
    # the same messages delivered twice (SQS is at-least-once): still one upload, one run id each
    again = uploads_from_asset_extras([{"from_trigger": True, "payload": p} for p in payloads + payloads])
    assert again == uploads and len({run_id_for(u) for u in uploads}) == len(keys)
    # several records in one message (S3 may batch): each its own upload
    records = [r for b in bodies for r in b.get("Records", [])]
    merged = uploads_from_body(json.dumps({"Records": records}))
    assert sorted(u.key for u in merged) == sorted(keys)

    # the event-driven DAG with such a message as conf: one pipeline run per upload
    from airflow.models.dagrun import DagRun

    dr, states = run_dag(dagbag, "video_to_notes_uploads", {"Records": records})
    assert dr.state == "success"
    assert sorted(i for (t, i) in states if t == "start_jobs") == list(range(len(keys)))
    for u in merged:
        (run,) = DagRun.find(dag_id="video_to_notes", run_id=run_id_for(u))
        assert run.conf["key"] == u.key and run.conf["bucket"] == "vidnotes-inbox"
    # and the same message again starts nothing new
    dr, states = run_dag(dagbag, "video_to_notes_uploads", {"Records": records})
    assert dr.state == "success" and {states[k] for k in states if k[0] == "start_jobs"} <= {"success", "skipped"}
    assert len([r for u in merged for r in DagRun.find(dag_id="video_to_notes", run_id=run_id_for(u))]) == len(keys)


def test_conf_and_message_shapes():
    assert uploads_from_conf({"bucket": "b", "key": "a b.mp4"}) == [Upload("b", "a b.mp4")]
    assert [u.key for u in uploads_from_conf({"uploads": [{"bucket": "b", "key": "x"}, {"bucket": "b", "key": "y"}]})] == ["x", "y"]
    with pytest.raises(ValueError, match="no upload given"):
        uploads_from_conf({})
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b%2Bc.mp4", "size": 3}}}]})}  # fmt: skip
    assert uploads_from_body(json.dumps(sns)) == [Upload("b", "a b+c.mp4", size=3)]
    removed = {"Records": [{"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "x"}}}]}
    assert uploads_from_body(removed) == []
    with pytest.raises(ValueError, match="not an S3 event"):
        uploads_from_body('{"hello": 1}')


# -- the system: upload alone -> PDF through a running Airflow ------------------------------------
def test_upload_alone_runs_the_pipeline_in_airflow(live_stack, talk, tmp_path_factory):
    """`aws s3 cp` and nothing else: the watcher sees the S3 event on SQS, the scheduler runs the
    DAGs, the PDF lands in the results bucket; a bad upload next to it fails on its own."""
    budget = 360
    t0 = time.monotonic()
    drain_queue(live_stack["s3"])  # earlier tests' uploads are not this test's business
    home = tmp_path_factory.mktemp("airflow-system")
    with airflow_up(live_stack, home) as af:
        started = time.monotonic() - t0
        api = Airflow(af["url"], home)
        since = datetime.now(timezone.utc)
        video = make_sample_video(tmp_path_factory.mktemp("sys") / "talk.mp4", text=(
            "Tides rise and fall twice a day because the moon pulls on the oceans. "
            "Harbours are built where the water stays deep even at low tide. Thank you for listening."))  # fmt: skip
        good, bad = f"inbox/Vortrag über Gezeiten {uuid.uuid4().hex[:4]}.mp4", f"inbox/not a video {uuid.uuid4().hex[:4]}.mp4"
        bad_file = tmp_path_factory.mktemp("sys") / "bad.mp4"
        bad_file.write_text(f"not a video {uuid.uuid4()}")
        assert aws_cli(live_stack["s3"], "s3", "cp", str(video), f"s3://vidnotes-inbox/{good}").returncode == 0
        assert aws_cli(live_stack["s3"], "s3", "cp", str(bad_file), f"s3://vidnotes-inbox/{bad}").returncode == 0
        left = budget - (time.monotonic() - t0)
        run = api.wait_for_upload(good, since=since, timeout=left)
        diag = lambda: "\n" + log_tails(home / "logs") + "\n" + json.dumps(api.dag_runs("video_to_notes"), default=str)[:3000]  # noqa: E731
        assert run is not None, f"no finished run for {good} within {budget} s" + diag()
        assert run["state"] == "success", diag()
        bad_run = api.wait_for_upload(bad, since=since, timeout=max(10, budget - (time.monotonic() - t0)))
        assert bad_run is not None and bad_run["state"] == "failed", diag()
        took = time.monotonic() - t0
        runs = api.dag_runs("video_to_notes_uploads")
        assert runs and all(r["run_type"] == "asset_triggered" for r in runs)  # the watcher, not a person
        # reconciliation ran once when Airflow came up (its schedule's first round) and found nothing
        assert any(r["run_type"] == "scheduled" for r in api.dag_runs("video_to_notes_reconcile")), diag()
        web_page_over_the_stack(live_stack, af, tmp_path_factory, diag)  # while the triggerer still lives
        lost_key, lost_video = lose_an_upload(live_stack, af, tmp_path_factory)
        time.sleep(3.5)  # reconcile_min_age here (tests/stackutil.py)
        rec = api.wait_run("video_to_notes_reconcile", api.trigger("video_to_notes_reconcile")["dag_run_id"], timeout=120)
        assert rec is not None and rec["state"] == "success", diag()
        lost_run = api.wait_for_upload(lost_key, timeout=max(60, budget - (time.monotonic() - t0)))
        assert lost_run is not None and lost_run["state"] == "success" and lost_run["dag_run_id"].startswith("reconcile__"), diag()
        again = api.wait_run("video_to_notes_reconcile", api.trigger("video_to_notes_reconcile")["dag_run_id"], timeout=120)
        assert again is not None and again["state"] == "success", diag()
        lost_runs = [r for r in api.dag_runs("video_to_notes") if (r.get("conf") or {}).get("key") == lost_key]
        assert [r["dag_run_id"] for r in lost_runs] == [lost_run["dag_run_id"]], lost_runs  # exactly once
    lost_status = s3_json(live_stack, "vidnotes-results", f"jobs/{hashlib.sha256(lost_video.read_bytes()).hexdigest()[:16]}/status.json")
    assert lost_status["state"] == "succeeded" and lost_status["airflow"]["run_id"] == lost_run["dag_run_id"]
    job_id = hashlib.sha256(video.read_bytes()).hexdigest()[:16]
    status = s3_json(live_stack, "vidnotes-results", f"jobs/{job_id}/status.json")
    assert status["state"] == "succeeded" and status["airflow"]["run_id"] == run["dag_run_id"]
    client("s3", live_stack["s3"]).head_object(Bucket="vidnotes-results", Key=status["outputs"]["pdf"])
    bad_status = s3_json(live_stack, "vidnotes-results", f"jobs/{hashlib.sha256(bad_file.read_bytes()).hexdigest()[:16]}/status.json")
    assert bad_status["state"] == "failed" and bad_status["error"]["task"] == "extract_audio"
    print(f"airflow up in {started:.1f} s; both uploads finished {took:.1f} s after the test began")


def web_page_over_the_stack(stack: dict, af: dict, tmp_path_factory, diag) -> None:
    """The web page as `make ui` starts it (scripts/ui.sh), in headless Chromium, over this stack and
    Airflow: a talk uploaded through the page runs through S3 -> SQS -> Airflow, its stages show,
    its notes open beside the player, a click on a line seeks the player, a correction lands in
    S3 and becomes a training dataset; a broken upload shows its error and reaches no bucket."""
    from browser import chromium, chromium_available, shot, wait_for
    from selenium.webdriver.common.by import By

    if not chromium_available():
        pytest.skip("needs Debian's chromium and chromium-driver (make system-deps)")
    tmp = tmp_path_factory.mktemp("web")
    port = free_ports(1)
    env = {**af["env"], "VIDNOTES_UI_DIR": str(tmp / "ui"), "VIDNOTES_UI_PORT": str(port), "AWS_ENDPOINT_URL": stack["s3"],
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    ui = str(REPO / "scripts" / "ui.sh")
    up = subprocess.run([ui, "up"], env=env, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    pid = int((tmp / "ui" / "run" / "ui.pid").read_text())
    url = f"http://127.0.0.1:{port}/"
    s3 = client("s3", stack["s3"])
    video = make_sample_video(tmp / "Vorlesung über Brücken.mp4", text=(
        "Bridges carry roads over rivers. An arch pushes its load into the banks. "
        "A suspension bridge hangs the road from cables. Thank you for listening."))  # fmt: skip
    job_id = hashlib.sha256(video.read_bytes()).hexdigest()[:16]
    broken = tmp / "broken recording.mp4"
    broken.write_bytes(b"not a video " + uuid.uuid4().bytes)
    try:
        with chromium() as d:
            d.get(url)
            inbox_before = {o["Key"] for o in s3.list_objects_v2(Bucket="vidnotes-inbox").get("Contents", [])}
            d.find_element(By.ID, "file").send_keys(str(broken))
            d.find_element(By.ID, "upload-button").click()
            msg = wait_for(lambda: "error" in (m := d.find_element(By.ID, "upload-message")).get_attribute("class") and m.text, 30,
                           "no error for a broken upload")  # fmt: skip
            assert "broken recording.mp4" in msg and "not a readable audio or video file" in msg
            assert {o["Key"] for o in s3.list_objects_v2(Bucket="vidnotes-inbox").get("Contents", [])} == inbox_before

            d.find_element(By.ID, "file").send_keys(str(video))
            d.find_element(By.ID, "upload-button").click()
            wait_for(lambda: "Uploaded" in d.find_element(By.ID, "upload-message").text, 60,
                     lambda: "upload not acknowledged: " + d.find_element(By.ID, "upload-message").text)  # fmt: skip
            key = f"web/{job_id}/{video.name}"
            s3.head_object(Bucket="vidnotes-inbox", Key=key)  # the page put it where any upload goes
            row = f'#jobs tr[data-key="{key}"]'
            wait_for(lambda: d.find_elements(By.CSS_SELECTOR, row + " .chip.success"), 120, lambda: "no stage finished" + diag())
            shot(d, "stack-1-running")
            link = wait_for(lambda: d.find_element(By.CSS_SELECTOR, row + " a[href^='#/job/']"), 240,
                            lambda: "the notes never became ready: " + d.find_element(By.CSS_SELECTOR, row).text + diag())  # fmt: skip
            chips = d.find_elements(By.CSS_SELECTOR, row + " .chip")
            assert [c.get_attribute("class").split()[-1] for c in chips] == ["success", "success", "off", "success", "success"]  # no speaker labels asked
            shot(d, "stack-2-jobs")
            # the text file uploaded with `aws s3 cp` before: failed, with the function's reason on the page
            failed = d.find_elements(By.CSS_SELECTOR, '#jobs tr[data-state="failed"] .error-text')
            assert any("not a readable audio or video file" in e.text and "/tmp/" not in e.text for e in failed), [e.text for e in failed]
            link.click()
            lines = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#transcript li"), 30, "no transcript")
            wait_for(lambda: d.execute_script("return document.querySelector('#player').readyState >= 1"), 30, "the player loaded no media")
            assert "Bridges" in d.find_element(By.CSS_SELECTOR, "#notes").text or "bridge" in d.find_element(By.CSS_SELECTOR, "#notes").text.lower()
            target = lines[-1]
            start = float(target.get_attribute("data-start"))
            target.find_element(By.CSS_SELECTOR, ".text").click()
            at = "return document.querySelector('#player').currentTime"
            wait_for(lambda: abs(d.execute_script(at) - start) < 0.05, 10, lambda: f"the player is at {d.execute_script(at)}, not {start}")
            line = d.find_elements(By.CSS_SELECTOR, "#transcript li")[0]
            line.find_element(By.CSS_SELECTOR, "button.edit").click()
            box = line.find_element(By.CSS_SELECTOR, "textarea")
            box.clear()
            box.send_keys("Bridges carry roads over rivers, said the engineer.")
            line.find_element(By.CSS_SELECTOR, "button.save").click()
            wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#transcript li .badge"), 20, "the correction was not saved")
            shot(d, "stack-3-job")
    finally:
        down = subprocess.run([ui, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and not running(pid), down.stderr
    stored = s3.list_objects_v2(Bucket="vidnotes-results", Prefix=f"jobs/{job_id}/feedback/").get("Contents", [])
    assert len(stored) == 1
    correction = json.loads(s3.get_object(Bucket="vidnotes-results", Key=stored[0]["Key"])["Body"].read())
    assert correction["corrected"] == "Bridges carry roads over rivers, said the engineer." and correction["segment"] == 0
    # what train_and_redeploy's prepare_dataset runs with feedback=true
    dest = f"s3://vidnotes-training/feedback-{uuid.uuid4().hex[:6]}"
    r = subprocess.run([sys.executable, "-m", "vidnotes.cli", "train", "prepare-feedback", dest, "--job", job_id], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    bucket, prefix = dest[5:].split("/", 1)
    manifest = s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.jsonl")["Body"].read().decode()
    rows = [json.loads(x) for x in manifest.splitlines()]
    assert [(x["job_id"], x["segment"], x["text"], x["split"]) for x in rows] == [(job_id, 0, correction["corrected"], "train")]
    s3.head_object(Bucket=bucket, Key=f"{prefix}/{rows[0]['audio']}")


def lose_an_upload(stack: dict, af: dict, tmp_path_factory) -> tuple[str, Path]:
    """The failure docs/reliability.md names: the triggerer takes an upload's message off the
    queue (the SQS trigger deletes what it receives) and dies before the asset event is stored.
    Here: the triggerer is killed (SIGKILL, its whole process group), then the upload is made and
    its message received and deleted as the dead triggerer had done. The upload and its path."""
    import signal

    pid = int((af["home"] / "run" / "triggerer.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    # The dead triggerer's long poll may still be open on the queue: a message arriving in it would
    # be handed to the dead connection and stay invisible for the queue's visibility timeout (30 s).
    # Upload once that poll is over; the deadline below still covers a message held back that way.
    time.sleep(Settings().sqs_wait_seconds + 2)
    video = make_sample_video(tmp_path_factory.mktemp("lost") / "lost.mp4", text=(
        "Glaciers move because ice flows under its own weight. They carve valleys as they go. Thank you."))  # fmt: skip
    key = f"lost/Gletscher {uuid.uuid4().hex[:4]}.mp4"
    assert aws_cli(stack["s3"], "s3", "cp", str(video), f"s3://vidnotes-inbox/{key}").returncode == 0
    sqs = client("sqs", stack["s3"])
    url = sqs.get_queue_url(QueueName="vidnotes-uploads")["QueueUrl"]
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if any(u.key == key for m in msgs for u in uploads_from_body(m["Body"])):
            return key, video
    raise AssertionError(f"the upload's message never reached the queue: {key}")


def test_stage_outcome_names_the_first_failed_task():
    from vidnotes.orchestration import Settings, stage_outcome

    ok = {"parse_trigger": "success", "extract_audio": "success", "transcribe_0": "success", "transcribe_1": "success",
          "diarize": "success", "summarize": "success", "render_pdf": "success"}  # fmt: skip
    assert stage_outcome(ok)["state"] == "succeeded"
    no_diarize = {k: v for k, v in ok.items() if k != "diarize"}
    assert stage_outcome(no_diarize)["state"] == "failed" and stage_outcome(no_diarize)["failed_task"] == "diarize"
    failed_diarize = {**ok, "diarize": "failed", "summarize": "upstream_failed", "render_pdf": "upstream_failed"}
    out = stage_outcome(failed_diarize, {("diarize", -1): "vidnotes-diarize failed (StageFailed): diarize: ..."})
    assert out["failed_task"] == "diarize" and out["message"].startswith("vidnotes-diarize failed")
    bad = {**ok, "transcribe_1": "failed", "summarize": "upstream_failed", "render_pdf": "upstream_failed"}
    out = stage_outcome(bad, {("transcribe", 1): "vidnotes-transcribe failed (Sandbox.Timedout): Task timed out"})
    assert out["state"] == "failed" and out["failed_task"] == "transcribe[1]" and "Timedout" in out["message"]
    assert out["tasks"]["summarize"] == "upstream_failed"
    killed = {**ok, "render_pdf": "failed"}  # no message recorded: killed or timed out in Airflow
    assert "see its log" in stage_outcome(killed)["message"]
    cfg = Settings.load(env={"VIDNOTES_AIRFLOW_FN_TRANSCRIBE": "t-env", "VIDNOTES_AIRFLOW_RETRIES": "5"}, variable='{"fn_transcribe": "t-var"}')
    assert cfg.function("transcribe") == "t-var" and cfg.retries == 5 and cfg.aws_conn_id == "aws_vidnotes"
    with pytest.raises(ValueError, match="unknown keys"):
        Settings.load(env={}, variable={"fn_transcrib": "typo"})


def test_lost_uploads_are_the_ones_no_run_took():
    from datetime import timedelta

    from vidnotes.orchestration import lost_uploads, upload_record_key

    now = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    old, new = now - timedelta(minutes=10), now - timedelta(seconds=30)
    objs = [{"Key": k, "Size": 10, "ETag": f'"{e}"', "LastModified": t} for k, e, t in [
        ("talks/lost.mp4", "e1", old), ("talks/done.mp4", "e2", old), ("talks/young.mp4", "e3", new), ("talks/", "e0", old),
        ("talks/replaced.mp4", "new", old), ("talks/in-hand.mp4", "e5", old), ("talks/orphan.mp4", "e6", old),
        ("talks/failed.mp4", "e7", old), ("talks/ancient.mp4", "e8", now - timedelta(days=3)), ("talks/never-ran.mp4", "e9", old)]]  # fmt: skip
    records = {
        "talks/done.mp4": {"etag": "e2", "run_id": "r-done", "job_id": "j-done"},
        "talks/replaced.mp4": {"etag": "old", "run_id": "r-old", "job_id": "j-old"},
        "talks/in-hand.mp4": {"etag": "e5", "run_id": "r-running"},  # extract_audio not through yet
        "talks/orphan.mp4": {"etag": "e6", "run_id": "r-killed", "job_id": "j-orphan"},
        "talks/failed.mp4": {"etag": "e7", "run_id": "r-failed"},  # failed before a job: its outcome is recorded
        "talks/never-ran.mp4": {"etag": "e9", "run_id": "r-missing"},  # recorded, but the run is gone
    }
    states = {"r-done": "success", "r-old": "success", "r-running": "running", "r-killed": "failed", "r-failed": "failed"}
    jobs = {"j-done": {"state": "succeeded"}, "j-orphan": {"state": "running", "airflow": {"run_id": "r-killed"}}}
    lost = lost_uploads("vidnotes-inbox", objs, records.get, states.get, lambda j: jobs.get(j, {}), now=now, min_age=120, max_age=86400)
    got = {x.upload.key: x.reason for x in lost}
    assert set(got) == {"talks/lost.mp4", "talks/replaced.mp4", "talks/orphan.mp4", "talks/never-ran.mp4"}, got
    assert "no run was started" in got["talks/lost.mp4"] and "replaced" in got["talks/replaced.mp4"]
    assert got["talks/orphan.mp4"] == "its run r-killed ended (failed) and left the job running"
    by_key = {x.upload.key: x for x in lost}
    assert by_key["talks/lost.mp4"].upload.etag == "e1" and by_key["talks/lost.mp4"].run_id().startswith("reconcile__lost.mp4__")
    again = lost_uploads("vidnotes-inbox", objs, records.get, states.get, lambda j: jobs.get(j, {}), now=now, min_age=120, max_age=86400)
    assert [x.run_id() for x in again] == [x.run_id() for x in lost]  # two looks start one run (skip_when_already_exists)
    assert len({x.run_id() for x in lost}) == 4
    assert upload_record_key("vidnotes-inbox", "talks/a.mp4") != upload_record_key("vidnotes-inbox", "talks/b.mp4")


def test_run_options_from_conf_then_settings():
    from vidnotes.orchestration import BadTrigger, Settings, run_options, same_options

    cfg = Settings.load(env={})
    assert run_options({}, cfg) == {"language": "auto", "speakers": None, "speaker_names": {}}
    assert run_options({"speakers": 2, "speaker_names": {"1": " Ada "}}, cfg) == {"language": "auto", "speakers": "2", "speaker_names": {"1": "Ada"}}
    on = Settings.load(env={"VIDNOTES_AIRFLOW_SPEAKERS": "auto", "VIDNOTES_AIRFLOW_LANGUAGE": "ru"})
    assert run_options({"key": "a.mp4"}, on) == {"language": "ru", "speakers": "auto", "speaker_names": {}}
    assert run_options({"speakers": "off", "language": "EN"}, on)["speakers"] is None  # a run can turn the default off
    for bad, match in [({"speakers": "two"}, "speakers must be"), ({"speakers": 40}, "speakers must be"), ({"speakers": True}, "speakers must be"),
                       ({"speaker_names": {"1": "Ada"}}, "needs speakers"), ({"speakers": "auto", "speaker_names": ["Ada"]}, "must map"),
                       ({"speakers": "auto", "speaker_names": {"first": "Ada"}}, "must map"), ({"speakers": "auto", "speaker_names": {"33": "Ada"}}, "1 to 32"),
                       ({"language": "Russian"}, "language must be")]:  # fmt: skip
        with pytest.raises(BadTrigger, match=match):
            run_options(bad, cfg)
    # notes made before are reused only when they were made with the same options
    plain = run_options({}, cfg)
    assert same_options(plain, plain) and same_options(None, plain)
    labelled = run_options({"speakers": "auto"}, cfg)
    assert not same_options(plain, labelled) and not same_options(None, labelled)
    assert not same_options(labelled, run_options({"speakers": "auto", "speaker_names": {"1": "Ada"}}, cfg))


def test_train_and_redeploy_dag_shape(dagbag):
    dag = dagbag.dags["train_and_redeploy"]
    order = ["prepare_dataset", "train", "evaluate", "export_publish", "redeploy_smoke"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == set(order)
    for a, b in zip(order, order[1:]):
        assert b in tasks[a].downstream_task_ids, (a, b)
    assert type(tasks["export_publish"]).__name__ == "_ShortCircuitDecoratedOperator"  # a failed gate stops the redeploy
    assert set(dag.params.keys()) == {"store", "dataset", "run_dir", "steps", "config", "feedback"}


def test_train_dag_runs_training_on_ecs_in_production(airflow_home):
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags' / 'train_and_redeploy.py')!r})\n"
        "assert bag.import_errors == {}, bag.import_errors\n"
        "t = bag.dags['train_and_redeploy'].get_task('train')\n"
        "print(type(t).__name__, t.overrides['containerOverrides'][0]['command'][:4])\n"
    )
    env = {**os.environ, "VIDNOTES_AIRFLOW_TRAIN_RUNNER": "ecs"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    # the image's entrypoint is `vidnotes train run`: the command holds only its arguments
    assert out.stdout.strip().splitlines()[-1] == "EcsRunTaskOperator ['--data', '{{ params.dataset }}', '--run-dir', '{{ params.run_dir }}']"


def test_a_running_job_no_run_owns_is_taken_over_once_stale():
    from vidnotes.orchestration import ownerless_and_stale

    now = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    direct = {"state": "running", "updated": "2026-12-03T11:40:00+00:00"}  # extract_audio invoked outside Airflow
    assert ownerless_and_stale(direct, 960, now)
    assert not ownerless_and_stale(direct, 1500, now)  # may still be running: wait
    assert not ownerless_and_stale({**direct, "updated": "2026-12-03T11:59:50+00:00"}, 960, now)  # another run about to claim it
    assert not ownerless_and_stale({**direct, "airflow": {"run_id": "upload__x"}}, 960, now)  # owned: the dead-run rule decides
    assert not ownerless_and_stale({**direct, "state": "succeeded"}, 960, now)
    assert ownerless_and_stale({"state": "running"}, 960, now)  # nothing says a stage works on it
