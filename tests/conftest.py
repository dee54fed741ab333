from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vidnotes.audio import decode_audio
from vidnotes.datasets import Recording, load_split, read_transcripts
from vidnotes.store import ModelStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def store() -> ModelStore:
    """The store `make models` built (VIDNOTES_MODEL_STORE, default ./models)."""
    s = ModelStore(os.environ.get("VIDNOTES_MODEL_STORE", str(REPO / "models")))
    if s.current("whisper") is None:
        pytest.fail(f"no whisper model in {s.root}: run `make models` (make test does it)")
    return s


@pytest.fixture(scope="session")
def test_split() -> list[Recording]:
    return load_split("test")


@pytest.fixture(scope="session")
def transcripts() -> dict[str, str]:
    return read_transcripts()


def load(rec: Recording) -> np.ndarray:
    return decode_audio(rec.path, input_format="g722")


@pytest.fixture(scope="session")
def live_stack(store, tmp_path_factory):
    """The whole local stack (LocalStack, gateway, the four functions) with the model store
    synced to S3, on free ports; stopped at the end of the session."""
    import subprocess

    from stackutil import stack_up

    subprocess.run([str(REPO / "localstack" / "setup.sh")], check=True, timeout=900)
    with stack_up(tmp_path_factory.mktemp("stack"), models=Path(store.root)) as stack:
        yield stack
