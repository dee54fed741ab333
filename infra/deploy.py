#!/usr/bin/env python3
"""Deploy vidnotes to AWS with your credentials (or to LocalStack with --endpoint-url).

    .venv/bin/python infra/deploy.py plan    --region eu-west-1 --bucket-prefix acme-vidnotes
    .venv/bin/python infra/deploy.py deploy  --region eu-west-1 --bucket-prefix acme-vidnotes
    .venv/bin/python infra/deploy.py airflow --region eu-west-1 --bucket-prefix acme-vidnotes
    .venv/bin/python infra/deploy.py destroy --region eu-west-1 --bucket-prefix acme-vidnotes [--delete-buckets]

Steps, in this order (``--only`` picks some):

resources  S3 buckets <prefix>-inbox, -results, -models, -training; SQS vidnotes-uploads with its
           dead-letter queue and a queue policy letting S3 send; inbox ObjectCreated -> the queue.
           The same names, documents and settings as LocalStack's init hook (infra/resources.py).
images     an ECR repository per image (the four functions, vidnotes-train), docker login
           (GetAuthorizationToken), tag and push the local ``vidnotes-<name>:latest`` (``make images``).
iam        an execution role per function: trusts lambda.amazonaws.com, inline policy
           infra/policies/<function>.json (its S3 grants and its log group); the managed policies
           vidnotes-airflow (infra/policies/airflow.json) and vidnotes-airflow-training, which you
           attach to Airflow's principal.
functions  log group with retention, the Lambda function (PackageType Image, ImageUri = the pushed
           digest; memory, timeout, environment, /tmp and reserved concurrency from
           functions/functions.json), waiting until it is Active and its last update Successful.
           ``--package zip`` (LocalStack Community, which runs no image functions): python3.11 zip
           functions of the handler and the vidnotes package; their dependencies come from the
           runtime image LocalStack maps python3.11 to (localstack/stack.sh, docs/images.md).

Idempotent: what exists is compared and updated, what matches is left alone. At the end the
Airflow settings (connection, queue URL, bucket names) are printed. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

if __package__ in (None, ""):  # run as a script (python infra/deploy.py): make `infra` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra import resources as res  # noqa: E402
from infra.resources import FunctionSpec, Names  # noqa: E402
from vidnotes.deploy import VERSION_VAR, DeployError, wait_updated  # noqa: E402

STEPS = ("resources", "images", "iam", "functions")
KEPT_VARIABLES = (VERSION_VAR,)  # set by `vidnotes deploy transcribe`: a redeploy keeps the model version
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)
DOCKER_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}
ROLE_PROPAGATION_S = 90  # a new IAM role can take a few seconds before Lambda may assume it
QUEUE_RECREATE_S = 75  # SQS refuses a queue name for 60 s after its deletion
ZIP_RUNTIME = "python3.11"  # --package zip: the runtime of the functions' images


def say(step: str, what: str, outcome: str = "") -> None:
    print(f"[{step:9s}] {what}{': ' + outcome if outcome else ''}", file=sys.stderr, flush=True)


def error_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


@dataclass
class Options:
    region: str
    names: Names = field(default_factory=Names)
    endpoint_url: str | None = None
    architecture: str = "x86_64"
    push: bool = True
    images: dict[str, str] = field(default_factory=dict)  # function (or repository) -> image URI, instead of ECR's
    reserved_concurrency: bool = True
    log_retention_days: int = 30
    timeout: float = 600  # seconds to wait for each function update
    functions: list[FunctionSpec] = field(default_factory=res.load_functions)
    package: str = "image"  # image (AWS) | zip (LocalStack Community)


# -- what is deployed: shared by plan and deploy ------------------------------------------------------
def role_arn(account: str, fn: FunctionSpec) -> str:
    return f"arn:aws:iam::{account}:role/{fn.role}"


def policy_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:policy/{name}"


def function_config(fn: FunctionSpec, opts: Options, account: str) -> dict[str, Any]:
    """The UpdateFunctionConfiguration fields this deployment manages."""
    return {
        "Role": role_arn(account, fn),
        "MemorySize": fn.memory,
        "Timeout": fn.timeout,
        "Environment": {"Variables": fn.deployed_environment(opts.names)},
        "EphemeralStorage": {"Size": fn.ephemeral_storage},
        "Description": fn.description,
    }


def create_function_request(fn: FunctionSpec, opts: Options, account: str, image_uri: str) -> dict[str, Any]:
    if opts.package == "zip":
        code: dict[str, Any] = {"PackageType": "Zip", "Runtime": ZIP_RUNTIME, "Handler": fn.handler, "Code": {"ZipFile": function_zip(fn)}}
    else:
        code = {"PackageType": "Image", "Code": {"ImageUri": image_uri}}
    return {
        "FunctionName": fn.name,
        **code,
        "Architectures": [opts.architecture],
        "Tags": dict(res.PROJECT_TAG),
        **function_config(fn, opts, account),
    }


def function_zip(fn: FunctionSpec) -> bytes:
    """The zip package of a function: its directory's Python files and the vidnotes package at the
    root, as the Dockerfiles copy them to LAMBDA_TASK_ROOT. Byte-for-byte reproducible (sorted
    names, fixed times), so an unchanged function keeps its CodeSha256."""
    files = sorted(p for p in (res.REPO / fn.dir).glob("*.py"))
    base = res.REPO / "vidnotes"
    files += sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files:
            name = path.name if path.parent == res.REPO / fn.dir else str(path.relative_to(res.REPO))
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
    return buf.getvalue()


def code_sha256(data: bytes) -> str:
    """Lambda's CodeSha256 of a zip package."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def airflow_policies(opts: Options, account: str) -> dict[str, dict[str, Any]]:
    values = {**opts.names.policy_vars(), "Region": opts.region, "AccountId": account}
    return {
        res.AIRFLOW_POLICY: res.policy_document("airflow", values),
        res.AIRFLOW_TRAINING_POLICY: res.policy_document("airflow-training", values),
    }


