"""Where the time of `vidnotes transcribe` goes: VAD, features, encoder, decoder, Python.

Wraps the model's calls with timers (no other change) and transcribes the audio of a benchmark
set (bench/asr_sets.py) once after a warm-up: seconds and shares of the VAD, the log-mel
features, the encoder calls, the decoder calls (ONNX Runtime) and everything else (the decoding
loop's Python and numpy: logit filters, softmax, cache bookkeeping). Writes
bench/results/profile-<set>.json and prints a table.

Usage: python bench/profile_asr.py [--set varied-en] [--threads 2] [--batch 8] [--model-version V]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr_sets import SETS, build_set  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def profile(set_name: str, threads: int, batch: int, version: str | None) -> dict:
    import vidnotes.asr as asr
    from vidnotes.asr import TranscriptionOptions, WhisperOnnx
    from vidnotes.audio import decode_audio
    from vidnotes.store import default_store
    from vidnotes.vad import SileroVad

    store = default_store()
    wav, _reference, duration, _language = build_set(set_name)[0]
    audio = decode_audio(wav)
    model_dir, manifest = store.fetch("whisper", version)
    vad = SileroVad.from_store(store)
    model = WhisperOnnx(model_dir, threads=threads, vad=vad)
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
                calls[name] += 1

        return wrapper

    model.encode = timed("encoder", model.encode)
    model._step = timed("decoder", model._step)
    vad.speech = timed("vad", vad.speech)
    asr.log_mel_batch = timed("features", asr.log_mel_batch)
    opts = TranscriptionOptions(batch_size=batch)
    model.transcribe(audio[: 30 * 16000], opts)  # warm-up
    spent.clear()
    calls.clear()
    t0 = time.perf_counter()
    stats: dict = {}
    transcript = model.transcribe(audio, opts, stats=stats)
    total = time.perf_counter() - t0
    parts = {k: round(v, 3) for k, v in spent.items()}
    parts["python"] = round(total - sum(spent.values()), 3)
    return {
        "set": set_name,
        "model": manifest["version"],
        "audio_seconds": round(duration, 1),
        "threads": threads,
        "batch": batch,
        "total_s": round(total, 3),
        "parts_s": parts,
        "calls": dict(calls),
        "tokens": sum(len(model.tokenizer.tokenizer.encode(s.text).ids) for s in transcript.segments),
        "stats": stats,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="varied-en", choices=sorted(SETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--model-version")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    r = profile(args.set, args.threads, args.batch, args.model_version)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"profile-{args.set}.json").write_text(json.dumps(r, indent=2) + "\n")
    print(f"{r['audio_seconds']} s of {r['set']}, {r['model']}, {r['threads']} threads, batch {r['batch']}: {r['total_s']:.2f} s")
    for k, v in sorted(r["parts_s"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:10s} {v:7.3f} s  {v / r['total_s']:6.1%}  ({r['calls'].get(k, '-')} calls)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
