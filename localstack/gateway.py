#!/usr/bin/env python3
"""Local AWS Lambda endpoint for the vidnotes functions (standard library only).

One HTTP server (default 127.0.0.1:9001) speaks the Lambda REST API that the AWS CLI, boto3 and
Airflow's LambdaInvokeFunctionOperator use, for every function in functions/functions.json:

  POST /2015-03-31/functions/{name|arn}/invocations     Invoke (RequestResponse, Event, DryRun)
  GET  /2015-03-31/functions/                            ListFunctions
  GET  /2015-03-31/functions/{name}                      GetFunction
  GET  /2015-03-31/functions/{name}/configuration        GetFunctionConfiguration
  PUT  /2015-03-31/functions/{name}/configuration        UpdateFunctionConfiguration
  GET  /health                                           state of every function process

Each function runs as N instances of the real AWS Lambda Runtime Interface Emulator, each serving
one invocation at a time (the RIE crashes when it gets a second one while busy, so the gateway
never sends one). Two runners:
  --runner process   `aws-lambda-rie ... python -m awslambdaric app.handler` processes on the host
                     (the function's directory + the repository on PYTHONPATH; no Docker needed)
  --runner docker    one container per instance of the function's image (`make images`), run as
                     Lambda runs it: its entrypoint starts the RIE on port 8080, published on
                     127.0.0.1:<instance port>; the container reaches LocalStack at
                     --container-endpoint-url (the docker bridge address) Invocations
wait for a free process (up to `queue_timeout`, then 429 TooManyRequestsException, as a throttled
Lambda does).

The RIE answers like a container image's emulator, not like the Lambda service; the gateway
translates: handler exceptions (RIE: 200 + error JSON, no header), timeouts (RIE: 200 + plain
text), runtime exits, init/import errors and oversized responses (RIE: 502) all become
200 + `X-Amz-Function-Error: Unhandled` + the error JSON, as Lambda returns them.
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime as _dt
import hashlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LOG = logging.getLogger("vidnotes.gateway")
REPO = Path(__file__).resolve().parents[1]

API = "/2015-03-31/functions"
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # Lambda's request limit for RequestResponse
PYTHON_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
# Keys Lambda refuses in Environment.Variables (InvalidParameterValueException).
RESERVED_ENV = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}
# Host variables a function process inherits (Lambda's own environment is otherwise clean).
PASSENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
           "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")
NAME_RE = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:|\d{12}:function:)?"
    r"([A-Za-z0-9_-]{1,64})(?::(\$LATEST|[A-Za-z0-9_-]{1,128}))?"
)


class ApiError(Exception):
    """An error answered the way the Lambda API answers it."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, session id)."""
    procs: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            procs[int(stat.parent.name)] = (int(fields[1]), int(fields[3]))
    return procs


