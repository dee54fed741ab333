"""LocalStack's own Lambda service runs the functions (docker profile): zip packages of the code
(infra/deploy.py --package zip) in the runtime image vidnotes-lambda-runtime:3.11, which LocalStack
pulls from the stack's local registry, with localstack/lambda_init.py as the container's init. The
system tests of test_system.py run here once more with `aws --endpoint-url <LocalStack> lambda
invoke`, the same endpoint as S3."""

from __future__ import annotations

import base64
import json

import pytest
from test_system import (  # noqa: F401  (collected here again, against LocalStack's Lambda)
    TEXT,
    test_bad_upload_is_a_function_error_with_a_status_record,
    test_upload_to_pdf_with_the_aws_cli,
    test_wrong_payloads_get_clear_errors,
)

from stackutil import aws_cli, client, docker, localstack_containers
from vidnotes.sample import make_sample_video

FUNCTIONS = ["vidnotes-extract-audio", "vidnotes-transcribe", "vidnotes-diarize", "vidnotes-summarize", "vidnotes-render-pdf"]


@pytest.fixture(scope="module")
def live_stack(docker_stack):
    """The docker profile's stack with Lambda at LocalStack's endpoint (overrides conftest's)."""
    return {**docker_stack, "lambda": docker_stack["s3"]}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Other bytes than test_docker_profile's video (same stack: that one is a duplicate by now)."""
    # read at 150 words a minute: at the default 135 tiny.en writes this talk's "Glaciers" as "Glacier's"
    return make_sample_video(tmp_path_factory.mktemp("video") / "talk.mp4", text=TEXT + " Served by LocalStack.", speed=150, word_gap=0)


def test_localstack_runs_zip_functions_in_its_containers(live_stack, tmp_path):
    lam = client("lambda", live_stack["s3"])
    for name in FUNCTIONS:
        conf = lam.get_function_configuration(FunctionName=name)
        assert (conf["PackageType"], conf["Runtime"], conf["Handler"], conf["State"]) == ("Zip", "python3.11", "app.handler", "Active")
    out = tmp_path / "out.json"
    r = aws_cli(live_stack["s3"], "lambda", "invoke", "--function-name", "vidnotes-summarize", "--payload", '{"job_id": "00000000000000aa"}',
                "--log-type", "Tail", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["FunctionError"] == "Unhandled" and "run extract_audio first" in json.loads(out.read_text())["errorMessage"]
    log = base64.b64decode(meta["LogResult"]).decode()
    assert "START RequestId" in log and "REPORT RequestId" in log, log
    prefix = localstack_containers(live_stack["tmp"] / "run")
    names = docker("ps", "--format", "{{.Names}} {{.Image}}", "--filter", f"name=^{prefix}").stdout.split("\n")
    assert any(line.startswith(f"{prefix}vidnotes-summarize-") and line.endswith("/vidnotes-lambda-runtime:3.11") for line in names), names
