"""Long videos: the transcribe stage fanned out over batches of chunks vs one invocation, through
the local stack (LocalStack S3 + the Lambda gateway) and Airflow.

Audio: about 20 minutes of real speech, the eligible Asterisk prompts (16 kHz, one speaker) joined
with 0.8 s pauses and repeated until 20 minutes are reached, muxed with ffmpeg into an MP4 (a still
picture + AAC), uploaded to the inbox bucket. Then, on one stack started for the benchmark (free
ports, its own directories; stopped at the end):

1. extract_audio once (chunks at silences, <= 30 s each; batches of VIDNOTES_CHUNKS_PER_BATCH);
2. warm-up: one small transcribe call on each transcribe process (model load is not measured);
3. single: one transcribe invocation with every chunk (the payload limit is 64 chunks);
4. fan-out, direct: one invocation per batch, all at once (threads), as the DAG's mapped tasks do;
5. fan-out through Airflow: scripts/airflow.sh up, the upload again under a new key (same content,
   so extraction is skipped as a duplicate), the video_to_notes run started by the SQS watcher;
   the transcribe phase is first mapped task start -> last mapped task end (REST API).

WER of each transcript against the prompts' reference text (vidnotes.wer) shows that cutting the
talk into batches costs no accuracy. Writes bench/results/fanout.json and fanout.md.

Usage: python bench/bench_fanout.py [--minutes 20] [--pause 0.8] [--no-airflow]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from airflow_client import Airflow  # noqa: E402

from stackutil import airflow_up, client, drain_queue, function_processes, stack_up  # noqa: E402


def build_audio(minutes: float, pause: float, out: Path) -> tuple[Path, str, float, int]:
    from vidnotes.audio import decode_audio
    from vidnotes.datasets import eligible, read_transcripts

    recs = eligible(read_transcripts())
    gap = np.zeros(int(pause * 16000), dtype=np.float32)
    parts, texts, total, used = [], [], 0.0, 0
    while total < minutes * 60:
        for r in recs:
            a = decode_audio(r.path, input_format="g722")
            parts += [a, gap]
            texts.append(r.text)
            total += (len(a) + len(gap)) / 16000
            used += 1
            if total >= minutes * 60:
                break
    audio = np.concatenate(parts)
    wav = out.with_suffix(".wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "color=c=0x1d3557:s=320x240:r=1", "-i", str(wav),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-shortest", str(out)],
        check=True, timeout=600,
    )  # fmt: skip
    wav.unlink()
    return out, " ".join(texts), len(audio) / 16000, used


def invoke(lam, function: str, payload: dict) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = lam.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    body = json.loads(r["Payload"].read())
    took = time.perf_counter() - t0
    if r.get("FunctionError"):
        raise RuntimeError(f"{function} failed: {body.get('errorMessage')}")
    return body, took


def transcript_text(s3, job_id: str, chunks: list[int] | None = None) -> str:
    """The job's segments files, merged in time order (what summarize would write)."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vidnotes-results", Prefix=f"jobs/{job_id}/segments/").get("Contents", [])]
    segs = []
    for k in keys:
        part = json.loads(s3.get_object(Bucket="vidnotes-results", Key=k)["Body"].read())
        if chunks is None or set(part["chunks"]) <= set(chunks):
            segs += part["segments"]
    return " ".join(s["text"].strip() for s in sorted(segs, key=lambda s: s["start"]))


