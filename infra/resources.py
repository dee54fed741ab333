"""What vidnotes consists of on AWS: names, settings and policy documents, in one place.

Read by ``infra/deploy.py`` (real AWS, or LocalStack with ``--endpoint-url``) and by
``localstack/init/ready.d/10-resources.sh`` (LocalStack's ready hook, which runs the AWS CLI), so
both make the same buckets, queues, queue policy and S3 notification. Function settings come
from ``functions/functions.json`` (also what the local Lambda gateway runs), IAM policies from
``infra/policies/*.json``.

Standard library only: the LocalStack hook runs this file with whatever ``python3`` is on PATH::

    python3 infra/resources.py shell                            # names as shell assignments
    python3 infra/resources.py queue-attributes DLQ_ARN QUEUE_ARN
    python3 infra/resources.py dlq-attributes
    python3 infra/resources.py notification QUEUE_ARN
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS_JSON = REPO / "functions" / "functions.json"
POLICIES = REPO / "infra" / "policies"

PROJECT_TAG = {"project": "vidnotes"}
QUEUE = "vidnotes-uploads"
DLQ = "vidnotes-uploads-dlq"
MAX_RECEIVE_COUNT = 5  # receives before a message moves to the DLQ
DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # the maximum: time to look at what failed
NOTIFICATION_ID = "vidnotes-inbox-uploads"
NOTIFICATION_EVENTS = ["s3:ObjectCreated:*"]
TRAIN_IMAGE = "vidnotes-train"  # the training image (train/Dockerfile): an ECR repository, no function
AIRFLOW_POLICY = "vidnotes-airflow"  # video_to_notes + video_to_notes_uploads
AIRFLOW_TRAINING_POLICY = "vidnotes-airflow-training"  # train_and_redeploy (local runner)
AIRFLOW_CONN_ID = "aws_vidnotes"  # vidnotes.orchestration.Settings.aws_conn_id
UNTAGGED_IMAGES_KEPT = 5  # ECR lifecycle: older untagged images (previous pushes of :latest) expire
LAMBDA_DEFAULTS = {"timeout": 900, "memory": 3008, "concurrency": 1, "ephemeral_storage": 512}  # as localstack/gateway.py
_BUCKET_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{1,50}[a-z0-9]$")
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Names:
    """Resource names. Buckets are ``<bucket_prefix>-inbox`` etc.: S3 bucket names are global, so
    on AWS pick a prefix of your own. Everything else (functions, roles, queues, repositories) is
    per account and keeps the names in ``functions/functions.json`` and the DAGs' defaults."""

    bucket_prefix: str = "vidnotes"
    models_prefix: str = "store"  # the model store: s3://<models bucket>/<models_prefix>

    def __post_init__(self) -> None:
        if not _BUCKET_PREFIX.match(self.bucket_prefix):
            raise ValueError(f"bucket prefix {self.bucket_prefix!r}: use 3-52 lowercase letters, digits and hyphens")
        if not self.models_prefix or self.models_prefix.strip("/") != self.models_prefix:
            raise ValueError(f"models prefix {self.models_prefix!r}: a key prefix without leading or trailing '/'")

    @property
    def inbox(self) -> str:
        return f"{self.bucket_prefix}-inbox"

    @property
    def results(self) -> str:
        return f"{self.bucket_prefix}-results"

    @property
    def models(self) -> str:
        return f"{self.bucket_prefix}-models"

    @property
    def training(self) -> str:
        return f"{self.bucket_prefix}-training"

    @property
    def buckets(self) -> list[str]:
        return [self.inbox, self.results, self.models, self.training]

    @property
    def model_store(self) -> str:
        return f"s3://{self.models}/{self.models_prefix}"

    @property
    def train_dataset(self) -> str:
        return f"s3://{self.training}/asterisk"  # dags/train_and_redeploy.py's dataset

    def policy_vars(self) -> dict[str, str]:
        """The placeholders of infra/policies/*.json."""
        return {"InboxBucket": self.inbox, "ResultsBucket": self.results, "ModelsBucket": self.models,
                "ModelsPrefix": self.models_prefix, "TrainingBucket": self.training}  # fmt: skip


# -- functions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function as ``functions/functions.json`` describes it (defaults merged in)."""

    name: str
    memory: int
    timeout: int
    concurrency: int  # reserved concurrency on AWS; processes on the local gateway
    environment: dict[str, str] = field(default_factory=dict)
    ephemeral_storage: int = 512  # MB of /tmp (optional key "ephemeral_storage")
    description: str = ""
    dir: str = ""  # the function's code, relative to the repository root (app.py)
    handler: str = "app.handler"

    @property
    def role(self) -> str:
        return f"{self.name}-role"

    @property
    def repository(self) -> str:
        return self.name

    @property
    def local_image(self) -> str:
        return f"{self.name}:latest"  # what `make images` builds

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"

    def deployed_environment(self, names: Names) -> dict[str, str]:
        """The environment with the deployment's bucket names in place of the local stack's."""
        env = dict(self.environment)
        if "VIDNOTES_RESULTS_BUCKET" in env:
            env["VIDNOTES_RESULTS_BUCKET"] = names.results
        if "VIDNOTES_MODEL_STORE" in env:
            env["VIDNOTES_MODEL_STORE"] = names.model_store
        return env


