"""Reliability under load and faults, on the real local stack (docs/reliability.md).

- a burst of 10 uploads (good and bad mixed, the same file twice) through the real path: S3 event
  -> SQS -> Airflow's asset watcher -> one pipeline run each (scripts/airflow.sh up): every good
  upload gets exactly one result set, every bad one its error record, the duplicate is not
  processed twice; drain time and the stack's peak memory go to bench/results/reliability.json;
- faults in the middle of a run (dag.test()): S3 errors from a fault-injecting proxy in front of
  LocalStack, the function's RIE and runtime processes killed mid-invocation, a function timing
  out: the retries complete the job, and its results equal those of an undisturbed run;
- a model file whose sha256 does not match its manifest is refused with a clear error and never
  served.

Nothing here asserts on timings; the figures are recorded, not judged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Rule, wait_for

from stackutil import (
    REPO,
    MemorySampler,
    airflow_up,
    client,
    drain_queue,
    function_events,
    get_json,
    log_size,
    log_tails,
    process_tree,
    run_dag,
    running,
)
from vidnotes.sample import make_sample_video

sys.path.insert(0, str(REPO / "scripts"))
from airflow_client import Airflow  # noqa: E402

EXTRACT, TRANSCRIBE, SUMMARIZE, RENDER = "vidnotes-extract-audio", "vidnotes-transcribe", "vidnotes-summarize", "vidnotes-render-pdf"
FUNCTIONS = (EXTRACT, TRANSCRIBE, SUMMARIZE, RENDER)
RESULTS = "vidnotes-results"
TALKS = [
    "Rivers carry sand and stones to the sea. Thank you.",
    "Bakers mix flour, water and yeast before dawn. Thank you.",
    "Glaciers carve deep valleys over many years. Thank you.",
    "Bridges must carry their own weight and the traffic. Thank you.",
    "Volcanoes build islands from cooled lava. Thank you.",
]
WORDS = ["rivers", "bakers", "glaciers", "bridges", "volcanoes"]


def unique_media(src: Path, dst: Path, tag: str) -> Path:
    """The same streams as src, with a metadata tag: other bytes, so another job id."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-c", "copy", "-metadata", f"comment={tag}", str(dst)],
        check=True, timeout=60,
    )  # fmt: skip
    return dst


