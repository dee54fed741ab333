"""A talk from upload to PDF through the full local stack (LocalStack S3 + SQS, the Lambda
gateway, Airflow), with where the time goes, and ONNX Runtime's thread spinning on and off for the
transcribe processes side by side.

Audio: ``--minutes`` (default 10) of real speech, the eligible Asterisk prompts joined with 0.8 s
pauses (as ``bench/bench_fanout.py`` builds it), muxed into an MP4. On one stack started for the
benchmark (free ports, its own directories; stopped at the end):

1. extract_audio once; the chunk batches are what the DAG fans transcribe out over;
2. ``--rounds`` interleaved rounds of: for spinning on (ONNX Runtime's default) and off
   (``VIDNOTES_ORT_SPINNING=0``, what the local stack sets), the transcribe function's
   configuration updated (its processes restart), every process warmed up, then all batches at
   once (the fan-out) and one batch alone (a short talk); the ratio of the medians is the result;
3. through Airflow with the stack's default: the upload under a new key, the run started by the SQS
   watcher; the breakdown upload -> asset event -> the uploads DAG's run -> the pipeline run ->
   each task (queued, start, end), from Airflow's REST API.

Writes bench/results/e2e.json and e2e.md.

Usage: python bench/bench_e2e.py [--minutes 10] [--rounds 3] [--no-airflow]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from airflow_client import Airflow  # noqa: E402
from bench_fanout import build_audio, clear_segments, invoke, transcript_text, write_results  # noqa: E402

from stackutil import airflow_up, client, drain_queue, function_processes, stack_up  # noqa: E402

TRANSCRIBE = "vidnotes-transcribe"


def ts(v: str | None) -> float | None:
    return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() if v else None


def set_spinning(lam, value: str | None) -> None:
    """Set (or, with None, remove) VIDNOTES_ORT_SPINNING on the transcribe function and wait for the update."""
    env = dict(lam.get_function_configuration(FunctionName=TRANSCRIBE).get("Environment", {}).get("Variables", {}))
    env.pop("VIDNOTES_ORT_SPINNING", None)
    if value is not None:
        env["VIDNOTES_ORT_SPINNING"] = value
    lam.update_function_configuration(FunctionName=TRANSCRIBE, Environment={"Variables": env})
    lam.get_waiter("function_updated_v2").wait(FunctionName=TRANSCRIBE, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def spin_rounds(lam, s3, job: str, batches: list[list[int]], concurrency: int, rounds: int, reference: str) -> dict:
    from vidnotes.wer import wer

    out: dict[str, dict] = {"1": {"fanout_s": [], "one_batch_s": []}, "0": {"fanout_s": [], "one_batch_s": []}}
    for r in range(rounds):
        for spin in ("1", "0"):
            set_spinning(lam, spin)
            with ThreadPoolExecutor(concurrency) as pool:  # every process loads its model: not measured
                list(pool.map(lambda _: invoke(lam, TRANSCRIBE, {"job_id": job, "chunks": [0]}), range(concurrency)))
            clear_segments(s3, job)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(batches)) as pool:
                list(pool.map(lambda b: invoke(lam, TRANSCRIBE, {"job_id": job, "chunks": b}), batches))
            fan = time.perf_counter() - t0
            out[spin]["wer"] = round(wer([reference], [transcript_text(s3, job)]), 4)
            clear_segments(s3, job)
            _, one = invoke(lam, TRANSCRIBE, {"job_id": job, "chunks": batches[0]})
            clear_segments(s3, job)
            out[spin]["fanout_s"].append(round(fan, 2))
            out[spin]["one_batch_s"].append(round(one, 2))
            print(f"bench: round {r + 1}/{rounds}, spinning {'on' if spin == '1' else 'off'}: "
                  f"fan-out {fan:.1f} s, one batch {one:.1f} s", file=sys.stderr)  # fmt: skip
    set_spinning(lam, None)
    for v in out.values():
        v["fanout_median_s"] = round(statistics.median(v["fanout_s"]), 2)
        v["one_batch_median_s"] = round(statistics.median(v["one_batch_s"]), 2)
    return {
        "on": out["1"],
        "off": out["0"],
        "fanout_speedup_off_vs_on": round(out["1"]["fanout_median_s"] / out["0"]["fanout_median_s"], 2),
        "one_batch_speedup_off_vs_on": round(out["1"]["one_batch_median_s"] / out["0"]["one_batch_median_s"], 2),
    }


def breakdown(api: Airflow, key: str, since: datetime, uploaded_at: float, run: dict) -> dict:
    """Seconds after the upload's PUT returned: the asset event, the uploads DAG's run, the pipeline
    run and each of its tasks (queued, start, end)."""
    rel = lambda v: None if ts(v) is None else round(ts(v) - uploaded_at, 2)  # noqa: E731
    events = api.get("/api/v2/assets/events", order_by="-timestamp", limit=20).get("asset_events", [])
    events = [e for e in events if ts(e["timestamp"]) >= since.timestamp()]  # the only upload since then
    event = min(events, key=lambda e: ts(e["timestamp"])) if events else None
    uploads = [r for r in api.dag_runs("video_to_notes_uploads") if ts(r.get("queued_at") or r.get("run_after")) >= since.timestamp()]
    up = min(uploads, key=lambda r: ts(r.get("queued_at") or r["run_after"])) if uploads else None
    tasks = []
    for t in sorted(api.task_instances("video_to_notes", run["dag_run_id"]), key=lambda t: ts(t["start_date"]) or 0):
        name = f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]
        tasks.append({"task": name, "queued": rel(t.get("queued_when")), "start": rel(t["start_date"]), "end": rel(t["end_date"]),
                      "duration_s": round(t["duration"] or 0, 2), "state": t["state"]})  # fmt: skip
    return {
        "asset_event": rel(event["timestamp"]) if event else None,
        "uploads_run": {"queued": rel(up.get("queued_at")), "start": rel(up.get("start_date")), "end": rel(up.get("end_date"))} if up else None,
        "pipeline_run": {"queued": rel(run.get("queued_at")), "start": rel(run.get("start_date")), "end": rel(run.get("end_date"))},
        "tasks": tasks,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--pause", type=float, default=0.8)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of spinning on / off")
    ap.add_argument("--no-airflow", action="store_true", help="skip the run through Airflow")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stacks on kill, as on Ctrl-C
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    functions = json.loads((REPO / "functions" / "functions.json").read_text())
    concurrency = functions["functions"][TRANSCRIBE].get("concurrency", functions["defaults"].get("concurrency", 1))
    result: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "transcribe_processes": concurrency,
        "vidnotes_threads": os.environ.get("VIDNOTES_THREADS") or "all cores (ONNX Runtime default)",
    }
    with tempfile.TemporaryDirectory(prefix="vidnotes-bench-") as tmp_s:
        tmp = Path(tmp_s)
        video, reference, seconds, prompts = build_audio(args.minutes, args.pause, tmp / "talk.mp4")
        result["audio"] = {"seconds": round(seconds, 1), "prompts": prompts, "pause_s": args.pause, "mp4_bytes": video.stat().st_size}
        print(f"bench: {seconds / 60:.1f} min of speech ({prompts} prompts)", file=sys.stderr)
        assert function_processes() >= 2
        subprocess.run([str(REPO / "localstack" / "setup.sh")], check=True, timeout=900)
        models = Path(os.environ.get("VIDNOTES_MODELS_DIR", REPO / "models"))
        with stack_up(tmp / "stack", models=models) as stack:
            s3, lam = client("s3", stack["s3"]), client("lambda", stack["lambda"], read_timeout=900)
            s3.upload_file(str(video), "vidnotes-inbox", "bench/talk.mp4")
            ext, took = invoke(lam, "vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": "bench/talk.mp4"})
            job, batches = ext["job_id"], ext["batches"]
            result["extract"] = {"seconds": round(took, 2), "chunks": ext["chunks"], "batches": [len(b) for b in batches]}
            print(f"bench: {ext['chunks']} chunks in {len(batches)} batches", file=sys.stderr)
            result["spinning"] = spin_rounds(lam, s3, job, batches, concurrency, args.rounds, reference)
            if not args.no_airflow:
                # the same talk as new content (a new job: extraction and every stage run), since the
                # direct calls above left the first job "running" with no Airflow run owning it
                fresh = tmp / "talk-airflow.mp4"
                subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(video), "-c", "copy",
                                "-metadata", "comment=bench_e2e airflow", str(fresh)], check=True, timeout=120)  # fmt: skip
                drain_queue(stack["s3"])
                with airflow_up(stack, tmp / "airflow") as af:
                    api = Airflow(af["url"], tmp / "airflow")
                    time.sleep(15)  # let the first parse, the reconcile run and the watcher settle
                    since = datetime.now(timezone.utc)
                    key = "bench/talk (airflow).mp4"
                    t0 = time.perf_counter()
                    s3.upload_file(str(fresh), "vidnotes-inbox", key)
                    uploaded_at = time.time()
                    put_s = time.perf_counter() - t0
                    run = api.wait_for_upload(key, since=since, timeout=1500, poll=0.5)
                    total = time.perf_counter() - t0
                    assert run is not None and run["state"] == "success", run
                    parts = breakdown(api, key, since, uploaded_at, run)
                result["airflow"] = {"upload_put_s": round(put_s, 2), "upload_to_pdf_s": round(total, 1), **parts}
                print(f"bench: through Airflow, upload -> PDF {total:.1f} s", file=sys.stderr)
    write_results("e2e", result, render_md(result))
    return 0


def render_md(r: dict) -> str:
    a, sp = r["audio"], r["spinning"]
    lines = [
        "# A talk from upload to PDF through the local stack (`bench/bench_e2e.py`)",
        "",
        f"{a['seconds'] / 60:.1f} minutes of real speech ({a['prompts']} Asterisk prompts, {a['pause_s']} s pauses) as an MP4; "
        f"{r['extract']['chunks']} chunks in {len(r['extract']['batches'])} batches {r['extract']['batches']}; "
        f"{r['transcribe_processes']} transcribe processes, ONNX Runtime threads per process: {r['vidnotes_threads']}; "
        f"machine: {r['machine']['cpus']} CPUs ({r['date']}).",
        "",
        "## ONNX Runtime thread spinning in the transcribe processes (interleaved rounds, models loaded)",
        "",
        "| spinning | fan-out: all batches at once, s | median | one batch alone, s | median | WER |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("on", "off"):
        v = sp[name]
        lines.append(f"| {name} | {', '.join(map(str, v['fanout_s']))} | {v['fanout_median_s']} | "
                     f"{', '.join(map(str, v['one_batch_s']))} | {v['one_batch_median_s']} | {v['wer']:.2%} |")  # fmt: skip
    lines += ["", f"Spinning off vs on: fan-out {sp['fanout_speedup_off_vs_on']}x, one batch {sp['one_batch_speedup_off_vs_on']}x "
              "(on / off of the medians; above 1 means off is faster)."]  # fmt: skip
    if "airflow" in r:
        af = r["airflow"]
        lines += [
            "",
            "## Through Airflow (the stack's default: spinning off)",
            "",
            f"Upload -> PDF **{af['upload_to_pdf_s']} s** (the upload's PUT took {af['upload_put_s']} s). Seconds after the PUT returned:",
            "",
            "| step | queued | start | end | duration s |",
            "|---|---|---|---|---|",
            f"| asset event (SQS watcher) | | {af['asset_event']} | | |",
        ]
        if af.get("uploads_run"):
            u = af["uploads_run"]
            lines.append(f"| video_to_notes_uploads run | {u['queued']} | {u['start']} | {u['end']} | |")
        p = af["pipeline_run"]
        lines.append(f"| video_to_notes run | {p['queued']} | {p['start']} | {p['end']} | |")
        for t in af["tasks"]:
            lines.append(f"| {t['task']} | {t['queued']} | {t['start']} | {t['end']} | {t['duration_s']} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