def queue_url_on_aws(region: str, account: str) -> str:
    return f"https://sqs.{region}.amazonaws.com/{account}/{res.QUEUE}"


def airflow_settings(opts: Options, queue_url: str) -> dict[str, str]:
    """Environment of every Airflow process (dags/video_to_notes.py reads the queue URL and bucket
    names at parse time: vidnotes.orchestration.Settings; dags/train_and_redeploy.py the store)."""
    extra: dict[str, Any] = {"region_name": opts.region}
    if opts.endpoint_url:
        extra["endpoint_url"] = opts.endpoint_url
    n = opts.names
    return {
        f"AIRFLOW_CONN_{res.AIRFLOW_CONN_ID.upper()}": json.dumps({"conn_type": "aws", "extra": extra}),
        "VIDNOTES_AIRFLOW_QUEUE_URL": queue_url,
        "VIDNOTES_AIRFLOW_INBOX_BUCKET": n.inbox,
        "VIDNOTES_AIRFLOW_RESULTS_BUCKET": n.results,
        "VIDNOTES_AIRFLOW_MODEL_STORE": n.model_store,
        "VIDNOTES_AIRFLOW_TRAIN_DATASET": n.train_dataset,
    }


def airflow_text(opts: Options, settings: dict[str, str], account: str) -> str:
    conn_var = f"AIRFLOW_CONN_{res.AIRFLOW_CONN_ID.upper()}"
    lines = [f"# Airflow settings for vidnotes in {opts.region}: the environment of every Airflow process"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in settings.items()]
    lines += [
        "# or keep the connection in Airflow's database instead of the environment:",
        f"#   airflow connections add {res.AIRFLOW_CONN_ID} --conn-json {shlex.quote(settings[conn_var])}",
        "# credentials: Airflow's own (instance/task role, or the environment); give that principal",
        f"#   {policy_arn(account, res.AIRFLOW_POLICY)}   (video_to_notes, video_to_notes_uploads)",
        f"#   {policy_arn(account, res.AIRFLOW_TRAINING_POLICY)}   (train_and_redeploy, only if you run it)",
    ]
    return "\n".join(lines) + "\n"


def plan(opts: Options, account: str) -> dict[str, Any]:
    """Everything deploy makes, with every document, without calling AWS."""
    n = opts.names
    queue_arn = f"arn:aws:sqs:{opts.region}:{account}:{res.QUEUE}"
    dlq_arn = f"arn:aws:sqs:{opts.region}:{account}:{res.DLQ}"
    registry = f"{account}.dkr.ecr.{opts.region}.amazonaws.com"
    images = {
        fn.name: opts.images.get(fn.name, f"{registry}/{fn.repository}@<digest of the pushed {fn.local_image}>") for fn in opts.functions
    }
    return {
        "region": opts.region,
        "account": account,
        "resources": {
            "buckets": n.buckets,
            "queues": {res.DLQ: res.dlq_attributes(), res.QUEUE: res.queue_attributes(dlq_arn, queue_arn, n.inbox)},
            "notification": {"Bucket": n.inbox, "QueueConfigurations": [res.queue_notification(queue_arn)]},
        },
        "images": {
            repo: {
                "local_image": f"{repo}:latest",
                "repository_uri": f"{registry}/{repo}",
                "lifecycle_policy": res.ecr_lifecycle_policy(),
                "repository_policy": None if repo == res.TRAIN_IMAGE else res.ecr_repository_policy(opts.region, account),
            }
            for repo in res.repositories(opts.functions)
        },
        "iam": {
            "roles": {
                fn.role: {
                    "AssumeRolePolicyDocument": res.lambda_trust_policy(),
                    "InlinePolicies": {fn.name: res.policy_document(fn.name, n.policy_vars())},
                }
                for fn in opts.functions
            },
            "policies": airflow_policies(opts, account),
        },
        "functions": {
            fn.name: {
                **create_function_request(fn, opts, account, images[fn.name]),
                "ReservedConcurrentExecutions": fn.concurrency if opts.reserved_concurrency else None,
                "LogGroup": {"logGroupName": fn.log_group, "retentionInDays": opts.log_retention_days},
            }
            for fn in opts.functions
        },
        "airflow": airflow_settings(opts, queue_url_on_aws(opts.region, account)),
    }


