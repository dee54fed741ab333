"""How long the notes take, and what they look like, for a 3-, a 10- and a 60-minute talk.

The talks are real prose (the Debian Administrator's Handbook and the Python documentation, as in
bench/chapters_data.py): the 3-minute one from one document, the others from 4 and 15 documents of
distinct topics, and a 60-minute Russian one (the handbook's Russian translation, manpages-ru), as transcripts with synthetic times (0.4 s a word, 0.5 s between sentences). Each
goes through the summarize stage exactly as the Lambda function runs it (vidnotes.stages.summarize
on a job prefix: merge the segment files, write the transcript in four formats, build notes.json),
with the model store's MiniLM loaded once beforehand (a warm function) and, separately, including
the load (a cold start), then through render_pdf (PDF, Markdown, chapters track). Runs are
repeated and interleaved; medians and ranges are reported.

Writes bench/results/notes.json and notes.md; with --pages DIR, PNG renderings of the PDFs'
pages (pdftoppm) for looking at them.

Usage: python bench/bench_notes.py [--runs 3] [--pages docs/notes-pages] [--store models]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
RESULTS = REPO / "bench" / "results"
TALKS = {"3min": (1, 180.0, "en"), "10min": (4, 600.0, "en"), "60min": (15, 3600.0, "en"), "60min-ru": (15, 3600.0, "ru")}  # documents, seconds, language


def make_transcript(n_docs: int, seconds: float, lang: str = "en", seed: int = 7) -> dict:
    """Sentences of ``n_docs`` documents of distinct groups, in turn, until the talk lasts ``seconds``."""
    import chapters_data as cd

    rng = random.Random(seed)
    docs = [d for d in (cd.english_docs() if lang == "en" else cd.prose_docs(lang)) if len(d.sentences) >= 25]
    rng.shuffle(docs)
    picked, groups = [], set()
    for d in docs:
        if d.group not in groups:
            picked.append(d)
            groups.add(d.group)
        if len(picked) == n_docs:
            break
    per_doc = seconds / n_docs
    t, segs = 0.0, []
    for d in picked:
        t_doc = t
        for s in d.sentences:
            dur = cd.SECONDS_PER_WORD * len(s.split())
            segs.append({"start": round(t, 3), "end": round(t + dur, 3), "text": s})
            t += dur + 0.5
            if t - t_doc >= per_doc:
                break
    return {"language": lang, "duration": round(t, 3), "model": "reference-text", "segments": segs, "sources": [d.id for d in picked]}


def job_with(results, transcript: dict, name: str) -> str:  # noqa: ANN001
    from vidnotes import jobs

    job = jobs.Layout(("%016x" % (hash(name) & (2**64 - 1)))[:16])
    dur = transcript["duration"]
    jobs.put_json(results, job.chunks, [{"index": 0, "key": job.chunk(0), "start": 0.0, "end": dur}])
    jobs.put_json(results, job.segments(0), {"job_id": job.job_id, "chunks": [0], "model": "whisper/reference-text", "language": transcript["language"], "segments": transcript["segments"]})
    jobs.put_json(results, job.source, {"input": {"bucket": "bench", "key": f"{name}.mp4", "uri": f"bench/{name}.mp4"}, "duration": dur})
    return job.job_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per talk (default: %(default)s)")
    ap.add_argument("--store", default=os.environ.get("VIDNOTES_MODEL_STORE", str(REPO / "models")))
    ap.add_argument("--pages", type=Path, help="also write PNG pages of each PDF here")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vidnotes import jobs, stages
    from vidnotes.storage import LocalStorage
    from vidnotes.store import ModelStore
    from vidnotes.summarize import load_notes_builder

    store = ModelStore(args.store)
    transcripts = {name: make_transcript(n, s, lang) for name, (n, s, lang) in TALKS.items()}
    tmp = Path(tempfile.mkdtemp(prefix="vidnotes-bench-notes-"))
    results = LocalStorage(tmp / "results", bucket="bench")
    ids = {name: job_with(results, tr, name) for name, tr in transcripts.items()}
    t0 = time.perf_counter()
    builder = load_notes_builder(store)
    load_s = time.perf_counter() - t0
    timings: dict[str, dict[str, list[float]]] = {n: {"summarize": [], "render": []} for n in TALKS}
    for run in range(args.runs):
        for name in TALKS:  # interleaved
            req = jobs.JobRequest(job_id=ids[name])
            t = time.perf_counter()
            out = stages.summarize(req, results=results, builder=builder)
            timings[name]["summarize"].append(time.perf_counter() - t)
            t = time.perf_counter()
            stages.render_pdf(req, results=results, work=tmp)
            timings[name]["render"].append(time.perf_counter() - t)
            print(f"bench: run {run + 1}/{args.runs} {name}: summarize {timings[name]['summarize'][-1]:.2f} s "
                  f"({out.chapters} chapters), render {timings[name]['render'][-1]:.2f} s", file=sys.stderr)  # fmt: skip
    rows = []
    for name, tr in transcripts.items():
        notes = json.loads((tmp / "results" / "jobs" / ids[name] / "notes.json").read_text())
        pdf = tmp / "results" / "jobs" / ids[name] / "notes.pdf"
        pages = int(next(ln.split()[-1] for ln in subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout.splitlines() if ln.startswith("Pages:")))
        s, r = timings[name]["summarize"], timings[name]["render"]
        rows.append({
            "talk": name, "minutes": round(tr["duration"] / 60, 1), "sentences": len(tr["segments"]), "documents": len(tr["sources"]),
            "chapters": len(notes["chapters"]), "summary_sentences": len(notes["summary_sentences"]), "key_terms": len(notes["key_terms"]),
            "summarize_s": {"median": round(statistics.median(s), 2), "min": round(min(s), 2), "max": round(max(s), 2)},
            "render_s": {"median": round(statistics.median(r), 2), "min": round(min(r), 2), "max": round(max(r), 2)},
            "pdf_pages": pages, "titles": [c["title"] for c in notes["chapters"]],
        })  # fmt: skip
        if args.pages:
            args.pages.mkdir(parents=True, exist_ok=True)
            subprocess.run(["pdftoppm", "-r", "60", "-png", "-l", "3", str(pdf), str(args.pages / name)], check=True)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": builder.model, "load_s": round(load_s, 2), "runs": args.runs, "talks": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "notes.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Notes speed, {result['date']}: the summarize stage as the function runs it (merge segments, write the transcript in 4 formats, build notes.json), "
        f"MiniLM loaded once ({load_s:.2f} s, a cold start adds it), then render_pdf (PDF, Markdown, chapters track); {args.runs} interleaved runs, "
        f"{os.cpu_count()} CPUs; {builder.model}.",
        "",
        "| talk | minutes | sentences | chapters | summary sentences | key terms | summarize s (median, range) | render s (median, range) | PDF pages |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, q = r["summarize_s"], r["render_s"]
        lines.append(f"| {r['talk']} | {r['minutes']} | {r['sentences']} | {r['chapters']} | {r['summary_sentences']} | {r['key_terms']} | "
                     f"{s['median']} ({s['min']}-{s['max']}) | {q['median']} ({q['min']}-{q['max']}) | {r['pdf_pages']} |")  # fmt: skip
    lines += ["", "Chapter titles:", ""] + [f"- {r['talk']} ({r['documents']} source documents): " + "; ".join(r["titles"]) for r in rows]
    (args.out / "notes.md").write_text("\n".join(lines) + "\n")
    print(args.out / "notes.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
