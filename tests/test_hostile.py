"""Hostile input (docs/reliability.md): object keys with '..', control characters and shell syntax,
media that makes ffmpeg fail, read other files or outgrow its limits, transcripts that look like
PDF or HTML markup, and payloads fuzzed with hypothesis against each handler. Every outcome is a
valid result or the stage's clear input error; nothing is written outside the job's prefix, and
no other job changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest
from faultproxy import FaultProxy, Rule
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from test_least_privilege import allowed, arn, policy

from stackutil import CREDS, REPO, client, load_handler
from vidnotes import jobs, stages
from vidnotes.lambda_io import parse
from vidnotes.sample import make_sample_video
from vidnotes.stages import StageFailed
from vidnotes.storage import LocalStorage

# hypothesis keeps caches (constants, unicode data) even without an example database: in build/
set_hypothesis_home_dir(str(REPO / "build" / "hypothesis"))

RESULTS = "vidnotes-results"
JOB_KEY = re.compile(r"^jobs/[0-9a-f]{16}/[^/]")
WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject", "DeleteObject", "DeleteObjects"}


def ffmpeg(*args: object) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True, timeout=120)


def tagged(src: Path, dst: Path) -> Path:
    """src's streams with a fresh metadata tag: new bytes, a new job."""
    ffmpeg("-i", src, "-c", "copy", "-metadata", f"comment={uuid.uuid4().hex}", dst)
    return dst


def listing(s3, bucket: str = RESULTS) -> dict[str, str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


@pytest.fixture(scope="module")
def short_talk(tmp_path_factory) -> Path:
    return make_sample_video(tmp_path_factory.mktemp("hostile") / "talk.mp4", text="Hostile input must stay harmless. Thank you.")


# -- keys -----------------------------------------------------------------------------------------------
REFUSED_KEYS = [
    "../../etc/passwd", "talks/../../secret.mp4", "talks/./x.mp4", "/etc/passwd", "talks/..", "..",
    "talks/a\nb.mp4", "talks/a\rb.mp4", "talks/\x00.mp4", "talks/tab\there.mp4", "talks/del\x7f.mp4", "talks/\x1b[31mred.mp4",
    "x" * 1025, "é" * 513,
]  # fmt: skip
ACCEPTED_KEYS = [
    "talks/$(touch {sentinel}); `touch {sentinel}` | rm -rf ~ & echo.mp4",
    "talks/'quoted' \"double\" <angle> {{braces}} *?[glob].mp4",
    "talks/-rf --help.mp4",
    "talks/%2e%2e/%00 url-encoded.mp4",
    "talks/a..b/..hidden.mp4",
    "talks/\u202egnp.exe\u202c.mp4",
    "talks/" + ("a very long talk name " * 60)[:990] + ".mp4",
]


def test_hostile_keys_are_refused_or_stay_inside_their_job(live_stack, short_talk, tmp_path, reliability):
    s3, lam = client("s3", live_stack["s3"]), client("lambda", live_stack["lambda"], read_timeout=300)
    sentinel = tmp_path / "pwned"
    before = listing(s3)
    for key in REFUSED_KEYS:
        r = lam.invoke(FunctionName="vidnotes-extract-audio", Payload=json.dumps({"bucket": "vidnotes-inbox", "key": key}))
        err = json.loads(r["Payload"].read())
        assert r.get("FunctionError") == "Unhandled" and err["errorType"] == "StageFailed", (key, err)
        assert err["errorMessage"].startswith("extract_audio: invalid payload: key: "), (key, err)
    assert listing(s3) == before  # refused before anything was read or written

    jobs_seen = {}
    for i, pattern in enumerate(ACCEPTED_KEYS):
        key = pattern.format(sentinel=sentinel)
        video = tagged(short_talk, tmp_path / f"k{i}.mp4")
        s3.put_object(Bucket="vidnotes-inbox", Key=key, Body=video.read_bytes())
        r = lam.invoke(FunctionName="vidnotes-extract-audio", Payload=json.dumps({"bucket": "vidnotes-inbox", "key": key}))
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, (key, out)
        job_id = hashlib.sha256(video.read_bytes()).hexdigest()[:16]
        assert out["job_id"] == job_id and out["prefix"] == f"jobs/{job_id}/"
        status = json.loads(s3.get_object(Bucket=RESULTS, Key=f"jobs/{job_id}/status.json")["Body"].read())
        assert status["input"]["key"] == key  # kept exactly, never interpreted
        jobs_seen[key] = out
    new = set(listing(s3)) - set(before)
    assert new and all(any(k.startswith(f"jobs/{o['job_id']}/") for o in jobs_seen.values()) for k in new), sorted(new)
    assert not sentinel.exists()  # no shell ever saw a key

    # the longest name all the way to the PDF, whose title it is
    long_key = ACCEPTED_KEYS[-1]
    ext = jobs_seen[long_key]
    for fn, payload in [("vidnotes-transcribe", {"job_id": ext["job_id"], "chunks": ext["batches"][0]}),
                        ("vidnotes-summarize", {"job_id": ext["job_id"]}), ("vidnotes-render-pdf", {"job_id": ext["job_id"]})]:  # fmt: skip
        r = lam.invoke(FunctionName=fn, Payload=json.dumps(payload))
        assert "FunctionError" not in r, (fn, r["Payload"].read())
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(s3.get_object(Bucket=RESULTS, Key=f"jobs/{ext['job_id']}/notes.pdf")["Body"].read())
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout.split())
    assert "a very long talk name a very long talk name" in text
    tried = reliability.setdefault("hostile", {"tried": {}})["tried"]
    tried["object keys refused (.., absolute, control characters, > 1024 bytes)"] = len(REFUSED_KEYS)
    tried["object keys accepted and kept inside their job (shell syntax, quotes, RTL, 1000 bytes)"] = len(ACCEPTED_KEYS)


