"""The four stages on local storage with real ffmpeg, real models and real PDFs; every bad input
gets its message, a failed status.json, the input untouched and no final results."""

import hashlib
import json
import subprocess

import pytest

from vidnotes import jobs, stages
from vidnotes.lambda_io import parse
from vidnotes.pipeline import run_local
from vidnotes.sample import make_sample_video
from vidnotes.storage import LocalStorage, StorageError, check_key

TALK = "Rivers carry sand and stones to the sea. Bridges must carry their own weight and the traffic. Bakers mix flour, water and yeast."


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    return make_sample_video(tmp_path_factory.mktemp("inbox") / "talk.mp4", text=TALK)


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


def pdftext(path):
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_video_to_pdf_and_duplicate_detection(talk, store, tmp_path):
    out = tmp_path / "results"
    pdf = run_local(talk, out, store=store, say=lambda m: None)
    job_id = pdf.parent.name
    text = pdftext(pdf)
    notes = json.loads((pdf.parent / "notes.json").read_text())
    transcript = json.loads((pdf.parent / "transcript.json").read_text())
    flat = " ".join(text.split())
    assert notes["chapters"] and all(" ".join(c["title"].split()) in flat for c in notes["chapters"])
    points = [k for c in notes["chapters"] for k in c["key_points"]]
    assert points and all(" ".join(k.split()[:4]) in flat for k in points)
    assert "rivers" in text.lower() and "bridges" in text.lower()
    assert transcript["model"] in text and notes["model"].split(",")[0] in text
    md = (pdf.parent / "notes.md").read_text()
    assert md.startswith("# talk\n") and all(c["title"] in md for c in notes["chapters"])
    assert (pdf.parent / "chapters.vtt").read_text().startswith("WEBVTT")
    for a, b in zip(transcript["segments"], transcript["segments"][1:]):
        assert a["start"] <= b["start"]
    status = json.loads((pdf.parent / "status.json").read_text())
    assert status["state"] == "succeeded" and status["input"]["sha256"].startswith(job_id)
    assert sorted(p.name for p in pdf.parent.glob("transcript.*")) == ["transcript.json", "transcript.srt", "transcript.txt", "transcript.vtt"]
    # the same content under another name, with spaces and non-ASCII: one job, not redone
    other = talk.parent / "Vortrag über Flüsse (final).mp4"
    other.write_bytes(talk.read_bytes())
    results = LocalStorage(out, bucket="local")
    res = stages.extract_audio(
        jobs.ExtractRequest(bucket="local", key=other.name), source=LocalStorage(talk.parent), results=results,
        limits=stages.Limits(), work=tmp_path,
    )  # fmt: skip
    assert res.duplicate and res.job_id == job_id