def job_id_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def job_keys(s3, job_id: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=RESULTS, Prefix=f"jobs/{job_id}/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def s3_json(s3, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=RESULTS, Key=key)["Body"].read())


def pdf_text(data: bytes, tmp: Path) -> str:
    path = tmp / f"{hashlib.sha1(data).hexdigest()}.pdf"
    path.write_bytes(data)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(text.split())


def result_set(s3, job_id: str, tmp: Path) -> dict[str, str]:
    """Every object of the job: its sha256, except what differs between runs by design: the PDF
    (its text, without the date it was made) and status.json (state and outputs)."""
    out = {}
    for key in job_keys(s3, job_id):
        name, body = key.split("/", 2)[2], s3.get_object(Bucket=RESULTS, Key=key)["Body"].read()
        if name == "notes.pdf":
            out[name] = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<date>", pdf_text(body, tmp))
        elif name == "notes.md":  # carries the same date line as the PDF
            out[name] = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<date>", body.decode("utf-8"))
        elif name == "status.json":
            status = json.loads(body)
            out[name] = json.dumps({"state": status["state"], "outputs": status.get("outputs")}, sort_keys=True)
        else:
            out[name] = hashlib.sha256(body).hexdigest()
    return out


def expected_names(chunks: int) -> set[str]:
    return {
        "status.json", "source.json", "chunks.json", "notes.json", "notes.pdf", "notes.md", "chapters.vtt",
        *(f"transcript.{f}" for f in ("json", "txt", "srt", "vtt")),
        *(f"chunks/{i:05d}.wav" for i in range(chunks)), "segments/00000.json",
    }  # fmt: skip


def health(stack: dict) -> dict:
    return get_json(f"{stack['lambda']}/health")["functions"]


def function_errors(stack: dict) -> dict[str, int]:
    return {fn: sum(i["function_errors"] for i in f["instances"]) for fn, f in health(stack).items()}


def busy_instance(stack: dict, function: str) -> dict:
    def find():
        busy = [i for i in health(stack)[function]["instances"] if i["busy"] and i["alive"]]
        return busy[0] if busy else None

    return wait_for(find, 30, f"a busy {function} process")


# -- 1. a burst of uploads through S3 -> SQS -> Airflow ------------------------------------------------
@pytest.fixture(scope="module")
def talks(tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("talks")
    tag = uuid.uuid4().hex
    return [unique_media(make_sample_video(tmp / f"raw{i}.mp4", text=t), tmp / f"talk{i}.mp4", f"{tag}-{i}") for i, t in enumerate(TALKS)]


def bad_uploads(tmp: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the error code its status.json must carry)."""
    tag = uuid.uuid4().hex
    (tmp / "slides.mp4").write_text(f"speaker notes, not a video {tag}\n")
    (tmp / "empty.mp4").write_bytes(b"")
    data = good.read_bytes()
    (tmp / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: unreadable
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=s=64x64:d=2", "-c:v", "libx264",
         "-metadata", f"comment={tag}", str(tmp / "no-audio.mp4")], check=True, timeout=60,
    )  # fmt: skip
    return {
        "slides.mp4": (tmp / "slides.mp4", "not_media"),
        "empty.mp4": (tmp / "empty.mp4", "empty"),
        "cut.mp4": (tmp / "cut.mp4", "not_media"),
        "no-audio.mp4": (tmp / "no-audio.mp4", "no_audio"),
    }


def test_burst_of_uploads_each_processed_exactly_once(live_stack, talks, tmp_path_factory, monkeypatch, reliability):
    budget = 420  # a bound for waiting, not a measurement
    tmp = tmp_path_factory.mktemp("burst")
    s3 = client("s3", live_stack["s3"])
    batch = uuid.uuid4().hex[:6]
    keys = [f"burst-{batch}/talk {i} – {WORDS[i]}.mp4" for i in range(len(talks))]
    # the same bytes under another name, uploaded right after the first: both runs are active at once
    duplicate_key = f"burst-{batch}/talk 0 again (copy).mp4"
    good = {keys[0]: talks[0], duplicate_key: talks[0], **{k: talks[i] for i, k in enumerate(keys) if i}}
    bad = {f"burst-{batch}/{name}": v for name, v in bad_uploads(tmp, talks[0]).items()}
    assert len(good) + len(bad) == 10

    drain_queue(live_stack["s3"])  # earlier tests' uploads are not this test's business
    monkeypatch.setenv("VIDNOTES_AIRFLOW_DUPLICATE_POLL", "2")  # a duplicate looks again every 2 s
    home = tmp_path_factory.mktemp("airflow-burst")
    stack_run = Path(live_stack["tmp"]) / "run"
    logs_at = {fn: log_size(live_stack, fn) for fn in FUNCTIONS}
    with airflow_up(live_stack, home) as af:
        api = Airflow(af["url"], home)
        groups = {"localstack": [stack_run / "localstack.pid"], "gateway_and_functions": [stack_run / "gateway.pid"],
                  "airflow": sorted((home / "run").glob("*.pid"))}  # fmt: skip
        since = datetime.now(timezone.utc)
        with MemorySampler(groups, summed=("localstack", "gateway_and_functions")) as memory:
            t0 = time.monotonic()
            for key, path in [*good.items(), *((k, v[0]) for k, v in bad.items())]:
                s3.put_object(Bucket="vidnotes-inbox", Key=key, Body=path.read_bytes())
            runs = {}
            for key in [*good, *bad]:
                left = budget - (time.monotonic() - t0)
                runs[key] = api.wait_for_upload(key, since=since, timeout=max(left, 5))
                assert runs[key] is not None, f"no finished run for {key!r} within {budget} s\n" + log_tails(home / "logs")
            drained = time.monotonic() - t0
        all_runs = [r for r in api.dag_runs("video_to_notes") if (r.get("conf") or {}).get("key", "").startswith(f"burst-{batch}/")]
        tasks = {
            k: {(t["task_id"], t["map_index"]): t["state"] for t in api.task_instances("video_to_notes", r["dag_run_id"])}
            for k, r in runs.items()
        }

    # one run per upload, no more (SQS delivers at least once; the run id dedupes)
    assert sorted(r["conf"]["key"] for r in all_runs) == sorted([*good, *bad]), [r["dag_run_id"] for r in all_runs]
    assert {k for k, r in runs.items() if r["state"] == "success"} == set(good), {k: r["state"] for k, r in runs.items()}
    assert {k for k, r in runs.items() if r["state"] == "failed"} == set(bad)

    # every good upload: exactly one complete result set under its job, status succeeded
    events = {fn: function_events(live_stack, fn, logs_at[fn]) for fn in FUNCTIONS}
    done = {
        fn: Counter(e["job_id"] for e in evs if e.get("message") in ("transcribed", "summarized", "rendered")) for fn, evs in events.items()
    }
    for key, path in good.items():
        job_id = job_id_of(path)
        status = s3_json(s3, f"jobs/{job_id}/status.json")
        assert status["state"] == "succeeded" and status["airflow"]["outcome"] == "succeeded", (key, status)
        chunks = len(s3_json(s3, f"jobs/{job_id}/chunks.json"))
        assert {k.split("/", 2)[2] for k in job_keys(s3, job_id)} == expected_names(chunks), key
        text = pdf_text(s3.get_object(Bucket=RESULTS, Key=status["outputs"]["pdf"])["Body"].read(), tmp).lower()
        assert WORDS[[*talks].index(path)] in text, (key, text[:300])
        # processed once: one transcription, one summary, one PDF for the job, whatever the uploads
        assert (done[TRANSCRIBE][job_id], done[SUMMARIZE][job_id], done[RENDER][job_id]) == (1, 1, 1), (key, done)
    # the duplicate: both runs succeed, one of them did the work, the other skipped it
    dup_job = job_id_of(talks[0])
    pair = [k for k in good if good[k] == talks[0]]
    worked = [k for k in pair if tasks[k].get(("summarize", -1)) == "success"]
    assert len(worked) == 1, {k: tasks[k] for k in pair}
    (other,) = set(pair) - set(worked)
    assert tasks[other][("summarize", -1)] == "skipped" and tasks[other][("render_pdf", -1)] == "skipped", tasks[other]
    # every bad upload: a failed run and its error record, nothing else under its job
    for key, (path, code) in bad.items():
        job_id = job_id_of(path)
        status = s3_json(s3, f"jobs/{job_id}/status.json")
        assert status["state"] == "failed" and status["error"]["code"] == code and status["error"]["task"] == "extract_audio", (key, status)
        assert [k for k in job_keys(s3, job_id) if not k.endswith("/status.json")] == [], key
        assert done[TRANSCRIBE][job_id] == 0

    lost = [k for k in [*good, *bad] if runs[k] is None]
    duplicated = [j for fn in (TRANSCRIBE, SUMMARIZE, RENDER) for j, n in done[fn].items() if n > 1]
    reliability["burst"] = {
        "uploads": 10, "good": len(good), "bad": len(bad), "same_content_twice": 1,
        "distinct_jobs": len({job_id_of(p) for p in [*good.values(), *(v[0] for v in bad.values())]}),
        "runs": len(all_runs), "succeeded": len(good), "failed_with_error_record": len(bad),
        "duplicate_job": dup_job, "duplicate_processed_once": True, "lost": len(lost), "duplicated": len(duplicated),
        "drain_seconds": round(drained, 1), "path": "S3 put -> SQS -> asset watcher -> video_to_notes_uploads -> video_to_notes (LocalExecutor, parallelism 4)",
        "peak_rss_mib": memory.peak, "rss_samples": memory.samples,
    }  # fmt: skip


# -- 2. faults in the middle of a run ------------------------------------------------------------------
@contextlib.contextmanager
def through_proxy(lam, proxy: FaultProxy, extra: dict[str, dict]) -> Iterator[dict[str, dict]]:
    """Every function's S3 traffic through the proxy (a port of its own), with ``extra``
    configuration per function; the saved configurations are restored on exit."""
    saved = {fn: lam.get_function_configuration(FunctionName=fn) for fn in FUNCTIONS}
    try:
        for fn, conf in saved.items():
            variables = {**conf["Environment"]["Variables"], "AWS_ENDPOINT_URL": proxy.listen(fn)}
            lam.update_function_configuration(FunctionName=fn, Environment={"Variables": variables}, **extra.get(fn, {}))
        yield saved
    finally:
        for fn, conf in saved.items():
            lam.update_function_configuration(FunctionName=fn, Environment=conf["Environment"], Timeout=conf["Timeout"])


def test_faults_midway_are_survived_and_the_result_is_unchanged(live_stack, dagbag, talks, tmp_path, capfd, reliability):
    s3, lam = client("s3", live_stack["s3"]), client("lambda", live_stack["lambda"])
    video = unique_media(talks[1], tmp_path / "faults.mp4", uuid.uuid4().hex)
    key, job_id = f"faults/{uuid.uuid4().hex[:8]}.mp4", job_id_of(video)
    s3.upload_file(str(video), "vidnotes-inbox", key)
    conf = {"bucket": "vidnotes-inbox", "key": key}

    dr, states = run_dag(dagbag, "video_to_notes", conf)  # undisturbed
    assert dr.state == "success", states
    undisturbed = result_set(s3, job_id, tmp_path)
    for k in job_keys(s3, job_id):  # the same upload again, from scratch, with faults
        s3.delete_object(Bucket=RESULTS, Key=k)

    proxy = FaultProxy(live_stack["s3"])
    j = re.escape(job_id)
    rules = {
        # absorbed by the functions' own S3 retries (botocore, standard mode)
        "s3_slowdown_503": proxy.add(Rule(EXTRACT, "PUT", rf"/jobs/{j}/chunks/00000\.wav$", "slowdown", times=2)),
        "s3_connection_reset": proxy.add(Rule(EXTRACT, "GET", rf"/vidnotes-inbox/{re.escape(key)}$", "reset")),
        # extract_audio's RIE killed while the function writes its last object (a half-done stage)
        "rie_killed": proxy.add(Rule(EXTRACT, "PUT", rf"/jobs/{j}/chunks\.json$", "hold", hold_seconds=300, then="reset")),
        # transcribe's runtime process killed while it downloads its chunk
        "runtime_killed": proxy.add(Rule(TRANSCRIBE, "GET", rf"/jobs/{j}/chunks/00000\.wav$", "hold", hold_seconds=120)),
        # summarize (Timeout 5 s) times out waiting for S3: its first request, for the model store
        "function_timeout": proxy.add(Rule(SUMMARIZE, "GET", r"^/vidnotes-models/store/bart/CURRENT$", "hold", hold_seconds=120)),
        # render_pdf's download of the notes breaks off halfway
        "s3_response_cut": proxy.add(Rule(RENDER, "GET", rf"/jobs/{j}/notes\.json$", "truncate")),
    }
    killed: dict[str, list[int]] = {}
    problems: list[str] = []
    run_over = threading.Event()

    def fired(name: str) -> bool:
        """Wait until the rule fires (True) or the run is over (False)."""
        while not rules[name].fired.wait(0.1):
            if run_over.is_set():
                return False
        return True

    def kill_rie() -> None:
        if fired("rie_killed"):
            inst = busy_instance(live_stack, EXTRACT)
            killed["extract_runtime"] = process_tree(inst["pid"])[1:]  # the runtime the RIE started
            os.kill(inst["pid"], signal.SIGKILL)
            # (the hold is released after the run only: a runtime left alive would still be waiting)

    def kill_runtime() -> None:
        if fired("runtime_killed"):
            inst = busy_instance(live_stack, TRANSCRIBE)
            killed["transcribe_runtime"] = process_tree(inst["pid"])[1:]
            for pid in killed["transcribe_runtime"]:
                os.kill(pid, signal.SIGKILL)
            rules["runtime_killed"].release.set()

    def end_timeout(timeout: int, before: int) -> None:
        if fired("function_timeout"):
            try:
                wait_for(lambda: function_errors(live_stack)[SUMMARIZE] > before, 60, "summarize to time out")
            except AssertionError as e:
                problems.append(str(e))
            rules["function_timeout"].release.set()
            variables = lam.get_function_configuration(FunctionName=SUMMARIZE)["Environment"]["Variables"]
            lam.update_function_configuration(FunctionName=SUMMARIZE, Environment={"Variables": variables}, Timeout=timeout)

    errors_before = function_errors(live_stack)
    try:
        with through_proxy(lam, proxy, {SUMMARIZE: {"Timeout": 5}}) as saved:
            helpers = [threading.Thread(target=kill_rie, daemon=True), threading.Thread(target=kill_runtime, daemon=True),
                       threading.Thread(target=end_timeout, args=(saved[SUMMARIZE]["Timeout"], errors_before[SUMMARIZE]), daemon=True)]  # fmt: skip
            for t in helpers:
                t.start()
            try:
                dr, states = run_dag(dagbag, "video_to_notes", conf)
            finally:
                run_over.set()
                for t in helpers:
                    t.join(60)
        left_running = [pid for pids in killed.values() for pid in pids if running(pid)]
    finally:
        proxy.close()
    errors_after = function_errors(live_stack)

    assert dr.state == "success", states
    assert not problems, problems
    assert {name: rule.hits for name, rule in rules.items()} == {name: rule.times for name, rule in rules.items()}, proxy.log
    assert killed.get("extract_runtime") and killed.get("transcribe_runtime"), killed
    # no process of a killed function outlives it (an orphaned runtime would go on writing)
    assert left_running == [], left_running
    tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances() if ti.task_id in ("extract_audio", "summarize", "render_pdf")}
    tries["transcribe"] = max(ti.try_number for ti in dr.get_task_instances() if ti.task_id == "transcribe")
    # extract_audio: the gateway answered 500 for the killed RIE and the Lambda client's own retry
    # ran it again in a new one; the others failed as functions and Airflow retried them
    assert tries == {"extract_audio": 1, "transcribe": 2, "summarize": 2, "render_pdf": 2}, tries
    assert {fn: errors_after[fn] - errors_before[fn] for fn in FUNCTIONS} == {EXTRACT: 0, TRANSCRIBE: 1, SUMMARIZE: 1, RENDER: 1}
    # each failed try with the function's own, clear error (what the task log and record_outcome show)
    logs = capfd.readouterr()
    for expected in ("vidnotes-transcribe failed (Runtime.ExitError): RequestId: ", "Runtime exited with error: signal: killed",
                     "vidnotes-summarize failed (Sandbox.Timedout): ", "Task timed out after 5.00 seconds",
                     "vidnotes-render-pdf failed (ResponseStreamingError): An error occurred while reading from response stream"):  # fmt: skip
        assert expected in logs.out + logs.err, expected
    # and the result is the undisturbed run's, object for object
    assert result_set(s3, job_id, tmp_path) == undisturbed
    status = s3_json(s3, f"jobs/{job_id}/status.json")
    assert status["state"] == "succeeded" and status["airflow"]["run_id"] == dr.run_id

    reliability["faults"] = {
        "injected": len(rules), "survived": len(rules),
        "kinds": {
            "s3_slowdown_503": "2 x 503 SlowDown on extract_audio's PUT of a chunk: absorbed by botocore's retries",
            "s3_connection_reset": "TCP reset on extract_audio's GET of the upload: absorbed by botocore's retries",
            "rie_killed": "SIGKILL to extract_audio's aws-lambda-rie mid-invocation: gateway 500, the Lambda client retried, gateway restarted the RIE and killed the orphaned runtime",
            "runtime_killed": "SIGKILL to transcribe's runtime mid-invocation: Runtime.ExitError, Airflow retry",
            "function_timeout": "summarize with Timeout 5 s stuck on S3: Sandbox.Timedout, Airflow retry",
            "s3_response_cut": "render_pdf's GET of notes.json cut after half the body: ResponseStreamingError, Airflow retry",
        },
        "task_tries": tries, "result_identical_to_undisturbed_run": True, "objects_compared": len(undisturbed),
    }  # fmt: skip


# -- 3. a model that does not match its manifest -------------------------------------------------------
def test_corrupt_model_is_refused_and_never_served(live_stack, store, talks, tmp_path, reliability):
    s3, lam = client("s3", live_stack["s3"]), client("lambda", live_stack["lambda"], read_timeout=300)
    current = store.current("whisper")
    manifest = store.manifest("whisper", current)
    bad = f"{current}-corrupt-{uuid.uuid4().hex[:6]}"
    victim = "encoder_model.onnx"
    for name in manifest["files"]:  # a copy of the served version, one file altered in place
        src, dst = f"store/whisper/{current}/{name}", f"store/whisper/{bad}/{name}"
        if name == victim:
            data = bytearray((Path(store.root) / "whisper" / current / name).read_bytes())
            data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
            s3.put_object(Bucket="vidnotes-models", Key=dst, Body=bytes(data))
        else:
            s3.copy_object(Bucket="vidnotes-models", Key=dst, CopySource={"Bucket": "vidnotes-models", "Key": src})
    s3.put_object(
        Bucket="vidnotes-models", Key=f"store/whisper/{bad}/manifest.json", Body=json.dumps({**manifest, "version": bad}).encode()
    )

    video = unique_media(talks[2], tmp_path / "model.mp4", uuid.uuid4().hex)
    s3.upload_file(str(video), "vidnotes-inbox", f"model/{video.name}")
    ext = json.loads(
        lam.invoke(FunctionName=EXTRACT, Payload=json.dumps({"bucket": "vidnotes-inbox", "key": f"model/{video.name}"}))["Payload"].read()
    )
    payload = json.dumps({"job_id": ext["job_id"], "chunks": ext["batches"][0]})
    conf = lam.get_function_configuration(FunctionName=TRANSCRIBE)
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / "vidnotes-models" / "whisper" / bad  # the functions' /tmp is this machine's
    try:
        lam.update_function_configuration(
            FunctionName=TRANSCRIBE, Environment={"Variables": {**conf["Environment"]["Variables"], "VIDNOTES_WHISPER_VERSION": bad}}
        )
        for attempt in range(2):  # the second time the corrupt copy is in the cache: checked again, refused again
            r = lam.invoke(FunctionName=TRANSCRIBE, Payload=payload)
            err = json.loads(r["Payload"].read())
            assert r.get("FunctionError") == "Unhandled" and err["errorType"] == "ModelIntegrityError", (attempt, err)
            assert f"model whisper/{bad}: {victim} sha256" in err["errorMessage"] and "does not match manifest" in err["errorMessage"], err
        assert not [k for k in job_keys(s3, ext["job_id"]) if "/segments/" in k]  # nothing transcribed with it
        status = s3_json(s3, f"jobs/{ext['job_id']}/status.json")
        assert status["state"] == "failed" and status["error"]["code"] == "internal" and "ModelIntegrityError" in status["error"]["message"]
        # the store repaired: the cached corrupt copy is replaced, verified and served
        s3.copy_object(
            Bucket="vidnotes-models",
            Key=f"store/whisper/{bad}/{victim}",
            CopySource={"Bucket": "vidnotes-models", "Key": f"store/whisper/{current}/{victim}"},
        )
        r = lam.invoke(FunctionName=TRANSCRIBE, Payload=payload)
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r and out["model"] == f"whisper/{bad}", out
    finally:
        lam.update_function_configuration(FunctionName=TRANSCRIBE, Environment=conf["Environment"])
        for k in [o["Key"] for o in s3.list_objects_v2(Bucket="vidnotes-models", Prefix=f"store/whisper/{bad}/").get("Contents", [])]:
            s3.delete_object(Bucket="vidnotes-models", Key=k)
        shutil.rmtree(cache, ignore_errors=True)
    reliability.setdefault("faults", {})["corrupt_model"] = (
        "refused twice with ModelIntegrityError (sha256 mismatch), served only after the store was repaired"
    )