def clear_segments(s3, job_id: str) -> None:
    for o in s3.list_objects_v2(Bucket="vidnotes-results", Prefix=f"jobs/{job_id}/segments/").get("Contents", []):
        s3.delete_object(Bucket="vidnotes-results", Key=o["Key"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--pause", type=float, default=0.8)
    ap.add_argument("--no-airflow", action="store_true", help="skip the run through Airflow")
    args = ap.parse_args(argv)
    from vidnotes.wer import wer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    functions = json.loads((REPO / "functions" / "functions.json").read_text())
    concurrency = functions["functions"]["vidnotes-transcribe"].get("concurrency", functions["defaults"].get("concurrency", 1))
    per_batch = int(functions["defaults"]["environment"].get("VIDNOTES_CHUNKS_PER_BATCH", 8))
    result: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "transcribe_processes": concurrency,
        "chunks_per_batch": per_batch,
        "vidnotes_threads": os.environ.get("VIDNOTES_THREADS") or "all cores (ONNX Runtime default)",
    }
    with tempfile.TemporaryDirectory(prefix="vidnotes-bench-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        video, reference, seconds, prompts = build_audio(args.minutes, args.pause, tmp / "long-talk.mp4")
        result["audio"] = {"seconds": round(seconds, 1), "prompts": prompts, "pause_s": args.pause,
                           "mp4_bytes": video.stat().st_size, "build_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        print(f"bench: {seconds / 60:.1f} min of speech ({prompts} prompts) -> {video.stat().st_size / 2**20:.1f} MiB MP4", file=sys.stderr)
        models = Path(os.environ.get("VIDNOTES_MODELS_DIR", REPO / "models"))
        assert function_processes() >= 2
        subprocess.run([str(REPO / "localstack" / "setup.sh")], check=True, timeout=900)
        with stack_up(tmp / "stack", models=models) as stack:
            s3, lam = client("s3", stack["s3"]), client("lambda", stack["lambda"], read_timeout=900)
            key = "bench/long talk.mp4"
            s3.upload_file(str(video), "vidnotes-inbox", key)
            ext, took = invoke(lam, "vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": key})
            job, batches = ext["job_id"], ext["batches"]
            all_chunks = list(range(ext["chunks"]))
            result["extract"] = {"seconds": round(took, 2), "chunks": ext["chunks"], "batches": [len(b) for b in batches]}
            print(f"bench: extract_audio {took:.1f} s: {ext['chunks']} chunks, {len(batches)} batches", file=sys.stderr)
            assert len(all_chunks) <= 64, "one invocation takes at most 64 chunks"

            with ThreadPoolExecutor(concurrency) as pool:  # every transcribe process loads its model
                list(pool.map(lambda _: invoke(lam, "vidnotes-transcribe", {"job_id": job, "chunks": [0]}), range(concurrency)))
            clear_segments(s3, job)

            _, single = invoke(lam, "vidnotes-transcribe", {"job_id": job, "chunks": all_chunks})
            single_text = transcript_text(s3, job)
            clear_segments(s3, job)
            print(f"bench: single invocation of {len(all_chunks)} chunks: {single:.1f} s", file=sys.stderr)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(batches)) as pool:
                per_call = [t for _, t in pool.map(lambda b: invoke(lam, "vidnotes-transcribe", {"job_id": job, "chunks": b}), batches)]
            fanout = time.perf_counter() - t0
            fan_text = transcript_text(s3, job)
            print(f"bench: fan-out, {len(batches)} invocations at once: {fanout:.1f} s", file=sys.stderr)
            result["single"] = {"invocations": 1, "chunks": len(all_chunks), "wall_s": round(single, 2), "rtf": round(single / seconds, 4),
                                "wer": round(wer([reference], [single_text]), 4)}  # fmt: skip
            result["fanout_direct"] = {"invocations": len(batches), "parallel": min(len(batches), concurrency), "wall_s": round(fanout, 2),
                                       "rtf": round(fanout / seconds, 4), "per_invocation_s": [round(t, 2) for t in per_call],
                                       "wer": round(wer([reference], [fan_text]), 4), "speedup": round(single / fanout, 2)}  # fmt: skip

            if not args.no_airflow:
                drain_queue(stack["s3"])
                with airflow_up(stack, tmp / "airflow") as af:
                    api = Airflow(af["url"], tmp / "airflow")
                    since = datetime.now(timezone.utc)
                    key2 = "bench/long talk (airflow).mp4"
                    t0 = time.perf_counter()
                    s3.upload_file(str(video), "vidnotes-inbox", key2)
                    run = api.wait_for_upload(key2, since=since, timeout=1500)
                    total = time.perf_counter() - t0
                    assert run is not None and run["state"] == "success", run
                    tis = api.task_instances("video_to_notes", run["dag_run_id"])
                print(f"bench: through Airflow, upload -> PDF {total:.1f} s", file=sys.stderr)

                def ts(v: str) -> float:
                    return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()

                tr = [t for t in tis if t["task_id"] == "transcribe"]
                phase = max(ts(t["end_date"]) for t in tr) - min(ts(t["start_date"]) for t in tr)
                result["fanout_airflow"] = {
                    "mapped_tasks": len(tr),
                    "transcribe_phase_s": round(phase, 2),
                    "speedup": round(single / phase, 2),
                    "upload_to_pdf_s": round(total, 1),
                    "tasks_s": {(f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]): round(t["duration"] or 0, 2)
                                for t in tis},  # fmt: skip
                    "wer": round(wer([reference], [transcript_text(s3, job)]), 4),
                }
    write_results("fanout", result, render_md(result))
    return 0


def write_results(name: str, result: dict, md: str) -> None:
    """bench/results/<name>.json and .md; the table printed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


def render_md(r: dict) -> str:
    a, s, f = r["audio"], r["single"], r["fanout_direct"]
    lines = [
        "# Transcribe fan-out vs one invocation (`bench/bench_fanout.py`)",
        "",
        f"{a['seconds'] / 60:.1f} minutes of real speech ({a['prompts']} Asterisk prompts, {a['pause_s']} s pauses) as an MP4; "
        f"{r['extract']['chunks']} chunks, {r['chunks_per_batch']} per batch -> {len(r['extract']['batches'])} batches; "
        f"{r['transcribe_processes']} transcribe processes; ONNX Runtime threads per process: {r['vidnotes_threads']}; "
        f"machine: {r['machine']['cpus']} CPUs ({r['date']}).",
        "",
        "| transcribe | invocations | wall s | RTF | speedup vs single | WER |",
        "|---|---|---|---|---|---|",
        f"| single invocation, all chunks | 1 | {s['wall_s']} | {s['rtf']} | 1.0x | {s['wer']:.2%} |",
        f"| fan-out, direct (invocations at once) | {f['invocations']} | {f['wall_s']} | {f['rtf']} | {f['speedup']}x | {f['wer']:.2%} |",
    ]
    if "fanout_airflow" in r:
        af = r["fanout_airflow"]
        lines.append(
            f"| fan-out through Airflow (mapped tasks, first start -> last end) | {af['mapped_tasks']} | {af['transcribe_phase_s']} | "
            f"{round(af['transcribe_phase_s'] / a['seconds'], 4)} | {af['speedup']}x | {af['wer']:.2%} |"
        )
        lines += ["", f"Through Airflow, upload -> PDF (watcher, all tasks): {af['upload_to_pdf_s']} s. Task durations: "
                  + ", ".join(f"{k} {v} s" for k, v in af["tasks_s"].items()) + "."]  # fmt: skip
    lines += [
        "",
        f"Each fanned-out invocation took {', '.join(str(t) for t in f['per_invocation_s'])} s. "
        "All transcribe processes were warmed up first (model loaded), so the numbers are decoding and I/O only.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
