"""A fault-injecting HTTP proxy for S3 on loopback: tests put it between a Lambda function and
LocalStack (the function's ``AWS_ENDPOINT_URL`` points at it) and arm rules that answer
``503 SlowDown``, reset the connection, or hold a request until the test lets it go, for the first
N requests that match. Everything else is passed through unchanged.

One listening port per label (e.g. per function), so a rule can target what one function does.
Standard library only; every thread it starts is a daemon and ``close()`` stops the servers.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from stackutil import gateway_module

ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>faultproxy</RequestId></Error>"
)
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>faultproxy</RequestId></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "expect"}


@dataclass
class Rule:
    """Act on the first ``times`` requests of ``label`` whose method matches and whose decoded
    path (+ query) matches ``pattern`` (re.search)."""

    label: str
    method: str
    pattern: str
    # "slowdown": 503 SlowDown; "forbidden": 403 AccessDenied (what IAM answers outside a policy);
    # "reset": TCP RST, no answer; "truncate": the real answer, cut after
    # half its body (the connection drops mid-download); "hold": wait for release, then pass or reset
    action: str
    times: int = 1
    hold_seconds: float = 30.0  # "hold": the longest a request is held
    then: str = "pass"  # "hold": what follows the hold ("pass" or "reset")
    hits: int = 0
    fired: threading.Event = field(default_factory=threading.Event)  # set on the first hit
    release: threading.Event = field(default_factory=threading.Event)  # "hold": let the request go

    def matches(self, label: str, method: str, target: str) -> bool:
        return self.hits < self.times and label == self.label and method == self.method and re.search(self.pattern, target) is not None


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str, int | str]] = []  # (label, method, target, status or action)
        self._lock = threading.Lock()
        self._servers: dict[str, ThreadingHTTPServer] = {}

    # -- set-up ---------------------------------------------------------------------------------
    def listen(self, label: str) -> str:
        """A new port for ``label``; its URL."""
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy, Handler.label = proxy, label
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name=f"faultproxy-{label}").start()
        self._servers[label] = server
        return f"http://127.0.0.1:{server.server_address[1]}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def close(self) -> None:
        for rule in self.rules:
            rule.release.set()
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    # -- per request ------------------------------------------------------------------------------
    def decide(self, label: str, method: str, target: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(label, method, target):
                    rule.hits += 1
                    return rule
        return None

    def record(self, label: str, method: str, target: str, outcome: int | str) -> None:
        with self._lock:
            self.log.append((label, method, target, outcome))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy
    label: str

    def log_message(self, format: str, *args: object) -> None:  # quiet: the proxy keeps its own log
        pass

    def _body(self) -> bytes:
        return gateway_module().read_request_body(self)  # the gateway's reader: chunked or Content-Length

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer"
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _handle(self) -> None:
        body = self._body()
        target = unquote(self.path)
        rule = self.proxy.decide(self.label, self.command, target)
        if rule is not None:
            rule.fired.set()
            if rule.action in ("slowdown", "forbidden"):
                self.proxy.record(self.label, self.command, target, rule.action)
                status, doc = (503, SLOW_DOWN) if rule.action == "slowdown" else (403, ACCESS_DENIED)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(doc)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(doc)
                return
            if rule.action == "reset":
                self.proxy.record(self.label, self.command, target, "reset")
                return self._reset()
            if rule.action == "hold":
                self.proxy.record(self.label, self.command, target, "hold")
                rule.release.wait(rule.hold_seconds)
                if rule.then == "reset":
                    return self._reset()
        self._forward(body, target, truncate=rule is not None and rule.action == "truncate")

    def _forward(self, body: bytes, target: str, *, truncate: bool = False) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=120)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            self.proxy.record(self.label, self.command, target, f"upstream error {e}")
            return self._reset()
        finally:
            conn.close()
        self.proxy.record(self.label, self.command, target, "truncate" if truncate else resp.status)
        try:
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if truncate:  # half the body, then FIN: the client reads the headers, then an early EOF
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_WR)
                return
            if self.command != "HEAD" and data:
                self.wfile.write(data)
        except OSError:  # the client went away (a killed function): nothing to answer
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns a true value; that value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