def session_members(sid: int) -> list[int]:
    """Live processes of session sid. A child started with start_new_session leads one; the
    runtime the RIE starts stays in it (in a process group of its own) even after the RIE died."""
    return [pid for pid, (_, s) in _processes().items() if s == sid and pid != sid]


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (the RIE puts its runtime in a process group of its own)."""
    parent = {p: pp for p, (pp, _) in _processes().items()}
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def stop_child(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """TERM a child started with start_new_session (its process group), reap it, KILL leftovers
    (its group and its descendants: the runtime the RIE started lives in another group)."""
    kids = descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group may outlive its leader (the runtime the RIE started)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        LOG.error("pid %d did not exit after SIGKILL", proc.pid)
    # Normally gone already: the RIE kills its runtime when it stops. When the RIE itself was
    # killed, its runtime lives on (orphaned, still in the RIE's session) and would take the next
    # invocation from the restarted RIE's runtime API and keep writing for a failed one.
    for pid in sorted(set(kids) | set(session_members(proc.pid))):
        try:
            os.kill(pid, signal.SIGKILL)
            LOG.warning("killed pid %d left behind by pid %d", pid, proc.pid)
        except ProcessLookupError:
            pass


class Instance:
    """One RIE process (and the awslambdaric runtime it starts on the first invocation)."""

    def __init__(self, fn: "Function", index: int, port: int):
        self.fn, self.index, self.port, self.api_port = fn, index, port, port + 1
        self.proc: subprocess.Popen | None = None
        self.generation = -1
        self.busy = False
        self.invocations = 0
        self.errors = 0
        self.starts = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._request_id: str | None = None
        self._end = threading.Event()
        self._capture: collections.deque[str] = collections.deque(maxlen=200)
        self._capturing = False

    @property
    def pid_file(self) -> Path:
        return self.fn.gw.run_dir / f"rie-{self.fn.name}-{self.index}.pid"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def container(self) -> str:
        return f"{self.fn.gw.container_prefix}{self.fn.name}-{self.index}"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        fn, gw = self.fn, self.fn.gw
        env = fn.process_env(self.index)
        if gw.runner == "process":
            return [
                str(gw.rie), "--log-level", gw.rie_log_level,
                "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
                "--runtime-api-address", f"127.0.0.1:{self.api_port}",
                str(gw.python), "-m", "awslambdaric", fn.handler,
            ], env
        # `-e NAME` takes the value from the docker client's environment: no secrets in `ps`.
        cmd = ["docker", "run", "--rm", "--name", self.container, "--label", gw.container_label,
               "--publish", f"127.0.0.1:{self.port}:8080", "--memory", f"{fn.memory}m",
               # As on Lambda: a read-only file system but /tmp (a volume --rm removes).
               "--read-only", "--volume", "/tmp"]
        for name in sorted(env):
            cmd += ["--env", name]
        cmd += [fn.image, fn.handler]
        return cmd, {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def _ready(self) -> bool:
        if self.fn.gw.runner == "process":
            return _port_open(self.port)
        # docker-proxy accepts connections before the RIE in the container listens; a request to
        # an unknown path (404, not an invocation: the RIE invokes on any method) proves it does.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/vidnotes-ready")
            return conn.getresponse().status == 404
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def start(self) -> None:
        fn = self.fn
        self.stop()
        if _port_open(self.port) or _port_open(self.api_port):
            raise RuntimeError(f"port {self.port} or {self.api_port} is already in use")
        cmd, env = self._command()
        self.proc = subprocess.Popen(
            cmd, cwd=fn.dir if fn.gw.runner == "process" else fn.gw.root, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        self.generation = fn.generation
        _atomic_write(self.pid_file, f"{self.proc.pid}\n")
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True,
                         name=f"log-{fn.name}-{self.index}").start()
        what = "aws-lambda-rie" if fn.gw.runner == "process" else f"container {self.container}"
        deadline = time.monotonic() + (10 if fn.gw.runner == "process" else 60)
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode} "
                                   f"(see {fn.log_path})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {self.port} in time")
            time.sleep(0.02)
        fn.log(self.index, f"[gateway] started {what} (pid {self.proc.pid}) on "
                           f"127.0.0.1:{self.port} (generation {self.generation})")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_child(proc, grace=3.0)
            self.fn.log(self.index, f"[gateway] stopped pid {proc.pid} (rc {proc.returncode})")
        if self.fn.gw.runner == "docker":  # the container outlives a killed `docker run` client
            subprocess.run(["docker", "rm", "--force", self.container], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        try:
            self.pid_file.unlink()
        except FileNotFoundError:
            pass

    def _pump(self, proc: subprocess.Popen) -> None:
        """Copy the RIE's output to the function log; note START/END RequestId lines."""
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.fn.log(self.index, line)
            with self._lock:
                if line.startswith("START RequestId: "):
                    self._request_id = line.split()[2]
                    self._capture.clear()
                    self._capturing = True
                if self._capturing:
                    self._capture.append(line)
                if line.startswith("END RequestId: ") or line.startswith("REPORT RequestId: "):
                    if line.startswith("REPORT"):
                        self._capturing = False
                    self._end.set()
        proc.stdout.close()

    def invoke(self, payload: bytes, timeout: float) -> tuple[int, bytes, str | None, str]:
        """POST to the RIE. Returns (status, body, request id, log tail)."""
        with self._lock:
            self._request_id = None
            self._end.clear()
            self._capture.clear()
            self._capturing = False
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", "/2015-03-31/functions/function/invocations", body=payload,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        finally:
            conn.close()
        # The RIE prints END before it writes a 200 response; give the pump thread a moment.
        if status == 200:
            self._end.wait(2.0)
        time.sleep(0.01)
        with self._lock:
            return status, body, self._request_id, "\n".join(self._capture)


