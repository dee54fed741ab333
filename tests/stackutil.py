"""Helpers for tests that drive the local stack with the real AWS CLI and boto3."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parents[1]
CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
AWS = str(Path(sys.executable).with_name("aws"))  # the venv's AWS CLI


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> int:
    """First of n consecutive free ports."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port range")


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **CREDS}


def aws_cli(endpoint: str, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([AWS, "--endpoint-url", endpoint, *args], capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=timeout)


def client(service: str, endpoint: str, **config):
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, **config),
    )  # fmt: skip


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def function_processes(config: Path | None = None) -> int:
    """How many function processes the gateway starts for a functions.json (two ports each)."""
    config = config or Path(os.environ.get("VIDNOTES_FUNCTIONS_CONFIG", REPO / "functions" / "functions.json"))
    doc = json.loads(config.read_text())
    default = doc.get("defaults", {}).get("concurrency", 1)
    return sum(int(f.get("concurrency", default)) for f in doc["functions"].values())


@contextlib.contextmanager
def stack_up(tmp: Path, *, models: Path | None, profile: str = "process") -> Iterator[dict]:
    """`localstack/stack.sh up` on free ports with its own stack dir; `down` on exit.
    profile: process (RIE processes) or docker (the functions' images; `make images` first)."""
    ls_port = free_ports(2 + 2 * function_processes())
    lambda_port, fn_base = ls_port + 1, ls_port + 2
    env = {
        **os.environ,
        "VIDNOTES_STACK_DIR": str(tmp),
        "VIDNOTES_LOCALSTACK_PORT": str(ls_port),
        "VIDNOTES_LAMBDA_PORT": str(lambda_port),
        "VIDNOTES_FUNCTION_BASE_PORT": str(fn_base),
        "VIDNOTES_MODELS_DIR": str(models or tmp / "no-models"),
        "VENV": str(Path(sys.executable).parents[1]),
        "VIDNOTES_PROFILE": profile,
    }
    script = str(REPO / "localstack" / "stack.sh")
    try:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        yield {"s3": f"http://127.0.0.1:{ls_port}", "lambda": f"http://127.0.0.1:{lambda_port}", "env": env, "script": script, "tmp": tmp}
    finally:
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not list((tmp / "run").glob("*.pid"))


def drain_queue(endpoint: str, name: str = "vidnotes-uploads") -> int:
    """Delete every message waiting on the queue (uploads of earlier tests); how many there were."""
    sqs = client("sqs", endpoint)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    n = 0
    while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0).get("Messages", []):
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        n += len(msgs)
    return n


def airflow_env(stack: dict, home: Path, port: int | None = None) -> dict[str, str]:
    """Settings for scripts/airflow.sh (and scripts/airflow_client.py) against a test stack."""
    s3_port, lambda_port = stack["s3"].rsplit(":", 1)[1], stack["lambda"].rsplit(":", 1)[1]
    return {
        **os.environ,
        "VIDNOTES_AIRFLOW_HOME": str(home),
        "VIDNOTES_AIRFLOW_PORT": str(port or free_ports(1)),
        "VIDNOTES_LOCALSTACK_PORT": s3_port,
        "VIDNOTES_LAMBDA_PORT": lambda_port,
        "VENV": str(Path(sys.executable).parents[1]),
    }


def log_tails(logs: Path, lines: int = 25) -> str:
    out = []
    for f in sorted(logs.glob("*.log")):
        text = f.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {f.name}\n" + "\n".join(text))
    return "\n".join(out)


@contextlib.contextmanager
def airflow_up(stack: dict, home: Path) -> Iterator[dict]:
    """`scripts/airflow.sh up` (api-server, scheduler, dag-processor, triggerer) on a free port with
    its own AIRFLOW_HOME, pointed at the stack; `down` on exit, checking nothing is left."""
    env = airflow_env(stack, home)
    script = str(REPO / "scripts" / "airflow.sh")
    try:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr + "\n" + log_tails(home / "logs")
        yield {"env": env, "home": home, "url": f"http://127.0.0.1:{env['VIDNOTES_AIRFLOW_PORT']}", "script": script, "up": up}
    finally:
        pids = {f.name: f.read_text().strip() for f in (home / "run").glob("*.pid")}
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not list((home / "run").glob("*.pid"))
    left = [p for p in pids.values() if running(int(p))]
    assert not left, f"airflow processes left running: {left}"


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
