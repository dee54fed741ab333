"""Each function's IAM policy (infra/policies/) allows exactly what its handler does in S3.

The real handlers run in-process against LocalStack's S3 with every boto3 S3 call recorded; each
call is then checked against the function's policy with a small evaluator of IAM's Allow
statements (actions and resource ARNs with wildcards)."""

from __future__ import annotations

import fnmatch
import json

import boto3
import pytest

from stackutil import CREDS, REPO, load_handler
from vidnotes.sample import make_sample_video
from vidnotes.stages import StageFailed

POLICIES = REPO / "infra" / "policies"
VARS = {"InboxBucket": "vidnotes-inbox", "ResultsBucket": "vidnotes-results", "ModelsBucket": "vidnotes-models", "ModelsPrefix": "store"}
ACTIONS = {
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    "DeleteObject": "s3:DeleteObject", "CopyObject": "s3:PutObject",
}  # fmt: skip


def policy(function: str) -> dict:
    text = (POLICIES / f"{function}.json").read_text()
    for k, v in VARS.items():
        text = text.replace("${" + k + "}", v)
    return json.loads(text)


def allowed(pol: dict, action: str, resource: str) -> bool:
    for st in pol["Statement"]:
        if st["Effect"] != "Allow":
            continue
        if any(fnmatch.fnmatchcase(action, a) for a in st["Action"]) and any(fnmatch.fnmatchcase(resource, r) for r in st["Resource"]):
            return True
    return False


def arn(operation: str, params: dict) -> tuple[str, str]:
    action = ACTIONS[operation]
    if action == "s3:ListBucket":
        return action, f"arn:aws:s3:::{params['Bucket']}"
    return action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def test_evaluator_refuses_what_is_not_granted():
    p = policy("vidnotes-render-pdf")
    assert allowed(p, "s3:PutObject", "arn:aws:s3:::vidnotes-results/jobs/abc/notes.pdf")
    assert not allowed(p, "s3:PutObject", "arn:aws:s3:::vidnotes-inbox/talk.mp4")
    assert not allowed(p, "s3:PutObject", "arn:aws:s3:::vidnotes-results/other/x")
    assert not allowed(p, "s3:DeleteObject", "arn:aws:s3:::vidnotes-results/jobs/abc/notes.pdf")
    assert not allowed(policy("vidnotes-extract-audio"), "s3:GetObject", "arn:aws:s3:::vidnotes-models/store/whisper/CURRENT")


def test_every_handler_s3_call_is_inside_its_policy(live_stack, monkeypatch, tmp_path):
    calls: list[tuple[str, str, dict]] = []
    current = {"fn": ""}
    real_client = boto3.client

    def recording_client(service, *args, **kwargs):
        client = real_client(service, *args, **kwargs)
        if service == "s3":
            client.meta.events.register(
                "before-parameter-build.s3.*", lambda model, params, **_: calls.append((current["fn"], model.name, dict(params)))
            )
        return client

    monkeypatch.setattr(boto3, "client", recording_client)
    for k, v in {**CREDS, "AWS_ENDPOINT_URL": live_stack["s3"], "VIDNOTES_RESULTS_BUCKET": "vidnotes-results",
                 "VIDNOTES_MODEL_STORE": "s3://vidnotes-models/store"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the model cache of an S3 store lives in /tmp

    video = make_sample_video(tmp_path / "talk.mp4", text="Least privilege means asking only for what you use.")
    real_client("s3", endpoint_url=live_stack["s3"]).upload_file(str(video), "vidnotes-inbox", "lp/talk.mp4")
    handlers = {n: load_handler(d, n) for d, n in [
        ("extract_audio", "vidnotes-extract-audio"), ("transcribe", "vidnotes-transcribe"), ("diarize", "vidnotes-diarize"),
        ("summarize", "vidnotes-summarize"), ("render_pdf", "vidnotes-render-pdf")]}  # fmt: skip

    def run(fn, event, *, fails=False):
        current["fn"] = fn
        if fails:
            with pytest.raises(StageFailed):
                handlers[fn](event)
            return None
        return handlers[fn](event)

    ext = run("vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": "lp/talk.mp4"})
    run("vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": "lp/talk.mp4"})  # duplicate path
    run("vidnotes-extract-audio", {"bucket": "vidnotes-inbox", "key": "lp/missing.mp4"}, fails=True)
    for batch in ext["batches"]:
        run("vidnotes-transcribe", {"job_id": ext["job_id"], "chunks": batch})
    run("vidnotes-diarize", {"job_id": ext["job_id"], "speakers": "auto"})
    run("vidnotes-diarize", {"job_id": "00000000000000aa"}, fails=True)
    run("vidnotes-summarize", {"job_id": ext["job_id"], "speakers": True})
    run("vidnotes-render-pdf", {"job_id": ext["job_id"]})
    run("vidnotes-render-pdf", {"job_id": "00000000000000aa"}, fails=True)

    assert {fn for fn, _, _ in calls} == set(handlers), "every handler made S3 calls"
    outside = []
    for fn, op, params in calls:
        action, resource = arn(op, params)
        if not allowed(policy(fn), action, resource):
            outside.append(f"{fn}: {action} {resource}")
    assert not outside, "calls outside the policies:\n" + "\n".join(sorted(set(outside)))
    # and nothing more is granted than is used: every S3 statement allows at least one real call
    for fn in handlers:
        for st in policy(fn)["Statement"]:
            if not any(a.startswith("s3:") for a in st["Action"]):
                continue
            used = [c for c in calls if c[0] == fn and allowed({"Statement": [st]}, *arn(c[1], c[2]))]
            if st["Action"] == ["s3:ListBucket"]:
                # S3 answers a read of a missing key with 404 only to callers that may list the
                # bucket (403 otherwise): reads of the bucket use this grant too
                used += [c for c in calls if c[0] == fn and c[1] in ("HeadObject", "GetObject")
                         and allowed({"Statement": [st]}, "s3:ListBucket", f"arn:aws:s3:::{c[2]['Bucket']}")]
            assert used, f"{fn}: statement {st['Sid']} grants what the handler never uses"
