"""MLflow tracking of training runs (training-time only; the inference images never import it).

Every ``vidnotes train run`` is one MLflow run: params (the resolved config), per-step ``loss``,
``lr`` and ``grad_norm``, per-eval ``wer_domain`` and ``wer_regression``, the gate outcome, the
artifacts (train.log, metrics.json, config.yaml/json, the published manifest). The run's id is
kept in ``<run dir>/mlflow.json`` so a resumed run and ``vidnotes train publish`` log into the
same MLflow run.

Backend: ``MLFLOW_TRACKING_URI`` when set (any MLflow backend: a server, a database, a
directory), else the local default: the SQLite file ``build/mlflow/mlflow.db`` with artifacts
under ``build/mlflow/artifacts`` (what ``make mlflow`` serves).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# the checkout's build/mlflow; an installed package (the training image) uses the working directory's
LOCAL_DIR = Path(os.environ.get("VIDNOTES_MLFLOW_DIR") or ((REPO if (REPO / "pyproject.toml").is_file() else Path.cwd()) / "build" / "mlflow"))
RUN_FILE = "mlflow.json"
DEFAULT_EXPERIMENT = "vidnotes-train"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(LOCAL_DIR / 'mlflow.db').resolve()}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a new experiment on a SQLite backend: ``artifacts/`` beside the database file
    (build/mlflow/artifacts by default; MLflow's own default would be ./mlruns of the working
    directory). A server or another backend decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        else:
            out[key] = "" if v is None else str(v)[:6000]
    return out


class Tracker:
    """One MLflow run, created on first use or reopened from ``<run dir>/mlflow.json``.
    Metrics are buffered and sent in batches (one request per flush, not one per value)."""

    def __init__(self, run_dir: Path, *, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:  # the train extra brings it
            raise ValueError("MLflow tracking needs mlflow (pip install -e '.[train]'), or set tracking: false") from e
        self.run_dir = Path(run_dir)
        self.uri = tracking_uri()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        self._buf: list[Any] = []
        saved = self.run_dir / RUN_FILE
        info = json.loads(saved.read_text()) if saved.is_file() else {}
        if info.get("run_id") and info.get("tracking_uri") == self.uri:
            self.run_id = info["run_id"]
            self.experiment_id = info["experiment_id"]
            if self.client.get_run(self.run_id).info.status != "RUNNING":
                self.client.update_run(self.run_id, "RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment, artifact_location=_artifact_root(self.uri))
            run = self.client.create_run(self.experiment_id, run_name=run_name or self.run_dir.name, tags={"vidnotes.run_dir": str(self.run_dir.resolve())})
            self.run_id = run.info.run_id
            self.run_dir.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(self.info(), indent=2) + "\n")

    def info(self) -> dict[str, str]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri}

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in _flatten(params).items() if k not in have]  # params are write-once (a resumed run)
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def metric(self, key: str, value: float, step: int) -> None:
        from mlflow.entities import Metric

        self._buf.append(Metric(key, float(value), int(time.time() * 1000), int(step)))
        if len(self._buf) >= 300:
            self.flush()

    def flush(self) -> None:
        while self._buf:
            chunk, self._buf = self._buf[:1000], self._buf[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self.client.log_dict(self.run_id, data, name)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status)


def open_tracker(run_dir: Path, config: dict[str, Any]) -> Tracker | None:
    """The run's tracker, or None when the config turns tracking off."""
    if not config.get("tracking", True):
        return None
    return Tracker(run_dir, experiment=config.get("experiment") or DEFAULT_EXPERIMENT)


def loss_history(run_id: str, key: str = "loss", uri: str | None = None) -> list[tuple[int, float]]:
    """(step, value) of a metric of an MLflow run, in step order (what the notebook plots)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or tracking_uri())
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