class Function:
    def __init__(self, gw: "Gateway", name: str, spec: dict, defaults: dict, first_port: int):
        self.gw, self.name = gw, name
        d = Path(spec["dir"])
        self.dir = d if d.is_absolute() else (gw.root / d)
        self.handler = spec.get("handler", defaults.get("handler", "app.handler"))
        self.timeout = int(spec.get("timeout", defaults.get("timeout", 900)))
        self.memory = int(spec.get("memory", defaults.get("memory", 3008)))
        self.concurrency = max(1, int(spec.get("concurrency", defaults.get("concurrency", 1))))
        qt = spec.get("queue_timeout", defaults.get("queue_timeout"))
        self.queue_timeout = float(qt) if qt is not None else None
        self.description = spec.get("description", "")
        self.image = spec.get("image", f"{name}:latest")  # the docker runner's image
        self.ephemeral_storage = int(spec.get("ephemeral_storage", defaults.get("ephemeral_storage", 512)))
        self.variables: dict[str, str] = {str(k): str(v) for k, v in
                                          {**defaults.get("environment", {}),
                                           **spec.get("environment", {})}.items()}
        self.generation = 0
        self.revision = str(uuid.uuid4())
        self.last_modified = _now_iso()
        self.state, self.reason = "Pending", ""
        self.instances = [Instance(self, i, first_port + 2 * i) for i in range(self.concurrency)]
        self.cond = threading.Condition()
        self.log_path = gw.log_dir / f"{name}.log"
        self._log_lock = threading.Lock()
        self._log_file = None

    # ------------------------------------------------------------------ config
    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.gw.region}:{self.gw.account}:function:{self.name}"

    def effective_queue_timeout(self) -> float:
        if self.gw.queue_timeout is not None:
            return self.gw.queue_timeout
        return self.queue_timeout if self.queue_timeout is not None else float(self.timeout)

    def apply_state(self, saved: dict) -> None:
        if "Variables" in saved:
            self.variables = dict(saved["Variables"])
        self.timeout = int(saved.get("Timeout", self.timeout))
        self.memory = int(saved.get("MemorySize", self.memory))
        self.description = saved.get("Description", self.description)
        self.revision = saved.get("RevisionId", self.revision)
        self.last_modified = saved.get("LastModified", self.last_modified)

    def saved_state(self) -> dict:
        return {"Variables": self.variables, "Timeout": self.timeout, "MemorySize": self.memory,
                "Description": self.description, "RevisionId": self.revision,
                "LastModified": self.last_modified}

    def configuration(self) -> dict:
        code_sha = base64.b64encode(hashlib.sha256(
            f"{self.dir}:{self.handler}".encode()).digest()).decode()
        return {
            "FunctionName": self.name,
            "FunctionArn": self.arn,
            "Role": f"arn:aws:iam::{self.gw.account}:role/vidnotes-lambda",
            "CodeSize": 0,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory,
            "LastModified": self.last_modified,
            "CodeSha256": code_sha,
            "Version": "$LATEST",
            "Environment": {"Variables": dict(self.variables)},
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision,
            "State": "Active" if self.state == "Active" else self.state,
            **({"StateReason": self.reason} if self.state != "Active" and self.reason else {}),
            "LastUpdateStatus": "Successful" if self.state == "Active" else "Failed",
            "PackageType": "Image",
            "ImageConfigResponse": {"ImageConfig": {
                "Command": [self.handler],
                "WorkingDirectory": "/var/task" if self.gw.runner == "docker" else str(self.dir)}},
            "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": self.ephemeral_storage},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{self.name}"},
        }

    def code_location(self) -> dict:
        """GetFunction's Code: the local image (docker runner), else a placeholder ECR address."""
        if self.gw.runner == "docker":
            image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", self.image],
                                      capture_output=True, text=True, check=False).stdout.strip()
            return {"RepositoryType": "ECR", "ImageUri": self.image,
                    "ResolvedImageUri": f"{self.image.rsplit(':', 1)[0]}@{image_id or 'unknown'}"}
        ecr = f"{self.gw.account}.dkr.ecr.{self.gw.region}.amazonaws.com/{self.name}"
        return {"RepositoryType": "ECR", "ImageUri": f"{ecr}:local",
                "ResolvedImageUri": f"{ecr}@sha256:" + "0" * 64}

    def process_env(self, index: int) -> dict[str, str]:
        gw = self.gw
        docker = gw.runner == "docker"
        env = {} if docker else {k: os.environ[k] for k in PASSENV if k in os.environ}
        env.update({
            "AWS_ENDPOINT_URL": gw.container_endpoint_url if docker else gw.endpoint_url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        })
        if not docker:
            env["AWS_ENDPOINT_URL_LAMBDA"] = gw.public_url
        env.update(self.variables)
        # Every instance of every function shares this host's cores (on Lambda each has its own):
        # ONNX Runtime threads that spin while waiting would take the cores the others need.
        env.setdefault("VIDNOTES_ORT_SPINNING", "0")
        env.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # vidnotes.onnxutil.HUGEPAGE_TUNABLES
        env.update({
            "AWS_REGION": gw.region,
            "AWS_DEFAULT_REGION": gw.region,
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME":
                f"{time.strftime('%Y/%m/%d')}/[$LATEST]local{index}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{PYTHON_RUNTIME}",
            "PYTHONUNBUFFERED": "1",
        })
        if not docker:  # the image sets these itself
            env.update({"LAMBDA_TASK_ROOT": str(self.dir), "PYTHONPATH": str(gw.root), "TZ": ":UTC"})
        return env

    # ------------------------------------------------------------------ logs
    def log(self, index: int, line: str) -> None:
        with self._log_lock:
            if self._log_file is None:
                self.gw.log_dir.mkdir(parents=True, exist_ok=True)
                self._log_file = open(self.log_path, "a", buffering=1, encoding="utf-8")
            self._log_file.write(f"[{index}] {line}\n")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self.dir.is_dir():
            self.state = "Skipped"
            self.reason = f"function directory {self.dir} does not exist"
            LOG.warning("%s: %s; skipped (started when it appears)", self.name, self.reason)
            return
        try:
            for inst in self.instances:
                inst.start()
            self.state, self.reason = "Active", ""
        except Exception as exc:  # noqa: BLE001 - reported through /health and the API
            self.state, self.reason = "Failed", str(exc)
            LOG.error("%s: failed to start: %s", self.name, exc)

    def ensure_started(self) -> None:
        """A skipped function starts once its directory exists."""
        with self.cond:
            if self.state == "Skipped" and self.dir.is_dir():
                LOG.info("%s: directory appeared, starting", self.name)
                self.start()

    def stop(self) -> None:
        for inst in self.instances:
            inst.stop()
        with self._log_lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def acquire(self, timeout: float) -> Instance | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for inst in self.instances:
                    if not inst.busy:
                        inst.busy = True
                        break
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.cond.wait(left)
                    continue
                break
        try:
            if not inst.alive() or inst.generation != self.generation:
                if inst.proc is not None and not inst.alive():
                    LOG.warning("%s[%d]: aws-lambda-rie died (rc %s), restarting", self.name,
                                inst.index, inst.proc.returncode)
                inst.start()
                if self.state == "Failed" and all(i.alive() for i in self.instances):
                    self.state, self.reason = "Active", ""
        except Exception as exc:
            with self.cond:
                inst.busy = False
                self.cond.notify()
            raise ApiError(500, "ServiceException",
                           f"could not start the local process of {self.name}: {exc}") from exc
        return inst

    def release(self, inst: Instance) -> None:
        if inst.generation != self.generation or not inst.alive():
            try:  # configuration changed (or it died) during the invocation
                inst.start()
            except Exception as exc:  # noqa: BLE001
                inst.last_error = str(exc)
                LOG.error("%s[%d]: restart failed: %s", self.name, inst.index, exc)
        with self.cond:
            inst.busy = False
            self.cond.notify()

    def reconfigure(self) -> None:
        """New generation: restart idle processes now, busy ones when they finish."""
        with self.cond:
            self.generation += 1
            idle = [i for i in self.instances if not i.busy]
            for inst in idle:
                inst.busy = True
        try:
            if self.state in ("Active", "Failed") and self.dir.is_dir():
                for inst in idle:
                    inst.start()
                self.state, self.reason = "Active", ""
        except Exception as exc:  # noqa: BLE001
            self.state, self.reason = "Failed", str(exc)
        finally:
            with self.cond:
                for inst in idle:
                    inst.busy = False
                self.cond.notify_all()

    def health(self) -> dict:
        return {
            "state": self.state,
            **({"reason": self.reason} if self.reason else {}),
            "runner": self.gw.runner,
            **({"image": self.image} if self.gw.runner == "docker" else {}),
            "dir": str(self.dir),
            "handler": self.handler,
            "log": str(self.log_path),
            "instances": [{
                "index": i.index, "port": i.port, "runtime_api_port": i.api_port,
                **({"container": i.container} if self.gw.runner == "docker" else {}),
                "pid": i.proc.pid if i.proc else None, "alive": i.alive(), "busy": i.busy,
                "generation": i.generation, "starts": i.starts, "invocations": i.invocations,
                "function_errors": i.errors,
            } for i in self.instances],
        }