def _bad_inputs(tmp, talk):
    (tmp / "notes.txt").write_text("this is a text file, not a video\n")
    (tmp / "empty.mp4").write_bytes(b"")
    data = talk.read_bytes()
    (tmp / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: unreadable
    ffmpeg("-i", talk, "-c", "copy", "-movflags", "+faststart", tmp / "fast.mp4")
    fast = (tmp / "fast.mp4").read_bytes()
    (tmp / "cut-fast.mp4").write_bytes(fast[: len(fast) // 2])  # readable header, half the data
    ffmpeg("-f", "lavfi", "-i", "color=s=64x64:d=2", "-c:v", "libx264", tmp / "no-audio.mp4")
    ffmpeg("-f", "lavfi", "-i", "color=s=64x64:d=3", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", "-c:v", "libx264", "-c:a", "aac", tmp / "silent.mp4")
    return {
        "notes.txt": ("not_media", "not a readable audio or video file"),
        "empty.mp4": ("empty", "the upload is empty"),
        "cut.mp4": ("not_media", "not a readable audio or video file"),
        "cut-fast.mp4": ("truncated", "the file ends early"),
        "no-audio.mp4": ("no_audio", "no audio stream"),
        "silent.mp4": ("silent", "the audio track is silent"),
    }


def test_bad_inputs_get_clear_errors_and_lose_nothing(talk, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cases = _bad_inputs(inbox, talk)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inbox.iterdir()}
    results = LocalStorage(tmp_path / "results", bucket="local")
    for name, (code, message) in cases.items():
        req = jobs.ExtractRequest(bucket="local", key=name)
        with pytest.raises(stages.StageFailed, match=message) as info:
            stages.run_stage(
                "extract_audio", results, None,
                lambda w: stages.extract_audio(req, source=LocalStorage(inbox), results=results, limits=stages.Limits(), work=w),
            )  # fmt: skip
        assert str(info.value).startswith("extract_audio: ")
        job_id = str(info.value).split("(job ")[1][:16]
        status = json.loads((tmp_path / "results" / "jobs" / job_id / "status.json").read_text())
        assert status["state"] == "failed" and status["error"]["code"] == code, (name, status)
        assert status["input"]["key"] == name
        assert not (tmp_path / "results" / "jobs" / job_id / "chunks.json").exists()
        assert not (tmp_path / "results" / "jobs" / job_id / "notes.pdf").exists()
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inbox.iterdir()}
    assert {k: after[k] for k in before} == before  # inputs untouched


def test_oversized_upload_is_refused_before_download(talk, tmp_path):
    results = LocalStorage(tmp_path / "results", bucket="local")
    req = jobs.ExtractRequest(bucket="local", key=talk.name)
    with pytest.raises(stages.StageFailed, match=r"the upload is 0 MiB; the limit is 0 MiB") as info:
        stages.run_stage(
            "extract_audio", results, None,
            lambda w: stages.extract_audio(req, source=LocalStorage(talk.parent), results=results, limits=stages.Limits(max_upload_bytes=1000), work=w),
        )  # fmt: skip
    job_id = str(info.value).split("(job ")[1][:16]
    assert json.loads((tmp_path / "results" / "jobs" / job_id / "status.json").read_text())["error"]["code"] == "too_large"
    assert not list((tmp_path / "work").glob("*")) if (tmp_path / "work").exists() else True


def test_missing_upload_and_out_of_order_stages(tmp_path):
    results = LocalStorage(tmp_path / "results", bucket="local")
    req = jobs.ExtractRequest(bucket="local", key="nothing-here.mp4")
    with pytest.raises(stages.StageFailed, match="does not exist"):
        stages.run_stage("extract_audio", results, None, lambda w: stages.extract_audio(req, source=LocalStorage(tmp_path), results=results, limits=stages.Limits(), work=w))
    jreq = jobs.JobRequest(job_id="0123456789abcdef")
    with pytest.raises(stages.StageFailed, match="run extract_audio first"):
        stages.run_stage("summarize", results, jreq.job_id, lambda w: stages.summarize(jreq, results=results, builder=None))
    with pytest.raises(stages.StageFailed, match="run summarize first"):
        stages.run_stage("render_pdf", results, jreq.job_id, lambda w: stages.render_pdf(jreq, results=results, work=w))
    status = json.loads((tmp_path / "results" / "jobs" / jreq.job_id / "status.json").read_text())
    assert status["state"] == "failed" and status["stage"] == "render_pdf" and status["error"]["code"] == "no_transcript"


@pytest.mark.parametrize(
    "model, event, message",
    [
        (jobs.ExtractRequest, {"bucket": "vidnotes-inbox"}, "key: Field required"),
        (jobs.ExtractRequest, {"bucket": "Bad_Bucket!", "key": "a.mp4"}, "bucket: String should match pattern"),
        (jobs.ExtractRequest, {"bucket": "vidnotes-inbox", "key": "a.mp4", "extra": 1}, "extra: Extra inputs are not permitted"),
        (jobs.TranscribeRequest, {"job_id": "../../etc/passwd", "chunks": [0]}, "job_id: String should match pattern"),
        (jobs.TranscribeRequest, {"job_id": "0123456789abcdef", "chunks": []}, "chunks: List should have at least 1 item"),
        (jobs.TranscribeRequest, {"job_id": "0123456789abcdef", "chunks": [-1]}, "greater than or equal to 0"),
        (jobs.SummarizeRequest, {"job_id": "0123456789abcdef", "speakers": True, "speaker_names": {"33": "Ada"}}, "a speaker number is 1 to 32"),
        (jobs.DiarizeRequest, {"job_id": "0123456789abcdef", "speakers": "0"}, "a count from 1 to 32"),
        (jobs.JobRequest, ["not", "an", "object"], "expected a JSON object"),
        (jobs.JobRequest, "{not json", "not JSON"),
    ],
)
def test_payload_validation(model, event, message):
    with pytest.raises(stages.StageFailed, match="invalid payload") as info:
        parse(model, event, stage="x")
    assert message in str(info.value) and "Expected {" in str(info.value) or "JSON" in str(info.value)


def test_keys_are_checked():
    assert check_key("talks/Vortrag über Flüsse.mp4")
    for bad in ("../x", "a/../b", "/abs", "a\nb", "", "x" * 1100):
        with pytest.raises(StorageError):
            check_key(bad)


def test_pdf_escapes_markup_and_covers_non_ascii(tmp_path):
    from vidnotes.notes import Chapter, KeyTerm, Notes, Paragraph, Sentence
    from vidnotes.report import NotesDocument, render_notes
    from vidnotes.types import Segment, Transcript

    line = "<b>bold</b> & <font size=40>big</font> </para> Grüße, 日本, Ωmega"
    t = Transcript([Segment(0, 2, line)], duration=2, model="whisper/x")
    chapter = Chapter(0.0, 2.0, "<a href='x'>ch</a>", [Sentence("<para>k</para>", 0.0)], [Paragraph(0.0, 2.0, line)])
    notes = Notes("en", 2.0, [Sentence("a < b & c", 0.0)], [chapter], [KeyTerm("<i>term</i>", 0.5, 1)], "extractive", "minilm/v")
    doc = NotesDocument("Title <i>x</i>", "s3://b/k.mp4", 2.0, t, notes)
    # pdftotext's word spacing is approximate: compare without whitespace
    text = "".join(pdftext(render_notes(doc, tmp_path / "n.pdf")).split())
    for literal in ("<b>bold</b> & <font size=40>big</font> </para>", "Grüße", "Ωmega", "Title <i>x</i>", "a < b & c", "<para>k</para>", "<a href='x'>ch</a>", "<i>term</i>"):
        assert "".join(literal.split()) in text, literal


def test_render_refuses_notes_that_are_not_notes(tmp_path):
    from vidnotes.types import Segment, Transcript

    results = LocalStorage(tmp_path / "results", bucket="local")
    job = jobs.Layout("00000000feedbeef")
    results.put_bytes(json.dumps(Transcript([Segment(0, 1, "Hello there.")], 1.0).to_dict()).encode(), job.transcript("json"))
    jobs.put_json(results, job.source, {"input": {"bucket": "b", "key": "k.mp4", "uri": "s3://b/k.mp4"}, "duration": 1.0})
    for bad in ({"text": "an old summary.json", "key_points": []}, {"schema": "vidnotes.notes/1", "chapters": [{"start": 0}]}):
        jobs.put_json(results, job.notes, bad)
        req = jobs.JobRequest(job_id=job.job_id)
        with pytest.raises(stages.StageFailed, match="notes.json is not valid.*run summarize again"):
            stages.run_stage("render_pdf", results, job.job_id, lambda w: stages.render_pdf(req, results=results, work=w))
        status = json.loads((tmp_path / "results" / job.status).read_text())
        assert status["state"] == "failed" and status["error"]["code"] == "bad_notes"
        assert not results.exists(job.pdf) and not results.exists(job.markdown)


def test_merged_transcript_keeps_the_language_of_its_batches(tmp_path):
    results = LocalStorage(tmp_path / "results", bucket="local")
    job = jobs.Layout("00000000c0ffee00")
    jobs.put_json(results, job.chunks, [{"index": i, "key": job.chunk(i), "start": 30.0 * i, "end": 30.0 * i + 30} for i in range(3)])
    for i, lang in enumerate(["ru", "ru", None]):
        part = {"job_id": job.job_id, "chunks": [i], "model": "whisper/x", "segments": [{"start": 30.0 * i, "end": 30.0 * i + 5, "text": "Привет."}]}
        if lang:
            part["language"] = lang
        jobs.put_json(results, job.segments(i), part)
    assert stages.merge_segments(results, job).language == "ru"
    jobs.put_json(results, job.segments(0), {"job_id": job.job_id, "chunks": [0], "model": "whisper/x", "segments": []})
    jobs.put_json(results, job.segments(1), {"job_id": job.job_id, "chunks": [1], "model": "whisper/x", "segments": []})
    assert stages.merge_segments(results, job).language == "en"  # files from before languages: English
