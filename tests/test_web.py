"""The web page (vidnotes.web): its API over a real job made by `vidnotes run` (local directories as
the buckets, the same Storage the pipeline uses), the readers' corrections and the dataset built
from them, and the page itself in headless Chromium. The page over LocalStack and Airflow, upload
to notes, is tests/test_airflow.py::test_the_web_page_over_the_stack."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from browser import chromium, chromium_available, serve, shot, wait_for
from fastapi.testclient import TestClient

from stackutil import free_ports
from vidnotes.pipeline import run_local
from vidnotes.sample import make_sample_video
from vidnotes.storage import LocalStorage
from vidnotes.train import read_manifest
from vidnotes.web.app import create_app
from vidnotes.web.service import Library, safe_name

pytestmark = pytest.mark.models
POST = {"X-Requested-With": "vidnotes"}
HOSTILE = 'talk "quoted" $(rm -rf ~); <img src=x onerror=alert(1)> & more.mp4'


@pytest.fixture(scope="module")
def site(store, tmp_path_factory):
    """A talk run through `vidnotes run` (results in a directory), the page's Library over it."""
    root = tmp_path_factory.mktemp("web")
    inbox, results = root / "inbox", root / "results"
    inbox.mkdir()
    video = make_sample_video(inbox / "talk.mp4")
    run_local(video, results, store=store, say=lambda _m: None)
    job_id = hashlib.sha256(video.read_bytes()).hexdigest()[:16]
    lib = Library(inbox=LocalStorage(inbox, bucket="local"), results=LocalStorage(results, bucket="local"), airflow=None,
                  max_upload_bytes=5 * 2**20)  # fmt: skip
    return {"lib": lib, "job_id": job_id, "video": video, "inbox": inbox, "results": results, "root": root}


@pytest.fixture()
def api(site):
    return TestClient(create_app(site["lib"]), base_url="http://127.0.0.1")


def inbox_keys(site) -> list[str]:
    return sorted(p.relative_to(site["inbox"]).as_posix() for p in site["inbox"].rglob("*") if p.is_file())


def test_a_file_name_stays_data():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\me\\talk.mp4") == "talk.mp4"
    assert safe_name(HOSTILE) == HOSTILE  # quotes, shell syntax and markup are just characters of a name
    assert safe_name("a\x00b\x1b[31m\ncd.mp4") == "ab[31mcd.mp4"
    assert safe_name("..") == "upload" and safe_name("") == "upload"
    long = safe_name("x" * 500 + ".webm")
    assert len(long) == 120 and long.endswith(".webm")


def test_stage_states_from_task_instances():
    ti = lambda task, state, i=-1: {"task_id": task, "state": state, "map_index": i}  # noqa: E731
    tasks = [ti("extract_audio", "success"), ti("transcribe", "success", 0), ti("transcribe", "running", 1), ti("diarize", "success")]
    assert [(s["stage"], s["state"], s["detail"]) for s in Library.stage_states(tasks)] == [
        ("extract_audio", "success", ""), ("transcribe", "running", "1/2"), ("diarize", "success", ""),
        ("summarize", "waiting", ""), ("render_pdf", "waiting", "")]  # fmt: skip
    failed = [ti("extract_audio", "failed"), ti("transcribe", "upstream_failed"), ti("summarize", "upstream_failed")]
    assert [s["state"] for s in Library.stage_states(failed)] == ["failed", "skipped", "waiting", "skipped", "waiting"]
    assert [s["state"] for s in Library.stage_states(tasks, diarize_off=True)][2] == "off"


def test_the_page_is_locked_to_this_server(api):
    page = api.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert api.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert api.get("/static/../service.py").status_code == 404
    # another site's form cannot post here, and a rebinding DNS name is not answered
    assert api.post("/api/uploads?name=a.mp4", content=b"x").status_code == 403
    assert TestClient(create_app(Library(inbox=None, results=None)), base_url="http://evil.example").get("/").status_code == 400  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "body", "status", "says"),
    [
        ("notes.txt", b"hello", 415, "'.txt' is not a video or audio file"),
        ("broken.mp4", b"this is not a video at all", 422, "not a readable audio or video file"),
        ("big.mp4", b"\0" * (5 * 2**20 + 1), 413, "more than the limit of 5 MiB"),
        ("empty.mp4", b"", 400, "empty"),
    ],
)
def test_a_bad_upload_is_refused_with_its_reason_and_leaves_nothing(api, site, name, body, status, says):
    before = inbox_keys(site)
    r = api.post(f"/api/uploads?name={name}", content=body, headers=POST)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]
    assert inbox_keys(site) == before
    assert not list(Path(site["root"]).glob("**/vidnotes-upload-*"))


def test_bad_options_are_refused_before_the_upload(api, site):
    data = site["video"].read_bytes()
    r = api.post("/api/uploads?name=t.mp4&speakers=many", content=data, headers=POST)
    assert r.status_code == 400 and "speakers" in r.json()["error"]
    r = api.post("/api/uploads?name=t.mp4&language=english!", content=data, headers=POST)
    assert r.status_code == 400 and "language" in r.json()["error"]