# -- media ----------------------------------------------------------------------------------------------
def hostile_media(inbox: Path, talk: Path, outside: Path) -> dict[str, tuple[str, dict]]:
    """name -> (expected error code, Limits overrides). ``outside`` holds a real recording that no
    upload may ever read (another job's file, as far as ffmpeg could tell)."""
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=3", "-c:a", "aac", "-f", "mpegts", outside / "secret.ts")
    rel = os.path.relpath(outside / "secret.ts", Path(tempfile.gettempdir()) / "vidnotes-extract_audio-x")  # from the stage's work dir
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{}\n#EXT-X-ENDLIST\n"
    (inbox / "playlist-absolute.mp4").write_text(hls.format(f"file://{outside / 'secret.ts'}"))
    (inbox / "playlist-relative.mp4").write_text(hls.format(rel))
    (inbox / "playlist-http.m3u8").write_text(hls.format("http://169.254.169.254/latest/meta-data/iam/security-credentials/x.ts"))
    (inbox / "concat.mp4").write_text(f"ffconcat version 1.0\nfile {rel}\n")
    # declares 32 s in its first frames, holds 10 minutes (a decompression bomb for the limit)
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=f=300:d=2",
        "-ar",
        "16000",
        "-ac",
        "1",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "160k",
        "-write_xing",
        "0",
        "-f",
        "mp3",
        inbox / "head.mp3",
    )
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=600", "-ar", "16000", "-ac", "1", "-c:a", "libmp3lame", "-b:a", "8k", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", inbox / "body.mp3")  # fmt: skip
    (inbox / "liar.mp3").write_bytes((inbox / "head.mp3").read_bytes() + (inbox / "body.mp3").read_bytes())
    (inbox / "slow.mp3").write_bytes((inbox / "liar.mp3").read_bytes())  # 10 minutes to decode against a 10 ms limit
    (inbox / "head.mp3").unlink()
    (inbox / "body.mp3").unlink()
    rng = __import__("random").Random(7)
    (inbox / "junk-ftyp.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + rng.randbytes(4000))
    (inbox / "noise.bin").write_bytes(rng.randbytes(20000))
    data = talk.read_bytes()
    (inbox / "big.mp4").write_bytes(data)
    (inbox / "$(touch pwned); `touch pwned`.mp4").write_bytes(data)
    return {
        "playlist-absolute.mp4": ("not_media", {}),
        "playlist-relative.mp4": ("not_media", {}),
        "playlist-http.m3u8": ("not_media", {}),
        "concat.mp4": ("not_media", {}),
        "liar.mp3": ("too_long", {"max_seconds": 60.0}),
        "slow.mp3": ("decode_timeout", {"ffmpeg_timeout": 0.01}),
        "junk-ftyp.mp4": ("not_media", {}),
        "noise.bin": ("not_media", {}),
        "big.mp4": ("too_large", {"max_upload_bytes": 10_000}),
        "$(touch pwned); `touch pwned`.mp4": ("", {}),  # fine: processed, no shell involved
    }


def test_hostile_media_fails_clearly_within_its_limits(short_talk, tmp_path, monkeypatch, reliability):
    inbox, outside = tmp_path / "inbox", Path(tempfile.mkdtemp(prefix="vidnotes-secret-"))
    inbox.mkdir()
    try:
        cases = hostile_media(inbox, short_talk, outside)
        results = LocalStorage(tmp_path / "results", bucket="local")
        calls: list[tuple[object, dict]] = []
        real_run = subprocess.run

        def recording_run(*args, **kwargs):
            calls.append((args[0] if args else kwargs.get("args"), kwargs))
            return real_run(*args, **kwargs)

        monkeypatch.setattr(subprocess, "run", recording_run)
        monkeypatch.chdir(tmp_path)  # where `touch pwned` would land
        for name, (code, limits) in cases.items():
            req = jobs.ExtractRequest(bucket="local", key=name)
            run = lambda w: stages.extract_audio(req, source=LocalStorage(inbox), results=results, limits=stages.Limits(**limits), work=w)  # noqa: E731
            if not code:
                out = stages.run_stage("extract_audio", results, None, run)
                assert out.chunks == 1 and out.prefix.startswith("jobs/")
                continue
            with pytest.raises(StageFailed) as info:
                stages.run_stage("extract_audio", results, None, run)
            message = str(info.value)
            assert message.startswith("extract_audio: ") and "(job " in message, (name, message)
            job_id = message.split("(job ")[1][:16]
            status = json.loads((tmp_path / "results" / "jobs" / job_id / "status.json").read_text())
            assert status["state"] == "failed" and status["error"]["code"] == code, (name, status)
            assert sorted(p.name for p in (tmp_path / "results" / "jobs" / job_id).iterdir()) == ["status.json"], name
        assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["jobs"]  # nothing outside the job prefixes
        assert not (tmp_path / "pwned").exists() and not (inbox / "pwned").exists()
        left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"vidnotes-extract_audio-" in _read(p)]
        assert left == []  # ffmpeg stopped at its time limit is gone, not left running
        media_calls = [(cmd, kw) for cmd, kw in calls if isinstance(cmd, list) and Path(str(cmd[0])).name in ("ffmpeg", "ffprobe")]
        assert len(media_calls) >= len(cases) - 1
        for cmd, kw in media_calls:  # never a shell, always a time limit and the demuxer whitelist
            assert not kw.get("shell") and kw.get("timeout") and "-format_whitelist" in cmd, cmd
            inputs = [cmd[-1] if Path(str(cmd[0])).name == "ffprobe" else cmd[cmd.index("-i") + 1]]
            assert all(re.fullmatch(r"input(\.[A-Za-z0-9]{1,16})?", Path(p).name) for p in inputs), cmd
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    reliability.setdefault("hostile", {"tried": {}})["tried"][
        "media (playlists reading other files or URLs, a header that lies about its length, decoding past the time limit, junk, too large, shell syntax in the name)"
    ] = len(cases)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


