"""The whole inference path through the running local stack, driven by the real AWS CLI as a user
would: upload with `aws s3 cp`, invoke each function with `aws lambda invoke`, download the PDF."""

import hashlib
import json
import subprocess

import pytest

from stackutil import aws_cli
from vidnotes.sample import make_sample_video

TEXT = "Glaciers carve valleys over thousands of years. Bridges must carry their own weight and the traffic. Thank you for listening."


def invoke(stack, fn, payload, tmp_path):
    out = tmp_path / f"{fn}-{hashlib.sha1(json.dumps(payload).encode()).hexdigest()[:8]}.json"
    r = aws_cli(stack["lambda"], "lambda", "invoke", "--function-name", fn, "--payload", json.dumps(payload), str(out))
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    return meta, json.loads(out.read_text())


def ok(stack, fn, payload, tmp_path):
    meta, body = invoke(stack, fn, payload, tmp_path)
    assert meta["StatusCode"] == 200 and "FunctionError" not in meta, body
    return body


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_sample_video(tmp_path_factory.mktemp("video") / "talk.mp4", text=TEXT)


def test_upload_to_pdf_with_the_aws_cli(live_stack, video, tmp_path):
    s3 = live_stack["s3"]
    key = "talks/Vortrag über Gletscher & Brücken (v2).mp4"
    r = aws_cli(s3, "s3", "cp", str(video), f"s3://vidnotes-inbox/{key}")
    assert r.returncode == 0, r.stderr
    ext = ok(live_stack, "vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": key}, tmp_path)
    assert ext["chunks"] >= 1 and ext["batches"] and not ext["duplicate"]
    for batch in ext["batches"]:
        tr = ok(live_stack, "vidnotes-transcribe", {"job_id": ext["job_id"], "chunks": batch}, tmp_path)
        assert tr["segments"] >= 1 and tr["model"].startswith("whisper/")
    summ = ok(live_stack, "vidnotes-summarize", {"job_id": ext["job_id"]}, tmp_path)
    assert summ["summarizer"] in ("extractive", "bart")
    pdf_key = ok(live_stack, "vidnotes-render-pdf", {"job_id": ext["job_id"]}, tmp_path)["pdf_key"]
    r = aws_cli(s3, "s3", "cp", f"s3://vidnotes-results/{pdf_key}", str(tmp_path / "notes.pdf"))
    assert r.returncode == 0, r.stderr
    text = subprocess.run(["pdftotext", str(tmp_path / "notes.pdf"), "-"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split()).lower()
    for name in ("notes.json", "notes.md", "chapters.vtt"):
        r = aws_cli(s3, "s3", "cp", f"s3://vidnotes-results/jobs/{ext['job_id']}/{name}", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    notes = json.loads((tmp_path / "notes.json").read_text())
    assert notes["chapters"] and summ["chapters"] == len(notes["chapters"]) and notes["summarizer"] == summ["summarizer"]
    assert " ".join(notes["chapters"][0]["title"].split()).lower() in flat
    assert all(f"chapter-{i}" in (tmp_path / "chapters.vtt").read_text() for i in range(1, len(notes["chapters"]) + 1))
    assert notes["chapters"][0]["title"] in (tmp_path / "notes.md").read_text()
    assert "glaciers" in flat and "bridges" in flat and summ["model"] in " ".join(text.split())
    r = aws_cli(s3, "s3", "cp", f"s3://vidnotes-results/jobs/{ext['job_id']}/status.json", "-")
    assert json.loads(r.stdout)["state"] == "succeeded"
    # the same bytes again, under another key: detected by content, not redone
    r = aws_cli(s3, "s3", "cp", str(video), "s3://vidnotes-inbox/again.mp4")
    again = ok(live_stack, "vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": "again.mp4"}, tmp_path)
    assert again["duplicate"] and again["job_id"] == ext["job_id"]


def test_bad_upload_is_a_function_error_with_a_status_record(live_stack, tmp_path):
    s3 = live_stack["s3"]
    bad = tmp_path / "slides.mp4"
    bad.write_text("these are speaker notes, not a video\n")
    assert aws_cli(s3, "s3", "cp", str(bad), "s3://vidnotes-inbox/slides.mp4").returncode == 0
    meta, body = invoke(live_stack, "vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": "slides.mp4"}, tmp_path)
    assert meta["FunctionError"] == "Unhandled"
    assert "not a readable audio or video file" in body["errorMessage"] and body["errorType"] == "StageFailed"
    job_id = hashlib.sha256(bad.read_bytes()).hexdigest()[:16]
    status = json.loads(aws_cli(s3, "s3", "cp", f"s3://vidnotes-results/jobs/{job_id}/status.json", "-").stdout)
    assert status["state"] == "failed" and status["error"]["code"] == "not_media"
    kept = aws_cli(s3, "s3", "cp", "s3://vidnotes-inbox/slides.mp4", "-")
    assert kept.stdout == bad.read_text()  # the upload is left as it was
    listing = aws_cli(s3, "s3", "ls", f"s3://vidnotes-results/jobs/{job_id}/")
    assert "notes.pdf" not in listing.stdout and "chunks.json" not in listing.stdout


@pytest.mark.parametrize(
    "fn, payload, message",
    [
        ("vidnotes-transcribe", {"job_id": "../../etc", "chunks": [0]}, "job_id: String should match pattern"),
        ("vidnotes-extract-audio", {"key": "talk.mp4"}, "bucket: Field required"),
        ("vidnotes-summarize", {"job_id": "00000000000000ff"}, "run extract_audio first"),
        ("vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": "missing/nothing.mp4"}, "does not exist"),
    ],
)
def test_wrong_payloads_get_clear_errors(live_stack, tmp_path, fn, payload, message):
    meta, body = invoke(live_stack, fn, payload, tmp_path)
    assert meta.get("FunctionError") == "Unhandled"
    assert message in body["errorMessage"]