def plan_text(p: dict[str, Any], opts: Options) -> str:
    r, n = p["resources"], opts.names
    lines = [f"vidnotes in region {p['region']}, account {p['account']}; `deploy` makes or updates:", "resources"]
    lines.append(f"  S3 buckets   {', '.join(r['buckets'])} (tagged project=vidnotes, public access blocked)")
    lines.append(f"  SQS queue    {res.DLQ}: messages kept {res.DLQ_RETENTION_SECONDS // 86400} days")
    lines.append(
        f"  SQS queue    {res.QUEUE}: to {res.DLQ} after {res.MAX_RECEIVE_COUNT} receives; s3.amazonaws.com may send from {n.inbox}"
    )
    lines.append(f"  S3 event     {n.inbox} {', '.join(res.NOTIFICATION_EVENTS)} -> {res.QUEUE}")
    lines.append("images")
    for repo, spec in p["images"].items():
        lines.append(f"  ECR repo     {repo}: docker push {spec['local_image']} -> {spec['repository_uri']}:latest")
    lines.append("iam")
    for role, spec in p["iam"]["roles"].items():
        lines.append(
            f"  IAM role     {role}: assumed by lambda.amazonaws.com, inline policy infra/policies/{next(iter(spec['InlinePolicies']))}.json"
        )
    for name in p["iam"]["policies"]:
        lines.append(f"  IAM policy   {name}: attach to Airflow's principal")
    lines.append("functions")
    for name, f in p["functions"].items():
        conc = f["ReservedConcurrentExecutions"]
        lines.append(
            f"  Lambda       {name}: image {f['Code']['ImageUri']}, {f['Architectures'][0]}, {f['MemorySize']} MB, "
            f"{f['Timeout']} s, /tmp {f['EphemeralStorage']['Size']} MB, reserved concurrency {conc if conc is not None else '(unchanged)'}, "
            f"{len(f['Environment']['Variables'])} variables; logs {f['LogGroup']['logGroupName']} "
            f"({f['LogGroup']['retentionInDays']} days)"
        )
    lines.append("airflow")
    lines += ["  " + line for line in airflow_text(opts, p["airflow"], p["account"]).splitlines()]
    return "\n".join(lines) + "\n"