def test_an_upload_goes_to_the_inbox_under_its_job(api, site):
    data = site["video"].read_bytes()
    r = api.post("/api/uploads", params={"name": "../../" + HOSTILE, "speakers": "auto", "language": "EN"}, content=data, headers=POST)
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["job_id"] == site["job_id"] and up["key"] == f"web/{site['job_id']}/{HOSTILE}"
    assert up["options"] == {"vidnotes-speakers": "auto", "vidnotes-language": "en"}
    assert (site["inbox"] / up["key"]).read_bytes() == data
    rows = api.get("/api/jobs").json()
    row = next(j for j in rows["jobs"] if j["key"] == up["key"])
    assert row["name"] == HOSTILE and row["job_id"] == site["job_id"] and row["state"] == "succeeded" and row["notes"]
    assert rows["airflow"] == "Airflow is not configured for this page"
    (site["inbox"] / up["key"]).unlink()


def test_a_job_page_has_the_notes_the_transcript_the_media_and_the_downloads(api, site):
    job = api.get(f"/api/jobs/{site['job_id']}").json()
    assert job["status"]["state"] == "succeeded" and job["notes"]["chapters"] and job["notes"]["summary"]
    assert len(job["segments"]) >= 5 and all(s["end"] > s["start"] for s in job["segments"])
    assert {d["name"] for d in job["downloads"]} == {"pdf", "md", "srt", "vtt", "json", "notes-json"}
    assert job["media"] == {"available": True, "kind": "video", "type": "video/mp4"}
    pdf = api.get(f"/api/jobs/{site['job_id']}/files/pdf")
    assert pdf.content.startswith(b"%PDF") and 'filename="talk.pdf"' in pdf.headers["content-disposition"]
    assert api.get(f"/api/jobs/{site['job_id']}/files/status").status_code == 404
    video = site["video"].read_bytes()
    whole = api.get(f"/api/jobs/{site['job_id']}/media")
    assert whole.status_code == 200 and whole.content == video and whole.headers["accept-ranges"] == "bytes"
    part = api.get(f"/api/jobs/{site['job_id']}/media", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == video[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(video)}"
    tail = api.get(f"/api/jobs/{site['job_id']}/media", headers={"Range": "bytes=-100"})
    assert tail.content == video[-100:]
    assert api.get(f"/api/jobs/{site['job_id']}/media", headers={"Range": f"bytes={len(video)}-"}).status_code == 416
    for bad in ("../etc", "0123456789abcdeg", "x" * 16):
        assert api.get(f"/api/jobs/{bad}").status_code == 404


def test_corrections_are_checked_stored_shown_and_become_a_dataset(api, site, tmp_path):
    jid = site["job_id"]
    url = f"/api/jobs/{jid}/corrections"
    segs = api.get(f"/api/jobs/{jid}").json()["segments"]
    bad = [
        ({"segment": len(segs), "text": "x"}, "segment must be a number"),
        ({"segment": "1", "text": "x"}, "segment must be a number"),
        ({"segment": 1, "text": "   "}, "empty"),
        ({"segment": 1, "text": "x" * 1001}, "at most 1000"),
        ({"segment": 1, "text": "a\x07b"}, "control characters"),
        ({"segment": 1, "text": segs[1]["text"]}, "the same as the transcript's"),
    ]
    for body, says in bad:
        r = api.post(url, json=body, headers=POST)
        assert r.status_code == 400 and says in r.json()["error"], (body, r.text)
    assert api.post(url, content=b"segment=1", headers={**POST, "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    assert api.post(url, content=b"{" * 20_000, headers={**POST, "Content-Type": "application/json"}).status_code == 413
    assert not (site["results"] / "jobs" / jid / "feedback").exists()

    markup = "<b>Welcome</b> <script>window.__pwned = 1</script> to this lecture"
    first = api.post(url, json={"segment": 0, "text": "Welcome to this short lecture"}, headers=POST)
    assert first.status_code == 201, first.text
    assert api.post(url, json={"segment": 0, "text": markup}, headers=POST).status_code == 201  # the newer one wins
    assert api.post(url, json={"segment": 2, "text": segs[2]["text"].rstrip(". ") + ", as the teacher said."}, headers=POST).status_code == 201
    stored = sorted((site["results"] / "jobs" / jid / "feedback").glob("*.json"))
    assert len(stored) == 3
    c = json.loads(stored[0].read_text())
    assert c["kind"] == "transcript" and c["segment"] == 0 and c["original"] == segs[0]["text"]
    assert (c["start"], c["end"]) == (segs[0]["start"], segs[0]["end"]) and c["created"]
    shown = api.get(f"/api/jobs/{jid}").json()["segments"]
    assert shown[0]["text"] == markup and shown[0]["corrected"] and shown[0]["original"] == segs[0]["text"]
    flag = api.post(f"/api/jobs/{jid}/flags", json={"sentence": "", "comment": "misses the part on bread"}, headers=POST)
    assert flag.status_code == 201 and flag.json()["kind"] == "summary"
    assert api.post(f"/api/jobs/{jid}/flags", json={"sentence": "Never said.", "comment": "x"}, headers=POST).status_code == 400

    out = tmp_path / "dataset"
    r = subprocess.run([sys.executable, "-m", "vidnotes.cli", "train", "prepare-feedback", str(out), "--results", str(site["results"])],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "1 train + 1 test examples from 1 job(s)" in r.stderr
    examples = read_manifest(out / "manifest.jsonl")  # what `vidnotes train run --data` reads
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["segment"] for r in rows] == [0, 2] and examples[0].text == " ".join(markup.split())
    assert sorted(e.split for e in examples) == ["test", "train"]
    import wave

    for row in rows:
        with wave.open(str(out / row["audio"])) as w:
            assert w.getframerate() == 16000 and abs(w.getnframes() / 16000 - (row["end"] - row["start"])) < 0.01
    # the cut is the job's audio at that time (not silence, not another stretch)
    from vidnotes.audio import decode_audio

    whole = decode_audio(site["video"])
    import numpy as np

    with wave.open(str(out / rows[1]["audio"])) as w:
        cut = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    ref = whole[int(rows[1]["start"] * 16000) : int(rows[1]["start"] * 16000) + len(cut)]
    assert np.abs(cut).max() > 0.05 and float(np.corrcoef(cut[: len(ref)], ref)[0, 1]) > 0.99


@pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium and chromium-driver (make system-deps)")
def test_the_page_in_a_browser(site, tmp_path):
    """Headless Chromium: the jobs list, a bad upload's message, a job's notes beside the player,
    a click on a transcript line seeks the player, a correction saved in place, markup shown as text."""
    from selenium.webdriver.common.by import By

    jid = site["job_id"]
    bad = tmp_path / HOSTILE
    bad.write_text("not a video")
    with serve(create_app(site["lib"]), free_ports(1)) as url, chromium() as d:
        d.get(url + "/")
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-key]"), 20, "the jobs list stayed empty")
        before = inbox_keys(site)
        d.find_element(By.ID, "file").send_keys(str(bad))
        d.find_element(By.ID, "upload-button").click()
        msg = wait_for(lambda: (m := d.find_element(By.ID, "upload-message")).text and "error" in m.get_attribute("class") and m.text,
                       20, "no error shown for a broken upload")  # fmt: skip
        assert "not a readable audio or video file" in msg and HOSTILE in msg and "vidnotes-upload-" not in msg
        assert inbox_keys(site) == before
        shot(d, "local-1-bad-upload")

        d.get(f"{url}/#/job/{jid}")
        lines = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#transcript li"), 20, "no transcript on the job page")
        wait_for(lambda: d.execute_script("return document.querySelector('#player').readyState >= 1"), 20, "the player loaded no media")
        assert d.find_element(By.CSS_SELECTOR, "#notes .chapters li") and d.find_elements(By.CSS_SELECTOR, "#downloads a.download")
        target = lines[3]
        start = float(target.get_attribute("data-start"))
        target.find_element(By.CSS_SELECTOR, ".text").click()
        at = "return document.querySelector('#player').currentTime"
        wait_for(lambda: abs(d.execute_script(at) - start) < 0.05, 10, lambda: f"the player is at {d.execute_script(at)}, not {start}")
        assert "current" in d.find_elements(By.CSS_SELECTOR, "#transcript li")[3].get_attribute("class")
        shot(d, "local-2-job-page")

        markup = "<img src=x onerror=\"window.__pwned=1\"> and <script>window.__pwned=2</script> the bridge"
        line = d.find_elements(By.CSS_SELECTOR, "#transcript li")[4]
        line.find_element(By.CSS_SELECTOR, "button.edit").click()
        box = line.find_element(By.CSS_SELECTOR, "textarea")
        box.clear()
        box.send_keys(markup)
        line.find_element(By.CSS_SELECTOR, "button.save").click()
        fixed = wait_for(lambda: (li := d.find_elements(By.CSS_SELECTOR, "#transcript li")[4]).find_elements(By.CSS_SELECTOR, ".badge") and li,
                         10, "the correction was not saved")  # fmt: skip
        assert fixed.find_element(By.CSS_SELECTOR, ".text").text == markup  # shown as text, not run
        assert d.execute_script("return window.__pwned") is None and not d.find_elements(By.CSS_SELECTOR, "#transcript img")
        shot(d, "local-3-corrected")
    stored = [json.loads(p.read_text()) for p in (site["results"] / "jobs" / jid / "feedback").glob("*.json")]
    assert any(c.get("segment") == 4 and c["corrected"] == markup for c in stored)
