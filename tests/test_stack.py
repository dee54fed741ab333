"""The local stack (docs/local-stack.md): the Lambda gateway in front of the real AWS Lambda RIE,
and LocalStack with the vidnotes resources, driven by the real AWS CLI and boto3.

No test-only function goes into functions/functions.json: the gateway tests run their own gateway
with a temporary config pointing at tests/fixtures/echo_fn. The LocalStack test runs
`localstack/stack.sh up` on free ports with its own stack dir, then `stack.sh down`.
Every fixture stops what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from stackutil import aws_cli, client, free_ports, get_json

REPO = Path(__file__).resolve().parents[1]
ECHO_DIR = REPO / "tests" / "fixtures" / "echo_fn"
RIE = Path(os.environ.get("VIDNOTES_STACK_BIN", REPO / "build" / "stack" / "bin")) / "aws-lambda-rie"


@pytest.fixture(scope="module")
def stack_setup():
    """The RIE binary and LocalStack's venv (idempotent; ~0.1 s once installed)."""
    subprocess.run([str(REPO / "localstack" / "setup.sh")], check=True, timeout=600)
    assert RIE.is_file()


# ------------------------------------------------------------------------- gateway + RIE
@pytest.fixture(scope="module")
def gateway(stack_setup, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    config = {
        "defaults": {"timeout": 30, "memory": 256, "concurrency": 1,
                     "environment": {"ECHO_GREETING": "hello", "ECHO_OTHER": "kept"}},
        "functions": {
            "echo": {"dir": str(ECHO_DIR), "handler": "app.handler", "concurrency": 2},
            "echo-short": {"dir": str(ECHO_DIR), "handler": "app.handler", "timeout": 1},
            "echo-missing": {"dir": str(tmp / "not-there"), "handler": "app.handler"},
        },
    }
    (tmp / "functions.json").write_text(json.dumps(config))
    port = free_ports(7)  # the gateway, then two ports per function process
    base = port + 1
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "localstack" / "gateway.py"), "--config", str(tmp / "functions.json"),
         "--port", str(port), "--base-port", str(base), "--state-dir", str(tmp / "state"),
         "--log-dir", str(tmp / "logs"), "--run-dir", str(tmp / "run"), "--rie", str(RIE),
         "--endpoint-url", "http://127.0.0.1:9", "--python", sys.executable],
        stdout=open(tmp / "gateway.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if get_json(f"{url}/health")["status"] == "ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp / "gateway.log").read_text()
            assert time.monotonic() < deadline, (tmp / "gateway.log").read_text()
            time.sleep(0.05)
        yield {"url": url, "tmp": tmp, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # The gateway stopped its RIE processes (and removed their pid files) on SIGTERM.
    assert proc.returncode == 0, (tmp / "gateway.log").read_text()
    assert not list((tmp / "run").glob("*.pid"))


@pytest.fixture(scope="module")
def lam(gateway):
    return client("lambda", gateway["url"], read_timeout=60)


def test_health_reports_each_function(gateway):
    h = get_json(f"{gateway['url']}/health")
    assert h["functions"]["echo"]["state"] == "Active"
    assert len(h["functions"]["echo"]["instances"]) == 2
    assert all(i["alive"] for i in h["functions"]["echo"]["instances"])
    assert h["functions"]["echo-missing"]["state"] == "Skipped"


def test_cli_invoke_round_trip(gateway, tmp_path):
    payload = {"hello": "wörld", "n": [1, 2.5, None], "env": ["ECHO_OTHER", "AWS_LAMBDA_FUNCTION_NAME"]}
    r = aws_cli(gateway["url"], "lambda", "invoke", "--function-name", "echo",
                "--payload", json.dumps(payload), "out.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["StatusCode"] == 200 and meta["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in meta
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["event"] == payload
    assert out["env"] == {"ECHO_OTHER": "kept", "AWS_LAMBDA_FUNCTION_NAME": "echo"}
    assert out["function_name"] == "echo" and out["memory_limit_in_mb"] == "256"
    assert out["cwd"] == str(ECHO_DIR)


def test_boto3_invoke_by_arn_with_log_tail(lam):
    import base64

    arn = "arn:aws:lambda:us-east-1:000000000000:function:echo"
    r = lam.invoke(FunctionName=arn, Payload=json.dumps({"x": 1}), LogType="Tail")
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    out = json.loads(r["Payload"].read())
    assert out["event"] == {"x": 1}
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == out["request_id"]
    assert f"START RequestId: {out['request_id']}" in base64.b64decode(r["LogResult"]).decode()
    # no payload: the handler gets {}
    assert json.loads(lam.invoke(FunctionName="echo")["Payload"].read())["event"] == {}


def test_handler_exception_is_an_unhandled_function_error(gateway, lam, tmp_path):
    r = aws_cli(gateway["url"], "lambda", "invoke", "--function-name", "echo",
                "--payload", '{"raise": "boom"}', "out.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["FunctionError"] == "Unhandled"
    err = json.loads((tmp_path / "out.json").read_text())
    assert err["errorType"] == "EchoError" and err["errorMessage"] == "boom"

    resp = lam.invoke(FunctionName="echo", Payload=b'{"raise": "again"}')
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read())["errorMessage"] == "again"
    # A returned dict that merely looks like an error is a result, not an error.
    fake = {"errorType": "X", "errorMessage": "y", "requestId": "z", "stackTrace": []}
    ok = lam.invoke(FunctionName="echo", Payload=json.dumps({"return": fake}))
    assert "FunctionError" not in ok and json.loads(ok["Payload"].read()) == fake


def test_timeout_is_sandbox_timedout_and_recovers(lam):
    r = lam.invoke(FunctionName="echo-short", Payload=b'{"sleep": 3}')
    assert r["FunctionError"] == "Unhandled"
    err = json.loads(r["Payload"].read())
    assert err["errorType"] == "Sandbox.Timedout" and "Task timed out after 1.00 seconds" in err["errorMessage"]
    assert "FunctionError" not in lam.invoke(FunctionName="echo-short", Payload=b"{}")


def test_unknown_function_is_resource_not_found(gateway, lam, tmp_path):
    r = aws_cli(gateway["url"], "lambda", "invoke", "--function-name", "nope",
                "--payload", "{}", "out.json", cwd=tmp_path)
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr
    for name in ("nope", "echo-missing"):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.invoke(FunctionName=name, Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="nope")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="echo", Payload=b"{not json")


def test_update_function_configuration_restarts_with_new_env(gateway, lam):
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert names == {"echo", "echo-short"}
    conf = lam.get_function(FunctionName="echo")["Configuration"]
    assert conf["PackageType"] == "Image" and conf["State"] == "Active"
    variables = conf["Environment"]["Variables"]
    assert variables["ECHO_GREETING"] == "hello"

    new = lam.update_function_configuration(
        FunctionName="echo", Environment={"Variables": {**variables, "ECHO_GREETING": "bonjour"}})
    assert new["Environment"]["Variables"]["ECHO_GREETING"] == "bonjour"
    assert new["LastUpdateStatus"] == "Successful" and new["RevisionId"] != conf["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(FunctionName="echo")
    for _ in range(3):  # every process restarted with it
        out = json.loads(lam.invoke(FunctionName="echo", Payload=b'{"env": ["ECHO_GREETING"]}')["Payload"].read())
        assert out["env"] == {"ECHO_GREETING": "bonjour"}
    # the processes share this host's cores: ONNX Runtime's spinning is off unless the function sets it
    out = json.loads(lam.invoke(FunctionName="echo", Payload=b'{"env": ["VIDNOTES_ORT_SPINNING"]}')["Payload"].read())
    assert out["env"] == {"VIDNOTES_ORT_SPINNING": "0"}
    saved = json.loads((gateway["tmp"] / "state" / "functions.json").read_text())
    assert saved["echo"]["Variables"]["ECHO_GREETING"] == "bonjour"
    assert lam.get_function_configuration(FunctionName="echo")["Environment"]["Variables"]["ECHO_OTHER"] == "kept"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName="echo", Environment={"Variables": {"AWS_REGION": "x"}})


def test_concurrent_invocations_use_both_processes_and_queue_the_third(gateway):
    results: list[dict] = []

    def call():
        c = client("lambda", gateway["url"], read_timeout=60)
        r = c.invoke(FunctionName="echo", Payload=b'{"sleep": 1.0}')
        results.append({"error": r.get("FunctionError"), **json.loads(r["Payload"].read())})

    t0 = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.monotonic() - t0
    assert len(results) == 3 and all(r["error"] is None for r in results), results
    assert len({r["pid"] for r in results}) == 2  # two processes served them
    assert 2.0 <= took < 3.5  # two ran together, the third waited for a free process


# ------------------------------------------------------------------------- LocalStack
@pytest.fixture(scope="module")
def stack(live_stack):
    return live_stack


def test_localstack_resources_and_upload_notification(stack, tmp_path):
    s3, sqs = client("s3", stack["s3"]), client("sqs", stack["s3"])
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {"vidnotes-inbox", "vidnotes-results", "vidnotes-models", "vidnotes-training"} <= names
    url = sqs.get_queue_url(QueueName="vidnotes-uploads")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":vidnotes-uploads-dlq")
    assert int(redrive["maxReceiveCount"]) == 5
    assert "s3.amazonaws.com" in attrs["Policy"]

    key = "uploads/my talk – café ü 1+1.mp4"
    (tmp_path / "talk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    r = aws_cli(stack["s3"], "s3", "cp", str(tmp_path / "talk.mp4"), f"s3://vidnotes-inbox/{key}")
    assert r.returncode == 0, r.stderr

    # the queue is shared with other tests' uploads: look for this key's message
    deadline, keys = time.monotonic() + 15, []
    while key not in [unquote_plus(k) for k in keys] and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if body.get("Event") == "s3:TestEvent":
                continue
            for rec in body["Records"]:
                assert rec["eventName"].startswith("ObjectCreated:")
                assert rec["s3"]["bucket"]["name"] == "vidnotes-inbox"
                keys.append(rec["s3"]["object"]["key"])
    raw = [k for k in keys if unquote_plus(k) == key]
    assert raw, f"no ObjectCreated message for {key!r} on vidnotes-uploads (saw {keys})"
    assert raw[0] != key  # the event carries the key URL-encoded, as S3 does


def test_stack_status_and_lambda_endpoint(stack):
    st = subprocess.run([stack["script"], "status"], env=stack["env"], capture_output=True, text=True, timeout=30)
    assert st.returncode == 0, st.stdout + st.stderr
    assert "gateway      health: ok" in st.stdout and "s3 running" in st.stdout
    config = json.loads((REPO / "functions" / "functions.json").read_text())
    lam = client("lambda", stack["lambda"])
    listed = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert listed <= set(config["functions"])
    # a second `up` finds everything running and changes nothing
    again = subprocess.run([stack["script"], "up"], env=stack["env"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr, again.stderr
