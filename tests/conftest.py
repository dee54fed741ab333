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


@pytest.fixture(scope="session")
def airflow_settings(live_stack, tmp_path_factory) -> dict[str, str]:
    """The environment `scripts/airflow.sh env` gives Airflow (its own AIRFLOW_HOME, the connection
    aws_vidnotes to the test stack), with its DB migrated once per session. SQLite: in-process
    Airflow (DagBag, dag.test()) needs no server; `airflow_up` runs on PostgreSQL as `make airflow` does."""
    import json
    import subprocess
    import sys

    from stackutil import airflow_env

    home = tmp_path_factory.mktemp("airflow-home")
    dump = subprocess.run(
        ["bash", "-c", f'eval "$({REPO}/scripts/airflow.sh env)" && {sys.executable} -c "import os, json; print(json.dumps(dict(os.environ)))"'],
        env={**airflow_env(live_stack, home), "VIDNOTES_AIRFLOW_DB": "sqlite"}, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    env = {k: v for k, v in json.loads(dump.stdout).items() if k.startswith(("AIRFLOW", "VIDNOTES_AIRFLOW_"))}
    env["VIDNOTES_AIRFLOW_RETRY_DELAY"] = "1"  # a retried stage waits 1 s, 2 s, ... here
    airflow = str(Path(sys.executable).with_name("airflow"))
    r = subprocess.run([airflow, "db", "migrate"], env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return env


@pytest.fixture(scope="module")
def airflow_home(airflow_settings):
    """This process configured with `airflow_settings` for the module's tests (in-process Airflow:
    DagBag, dag.test()); undone after the module."""
    mp = pytest.MonkeyPatch()
    for k, v in airflow_settings.items():
        mp.setenv(k, v)
    yield Path(airflow_settings["AIRFLOW_HOME"])
    mp.undo()


@pytest.fixture(scope="module")
def dagbag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="session")
def reliability():
    """Figures of the reliability tests (test_reliability.py, test_hostile.py), written to
    bench/results/reliability.{json,md} at the end of the session (sections not run are kept)."""
    figures: dict = {}
    yield figures
    if figures:
        from stackutil import write_reliability_report

        write_reliability_report(figures, REPO / "bench" / "results")


@pytest.fixture(scope="session")
def docker_images():
    """`scripts/images.sh functions` (a no-op rebuild when the images are current); the Docker
    engine is stopped at the end if this fixture started it."""
    import subprocess

    from stackutil import docker_engine_running

    started_here = not docker_engine_running()
    def engine_down() -> None:
        if started_here:
            down = subprocess.run([str(REPO / "scripts" / "docker.sh"), "down"], capture_output=True, text=True, timeout=120)
            assert down.returncode == 0, down.stderr

    r = subprocess.run([str(REPO / "scripts" / "images.sh"), "functions"], capture_output=True, text=True, timeout=1500)
    if r.returncode != 0:
        engine_down()
        pytest.fail(f"scripts/images.sh functions failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    yield r.stderr
    engine_down()


@pytest.fixture(scope="session")
def docker_stack(docker_images, store, tmp_path_factory):
    """The stack with VIDNOTES_PROFILE=docker: the gateway runs the function images, LocalStack's
    Lambda runs the zip packages in the runtime image. Checks that `down` leaves no container."""
    from stackutil import docker, localstack_containers, stack_up

    with stack_up(tmp_path_factory.mktemp("docker-stack"), models=Path(store.root), profile="docker") as stack:
        yield stack
    run = stack["tmp"] / "run"
    left = docker("ps", "-aq", "--filter", f"label=vidnotes.stack={run}").stdout + docker("ps", "-aq", "--filter", f"name=^{localstack_containers(run)}").stdout
    assert left.strip() == "", f"stack.sh down left containers behind: {left}"