# -- docker -----------------------------------------------------------------------------------------
class Docker:
    """The docker CLI (login, tag, push, image inspect)."""

    def __init__(self, executable: str = "docker") -> None:
        self.executable = executable

    def run(self, *args: str, input: str | None = None) -> str:
        try:
            proc = subprocess.run([self.executable, *args], input=input, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise DeployError(f"{self.executable} not found: the images step needs Docker (or --skip-push)") from e
        if proc.returncode != 0:
            raise DeployError(f"docker {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc.stdout

    def architecture(self, image: str) -> str | None:
        """The image's architecture (amd64, arm64), None when there is no such local image."""
        try:
            return self.run("image", "inspect", "--format", "{{.Architecture}}", image).strip()
        except DeployError:
            return None


# -- the deployment ---------------------------------------------------------------------------------
class Deployer:
    def __init__(self, session: Any, opts: Options, *, docker: Docker | None = None) -> None:
        self.session = session
        self.opts = opts
        self.docker = docker or Docker()
        self._clients: dict[str, Any] = {}
        self._account: str | None = None

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            self._clients[service] = self.session.client(
                service,
                region_name=self.opts.region,
                endpoint_url=self.opts.endpoint_url,
                config=Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=120),
            )
        return self._clients[service]

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = self.client("sts").get_caller_identity()["Account"]
        return self._account

    # ---- resources
    def deploy_resources(self) -> str:
        """Buckets, queues, notification; returns the queue URL."""
        for bucket in self.opts.names.buckets:
            self.ensure_bucket(bucket)
        dlq_url = self.ensure_queue(res.DLQ, res.dlq_attributes())
        dlq_arn = self.queue_arn(dlq_url)
        url = self.ensure_queue(res.QUEUE)
        arn = self.queue_arn(url)
        self.client("sqs").set_queue_attributes(QueueUrl=url, Attributes=res.queue_attributes(dlq_arn, arn, self.opts.names.inbox))
        say("resources", f"queue {res.QUEUE} attributes", f"redrive to {res.DLQ} after {res.MAX_RECEIVE_COUNT} receives, queue policy set")
        self.ensure_notification(self.opts.names.inbox, arn)
        return url

    def ensure_bucket(self, bucket: str) -> None:
        s3 = self.client("s3")
        try:
            s3.head_bucket(Bucket=bucket)
            say("resources", f"bucket {bucket}", "exists")
            return
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                raise DeployError(f"bucket {bucket} exists but is not yours (bucket names are global): pick another --bucket-prefix") from e
            if status == 301:
                raise DeployError(f"bucket {bucket} exists in another region than {self.opts.region}") from e
            if status != 404:
                raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.opts.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.opts.region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as e:
            if error_code(e) == "BucketAlreadyExists":
                raise DeployError(f"bucket name {bucket} is taken (bucket names are global): pick another --bucket-prefix") from e
            if error_code(e) != "BucketAlreadyOwnedByYou":
                raise
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in res.PROJECT_TAG.items()]})
        say("resources", f"bucket {bucket}", "created")

    def ensure_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        sqs = self.client("sqs")
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            outcome = "exists"
        except ClientError as e:
            if error_code(e) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
            deadline = time.monotonic() + QUEUE_RECREATE_S
            while True:
                try:
                    url = sqs.create_queue(QueueName=name, tags=dict(res.PROJECT_TAG))["QueueUrl"]
                    break
                except ClientError as e2:
                    if (
                        error_code(e2) not in ("AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently")
                        or time.monotonic() > deadline
                    ):
                        raise
                    say("resources", f"queue {name}", "deleted less than 60 s ago; SQS makes us wait before creating it again")
                    time.sleep(10)
            outcome = "created"
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        say("resources", f"queue {name}", outcome)
        return url

    def queue_arn(self, url: str) -> str:
        return self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def ensure_notification(self, bucket: str, queue_arn: str) -> None:
        """Our QueueConfiguration (by Id) in the bucket's notification configuration; others are kept.
        Not re-put when it is already there (each put makes S3 send an s3:TestEvent)."""
        s3 = self.client("s3")
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
        ours = res.queue_notification(queue_arn)
        queues = current.get("QueueConfigurations", [])
        have = next((q for q in queues if q.get("Id") == ours["Id"]), None)
        if (
            have
            and have.get("QueueArn") == queue_arn
            and sorted(have.get("Events", [])) == sorted(ours["Events"])
            and not have.get("Filter")
        ):
            say("resources", f"notification {bucket} -> {res.QUEUE}", "exists")
            return
        keep = ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration")
        config = {k: current[k] for k in keep if k in current}
        config["QueueConfigurations"] = [q for q in queues if q.get("Id") != ours["Id"]] + [ours]
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
        say("resources", f"notification {bucket} -> {res.QUEUE}", "updated" if have else "created")

    # ---- images
    def deploy_images(self) -> dict[str, str]:
        """Repositories, and (unless --skip-push) login, tag and push; returns each function's ImageUri."""
        uris = {repo: self.ensure_repository(repo, lambda_pull=repo != res.TRAIN_IMAGE) for repo in res.repositories(self.opts.functions)}
        if self.opts.push:
            self.docker_login()
            for repo, uri in uris.items():
                self.push(repo, uri)
        return {fn.name: self.image_uri(fn) for fn in self.opts.functions}

    def ensure_repository(self, name: str, *, lambda_pull: bool) -> str:
        ecr = self.client("ecr")
        try:
            repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
            outcome = "exists"
        except ClientError as e:
            if error_code(e) != "RepositoryNotFoundException":
                raise
            repo = ecr.create_repository(
                repositoryName=name,
                imageTagMutability="MUTABLE",  # :latest is pushed again on every deploy; functions use the digest
                imageScanningConfiguration={"scanOnPush": True},
                tags=[{"Key": k, "Value": v} for k, v in res.PROJECT_TAG.items()],
            )["repository"]
            outcome = "created"
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps(res.ecr_lifecycle_policy()))
        if lambda_pull:
            ecr.set_repository_policy(repositoryName=name, policyText=json.dumps(res.ecr_repository_policy(self.opts.region, self.account)))
        say("images", f"repository {repo['repositoryUri']}", outcome)
        return repo["repositoryUri"]

    def docker_login(self) -> None:
        auth = self.client("ecr").get_authorization_token()["authorizationData"][0]
        user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
        self.docker.run("login", "--username", user, "--password-stdin", auth["proxyEndpoint"], input=password)
        say("images", f"docker login {auth['proxyEndpoint']}", "ok")

    def push(self, repo: str, repository_uri: str) -> None:
        local = f"{repo}:latest"
        arch = self.docker.architecture(local)
        if arch is None:
            if repo == res.TRAIN_IMAGE:
                say("images", f"push {local}", "no such local image, skipped (only the training DAG's ECS runner uses it)")
                return
            raise DeployError(f"no local image {local}: build the images first (make images), or pass --skip-push")
        if repo != res.TRAIN_IMAGE and DOCKER_ARCH.get(arch) != self.opts.architecture:
            raise DeployError(
                f"{local} is built for {arch}, the functions are deployed as {self.opts.architecture}: rebuild or pass --architecture"
            )
        t0 = time.monotonic()
        self.docker.run("tag", local, f"{repository_uri}:latest")
        say("images", f"push {local} -> {repository_uri}:latest", "pushing ...")
        self.docker.run("push", f"{repository_uri}:latest")
        say("images", f"push {local}", f"done in {time.monotonic() - t0:.0f} s")

    def image_uri(self, fn: FunctionSpec) -> str:
        """--image override, else ECR's digest of <repository>:latest (repository@sha256:...)."""
        if fn.name in self.opts.images:
            return self.opts.images[fn.name]
        ecr = self.client("ecr")
        try:
            repo = ecr.describe_repositories(repositoryNames=[fn.repository])["repositories"][0]
            detail = ecr.describe_images(repositoryName=fn.repository, imageIds=[{"imageTag": "latest"}])["imageDetails"][0]
        except ClientError as e:
            if error_code(e) in ("RepositoryNotFoundException", "ImageNotFoundException"):
                raise DeployError(f"{fn.repository}:latest is not in ECR: run the images step first (without --skip-push)") from e
            raise
        return f"{repo['repositoryUri']}@{detail['imageDigest']}"

    # ---- iam
    def deploy_iam(self) -> None:
        for fn in self.opts.functions:
            self.ensure_role(fn)
        for name, doc in airflow_policies(self.opts, self.account).items():
            self.ensure_managed_policy(name, doc)

    def ensure_role(self, fn: FunctionSpec) -> None:
        iam = self.client("iam")
        trust = res.lambda_trust_policy()
        inline = res.policy_document(fn.name, self.opts.names.policy_vars())
        changed = []
        try:
            role = iam.get_role(RoleName=fn.role)["Role"]
            if role.get("AssumeRolePolicyDocument") != trust:
                iam.update_assume_role_policy(RoleName=fn.role, PolicyDocument=json.dumps(trust))
                changed.append("trust policy")
        except ClientError as e:
            if error_code(e) != "NoSuchEntity":
                raise
            iam.create_role(
                RoleName=fn.role,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description=f"vidnotes: execution role of the Lambda function {fn.name}",
                Tags=[{"Key": k, "Value": v} for k, v in res.PROJECT_TAG.items()],
            )
            changed.append("created")
        try:
            current = iam.get_role_policy(RoleName=fn.role, PolicyName=fn.name)["PolicyDocument"]
        except ClientError as e:
            if error_code(e) != "NoSuchEntity":
                raise
            current = None
        if current != inline:
            iam.put_role_policy(RoleName=fn.role, PolicyName=fn.name, PolicyDocument=json.dumps(inline))
            changed.append(f"inline policy {fn.name} {'set' if current is None else 'updated'}")
        say("iam", f"role {fn.role}", ", ".join(changed) or "unchanged")

    def ensure_managed_policy(self, name: str, doc: dict[str, Any]) -> None:
        iam = self.client("iam")
        arn = policy_arn(self.account, name)
        try:
            pol = iam.get_policy(PolicyArn=arn)["Policy"]
        except ClientError as e:
            if error_code(e) != "NoSuchEntity":
                raise
            iam.create_policy(
                PolicyName=name,
                PolicyDocument=json.dumps(doc),
                Description="vidnotes: what Airflow's DAGs call (infra/policies); attach it to Airflow's role or user",
                Tags=[{"Key": k, "Value": v} for k, v in res.PROJECT_TAG.items()],
            )
            say("iam", f"policy {name}", "created")
            return
        current = iam.get_policy_version(PolicyArn=arn, VersionId=pol["DefaultVersionId"])["PolicyVersion"]["Document"]
        if current == doc:
            say("iam", f"policy {name}", "unchanged")
            return
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        if len(versions) >= 5:  # IAM keeps at most five versions
            oldest = min((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
            iam.delete_policy_version(PolicyArn=arn, VersionId=oldest["VersionId"])
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(doc), SetAsDefault=True)
        say("iam", f"policy {name}", "updated (new default version)")

    # ---- functions
    def deploy_functions(self, images: dict[str, str] | None = None) -> None:
        images = images or {}
        for fn in self.opts.functions:
            uri = "" if self.opts.package == "zip" else images.get(fn.name) or self.image_uri(fn)
            self.ensure_log_group(fn)
            self.ensure_function(fn, uri)
            if self.opts.reserved_concurrency:
                self.ensure_concurrency(fn)

    def ensure_log_group(self, fn: FunctionSpec) -> None:
        logs = self.client("logs")
        try:
            logs.create_log_group(logGroupName=fn.log_group, tags=dict(res.PROJECT_TAG))
            outcome = "created"
        except ClientError as e:
            if error_code(e) != "ResourceAlreadyExistsException":
                raise
            outcome = "exists"
        logs.put_retention_policy(logGroupName=fn.log_group, retentionInDays=self.opts.log_retention_days)
        say("functions", f"log group {fn.log_group}", f"{outcome}, retention {self.opts.log_retention_days} days")

    def ensure_function(self, fn: FunctionSpec, image_uri: str) -> None:
        lam = self.client("lambda")
        try:
            current = lam.get_function(FunctionName=fn.name)
        except ClientError as e:
            if error_code(e) != "ResourceNotFoundException":
                raise
            self.create_function(fn, image_uri)
            return
        conf = current["Configuration"]
        want = function_config(fn, self.opts, self.account)
        have_vars = (conf.get("Environment") or {}).get("Variables") or {}
        want["Environment"]["Variables"].update({k: have_vars[k] for k in KEPT_VARIABLES if k in have_vars})
        changed = []
        if self.opts.package == "zip":
            data = function_zip(fn)
            if conf.get("CodeSha256") != code_sha256(data):
                self.wait(fn)
                lam.update_function_code(FunctionName=fn.name, ZipFile=data)
                self.wait(fn)
                changed.append(f"code (zip, {len(data) / 1e6:.1f} MB)")
        elif current.get("Code", {}).get("ImageUri") != image_uri or conf.get("Architectures", ["x86_64"]) != [self.opts.architecture]:
            self.wait(fn)  # an update still in progress would refuse the next one
            lam.update_function_code(FunctionName=fn.name, ImageUri=image_uri, Architectures=[self.opts.architecture])
            self.wait(fn)
            changed.append(f"code {image_uri}")
        differs = config_differences(conf, want)
        if differs:
            self.wait(fn)
            lam.update_function_configuration(FunctionName=fn.name, **want)
            self.wait(fn)
            changed.append("configuration (" + ", ".join(differs) + ")")
        say("functions", f"function {fn.name}", "updated " + "; ".join(changed) if changed else "unchanged")

    def create_function(self, fn: FunctionSpec, image_uri: str) -> None:
        lam = self.client("lambda")
        request = create_function_request(fn, self.opts, self.account, image_uri)
        deadline = time.monotonic() + ROLE_PROPAGATION_S
        while True:
            try:
                lam.create_function(**request)
                break
            except ClientError as e:
                message = str(e)
                if error_code(e) == "InvalidParameterValueException" and "role" in message.lower() and time.monotonic() < deadline:
                    say("functions", f"function {fn.name}", "the new role is not assumable yet, retrying in 5 s")
                    time.sleep(5)
                    continue
                raise
        say("functions", f"function {fn.name}", "created, waiting until Active ...")
        t0 = time.monotonic()
        self.wait(fn)
        say("functions", f"function {fn.name}", f"Active after {time.monotonic() - t0:.1f} s")

    def wait(self, fn: FunctionSpec) -> None:
        wait_updated(self.client("lambda"), fn.name, timeout=self.opts.timeout)

    def ensure_concurrency(self, fn: FunctionSpec) -> None:
        lam = self.client("lambda")
        have = lam.get_function_concurrency(FunctionName=fn.name).get("ReservedConcurrentExecutions")
        if have == fn.concurrency:
            say("functions", f"reserved concurrency {fn.name}", f"{have}, unchanged")
            return
        try:
            lam.put_function_concurrency(FunctionName=fn.name, ReservedConcurrentExecutions=fn.concurrency)
        except ClientError as e:
            if error_code(e) in ("InvalidParameterValueException", "LimitExceededException"):
                raise DeployError(
                    f"{fn.name}: reserved concurrency {fn.concurrency} refused ({e}). New accounts often have a concurrency "
                    "limit of 10, of which Lambda keeps 10-100 unreserved: ask for a higher limit (Service Quotas), or "
                    "pass --no-reserved-concurrency"
                ) from e
            raise
        say("functions", f"reserved concurrency {fn.name}", f"{have if have is not None else 'none'} -> {fn.concurrency}")

    # ---- airflow
    def queue_url(self) -> str:
        """The uploads queue's URL as SQS reports it (the AWS form when the queue is not there yet)."""
        try:
            return self.client("sqs").get_queue_url(QueueName=res.QUEUE)["QueueUrl"]
        except ClientError as e:
            if error_code(e) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
            say("airflow", f"queue {res.QUEUE} not found (deploy the resources step): its URL on AWS is assumed")
            return queue_url_on_aws(self.opts.region, self.account)

    # ---- destroy
    def destroy(self, steps: list[str], *, delete_buckets: bool) -> None:
        if "functions" in steps:
            self.destroy_functions()
        if "iam" in steps:
            self.destroy_iam()
        if "images" in steps:
            self.destroy_images()
        if "resources" in steps:
            self.destroy_resources(delete_buckets)

    def destroy_functions(self) -> None:
        lam, logs = self.client("lambda"), self.client("logs")
        for fn in self.opts.functions:
            outcome = _gone(lambda fn=fn: lam.delete_function(FunctionName=fn.name), "ResourceNotFoundException")
            say("functions", f"function {fn.name}", outcome)
            outcome = _gone(lambda fn=fn: logs.delete_log_group(logGroupName=fn.log_group), "ResourceNotFoundException")
            say("functions", f"log group {fn.log_group}", outcome)

    def destroy_iam(self) -> None:
        iam = self.client("iam")
        for fn in self.opts.functions:
            try:
                for name in iam.list_role_policies(RoleName=fn.role)["PolicyNames"]:
                    iam.delete_role_policy(RoleName=fn.role, PolicyName=name)
                for att in iam.list_attached_role_policies(RoleName=fn.role)["AttachedPolicies"]:
                    iam.detach_role_policy(RoleName=fn.role, PolicyArn=att["PolicyArn"])
                iam.delete_role(RoleName=fn.role)
                say("iam", f"role {fn.role}", "deleted")
            except ClientError as e:
                if error_code(e) != "NoSuchEntity":
                    raise
                say("iam", f"role {fn.role}", "absent")
        for name in (res.AIRFLOW_POLICY, res.AIRFLOW_TRAINING_POLICY):
            arn = policy_arn(self.account, name)
            try:
                ents = iam.list_entities_for_policy(PolicyArn=arn)
            except ClientError as e:
                if error_code(e) != "NoSuchEntity":
                    raise
                say("iam", f"policy {name}", "absent")
                continue
            for kind, key, detach in (("PolicyRoles", "RoleName", iam.detach_role_policy), ("PolicyUsers", "UserName", iam.detach_user_policy),
                                      ("PolicyGroups", "GroupName", iam.detach_group_policy)):  # fmt: skip
                for ent in ents.get(kind, []):
                    detach(**{key: ent[key], "PolicyArn": arn})
                    say("iam", f"policy {name}", f"detached from {key[:-4].lower()} {ent[key]}")
            for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
                if not v["IsDefaultVersion"]:
                    iam.delete_policy_version(PolicyArn=arn, VersionId=v["VersionId"])
            iam.delete_policy(PolicyArn=arn)
            say("iam", f"policy {name}", "deleted")

    def destroy_images(self) -> None:
        ecr = self.client("ecr")
        for repo in res.repositories(self.opts.functions):
            outcome = _gone(lambda repo=repo: ecr.delete_repository(repositoryName=repo, force=True), "RepositoryNotFoundException")
            say("images", f"repository {repo} (and its images)", outcome)

    def destroy_resources(self, delete_buckets: bool) -> None:
        s3, sqs, n = self.client("s3"), self.client("sqs"), self.opts.names
        try:
            current = s3.get_bucket_notification_configuration(Bucket=n.inbox)
            queues = current.get("QueueConfigurations", [])
            if any(q.get("Id") == res.NOTIFICATION_ID for q in queues):
                keep = ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration")
                config = {k: current[k] for k in keep if k in current}
                config["QueueConfigurations"] = [q for q in queues if q.get("Id") != res.NOTIFICATION_ID]
                s3.put_bucket_notification_configuration(Bucket=n.inbox, NotificationConfiguration=config)
                say("resources", f"notification {n.inbox} -> {res.QUEUE}", "removed")
        except ClientError as e:
            if error_code(e) != "NoSuchBucket":
                raise
        for name in (res.QUEUE, res.DLQ):
            try:
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
                say("resources", f"queue {name}", "deleted")
            except ClientError as e:
                if error_code(e) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                    raise
                say("resources", f"queue {name}", "absent")
        for bucket in n.buckets:
            if not delete_buckets:
                say("resources", f"bucket {bucket}", "kept (--delete-buckets deletes the buckets and everything in them)")
                continue
            try:
                count = self.empty_bucket(bucket)
                s3.delete_bucket(Bucket=bucket)
                say("resources", f"bucket {bucket}", f"deleted ({count} objects)")
            except ClientError as e:
                if error_code(e) != "NoSuchBucket":
                    raise
                say("resources", f"bucket {bucket}", "absent")

    def empty_bucket(self, bucket: str) -> int:
        s3 = self.client("s3")
        count = 0
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            objs = [{"Key": o["Key"], "VersionId": o["VersionId"]} for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            for i in range(0, len(objs), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objs[i : i + 1000], "Quiet": True})
            count += len(objs)
        return count


def _gone(delete: Callable[[], Any], missing_code: str) -> str:
    try:
        delete()
        return "deleted"
    except ClientError as e:
        if error_code(e) != missing_code:
            raise
        return "absent"


def config_differences(conf: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Names of the managed fields where GetFunction's configuration differs from ``want``."""
    have = {
        "Role": conf.get("Role"),
        "MemorySize": conf.get("MemorySize"),
        "Timeout": conf.get("Timeout"),
        "Environment": {"Variables": (conf.get("Environment") or {}).get("Variables") or {}},
        "EphemeralStorage": {"Size": (conf.get("EphemeralStorage") or {}).get("Size", 512)},
        "Description": conf.get("Description") or "",
    }
    return [k for k in want if have.get(k) != want[k]]


# -- command line -----------------------------------------------------------------------------------
def parse_steps(text: str) -> list[str]:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise argparse.ArgumentTypeError(f"steps are {', '.join(STEPS)} (comma-separated), got {text!r}")
    return steps


def parse_image(text: str) -> tuple[str, str]:
    name, sep, uri = text.partition("=")
    if not sep or not name or not uri:
        raise argparse.ArgumentTypeError(f"expected FUNCTION=IMAGE_URI, got {text!r}")
    return name, uri


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="infra/deploy.py",
        description="Deploy vidnotes (S3, SQS, ECR, IAM, four Lambda functions) to AWS with your credentials, or to "
        "LocalStack with --endpoint-url. Details: infra/README.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  infra/deploy.py plan --region eu-west-1 --bucket-prefix acme-vidnotes\n"
        "  infra/deploy.py deploy --region eu-west-1 --bucket-prefix acme-vidnotes --airflow-env build/airflow-aws.env\n"
        "  infra/deploy.py deploy --region eu-west-1 --bucket-prefix acme-vidnotes --only images,functions   # new images\n"
        "  infra/deploy.py destroy --region eu-west-1 --bucket-prefix acme-vidnotes --delete-buckets --yes",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile's)")
    common.add_argument("--profile", help="AWS profile of ~/.aws/config (default: the environment's credentials)")
    common.add_argument("--endpoint-url", help="one endpoint for every service, e.g. LocalStack's http://localhost:4566 (default: AWS)")
    common.add_argument(
        "--bucket-prefix", default="vidnotes",
        help="buckets are <prefix>-inbox, -results, -models, -training; S3 names are global, so pick your own on AWS (default: %(default)s)",
    )  # fmt: skip
    common.add_argument(
        "--models-prefix", default="store", help="key prefix of the model store in the models bucket (default: %(default)s)"
    )

    steps_help = f"comma-separated steps, of {','.join(STEPS)} (default: all)"
    function_opts = argparse.ArgumentParser(add_help=False)
    function_opts.add_argument(
        "--architecture",
        choices=["x86_64", "arm64"],
        default="x86_64",
        help="the functions' (and images') architecture (default: %(default)s)",
    )
    function_opts.add_argument(
        "--image", action="append", type=parse_image, default=[], metavar="FUNCTION=IMAGE_URI",
        help="use this image for a function instead of the digest pushed to ECR (repeatable)",
    )  # fmt: skip
    function_opts.add_argument("--no-reserved-concurrency", action="store_true", help="leave the functions' reserved concurrency alone")
    function_opts.add_argument(
        "--package", choices=["image", "zip"], default="image",
        help="image: container images from ECR (AWS); zip: python3.11 zip functions of the code alone, for LocalStack "
        "Community, whose runtime image carries the dependencies (default: %(default)s)",
    )  # fmt: skip
    function_opts.add_argument(
        "--log-retention-days",
        type=int,
        choices=LOG_RETENTION_DAYS,
        default=30,
        metavar="DAYS",
        help="CloudWatch Logs retention (default: %(default)s)",
    )

    p = sub.add_parser("plan", parents=[common, function_opts], help="print what deploy makes (names, settings, documents); calls no AWS API",
                       description="Print every resource deploy makes or updates, offline (no credentials needed).")  # fmt: skip
    p.add_argument("--account-id", default="<account-id>", help="account id to fill into ARNs and URLs")
    p.add_argument("--json", action="store_true", help="the full plan as JSON, every policy document included")

    d = sub.add_parser("deploy", parents=[common, function_opts], help="create or update everything (idempotent)",
                       description="Create what is missing, update what differs, leave the rest; prints the Airflow settings at the end.")  # fmt: skip
    d.add_argument("--only", type=parse_steps, default=list(STEPS), metavar="STEPS", help=steps_help)
    d.add_argument("--skip-push", action="store_true", help="do not push images: use what ECR holds as :latest")
    d.add_argument("--docker", default="docker", help="docker executable (default: %(default)s)")
    d.add_argument("--timeout", type=float, default=600, help="seconds to wait for each function update (default: %(default)s)")
    d.add_argument("--airflow-env", type=Path, metavar="FILE", help="also write the Airflow settings (export lines) to FILE")

    a = sub.add_parser("airflow", parents=[common], help="print the Airflow connection and settings of a deployed stack")
    a.add_argument("--airflow-env", type=Path, metavar="FILE", help="also write them (export lines) to FILE")

    x = sub.add_parser("destroy", parents=[common], help="delete what deploy made (buckets only with --delete-buckets)",
                       description="Delete functions, log groups, roles, the Airflow policies (detached first), ECR repositories "
                       "(images included), the notification and the queues. Buckets are kept unless --delete-buckets.")  # fmt: skip
    x.add_argument("--only", type=parse_steps, default=list(STEPS), metavar="STEPS", help=steps_help)
    x.add_argument("--delete-buckets", action="store_true", help="also empty and delete the four buckets (uploads, results, models!)")
    x.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return ap


def make_options(args: argparse.Namespace, region: str) -> Options:
    images = dict(getattr(args, "image", []))
    functions = res.load_functions()
    unknown = set(images) - {f.name for f in functions}
    if unknown:
        raise DeployError(f"--image for unknown functions {sorted(unknown)}; functions: {', '.join(f.name for f in functions)}")
    return Options(
        region=region,
        names=Names(bucket_prefix=args.bucket_prefix, models_prefix=args.models_prefix),
        endpoint_url=args.endpoint_url,
        architecture=getattr(args, "architecture", "x86_64"),
        push=not getattr(args, "skip_push", False),
        images=images,
        reserved_concurrency=not getattr(args, "no_reserved_concurrency", False),
        log_retention_days=getattr(args, "log_retention_days", 30),
        timeout=getattr(args, "timeout", 600),
        functions=functions,
        package=getattr(args, "package", "image"),
    )


def write_airflow_env(path: Path | None, text: str) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        say("airflow", f"settings written to {path}")


def run(args: argparse.Namespace) -> int:
    if args.command == "plan":
        opts = make_options(args, args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "<region>")
        p = plan(opts, args.account_id)
        sys.stdout.write(json.dumps(p, indent=2) + "\n" if args.json else plan_text(p, opts))
        return 0

    import boto3

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    if not session.region_name:
        raise DeployError("no region: pass --region or set AWS_REGION")
    opts = make_options(args, session.region_name)
    dep = Deployer(session, opts, docker=Docker(getattr(args, "docker", "docker")))
    target = f"account {dep.account}, region {opts.region}" + (f", endpoint {opts.endpoint_url}" if opts.endpoint_url else "")

    if args.command == "destroy":
        if not args.yes:
            if not sys.stdin.isatty():
                raise DeployError("destroy needs --yes when not run from a terminal")
            extra = " and the buckets with everything in them" if args.delete_buckets else ""
            if input(f"delete vidnotes' {', '.join(args.only)}{extra} in {target}? [y/N] ").strip().lower() not in ("y", "yes"):
                return 1
        say("destroy", target)
        dep.destroy(args.only, delete_buckets=args.delete_buckets)
        return 0

    if args.command == "airflow":
        text = airflow_text(opts, airflow_settings(opts, dep.queue_url()), dep.account)
        sys.stdout.write(text)
        write_airflow_env(args.airflow_env, text)
        return 0

    say("deploy", f"{target}, steps {', '.join(args.only)}")
    t0 = time.monotonic()
    queue_url = dep.deploy_resources() if "resources" in args.only else None
    images = dep.deploy_images() if "images" in args.only else {}
    if "iam" in args.only:
        dep.deploy_iam()
    if "functions" in args.only:
        dep.deploy_functions(images)
    say("deploy", f"done in {time.monotonic() - t0:.1f} s")
    text = airflow_text(opts, airflow_settings(opts, queue_url or dep.queue_url()), dep.account)
    sys.stdout.write(text)
    write_airflow_env(args.airflow_env, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as e:  # the message names the operation and the reason
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
