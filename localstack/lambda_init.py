#!/usr/bin/env python3
"""Stand-in for LocalStack's Lambda init (/var/rapid/init), Python standard library only.

LocalStack Community starts each zip function in a container whose entrypoint is its own init, a Go
fork of the AWS Runtime Interface Emulator downloaded from GitHub on first use. GitHub is unreachable
here, so LocalStack copies this file in instead (LAMBDA_INIT_BIN_PATH, see docs/localstack-lambda.md). Like the
Go init it serves LocalStack's POST /invoke on :9563 and calls back $LOCALSTACK_RUNTIME_ENDPOINT
(status/<id>/ready|error, invocations/<req>/logs then /response|/error), and runs
`python3 -m awslambdaric $_HANDLER` in /var/task as sbx_user1051 against a Lambda Runtime API on
127.0.0.1:9001. Past AWS_LAMBDA_FUNCTION_TIMEOUT it kills the runtime, answers "Task timed out after
N.00 seconds" and starts a new one; logs are START, the runtime's output, END and REPORT.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from queue import Empty, Queue
from typing import Any

ENV = dict(os.environ)
UPSTREAM, RUNTIME_ID = ENV["LOCALSTACK_RUNTIME_ENDPOINT"], ENV["LOCALSTACK_RUNTIME_ID"]
RUNTIME_API, TIMEOUT_S = ("127.0.0.1", 9001), int(ENV.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
USER, UID, GID = ENV.get("LOCALSTACK_USER", "sbx_user1051"), 993, 990  # ids as in the Go init
PYTHON = "/var/lang/bin/python3" if os.path.exists("/var/lang/bin/python3") else sys.executable
PUBLIC = {"LOCALSTACK_HOSTNAME", "LOCALSTACK_FUNCTION_ACCOUNT_ID"}  # other LOCALSTACK_* are the init's own
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
LOG_LOCK, LOGS, INVOKE_LOCK = threading.Lock(), bytearray(), threading.Lock()
Event = tuple[str, str, bytes]  # kind (next|response|error|init_error|exit), request id, body


def post(path: str, body: bytes) -> None:
    try:
        DIRECT.open(urllib.request.Request(UPSTREAM + path, body, {"Content-Type": "application/json"}), timeout=30)
    except OSError as e:
        print(f"[init] POST {path}: {e}", file=sys.stderr, flush=True)


def emit(data: bytes) -> None:  # into the invocation's logs and the container's output
    with LOG_LOCK:
        LOGS.extend(data)
        os.write(1, data)


def error_doc(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class Runtime:
    """One `python3 -m awslambdaric` process; its Runtime API calls arrive on `events`."""

    def __init__(self) -> None:
        self.events: Queue[Event] = Queue()
        self.invokes: Queue[dict[str, Any]] = Queue()
        self.started, self.eof = time.monotonic(), False
        self.fd, wfd = os.pipe()
        env = {k: v for k, v in ENV.items() if k in PUBLIC or not (k.startswith("LOCALSTACK_") or k in ("HOME", "HOSTNAME"))}
        env["AWS_LAMBDA_RUNTIME_API"] = "%s:%d" % RUNTIME_API
        ids: dict[str, Any] = dict(user=UID, group=GID, extra_groups=[]) if STATE.as_user else {}
        self.proc = subprocess.Popen([PYTHON, "-m", "awslambdaric", ENV.get("_HANDLER", "")], cwd="/var/task",
                                     env=env, stdin=subprocess.DEVNULL, stdout=wfd, stderr=wfd,
                                     start_new_session=True, **ids)
        os.close(wfd)
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self.events.put(("exit", "", b"%d" % self.proc.wait())), daemon=True).start()

    def _pump(self) -> None:
        while not self.eof:
            select.select([self.fd], [], [])
            with LOG_LOCK:  # read and store under the lock: drain() sees either unread bytes or stored ones
                chunk = os.read(self.fd, 65536)
                LOGS.extend(chunk)
                os.write(1, chunk)
                if not chunk:
                    self.eof = True
                    os.close(self.fd)

    def drain(self, wait_s: float = 0.5) -> None:
        """Returns once all the runtime wrote before this call (e.g. before posting its result) is in LOGS."""
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            with LOG_LOCK:
                if self.eof or not select.select([self.fd], [], [], 0)[0]:
                    return
            time.sleep(0.002)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.drain()


class Api(BaseHTTPRequestHandler):
    """The Runtime API on loopback, LocalStack's /invoke on the container's address."""
    protocol_version = "HTTP/1.1"  # keep-alive and 100-continue for the runtime's libcurl ...
    disable_nagle_algorithm = True  # ... without 40 ms delayed-ACK stalls (headers and body are 2 writes)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.server.server_address != RUNTIME_API or not self.path.endswith("/invocation/next"):
            return self.reply(404)
        rt = STATE.runtime
        rt.events.put(("next", "", b""))
        inv = rt.invokes.get()
        self.reply(200, inv["payload"].encode(), {
            "Content-Type": "application/json", "Lambda-Runtime-Aws-Request-Id": inv["invoke-id"],
            "Lambda-Runtime-Deadline-Ms": str(inv["deadline-ms"]), "Lambda-Runtime-Trace-Id": inv.get("trace-id", ""),
            "Lambda-Runtime-Invoked-Function-Arn": inv["invoked-function-arn"]})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.server_address != RUNTIME_API:  # LocalStack: accept, work in the background
            if self.path != "/invoke":
                return self.reply(404)
            self.reply(200, b"OK")
            threading.Thread(target=invoke, args=(json.loads(body),), daemon=True).start()
            return
        parts = self.path.split("/")  # /2018-06-01/runtime/{init/error | invocation/<id>/response|error}
        kind, rid = ("init_error", "") if parts[-2:] == ["init", "error"] else (parts[-1], parts[-2])
        if kind not in ("init_error", "response", "error"):
            return self.reply(404)
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type") or "Unknown"
        STATE.runtime.events.put((kind, rid, body or error_doc(error_type, "")))
        self.reply(202, b'{"status":"OK"}')


class STATE:
    runtime: Runtime
    as_user = False
    init_ms: float | None = None  # cold-start init time, in the first REPORT only


def invoke(req: dict[str, Any]) -> None:
    with INVOKE_LOCK:
        rid, rt, start = req["invoke-id"], STATE.runtime, time.monotonic()
        if rt.proc.poll() is not None:  # died between invocations: initialise a new one within this one
            rt = STATE.runtime = Runtime()
        emit(f"START RequestId: {rid} Version: {ENV.get('AWS_LAMBDA_FUNCTION_VERSION', '$LATEST')}\n".encode())
        rt.invokes.put(req | {"deadline-ms": int((time.time() + TIMEOUT_S) * 1000)})
        kind, body = "next", b""
        try:
            while kind == "next":  # skip the runtime's own /next calls and anything not about this request
                kind, event_rid, body = rt.events.get(timeout=max(0.0, start + TIMEOUT_S - time.monotonic()))
                kind = kind if event_rid in ("", rid) else "next"
        except Empty:
            kind = "timeout"
        ms = min(time.monotonic() - start, TIMEOUT_S) * 1000
        if kind == "timeout":
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = json.dumps({"errorMessage": f"{now} {rid} Task timed out after {TIMEOUT_S}.00 seconds"}).encode()
        elif kind == "exit":
            body = error_doc("Runtime.ExitError", f"RequestId: {rid} Error: Runtime exited with error: exit status {body.decode()}")
        restart = kind not in ("response", "error")  # timeout, crash or failed re-init
        if restart:
            rt.kill()
        else:
            rt.drain()
        memory = ENV.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        init = f"Init Duration: {STATE.init_ms:.2f} ms\t" if STATE.init_ms is not None else ""
        status = {"timeout": "Status: timeout", "exit": "Status: error", "init_error": "Status: error"}.get(kind, "")
        STATE.init_ms = None
        emit(f"END RequestId: {rid}\nREPORT RequestId: {rid}\tDuration: {ms:.2f} ms\tBilled Duration: {ms:.0f} ms\t"
             f"Memory Size: {memory} MB\tMax Memory Used: {memory} MB\t{init}{status}\n".encode())
        with LOG_LOCK:
            logs = LOGS.decode(errors="replace")
            LOGS.clear()
        post(f"/invocations/{rid}/logs", json.dumps({"logs": logs}).encode())
        post(f"/invocations/{rid}/{'response' if kind == 'response' else 'error'}", body)
        if restart:  # a fresh runtime, initialised before the next invocation arrives
            STATE.runtime = Runtime()


def prepare_sandbox() -> bool:
    """Applies LOCALSTACK_CHMOD_PATHS; as root, adds the sandbox user. True: run the runtime as that user."""
    for item in json.loads(ENV.get("LOCALSTACK_CHMOD_PATHS") or "[]"):
        for root, _, files in os.walk(item["path"]):
            for path in (root, *(os.path.join(root, f) for f in files)):
                os.chmod(path, int(item["mode"], 8))
    if os.geteuid() != 0 or USER in ("", "root"):
        return False
    for path, line in (("/etc/passwd", f"{USER}:x:{UID}:{GID}::/tmp:/sbin/nologin\n"), ("/etc/group", f"{USER}:x:{GID}:\n")):
        with open(path, "a+") as f:
            f.seek(0)
            if f"\n{USER}:" not in "\n" + f.read():
                f.write(line)
    os.chown("/tmp", UID, GID)
    return True


def main() -> None:
    STATE.as_user = prepare_sandbox()
    for address in (RUNTIME_API, ("0.0.0.0", int(ENV.get("LOCALSTACK_INTEROP_PORT", "9563")))):
        server = ThreadingHTTPServer(address, Api)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    rt = STATE.runtime = Runtime()
    signal.signal(signal.SIGTERM, lambda *_: (STATE.runtime.kill(), os._exit(0)))  # pid 1: `docker stop`
    kind, _, body = rt.events.get()
    if kind != "next":  # init failed: LocalStack returns this document for the invocation, then stops us
        rt.kill()
        post(f"/status/{RUNTIME_ID}/error", body if kind == "init_error" else error_doc(
            "Runtime.ExitError", f"Error: Runtime exited with error: exit status {body.decode()}"))
        sys.exit(1)
    STATE.init_ms = (time.monotonic() - rt.started) * 1000
    post(f"/status/{RUNTIME_ID}/ready", b"")
    threading.Event().wait()


if __name__ == "__main__":
    main()