class Gateway:
    def __init__(self, args: argparse.Namespace):
        self.root = Path(args.root).resolve()
        self.config_path = Path(args.config).resolve()
        self.state_dir = Path(args.state_dir).resolve()
        self.log_dir = Path(args.log_dir).resolve()
        self.run_dir = Path(args.run_dir).resolve()
        self.rie = Path(args.rie).resolve()
        self.python = Path(args.python)
        self.region, self.account = args.region, args.account_id
        self.endpoint_url = args.endpoint_url
        self.public_url = f"http://127.0.0.1:{args.port}"
        self.queue_timeout = args.queue_timeout
        self.rie_log_level = args.rie_log_level
        self.runner = args.runner
        self.container_endpoint_url = args.container_endpoint_url or args.endpoint_url
        # Containers carry this label so `stack.sh down` finds them even after a SIGKILL here.
        self.container_label = f"vidnotes.stack={self.run_dir}"
        self.container_prefix = f"vidnotes-{hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:8]}-"
        self._state_lock = threading.Lock()
        if self.runner == "process" and not self.rie.is_file():
            raise SystemExit(f"gateway: no aws-lambda-rie at {self.rie} (run localstack/setup.sh)")
        config = json.loads(self.config_path.read_text())
        defaults = config.get("defaults", {})
        self.functions: dict[str, Function] = {}
        port = args.base_port
        for name, spec in config.get("functions", {}).items():
            fn = Function(self, name, spec, defaults, port)
            port += 2 * fn.concurrency
            self.functions[name] = fn
        saved = self._load_state()
        for name, fn in self.functions.items():
            if name in saved:
                fn.apply_state(saved[name])

    # ---------------------------------------------------------------- state
    @property
    def state_file(self) -> Path:
        return self.state_dir / "functions.json"

    def _load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            LOG.warning("ignoring unreadable %s", self.state_file)
            return {}

    def save_state(self) -> None:
        with self._state_lock:
            _atomic_write(self.state_file, json.dumps(
                {n: f.saved_state() for n, f in self.functions.items()}, indent=2, sort_keys=True))

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for fn in self.functions.values():
            fn.start()

    def stop(self) -> None:
        for fn in self.functions.values():
            fn.stop()

    # ---------------------------------------------------------------- API
    def lookup(self, raw: str) -> tuple[Function, str | None]:
        ident = unquote(raw)
        m = NAME_RE.fullmatch(ident)
        name = m.group(1) if m else ident
        fn = self.functions.get(name) if m else None
        if fn is not None:
            fn.ensure_started()
        if fn is None or fn.state == "Skipped":
            arn = f"arn:aws:lambda:{self.region}:{self.account}:function:{name}"
            extra = f" ({fn.reason}; not deployed locally)" if fn is not None else ""
            raise ApiError(404, "ResourceNotFoundException", f"Function not found: {arn}{extra}")
        return fn, (m.group(2) if m else None)

    def health(self) -> dict:
        fns = {n: f.health() for n, f in self.functions.items()}
        ok = all(f["state"] in ("Active", "Skipped") and all(i["alive"] for i in f["instances"])
                 for f in fns.values() if f["state"] != "Skipped")
        return {"status": "ok" if ok else "degraded", "config": str(self.config_path),
                "functions": fns}

    def invoke(self, fn: Function, payload: bytes, log_tail: bool) -> tuple[int, dict, bytes]:
        inst = fn.acquire(fn.effective_queue_timeout())
        if inst is None:
            raise ApiError(429, "TooManyRequestsException", "Rate Exceeded.",
                           Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        try:
            try:
                status, body, rid, logs = inst.invoke(payload, fn.timeout + 60)
            except (OSError, http.client.HTTPException) as exc:
                inst.last_error = str(exc)
                LOG.error("%s[%d]: RIE request failed: %s", fn.name, inst.index, exc)
                if inst.proc is not None:
                    stop_child(inst.proc, grace=1.0)
                raise ApiError(500, "ServiceException",
                               f"local function process failed ({exc}); it is restarted "
                               f"for the next invocation, see {fn.log_path}") from exc
            inst.invocations += 1
        finally:
            fn.release(inst)
        rid = rid or str(uuid.uuid4())
        error = self._function_error(status, body, rid)
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": rid,
                   "Content-Type": "application/json"}
        if error is not None:
            inst.errors += 1
            headers["X-Amz-Function-Error"] = "Unhandled"
            body = error
        elif status != 200:
            raise ApiError(500, "ServiceException",
                           f"local function process answered HTTP {status}: "
                           f"{body[:200].decode('utf-8', 'replace')}")
        if log_tail:
            headers["X-Amz-Log-Result"] = base64.b64encode(
                logs.encode("utf-8")[-4096:]).decode()
        return 200, headers, body

    @staticmethod
    def _function_error(status: int, body: bytes, rid: str) -> bytes | None:
        """The Lambda error payload if the RIE reported a function error, else None."""
        text = body.decode("utf-8", "replace")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if status == 200:
            if doc is None and text.startswith("Task timed out after"):
                return json.dumps({"errorType": "Sandbox.Timedout",
                                   "errorMessage": f"RequestId: {rid} Error: {text}"}).encode()
            # awslambdaric's error document for a handler exception carries this invocation's id.
            if (isinstance(doc, dict) and {"errorMessage", "errorType"} <= doc.keys()
                    and doc.keys() <= {"errorMessage", "errorType", "requestId", "stackTrace"}
                    and doc.get("requestId") == rid):
                return body
            return None
        if status == 502:  # init/import errors, runtime exits, oversized responses
            if isinstance(doc, dict) and "errorType" in doc:
                return body
            reason = text.strip() or ("the function process exited before it answered "
                                      "(killed, out of memory or crashed)")
            return json.dumps({"errorType": "Runtime.Unknown",
                               "errorMessage": f"RequestId: {rid} Error: {reason}"}).encode()
        return None


