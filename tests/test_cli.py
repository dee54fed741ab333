import re
import shutil
import subprocess
import sys

CLI = [sys.executable, "-m", "vidnotes.cli"]


def run(*args, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, check=False, **kw)


def test_help():
    out = run("--help")
    assert out.returncode == 0 and "transcribe" in out.stdout and "summarize" in out.stdout and "models" in out.stdout
    out = run("transcribe", "--help")
    assert "--format" in out.stdout and "srt" in out.stdout


def test_transcribe_srt_of_a_real_recording(store, test_split):
    rec = test_split[0]
    out = run("--store", store.root, "transcribe", rec.path, "--input-format", "g722", "--format", "srt")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1\n00:00:00,000 --> 00:00:0")
    assert "extension" in out.stdout.lower()
    assert "real-time factor" in out.stderr


def test_transcribe_all_formats_of_a_video(store, tmp_path):
    from vidnotes.sample import make_sample_video

    video = make_sample_video(tmp_path / "talk ü.mp4", text="Rivers carry sand to the sea. Bridges carry traffic over rivers.")
    out = run("--store", store.root, "transcribe", video, "--format", "all", "--output-dir", tmp_path / "out", "-q")
    assert out.returncode == 0, out.stderr
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".json", ".srt", ".txt", ".vtt"]
    txt = (tmp_path / "out" / "talk ü.txt").read_text().lower()
    assert "rivers" in txt and "bridges" in txt
    assert (tmp_path / "out" / "talk ü.vtt").read_text().startswith("WEBVTT")


def test_clear_errors(store, tmp_path):
    out = run("--store", store.root, "transcribe", tmp_path / "nope.mp4")
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    out = run("--store", store.root, "transcribe", bad)
    assert out.returncode == 2 and "could not decode audio" in out.stderr
    out = run("--store", tmp_path / "empty-store", "transcribe", bad)
    assert out.returncode == 2 and "make models" in out.stderr


def test_corrupt_model_is_refused(store, tmp_path, test_split):
    version = store.current("whisper")
    copy = tmp_path / "store"
    shutil.copytree(f"{store.root}/whisper/{version}", copy / "whisper" / version)
    (copy / "whisper" / "CURRENT").write_text(version)
    enc = copy / "whisper" / version / "encoder_model.onnx"
    data = bytearray(enc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    enc.write_bytes(bytes(data))
    out = run("--store", copy, "transcribe", test_split[0].path, "--input-format", "g722")
    assert out.returncode == 2
    assert re.search(r"encoder_model.onnx sha256 .* does not match", out.stderr), out.stderr