def load_functions(path: Path = FUNCTIONS_JSON) -> list[FunctionSpec]:
    doc = json.loads(Path(path).read_text())
    defaults = {**LAMBDA_DEFAULTS, **doc.get("defaults", {})}
    out = []
    for name, spec in doc["functions"].items():
        merged = {**defaults, **spec}
        out.append(
            FunctionSpec(
                name=name,
                memory=int(merged["memory"]),
                timeout=int(merged["timeout"]),
                concurrency=int(merged["concurrency"]),
                environment={k: str(v) for k, v in {**defaults.get("environment", {}), **spec.get("environment", {})}.items()},
                ephemeral_storage=int(merged["ephemeral_storage"]),
                description=str(merged.get("description", "")),
                dir=str(spec.get("dir", "")),
                handler=str(merged.get("handler", "app.handler")),
            )
        )
    return out


def repositories(functions: list[FunctionSpec]) -> list[str]:
    """ECR repositories: one per function image, plus the training image."""
    return [f.repository for f in functions] + [TRAIN_IMAGE]


# -- documents ------------------------------------------------------------------------------------
def fill(template: str, values: dict[str, str]) -> str:
    """Replace every ``${Name}``; a placeholder without a value is an error."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def policy_document(name: str, values: dict[str, str]) -> dict[str, Any]:
    """infra/policies/<name>.json with its placeholders filled in."""
    return json.loads(fill((POLICIES / f"{name}.json").read_text(), values))


def lambda_trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }


def queue_policy(queue_arn: str, inbox_bucket: str) -> dict[str, Any]:
    """Lets S3 send the inbox's notifications to the queue, and nothing else (bucket names are
    global: the account condition keeps a same-named bucket elsewhere out)."""
    account = queue_arn.split(":")[4]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "vidnotes-inbox-notifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{inbox_bucket}"}, "StringEquals": {"aws:SourceAccount": account}},
            }
        ],
    }


def queue_attributes(dlq_arn: str, queue_arn: str, inbox_bucket: str) -> dict[str, str]:
    """SetQueueAttributes of the uploads queue: redrive to the DLQ, the queue policy."""
    return {
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
        "Policy": json.dumps(queue_policy(queue_arn, inbox_bucket)),
    }


def dlq_attributes() -> dict[str, str]:
    return {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}


def queue_notification(queue_arn: str) -> dict[str, Any]:
    """The inbox's QueueConfiguration (S3 ObjectCreated -> the uploads queue)."""
    return {"Id": NOTIFICATION_ID, "QueueArn": queue_arn, "Events": list(NOTIFICATION_EVENTS)}


def ecr_lifecycle_policy() -> dict[str, Any]:
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"keep the {UNTAGGED_IMAGES_KEPT} most recent untagged images (earlier pushes of :latest)",
                "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": UNTAGGED_IMAGES_KEPT},
                "action": {"type": "expire"},
            }
        ]
    }


def ecr_repository_policy(region: str, account: str) -> dict[str, Any]:
    """Lets Lambda functions of this account pull the image (what Lambda would otherwise add itself)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "LambdaECRImageRetrievalPolicy",
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Condition": {"StringLike": {"aws:sourceArn": f"arn:aws:lambda:{region}:{account}:function:*"}},
            }
        ],
    }


# -- the LocalStack hook's view ------------------------------------------------------------------
def shell_assignments(names: Names) -> str:
    values = {"BUCKETS": " ".join(names.buckets), "INBOX": names.inbox, "QUEUE": QUEUE, "DLQ": DLQ}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def main(argv: list[str]) -> int:
    names = Names()
    usage = "usage: resources.py shell | dlq-attributes | queue-attributes DLQ_ARN QUEUE_ARN | notification QUEUE_ARN"
    match argv:
        case ["shell"]:
            sys.stdout.write(shell_assignments(names))
        case ["dlq-attributes"]:
            print(json.dumps(dlq_attributes()))
        case ["queue-attributes", dlq_arn, queue_arn]:
            print(json.dumps(queue_attributes(dlq_arn, queue_arn, names.inbox)))
        case ["notification", queue_arn]:
            print(json.dumps({"QueueConfigurations": [queue_notification(queue_arn)]}))
        case _:
            print(usage, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
