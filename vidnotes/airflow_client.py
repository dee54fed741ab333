"""A small client for the Airflow 3 REST API (standard library only): log in with the simple auth
manager, list DAG runs and task instances, read XComs, wait for the run of an upload. Used by
scripts/airflow_client.py (make demo), the web page (vidnotes.web), the tests and the benchmarks.

Settings: VIDNOTES_AIRFLOW_URL (default http://127.0.0.1:${VIDNOTES_AIRFLOW_PORT:-8080}),
VIDNOTES_AIRFLOW_HOME (for passwords.json; default build/airflow).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FINISHED = {"success", "failed"}


class Airflow:
    def __init__(self, url: str | None = None, home: str | Path | None = None, user: str = "admin", timeout: float = 30) -> None:
        self.url = (url or os.environ.get("VIDNOTES_AIRFLOW_URL") or f"http://127.0.0.1:{os.environ.get('VIDNOTES_AIRFLOW_PORT', '8080')}").rstrip("/")
        self.home = Path(home or os.environ.get("VIDNOTES_AIRFLOW_HOME") or REPO / "build" / "airflow")
        self.user = user
        self._token: str | None = None
        self.timeout = timeout

    def token(self) -> str:
        if self._token is None:
            password = json.loads((self.home / "passwords.json").read_text())[self.user]
            body = self._request("POST", "/auth/token", {"username": self.user, "password": password}, auth=False)
            self._token = body["access_token"]
        return self._token

    def _request(self, method: str, path: str, data: dict | None = None, *, auth: bool = True, retry: bool = True) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.url + path, method=method, headers=headers, data=json.dumps(data).encode() if data is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if not (auth and e.code == 401 and retry):
                raise
        self._token = None  # expired (a long-running client such as the web page): log in again
        return self._request(method, path, data, auth=auth, retry=False)

    def get(self, path: str, **params) -> dict:
        query = ("?" + urllib.parse.urlencode(params, doseq=True)) if params else ""
        return self._request("GET", path + query)

    def health(self) -> dict:
        return self._request("GET", "/api/v2/monitor/health", auth=False)

    def dag_runs(self, dag_id: str, **params) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="-run_after", limit=100, **params)["dag_runs"]

    def trigger(self, dag_id: str, conf: dict | None = None) -> dict:
        """Start a run of ``dag_id`` now (as the UI's trigger button does); the new run."""
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})

    def wait_run(self, dag_id: str, run_id: str, *, timeout: float = 120, poll: float = 1.0) -> dict | None:
        """Wait until the run finishes; the run, or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
            if run["state"] in FINISHED:
                return run
            time.sleep(poll)
        return None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        run = urllib.parse.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances", limit=100)["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1):
        """An XCom's value, or None when there is none."""
        q = urllib.parse.quote
        path = f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{q(key, safe='')}"
        try:
            return self.get(path, map_index=map_index, deserialize="true", stringify="false")["value"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def run_for_upload(self, key: str, *, since: datetime | None = None, dag_id: str = "video_to_notes") -> dict | None:
        """The newest run of the pipeline whose conf names ``key`` (and began after ``since``)."""
        for run in self.dag_runs(dag_id):
            if (run.get("conf") or {}).get("key") != key:
                continue
            if since and parse_time(run.get("run_after") or run.get("queued_at")) < since:
                continue
            return run
        return None

    def wait_for_upload(self, key: str, *, since: datetime | None = None, timeout: float = 600, poll: float = 2.0, progress=None) -> dict | None:
        """Wait until the run for ``key`` finishes; the run, or None on timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                run = self.run_for_upload(key, since=since)
            except (urllib.error.URLError, OSError) as e:  # the API restarting, or busy
                run, state = None, f"API: {e}"
            else:
                state = run["state"] if run else "waiting for the run"
            if progress and state != last:
                progress(state, run)
                last = state
            if run and run["state"] in FINISHED:
                return run
            time.sleep(poll)
        return None


def parse_time(value: str | None) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
