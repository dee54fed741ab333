"""Each function image installs only what it needs, at the project's pinned versions, and its
handler module imports with that set (no torch, no transformers)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = ["extract_audio", "transcribe", "diarize", "summarize", "render_pdf"]


def pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {m.group(1).lower(): m.group(2) for r in reqs if (m := re.match(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", r))}


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_requirements_are_pinned_like_the_project(fn):
    known = pins()
    lines = [ln.strip() for ln in (REPO / "functions" / fn / "requirements.txt").read_text().splitlines() if ln.strip()]
    for ln in lines:
        name, _, version = ln.partition("==")
        assert version, f"{fn}: {ln} is not pinned"
        assert name.lower() not in {"torch", "transformers", "optimum", "optimum-onnx"}
        if name.lower() in known:
            assert known[name.lower()] == version, f"{fn}: {ln} differs from pyproject ({known[name.lower()]})"
    dockerfile = (REPO / "functions" / fn / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.11" in dockerfile and 'CMD ["app.handler"]' in dockerfile


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_handler_imports_without_torch(fn):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'transformers', 'optimum'}: raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import app\nassert callable(app.handler)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO / "functions" / fn, capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
