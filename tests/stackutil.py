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


@contextlib.contextmanager
def stack_up(tmp: Path, *, models: Path | None) -> Iterator[dict]:
    """`localstack/stack.sh up` on free ports with its own stack dir; `down` on exit."""
    ls_port = free_ports(14)
    lambda_port, fn_base = ls_port + 1, ls_port + 2
    env = {
        **os.environ,
        "VIDNOTES_STACK_DIR": str(tmp),
        "VIDNOTES_LOCALSTACK_PORT": str(ls_port),
        "VIDNOTES_LAMBDA_PORT": str(lambda_port),
        "VIDNOTES_FUNCTION_BASE_PORT": str(fn_base),
        "VIDNOTES_MODELS_DIR": str(models or tmp / "no-models"),
        "VENV": str(Path(sys.executable).parents[1]),
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
