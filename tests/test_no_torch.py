"""The inference modules must never import torch or transformers (Lambda images carry neither)."""

import json
import subprocess
import sys

INFERENCE_MODULES = [
    "vidnotes.asr",
    "vidnotes.audio",
    "vidnotes.features",
    "vidnotes.formats",
    "vidnotes.onnxutil",
    "vidnotes.store",
    "vidnotes.summarize",
    "vidnotes.notes",
    "vidnotes.report",
    "vidnotes.tokenizer",
    "vidnotes.types",
    "vidnotes.vad",
    "vidnotes.diarize",
    "vidnotes.cli",
]

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'transformers', 'optimum', 'sentence_transformers'}:
            raise ImportError('inference code imported ' + name)
sys.meta_path.insert(0, Block())
"""


def test_inference_modules_import_without_torch():
    code = BLOCKER + "\n".join(f"import {m}" for m in INFERENCE_MODULES) + "\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_transcribe_and_summarize_run_with_torch_blocked(store, test_split, tmp_path):
    """A real transcription and summary, end to end through the CLI, with torch unimportable."""
    code = BLOCKER + "from vidnotes.cli import main; raise SystemExit(main(sys.argv[1:]))"
    rec = test_split[0]
    run = [sys.executable, "-c", code, "--store", store.root]
    out = subprocess.run(
        [*run, "transcribe", str(rec.path), "--input-format", "g722", "-f", "json", "-o", str(tmp_path / "t.json"), "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = subprocess.run([*run, "summarize", str(tmp_path / "t.json"), "-f", "json"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    notes = json.loads(out.stdout)
    assert notes["schema"] == "vidnotes.notes/1" and notes["chapters"] and notes["summarizer"] == "extractive"
