"""Helpers for tests that drive the local stack with the real AWS CLI and boto3."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import threading
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


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def docker_engine_running() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=30).returncode == 0
    except FileNotFoundError:
        return False


def localstack_containers(run_dir: Path) -> str:
    """Name prefix of the containers LocalStack's Lambda starts for a stack (stack.sh's MAIN_CONTAINER_NAME)."""
    import hashlib

    return f"vidnotes-ls-{hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]}-lambda-"


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
    n = function_processes()
    ls_port = free_ports(3 + 2 * n)
    lambda_port, fn_base, registry_port = ls_port + 1, ls_port + 2, ls_port + 2 + 2 * n
    env = {
        **os.environ,
        "VIDNOTES_STACK_DIR": str(tmp),
        "VIDNOTES_LOCALSTACK_PORT": str(ls_port),
        "VIDNOTES_LAMBDA_PORT": str(lambda_port),
        "VIDNOTES_FUNCTION_BASE_PORT": str(fn_base),
        "VIDNOTES_MODELS_DIR": str(models or tmp / "no-models"),
        "VENV": str(Path(sys.executable).parents[1]),
        "VIDNOTES_PROFILE": profile,
        "VIDNOTES_REGISTRY_PORT": str(registry_port),
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
        # reconciliation looks only under lost/ (the session's other uploads are the other tests'
        # business) and at uploads older than 3 s
        "VIDNOTES_AIRFLOW_RECONCILE_PREFIX": "lost/",
        "VIDNOTES_AIRFLOW_RECONCILE_MIN_AGE": "3",
        "VIDNOTES_AIRFLOW_DB": "postgres",  # as make airflow (the in-process fixture's sqlite may be in os.environ)
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
    pg = [str(REPO / "scripts" / "postgres.sh")]
    pg_env = {**env, "VIDNOTES_PG_DIR": str(home / "postgres")}  # what airflow.sh gives it
    cluster = Path(subprocess.run([*pg, "dir"], env=pg_env, capture_output=True, text=True, check=True).stdout.strip())
    postmaster = cluster / "data" / "postmaster.pid"  # the metadata database's server (scripts/postgres.sh)
    try:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr + "\n" + log_tails(home / "logs")
        assert "migrating the metadata database (postgres: postgresql+psycopg2://" in up.stderr and postmaster.is_file(), up.stderr
        yield {"env": env, "home": home, "url": f"http://127.0.0.1:{env['VIDNOTES_AIRFLOW_PORT']}", "script": script, "up": up}
    finally:
        pids = {f.name: f.read_text().strip() for f in (home / "run").glob("*.pid")}
        if postmaster.is_file():
            pids["postgres"] = postmaster.read_text().split()[0]
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not list((home / "run").glob("*.pid")) and not postmaster.exists()
    subprocess.run([*pg, "destroy"], env=pg_env, capture_output=True, check=True, timeout=60)
    left = [p for p in pids.values() if running(int(p))]
    assert not left, f"airflow processes left running: {left}"


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def run_dag(dagbag, dag_id: str, conf: dict):
    """One in-process run of a DAG (dag.test()); the run and its task states by (task, map index)."""
    dr = dagbag.dags[dag_id].test(run_conf=conf)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    return dr, states


# -- the Lambda handlers in-process --------------------------------------------------------------
@dataclasses.dataclass
class LambdaContext:  # what Powertools reads from a Lambda context
    function_name: str
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:x"
    aws_request_id: str = "test-request"


def load_handler(fn_dir: str, name: str):
    """functions/<fn_dir>/app.py loaded as its own module; ``call(event)`` runs its handler."""
    spec = importlib.util.spec_from_file_location(f"fn_{fn_dir}", REPO / "functions" / fn_dir / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda event: module.handler(event, LambdaContext(name))


# -- the stack's processes -----------------------------------------------------------------------
@functools.cache
def gateway_module():
    """localstack/gateway.py as a module (standard library only): its process table helpers."""
    spec = importlib.util.spec_from_file_location("vidnotes_gateway", REPO / "localstack" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_tree(pid: int) -> list[int]:
    """pid and every live descendant."""
    return [pid, *gateway_module().descendants(pid)] if running(pid) else []


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class MemorySampler:
    """Samples the RSS of process trees (named groups of root pids, read from pid files) every
    ``interval`` s in a thread: ``peak`` holds each group's largest RSS and that of the sum of the
    groups named in ``summed`` (the MiB all of them held at one moment)."""

    def __init__(self, groups: dict[str, list[Path]], summed: tuple[str, ...], interval: float = 0.25) -> None:
        self.groups, self.summed, self.interval = groups, summed, interval
        self.peak: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-sampler")

    def _roots(self, files: list[Path]) -> list[int]:
        pids = []
        for f in files:
            try:
                pids.append(int(f.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def sample(self) -> None:
        parts = {name: rss_mib([p for root in self._roots(files) for p in process_tree(root)]) for name, files in self.groups.items()}
        parts["+".join(self.summed)] = sum(parts[name] for name in self.summed)
        self.samples += 1
        for name, mib in parts.items():
            self.peak[name] = round(max(self.peak.get(name, 0.0), mib), 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def function_events(stack: dict, function: str, start: int = 0) -> list[dict]:
    """The JSON log records (Powertools) a function wrote to its log after byte ``start``."""
    path = Path(stack["tmp"]) / "logs" / f"{function}.log"
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read().decode("utf-8", "replace")
    out = []
    for line in data.splitlines():
        text = line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line
        if text.startswith("{"):
            try:
                out.append(json.loads(text))
            except ValueError:
                pass
    return out


def log_size(stack: dict, function: str) -> int:
    path = Path(stack["tmp"]) / "logs" / f"{function}.log"
    return path.stat().st_size if path.exists() else 0


def write_reliability_report(figures: dict, out_dir: Path) -> None:
    """Merge this session's sections into reliability.json and rewrite reliability.md from it."""
    import datetime as dt

    path = out_dir / "reliability.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for name, section in figures.items():  # a section run again replaces the old one
        doc[name] = {**section, "measured_at": stamp}
    doc["machine"] = f"{os.cpu_count()} cores, Linux {os.uname().release}"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    lines = ["# Reliability: figures of the last test run", "",
             "Written by `tests/test_reliability.py` and `tests/test_hostile.py` (decisions: `docs/reliability.md`).", ""]  # fmt: skip
    burst = doc.get("burst")
    if burst:
        peak = burst.get("peak_rss_mib", {})
        lines += [
            "## Burst of uploads", "",
            "| uploads | good | bad | same file twice | runs | succeeded | failed with error record | lost | duplicated | drain s "
            "| peak RSS of the stack, MiB (LocalStack + gateway + function processes) | peak LocalStack / gateway and functions | peak Airflow |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {burst['uploads']} | {burst['good']} | {burst['bad']} | {burst['same_content_twice']} | {burst['runs']} | {burst['succeeded']} "
            f"| {burst['failed_with_error_record']} | {burst['lost']} | {burst['duplicated']} | {burst['drain_seconds']} "
            f"| {peak.get('localstack+gateway_and_functions')} | {peak.get('localstack')} / {peak.get('gateway_and_functions')} | {peak.get('airflow')} |",
            "", f"Path: {burst['path']}. Measured {burst['measured_at']}.", "",
        ]  # fmt: skip
    faults = doc.get("faults")
    if faults:
        lines += ["## Faults injected mid-run", "", "| fault | what happened |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in faults.get("kinds", {}).items()]
        if "corrupt_model" in faults:
            lines.append(f"| corrupt_model | {faults['corrupt_model']} |")
        lines += ["", f"Injected {faults.get('injected')}, survived {faults.get('survived')}; task tries {faults.get('task_tries')}; "
                  f"result identical to the undisturbed run: {faults.get('result_identical_to_undisturbed_run')} "
                  f"({faults.get('objects_compared')} objects compared). Measured {faults['measured_at']}.", ""]  # fmt: skip
    hostile = doc.get("hostile")
    if hostile:
        lines += ["## Hostile input", "", "| kind | tried |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in hostile.get("tried", {}).items()]
        lines += ["", f"In all {sum(hostile.get('tried', {}).values())} inputs; escaped their job prefix: {hostile.get('escaped')}, "
                  f"unclear errors: {hostile.get('unclear_errors')}, other jobs changed: {hostile.get('other_jobs_changed')}. "
                  f"Measured {hostile['measured_at']}.", ""]  # fmt: skip
    (out_dir / "reliability.md").write_text("\n".join(lines))
