#!/usr/bin/env python3
"""A small client for the Airflow 3 REST API (standard library only), for scripts/demo.sh and the
tests: log in with the simple auth manager, list DAG runs, wait for the run of an upload.

    scripts/airflow_client.py wait-upload KEY [--since ISO] [--timeout 600]
        wait until the video_to_notes run for the upload KEY finishes; print its run id and state
        on one line as JSON; exit 0 if it succeeded, 1 if it failed, 2 on timeout.

Settings: VIDNOTES_AIRFLOW_URL (default http://127.0.0.1:${VIDNOTES_AIRFLOW_PORT:-8080}),
VIDNOTES_AIRFLOW_HOME (for passwords.json; default build/airflow).
"""

from __future__ import annotations

import argparse
import json
import sys

from vidnotes.airflow_client import Airflow, parse_time

__all__ = ["Airflow", "main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-upload", help="wait for the video_to_notes run of an upload")
    w.add_argument("key")
    w.add_argument("--since", help="ignore runs queued before this time (ISO 8601)")
    w.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    af = Airflow()
    since = parse_time(args.since) if args.since else None

    def progress(state, run):
        print(f"airflow: {run['dag_run_id'] if run else args.key}: {state}", file=sys.stderr)

    run = af.wait_for_upload(args.key, since=since, timeout=args.timeout, progress=progress)
    if run is None:
        print(json.dumps({"key": args.key, "state": "timeout"}))
        return 2
    failed = [f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]
              for t in af.task_instances("video_to_notes", run["dag_run_id"]) if t["state"] == "failed"]  # fmt: skip
    job_id = af.xcom("video_to_notes", run["dag_run_id"], "extract_audio", "job_id")
    status_key = af.xcom("video_to_notes", run["dag_run_id"], "record_outcome", "status_key")
    print(json.dumps({"key": args.key, "run_id": run["dag_run_id"], "state": run["state"], "job_id": job_id,
                      "failed_tasks": failed, "status_key": status_key}, ensure_ascii=False))  # fmt: skip
    return 0 if run["state"] == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