def read_request_body(request: BaseHTTPRequestHandler) -> bytes:
    """The body of an HTTP/1.1 request: chunked (trailers skipped) or Content-Length."""
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(request.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    n = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(n) if n else b""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vidnotes-lambda-gateway"
    gw: Gateway  # set on the class by serve()

    def log_message(self, fmt, *args):  # noqa: D401 - access log to the gateway log
        LOG.info("%s %s", self.address_string(), fmt % args)

    # ---------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        return read_request_body(self)

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        if "x-amzn-RequestId" not in headers:
            headers["x-amzn-RequestId"] = str(uuid.uuid4())
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc, headers: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), headers)

    def _error(self, err: ApiError) -> None:
        doc = {"Type": "User" if err.status < 500 else "Service", "message": err.message,
               **err.extra}
        self._json(err.status, doc, {"x-amzn-ErrorType": err.code})

    def _dispatch(self, method: str) -> None:
        try:
            body = self._body()
            url = urlsplit(self.path)
            path = url.path.rstrip("/")
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self._route(method, path, query, body)
        except ApiError as err:
            self._error(err)
        except Exception as exc:  # noqa: BLE001
            LOG.exception("internal error")
            self.close_connection = True  # the request may not have been read to its end
            self._error(ApiError(500, "ServiceException", f"gateway error: {exc}"))

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731
    do_DELETE = lambda self: self._dispatch("DELETE")  # noqa: E731

    # ---------------------------------------------------------------- routes
    def _route(self, method: str, path: str, query: dict, body: bytes) -> None:
        gw = self.gw
        if path in ("/health", "/_health") and method == "GET":
            doc = gw.health()
            return self._json(200, doc)
        if path == API and method == "GET":
            for fn in gw.functions.values():
                fn.ensure_started()
            return self._json(200, {"Functions": [f.configuration() for f in gw.functions.values()
                                                  if f.state != "Skipped"]})
        m = re.fullmatch(re.escape(API) + r"/([^/]+)(/invocations|/configuration)?", path)
        if not m:
            raise ApiError(404, "UnknownOperationException", f"Unknown operation {method} {path}")
        fn, qualifier = gw.lookup(m.group(1))
        qualifier = query.get("Qualifier", qualifier)
        if qualifier not in (None, "$LATEST"):
            raise ApiError(404, "ResourceNotFoundException",
                           f"Function not found: {fn.arn}:{qualifier}")
        sub = m.group(2)
        if sub == "/invocations" and method == "POST":
            return self._invoke(fn, body)
        if sub == "/configuration" and method == "GET":
            return self._json(200, fn.configuration())
        if sub == "/configuration" and method == "PUT":
            return self._json(200, self._update_configuration(fn, body))
        if sub is None and method == "GET":
            return self._json(200, {
                "Configuration": fn.configuration(),
                "Code": fn.code_location(),
                "Concurrency": {"ReservedConcurrentExecutions": fn.concurrency},
                "Tags": {"vidnotes:local": "true"},
            })
        raise ApiError(405, "UnknownOperationException", f"Unsupported {method} {self.path}")

    def _invoke(self, fn: Function, body: bytes) -> None:
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        log_tail = self.headers.get("X-Amz-Log-Type", "None") == "Tail"
        if kind not in ("RequestResponse", "Event", "DryRun"):
            raise ApiError(400, "InvalidParameterValueException",
                           f"Unsupported InvocationType {kind}")
        payload = body if body.strip() else b"{}"
        try:
            json.loads(payload)
        except ValueError as exc:
            raise ApiError(400, "InvalidRequestContentException",
                           f"Could not parse request body into json: {exc}") from None
        if kind == "RequestResponse" and len(payload) > MAX_SYNC_PAYLOAD:
            raise ApiError(413, "RequestTooLargeException",
                           f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the "
                           "InvokeFunction operation")
        if kind == "DryRun":
            return self._send(204, b"", {})
        if kind == "Event":
            rid = str(uuid.uuid4())

            def run() -> None:
                try:
                    _, headers, out = self.gw.invoke(fn, payload, False)
                    if "X-Amz-Function-Error" in headers:
                        LOG.warning("async %s %s failed: %s", fn.name, rid, out[:500])
                except ApiError as err:
                    LOG.warning("async %s %s: %s %s", fn.name, rid, err.code, err.message)

            threading.Thread(target=run, daemon=True, name=f"event-{rid}").start()
            return self._send(202, b"", {"x-amzn-RequestId": rid})
        status, headers, out = self.gw.invoke(fn, payload, log_tail)
        self._send(status, out, headers)

    def _update_configuration(self, fn: Function, body: bytes) -> dict:
        try:
            req = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "InvalidRequestContentException",
                           f"Could not parse request body into json: {exc}") from None
        if req.get("RevisionId") and req["RevisionId"] != fn.revision:
            raise ApiError(412, "PreconditionFailedException",
                           "The Revision Id provided does not match the latest Revision Id. "
                           "Call the GetFunction/GetAlias API to retrieve the latest Revision Id")
        if "Environment" in req:
            variables = (req["Environment"] or {}).get("Variables") or {}
            bad = sorted(k for k in variables if k in RESERVED_ENV)
            if bad:
                raise ApiError(400, "InvalidParameterValueException",
                               "Lambda was unable to configure your environment variables "
                               "because the environment variables you have provided contains "
                               "reserved keys that are currently not supported for modification. "
                               f"Reserved keys used in this request: {', '.join(bad)}")
            # As on AWS: the map sent replaces the function's variables (read-modify-write to merge).
            fn.variables = {str(k): str(v) for k, v in variables.items()}
        if "Timeout" in req:
            t = int(req["Timeout"])
            if not 1 <= t <= 900:
                raise ApiError(400, "InvalidParameterValueException",
                               f"Timeout must be between 1 and 900 seconds, got {t}")
            fn.timeout = t
        if "MemorySize" in req:
            mem = int(req["MemorySize"])
            if not 128 <= mem <= 10240:
                raise ApiError(400, "InvalidParameterValueException",
                               f"MemorySize must be between 128 and 10240 MB, got {mem}")
            fn.memory = mem
        if "Description" in req:
            fn.description = str(req["Description"])
        fn.revision = str(uuid.uuid4())
        fn.last_modified = _now_iso()
        self.gw.save_state()
        fn.reconfigure()
        LOG.info("%s: configuration updated (generation %d)", fn.name, fn.generation)
        return fn.configuration()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    build = Path(os.environ.get("VIDNOTES_STACK_DIR", REPO / "build" / "stack"))
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=env("VIDNOTES_FUNCTIONS_CONFIG",
                                           str(REPO / "functions" / "functions.json")))
    p.add_argument("--root", default=str(REPO), help="base of relative function dirs; PYTHONPATH")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(env("VIDNOTES_LAMBDA_PORT", "9001")))
    p.add_argument("--base-port", type=int,
                   default=int(env("VIDNOTES_FUNCTION_BASE_PORT", "9101")),
                   help="first function port; each process takes two (RIE, runtime API)")
    p.add_argument("--endpoint-url", default=env(
        "VIDNOTES_AWS_ENDPOINT_URL", f"http://127.0.0.1:{env('VIDNOTES_LOCALSTACK_PORT', '4566')}"))
    p.add_argument("--region", default=env("AWS_DEFAULT_REGION", "us-east-1"))
    p.add_argument("--account-id", default="000000000000")
    p.add_argument("--state-dir", default=str(build / "state"))
    p.add_argument("--log-dir", default=str(build / "logs"))
    p.add_argument("--run-dir", default=str(build / "run"))
    p.add_argument("--rie", default=str(Path(env("VIDNOTES_STACK_BIN", REPO / "build" / "stack" / "bin"))
                                        / "aws-lambda-rie"))
    p.add_argument("--python", default=sys.executable, help="python that has awslambdaric")
    p.add_argument("--queue-timeout", type=float, default=None,
                   help="seconds an invocation waits for a free process (default: the "
                        "function's queue_timeout, else its timeout)")
    p.add_argument("--rie-log-level", default=env("VIDNOTES_RIE_LOG_LEVEL", "info"))
    p.add_argument("--runner", choices=("process", "docker"), default=env("VIDNOTES_RUNNER", "process"),
                   help="process: RIE processes on the host; docker: the functions' images")
    p.add_argument("--container-endpoint-url", default=env("VIDNOTES_CONTAINER_ENDPOINT_URL"),
                   help="the AWS endpoint as containers see it (docker runner; default "
                        "--endpoint-url)")
    return p.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gw = Gateway(args)
    server = ThreadingHTTPServer((args.host, args.port), type("H", (Handler,), {"gw": gw}))
    server.daemon_threads = True
    stopping = threading.Event()

    def on_signal(signum, _frame):
        if not stopping.is_set():
            stopping.set()
            LOG.info("signal %d: stopping", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        t0 = time.monotonic()
        gw.start()
        LOG.info("listening on http://%s:%d (%d functions, started in %.2f s)", args.host,
                 args.port, len(gw.functions), time.monotonic() - t0)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        gw.stop()
        LOG.info("stopped")


if __name__ == "__main__":
    serve(parse_args())
