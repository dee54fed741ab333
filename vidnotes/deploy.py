"""Point the transcribe Lambda at a Whisper version, the way one does it on AWS.

1. The version must be in the model store the function reads (its ``VIDNOTES_MODEL_STORE``);
   if it is only in the source store (``--store``), it is copied there (sha256-verified).
2. ``GetFunctionConfiguration``; ``VIDNOTES_WHISPER_VERSION=<version>`` is *merged* into
   ``Environment.Variables`` (UpdateFunctionConfiguration replaces the whole map, on AWS as on the
   local stack), sent with the ``RevisionId`` read, and the update is awaited until
   ``LastUpdateStatus`` is ``Successful``.
3. Smoke test: a real recording is uploaded to the inbox bucket and goes through extract-audio and
   transcribe; the answer's ``model`` must name the new version and the transcript must be close
   to the recording's text. On failure the previous configuration is put back.
4. The store's ``CURRENT`` becomes the version.

boto3 only (no torch); endpoints: ``lambda_endpoint`` or ``AWS_ENDPOINT_URL_LAMBDA``, S3:
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (unset: AWS itself).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vidnotes.store import ModelStore, ModelStoreError

TASK = "whisper"
VERSION_VAR = "VIDNOTES_WHISPER_VERSION"
STORE_VAR = "VIDNOTES_MODEL_STORE"
SMOKE_RECORDING = "confbridge-lock-no-join"  # Asterisk test split: "The conference is currently locked and cannot be joined."
SMOKE_FALLBACK_TEXT = "The conference is currently locked and cannot be joined."
SMOKE_MAX_WER = 0.5


class DeployError(RuntimeError):
    """The deployment was refused or failed (the function is left as it was)."""


def log(msg: str) -> None:
    print(f"[vidnotes.deploy] {msg}", file=sys.stderr, flush=True)


def copy_version(src: ModelStore, dst: ModelStore, task: str, version: str) -> dict[str, Any]:
    """Copy ``task/version`` from ``src`` to ``dst`` (verified on fetch, same manifest; not CURRENT)."""
    local, manifest = src.fetch(task, version)
    meta = {k: v for k, v in manifest.items() if k not in ("files", "task", "version")}
    return dst.publish(task, version, local, meta, make_current=False)


def _clients(lambda_endpoint: str | None, timeout: float) -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    lam = boto3.client(
        "lambda",
        endpoint_url=lambda_endpoint or os.environ.get("AWS_ENDPOINT_URL_LAMBDA") or None,
        config=Config(read_timeout=timeout + 60, connect_timeout=10, retries={"max_attempts": 3, "mode": "standard"}),
    )
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None)
    return lam, s3


def wait_updated(lam: Any, function_name: str, *, timeout: float) -> dict[str, Any]:
    """Poll GetFunctionConfiguration until the last update is Successful (raise if it Failed)."""
    deadline = time.monotonic() + timeout
    while True:
        conf = lam.get_function_configuration(FunctionName=function_name)
        status = conf.get("LastUpdateStatus", "Successful")
        if status == "Successful" and conf.get("State", "Active") == "Active":
            return conf
        if status == "Failed" or conf.get("State") == "Failed":
            raise DeployError(f"{function_name}: update failed: {conf.get('LastUpdateStatusReason') or conf.get('StateReason', '?')}")
        if time.monotonic() > deadline:
            raise DeployError(f"{function_name}: update still {status} after {timeout:.0f} s")
        time.sleep(1.0)


def update_environment(lam: Any, function_name: str, variables: dict[str, str], *, revision: str | None, timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"FunctionName": function_name, "Environment": {"Variables": variables}}
    if revision:
        kwargs["RevisionId"] = revision
    lam.update_function_configuration(**kwargs)
    return wait_updated(lam, function_name, timeout=timeout)


def _invoke(lam: Any, function_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    r = lam.invoke(FunctionName=function_name, Payload=json.dumps(payload).encode())
    body = json.loads(r["Payload"].read() or b"null")
    if r.get("FunctionError"):
        raise DeployError(f"{function_name} failed: {body.get('errorType')}: {body.get('errorMessage')}")
    return body


def smoke_recording(work: Path) -> tuple[Path, str]:
    """A short real recording (an Asterisk prompt from the test split, as 16 kHz WAV) and its
    text; espeak-ng speech when the Asterisk prompts are not installed."""
    from vidnotes.datasets import SOUNDS_DIR, read_transcripts

    g722 = SOUNDS_DIR / f"{SMOKE_RECORDING}.g722"
    try:
        text = read_transcripts()[SMOKE_RECORDING]
    except (FileNotFoundError, KeyError):
        text = None
    if text and g722.is_file():
        from vidnotes.audio import decode_audio
        from vidnotes.media import write_wav

        out = work / f"{SMOKE_RECORDING}.wav"
        write_wav(out, decode_audio(g722, input_format="g722"))
        return out, text
    from vidnotes.sample import make_sample_video

    return make_sample_video(work / "smoke.mp4", text=SMOKE_FALLBACK_TEXT), SMOKE_FALLBACK_TEXT


def smoke_test(
    lam: Any, s3: Any, *, version: str, transcribe_function: str, extract_function: str, inbox_bucket: str
) -> dict[str, Any]:
    """Upload a real recording, extract, transcribe; the answer must name ``whisper/<version>``."""
    from vidnotes.wer import wer

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vidnotes-smoke-") as tmp:
        audio, text = smoke_recording(Path(tmp))
        key = f"deploy-smoke/{version}/{int(time.time())}-{audio.name}"
        s3.upload_file(str(audio), inbox_bucket, key)
    ext = _invoke(lam, extract_function, {"bucket": inbox_bucket, "key": key})
    if not ext.get("batches"):
        raise DeployError(f"smoke test: {extract_function} found no audio in s3://{inbox_bucket}/{key}")
    tr = _invoke(lam, transcribe_function, {"job_id": ext["job_id"], "chunks": ext["batches"][0]})
    seg_doc = json.loads(s3.get_object(Bucket=ext["results_bucket"], Key=tr["segments_key"])["Body"].read())
    hyp = " ".join(s["text"].strip() for s in seg_doc["segments"])
    result = {
        "upload": f"s3://{inbox_bucket}/{key}",
        "job_id": ext["job_id"],
        "model": tr["model"],
        "transcript": hyp,
        "reference": text,
        "wer": round(wer([text], [hyp]), 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if tr["model"] != f"whisper/{version}":
        raise DeployError(f"smoke test: {transcribe_function} answered with model {tr['model']!r}, not whisper/{version}")
    if result["wer"] > SMOKE_MAX_WER:
        raise DeployError(f"smoke test: transcript {hyp!r} is too far from {text!r} (WER {result['wer']:.0%})")
    return result


def check_gate(version: str, manifest: dict[str, Any], force: bool) -> None:
    """A version whose training gate failed (domain or regression WER) is refused without force."""
    gate = manifest.get("gate")
    if gate is not None and not gate.get("passed") and not force:
        why = "; ".join(gate.get("reasons") or []) or f"int8 WER {gate.get('candidate_wer')} vs {gate.get('baseline_wer')}"
        raise DeployError(f"whisper/{version} failed its training gate against {gate.get('baseline')} ({why}); pass --force to deploy it anyway")


def deploy_transcribe(
    version: str,
    *,
    source_store: ModelStore,
    function_name: str = "vidnotes-transcribe",
    extract_function: str = "vidnotes-extract-audio",
    lambda_endpoint: str | None = None,
    smoke: bool = True,
    force: bool = False,
    inbox_bucket: str = "vidnotes-inbox",
    timeout: float = 300,
) -> dict[str, Any]:
    if version in source_store.versions(TASK):  # refuse before touching the function
        check_gate(version, source_store.manifest(TASK, version), force)
    lam, s3 = _clients(lambda_endpoint, timeout)
    conf = lam.get_function_configuration(FunctionName=function_name)
    variables = dict((conf.get("Environment") or {}).get("Variables") or {})
    target_root = variables.get(STORE_VAR) or source_store.root
    target = source_store if target_root == source_store.root else ModelStore(target_root)
    log(f"{function_name}: model store {target_root}, {VERSION_VAR}={variables.get(VERSION_VAR, '(unset: CURRENT)')}")

    copied = False
    try:
        manifest = target.manifest(TASK, version)
    except ModelStoreError:
        try:
            manifest = source_store.manifest(TASK, version)
        except ModelStoreError as e:
            raise DeployError(f"whisper/{version} is neither in the function's store {target_root} nor in {source_store.root}: {e}") from e
    check_gate(version, manifest, force)
    if target is not source_store and version not in target.versions(TASK):
        log(f"copying whisper/{version} from {source_store.root} to {target_root} ...")
        copy_version(source_store, target, TASK, version)
        copied = True

    new_vars = {**variables, VERSION_VAR: version}
    log(f"UpdateFunctionConfiguration {function_name}: {VERSION_VAR}={version} (+{len(variables)} variables kept)")
    t0 = time.perf_counter()
    updated = update_environment(lam, function_name, new_vars, revision=conf.get("RevisionId"), timeout=timeout)
    got = (updated.get("Environment") or {}).get("Variables") or {}
    if got != new_vars:
        raise DeployError(f"{function_name}: configuration after the update differs from what was sent: {got}")
    log(f"update Successful in {time.perf_counter() - t0:.1f} s")

    smoke_result = None
    if smoke:
        try:
            smoke_result = smoke_test(
                lam, s3, version=version, transcribe_function=function_name, extract_function=extract_function, inbox_bucket=inbox_bucket
            )
        except Exception as e:
            log(f"smoke test failed ({e}); restoring the previous configuration")
            update_environment(lam, function_name, variables, revision=None, timeout=timeout)
            raise DeployError(f"smoke test failed, previous configuration restored: {e}") from e
        log(f"smoke test: {smoke_result['model']} transcribed {smoke_result['transcript']!r} (WER {smoke_result['wer']:.0%})")
    current_before = target.current(TASK)
    target.set_current(TASK, version)
    return {
        "function": function_name,
        "version": version,
        "previous_version": variables.get(VERSION_VAR),
        "store": target_root,
        "copied_to_store": copied,
        "current_before": current_before,
        "current": version,
        "smoke": smoke_result,
    }