# -- transcripts that look like markup ---------------------------------------------------------------
MARKUP = [
    "%PDF-1.7 1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert\\(1\\)) >> >> endobj ) Tj ET",
    "<script>alert('x')</script> <img src=x onerror=alert(1)> &amp; &#0; &lt;b&gt;",
    "<para><font size=72 color=red>huge</font></para> <b>bold</b> <a href='file:///etc/passwd'>link</a> <br/> ]]>",
    "1\n00:00:05,000 --> 00:01:00,000\ninjected cue",
    "WEBVTT\n\nNOTE --> <c.red>styled</c> \\ (unbalanced ( parens ) \\",
]


def test_markup_in_a_transcript_stays_text(store, tmp_path, reliability):
    from vidnotes.summarize import load_notes_builder

    results = LocalStorage(tmp_path / "results", bucket="local")
    job = jobs.Layout("00000000deadbeef")
    jobs.put_json(results, job.chunks, [{"index": 0, "key": job.chunk(0), "start": 0.0, "end": 30.0}])
    segments = [{"start": 5.0 * i, "end": 5.0 * i + 4.0, "text": t} for i, t in enumerate(MARKUP)]
    jobs.put_json(results, job.segments(0), {"job_id": job.job_id, "chunks": [0], "model": "whisper/x", "segments": segments})
    jobs.put_json(
        results,
        job.source,
        {"input": {"bucket": "b", "key": "talks/<font size=99>title & %PDF-1.7.mp4", "uri": "s3://b/<i>k</i>"}, "duration": 30.0},
    )
    stages.summarize(jobs.JobRequest(job_id=job.job_id), results=results, builder=load_notes_builder(store))
    out = stages.render_pdf(jobs.JobRequest(job_id=job.job_id), results=results, work=tmp_path)
    pdf = tmp_path / "results" / out.pdf_key

    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    scripts = subprocess.run(["pdfinfo", "-js", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+[1-9]", info, re.M) and scripts.strip() == "", (info, scripts)  # a valid PDF, no script in it
    assert pdf.read_bytes().count(b"/Type /Catalog") == 1
    text = "".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout.split())
    for literal in [*MARKUP, "<font size=99>title & %PDF 1.7"]:  # as written (the title: "-" -> " "; pdftotext spacing is approximate)
        for line in literal.splitlines():
            assert "".join(line.split()) in text, line
    # the subtitle files: one cue per segment, however the text looks
    for fmt in ("srt", "vtt"):
        packets = subprocess.run(["ffprobe", "-v", "error", "-show_packets", "-of", "csv", str(tmp_path / "results" / job.transcript(fmt))],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()  # fmt: skip
        assert len(packets) == len(MARKUP), (fmt, packets)
    assert [s["text"] for s in json.loads((tmp_path / "results" / job.transcript("json")).read_text())["segments"]] == MARKUP
    reliability.setdefault("hostile", {"tried": {}})["tried"]["transcript texts that look like PDF, HTML, reportlab or subtitle markup"] = (
        len(MARKUP)
    )


# -- payloads fuzzed against each handler ------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
# strings made of what breaks paths, shells and terminals
NASTY = st.lists(st.sampled_from([*"aZ09/._-~ $`;|&'\"%\x00\n\r\x7f\x1béü日\u202e", "..", "../", "%2e%2e", "jobs/"]), max_size=20).map(
    "".join
)
HEX16 = st.from_regex(r"[0-9a-f]{16}", fullmatch=True)


def events(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Payloads shaped like the schema (fields present, absent, extra, of any type), anything else
    JSON can carry, and JSON text, whole or broken."""
    full = st.fixed_dictionaries(fields)
    shaped = st.fixed_dictionaries({}, optional={**fields, "extra": JSON})
    return st.one_of(full, full, full, shaped, JSON, st.text(max_size=30), JSON.map(json.dumps), JSON.map(lambda v: json.dumps(v)[:-1]))


@pytest.fixture(scope="module")
def fuzz_env(live_stack, store, short_talk, tmp_path_factory):
    """The five handlers in-process against LocalStack's S3, every S3 call recorded; a job to
    fuzz against (F, processed) and one that nothing may touch (V, processed)."""
    mp = pytest.MonkeyPatch()
    env = {**CREDS, "AWS_ENDPOINT_URL": live_stack["s3"], "VIDNOTES_RESULTS_BUCKET": RESULTS, "VIDNOTES_MODEL_STORE": str(store.root)}
    for k, v in env.items():
        mp.setenv(k, v)
    calls: list[tuple[str, dict]] = []
    lock = threading.Lock()
    real_client = boto3.client

    def recording_client(service, *args, **kwargs):
        c = real_client(service, *args, **kwargs)
        if service == "s3":
            c.meta.events.register("before-parameter-build.s3.*", lambda model, params, **_: calls.append((model.name, dict(params))))
        return c

    mp.setattr(boto3, "client", recording_client)
    handlers = {
        stage: load_handler(stage, f"vidnotes-{stage.replace('_', '-')}")
        for stage in ("extract_audio", "transcribe", "diarize", "summarize", "render_pdf")
    }
    s3 = real_client("s3", endpoint_url=live_stack["s3"], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    tmp = tmp_path_factory.mktemp("fuzz")
    made = {}
    for name in ("f", "v"):
        video = tagged(short_talk, tmp / f"{name}.mp4")
        s3.upload_file(str(video), "vidnotes-inbox", f"fuzz/{name}.mp4")
        ext = handlers["extract_audio"]({"bucket": "vidnotes-inbox", "key": f"fuzz/{name}.mp4"})
        handlers["transcribe"]({"job_id": ext["job_id"], "chunks": ext["batches"][0]})
        handlers["diarize"]({"job_id": ext["job_id"]})
        handlers["summarize"]({"job_id": ext["job_id"], "speakers": True})
        handlers["render_pdf"]({"job_id": ext["job_id"]})
        made[name] = ext["job_id"]
    yield {"handlers": handlers, "calls": calls, "lock": lock, "s3": s3, "F": made["f"], "V": made["v"]}
    mp.undo()


MODELS = {
    "extract_audio": (jobs.ExtractRequest, jobs.ExtractResult),
    "transcribe": (jobs.TranscribeRequest, jobs.TranscribeResult),
    "diarize": (jobs.DiarizeRequest, jobs.DiarizeResult),
    "summarize": (jobs.SummarizeRequest, jobs.SummarizeResult),
    "render_pdf": (jobs.JobRequest, jobs.RenderResult),
}


def test_fuzzed_payloads_get_a_result_or_a_clear_error(fuzz_env, reliability):
    env, handlers = fuzz_env, fuzz_env["handlers"]
    F, V = env["F"], env["V"]
    s3 = env["s3"]
    victim = {k: e for k, e in listing(s3).items() if k.startswith(f"jobs/{V}/")}
    outside = {k: e for k, e in listing(s3).items() if not k.startswith("jobs/")}
    assert victim
    job_ids = st.one_of(st.just(F), st.just(F), HEX16, NASTY, JSON)
    buckets = st.one_of(
        st.just("vidnotes-inbox"),
        st.sampled_from([RESULTS, "no-such-bucket-here"]),
        st.from_regex(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", fullmatch=True),
        NASTY,
    )
    keys = st.one_of(
        st.just("fuzz/f.mp4"),
        st.sampled_from(["fuzz/missing.mp4", f"jobs/{F}/chunks/00000.wav", f"jobs/{V}/chunks/00000.wav"]),
        NASTY,
        JSON,
    )
    chunk = st.integers(-3, 3) | st.integers(99_990, 100_010) | st.booleans() | st.floats(-2, 2) | st.text(max_size=2)
    fields = {
        "extract_audio": {"bucket": buckets, "key": keys},
        "transcribe": {"job_id": job_ids, "chunks": st.one_of(st.just([0]), st.lists(st.just(0), min_size=1, max_size=70), st.lists(chunk, max_size=70), JSON)},
        "diarize": {"job_id": job_ids, "speakers": st.one_of(st.just("auto"), st.integers(-2, 40), st.booleans(), st.text(max_size=3), JSON)},
        "summarize": {"job_id": job_ids, "speakers": st.one_of(st.booleans(), JSON),
                      "speaker_names": st.one_of(st.just({"1": "Ada"}), st.dictionaries(st.text(max_size=3), st.text(max_size=4), max_size=3), JSON)},
        "render_pdf": {"job_id": job_ids},
    }  # fmt: skip
    valid = {  # run every time, whatever the search finds: the handlers' good paths under the same checks
        "extract_audio": {"bucket": "vidnotes-inbox", "key": "fuzz/f.mp4"},
        "transcribe": {"job_id": F, "chunks": [0]},
        "diarize": {"job_id": F, "speakers": "auto"},
        "summarize": {"job_id": F, "speakers": True, "speaker_names": {"1": "Ada"}},
        "render_pdf": {"job_id": F},
    }
    outcomes: Counter[str] = Counter()
    problems: list[str] = []

    def check(stage: str, event: object) -> None:
        request_model, result_model = MODELS[stage]
        env["calls"].clear()
        try:
            result = handlers[stage](event)
        except StageFailed as e:
            outcomes[f"{stage}: clear error"] += 1
            if not str(e).startswith(f"{stage}: "):
                problems.append(f"{stage} {event!r}: unclear message {e}")
        except Exception as e:  # noqa: BLE001 - what the test is looking for
            problems.append(f"{stage} {event!r}: {type(e).__name__}: {e}")
            return
        else:
            outcomes[f"{stage}: result"] += 1
            result_model.model_validate(result)
        job_id = None
        try:
            job_id = parse(request_model, event, stage=stage).model_dump().get("job_id")
        except StageFailed:
            pass
        upload = (event.get("bucket"), event.get("key")) if stage == "extract_audio" and isinstance(event, dict) else None
        for op, params in env["calls"]:
            action, resource = arn(op, params)
            if op in ("HeadObject", "GetObject") and (params["Bucket"], params["Key"]) == upload:
                continue  # the object the payload names: outside the policy, IAM refuses it (test below)
            if not allowed(policy(f"vidnotes-{stage.replace('_', '-')}"), action, resource):
                problems.append(f"{stage} {event!r}: {action} {resource} outside the function's policy")
            if op in WRITES:
                key = params.get("Key", "")
                if params["Bucket"] != RESULTS or not JOB_KEY.match(key) or (job_id and not key.startswith(f"jobs/{job_id}/")):
                    problems.append(f"{stage} {event!r}: wrote s3://{params['Bucket']}/{key}")
                if key.startswith(f"jobs/{V}/"):
                    problems.append(f"{stage} {event!r}: changed the other job {V}: {key}")

    for stage, shape in fields.items():
        examples = {"extract_audio": 100, "transcribe": 100, "diarize": 40, "summarize": 60, "render_pdf": 60}[stage]

        @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])  # fmt: skip
        @given(event=events(shape))
        @example(event=valid[stage])
        def fuzz(event: object) -> None:
            check(stage, event)  # noqa: B023 - called right here, in this iteration

        fuzz()
    assert not problems, "\n".join(problems[:20])
    assert {k: e for k, e in listing(s3).items() if k.startswith(f"jobs/{V}/")} == victim  # the other job is as it was
    assert {k: e for k, e in listing(s3).items() if not k.startswith("jobs/")} == outside
    assert all(outcomes[f"{s}: clear error"] and outcomes[f"{s}: result"] for s in fields), outcomes
    tried = reliability.setdefault("hostile", {"tried": {}})
    tried["tried"]["payloads fuzzed with hypothesis against the five handlers"] = sum(outcomes.values())
    tried.update({"fuzz_outcomes": dict(outcomes), "escaped": 0, "unclear_errors": 0, "other_jobs_changed": 0})


def test_an_upload_the_function_may_not_read_is_a_clear_input_error(fuzz_env, live_stack, monkeypatch, reliability):
    """On AWS, IAM answers 403 for an object outside the function's policy (what the fuzzing above
    lets extract_audio try): here a proxy in front of LocalStack answers as IAM would."""
    proxy = FaultProxy(live_stack["s3"])
    try:
        proxy.add(Rule("extract", "HEAD", r"^/someone-elses-bucket/", "forbidden", times=10))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.listen("extract"))
        with pytest.raises(StageFailed) as info:
            fuzz_env["handlers"]["extract_audio"]({"bucket": "someone-elses-bucket", "key": "talks/x.mp4"})
    finally:
        proxy.close()
    assert str(info.value) == (
        "extract_audio: s3://someone-elses-bucket/talks/x.mp4 may not be read by this function (access denied): uploads belong in the inbox bucket"
    )
    assert [entry[3] for entry in proxy.log] == ["forbidden"]  # refused once, not retried
    reliability.setdefault("hostile", {"tried": {}})["tried"]["an upload the function may not read (403 AccessDenied)"] = 1
