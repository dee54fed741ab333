"""infra/deploy.py: against a real LocalStack (S3, SQS, STS, IAM, Lambda, CloudWatch Logs) where
LocalStack Community can, with botocore's Stubber and a fake docker where it cannot (ECR, push).

What LocalStack Community 2026.3.0 does with this deployment (read in its source,
.venv-localstack/.../localstack/services/lambda_/ and confirmed by these tests):
- ECR is not emulated: every ECR call answers 501 InternalFailure ("The API for service ecr is
  either not included in your current license plan or has not yet been emulated by LocalStack").
- CreateFunction with PackageType=Image is accepted (State Pending, CodeSha256
  "<cannot-get-image-hash>"); preparing the version then installs LocalStack's Lambda runtime init
  from GitHub (services/lambda_/packages.py). Without network that fails and the function goes to
  State Failed ("Installation of lambda-runtime v0.1.41-pre failed"); UpdateFunctionCode on it then
  answers 500. The fixture below places a file at that package's install marker (version pinned
  with LAMBDA_INIT_RELEASE_VERSION) so the control plane goes on as on AWS: Active,
  UpdateFunctionCode/Configuration (InProgress -> Successful), PutFunctionConcurrency, DeleteFunction.
- Invoking an image function fails anyway ("Container images are a Pro feature",
  docker_runtime_executor.get_image): nothing here invokes (the local stack's functions run behind
  localstack/gateway.py instead). DOCKER_CMD=/bin/false keeps LocalStack off this machine's Docker
  daemon (it would `docker pull` the ImageUri).

The LocalStack tests share one stack and run in file order: the fixture removes what the init hook
made and deploys; the last tests redeploy and destroy.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import platform
import subprocess
import sys
import time
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from test_least_privilege import policy as least_privilege_policy

from stackutil import REPO, cli_env, client, get_json, stack_up

sys.path.insert(0, str(REPO))
from infra import resources as res  # noqa: E402
from infra.deploy import Deployer, DeployError, Options  # noqa: E402

DEPLOY = str(REPO / "infra" / "deploy.py")
FUNCTIONS = res.load_functions()
CONFIG = json.loads((REPO / "functions" / "functions.json").read_text())
RUNTIME_PLACEHOLDER = "vidnotes-test-placeholder"
LOCALSTACK_ENV = {
    "VIDNOTES_LOCALSTACK_SERVICES": "s3,sqs,sts,iam,lambda,logs",
    "LAMBDA_INIT_RELEASE_VERSION": RUNTIME_PLACEHOLDER,
    "DOCKER_CMD": "/bin/false",
    "VIDNOTES_PROFILE": "process",  # the gateway's functions as processes: no containers needed here
}
ACCOUNT, REGION = "000000000000", "us-east-1"


def fake_image(name: str, salt: str = "") -> str:
    return f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}@sha256:{hashlib.sha256((name + salt).encode()).hexdigest()}"


IMAGE_ARGS = [arg for fn in FUNCTIONS for arg in ("--image", f"{fn.name}={fake_image(fn.name)}")]


def expected_environment(name: str) -> dict[str, str]:
    return {**CONFIG["defaults"]["environment"], **CONFIG["functions"][name].get("environment", {})}


def expected(name: str, key: str) -> Any:
    return CONFIG["functions"][name].get(key, CONFIG["defaults"][key])


# -- without LocalStack ---------------------------------------------------------------------------
def test_help_and_plan_need_no_aws():
    env = {
        **cli_env(),
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    for sub in ([], ["plan"], ["deploy"], ["airflow"], ["destroy"]):
        h = subprocess.run([sys.executable, DEPLOY, *sub, "--help"], capture_output=True, text=True, env=env, timeout=60)
        assert h.returncode == 0 and "usage: infra/deploy.py" in h.stdout, h.stderr
    r = subprocess.run(
        [sys.executable, DEPLOY, "plan", "--json", "--region", "eu-west-1", "--account-id", "123456789012", "--bucket-prefix", "acme-vidnotes"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["resources"]["buckets"] == ["acme-vidnotes-inbox", "acme-vidnotes-results", "acme-vidnotes-models", "acme-vidnotes-training"]
    assert set(p["images"]) == {
        "vidnotes-extract-audio",
        "vidnotes-transcribe",
        "vidnotes-diarize",
        "vidnotes-summarize",
        "vidnotes-render-pdf",
        "vidnotes-train",
    }
    assert p["images"]["vidnotes-train"]["repository_policy"] is None
    for name, f in p["functions"].items():  # functions.json is the one source of the settings
        assert f["PackageType"] == "Image" and f["Role"] == f"arn:aws:iam::123456789012:role/{name}-role"
        assert f["MemorySize"] == expected(name, "memory") and f["Timeout"] == expected(name, "timeout")
        assert f["ReservedConcurrentExecutions"] == expected(name, "concurrency")
        env_vars = f["Environment"]["Variables"]
        assert env_vars == {**expected_environment(name), "VIDNOTES_RESULTS_BUCKET": "acme-vidnotes-results",
                            "VIDNOTES_MODEL_STORE": "s3://acme-vidnotes-models/store"}  # fmt: skip
        assert f["Code"]["ImageUri"].startswith(f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/{name}@")
    s3_statements = p["iam"]["roles"]["vidnotes-render-pdf-role"]["InlinePolicies"]["vidnotes-render-pdf"]["Statement"]
    assert s3_statements[0]["Resource"] == ["arn:aws:s3:::acme-vidnotes-results/jobs/*"]
    airflow = p["airflow"]
    assert airflow["VIDNOTES_AIRFLOW_QUEUE_URL"] == "https://sqs.eu-west-1.amazonaws.com/123456789012/vidnotes-uploads"
    assert json.loads(airflow["AIRFLOW_CONN_AWS_VIDNOTES"]) == {"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}  # no endpoint
    text = subprocess.run([sys.executable, DEPLOY, "plan", "--region", "eu-west-1"], capture_output=True, text=True, env=env, timeout=60)
    assert text.returncode == 0 and "Lambda       vidnotes-transcribe" in text.stdout and "reserved concurrency 4" in text.stdout


def test_airflow_policy_grants_what_the_dags_touch():
    """video_to_notes reads/writes the job's status.json (or runs/video_to_notes/<run>.json when no
    job exists), checks for it first (404 needs ListBucket), invokes the four functions, and its
    asset watcher receives and deletes the queue's messages: nothing more."""
    from fnmatch import fnmatchcase

    doc = res.policy_document("airflow", {**res.Names().policy_vars(), "Region": "eu-west-1", "AccountId": "123456789012"})

    def allowed(action: str, resource: str) -> bool:
        return any(
            fnmatchcase(action, a) and any(fnmatchcase(resource, r) for r in st["Resource"])
            for st in doc["Statement"]
            for a in st["Action"]
        )

    results = "arn:aws:s3:::vidnotes-results"
    assert allowed("s3:PutObject", f"{results}/jobs/0123456789abcdef/status.json")
    assert allowed("s3:GetObject", f"{results}/runs/video_to_notes/upload__talk.mp4__0123abcd.json")
    assert allowed("s3:ListBucket", results)
    assert not allowed("s3:GetObject", f"{results}/jobs/0123456789abcdef/notes.pdf")
    assert not allowed("s3:PutObject", "arn:aws:s3:::vidnotes-inbox/talk.mp4")
    assert not any(a.startswith("s3:Delete") for st in doc["Statement"] for a in st["Action"])
    for fn in FUNCTIONS:
        assert allowed("lambda:InvokeFunction", f"arn:aws:lambda:eu-west-1:123456789012:function:{fn.name}")
    assert not allowed("lambda:UpdateFunctionConfiguration", "arn:aws:lambda:eu-west-1:123456789012:function:vidnotes-transcribe")
    queue = "arn:aws:sqs:eu-west-1:123456789012:vidnotes-uploads"
    assert allowed("sqs:ReceiveMessage", queue) and allowed("sqs:DeleteMessage", queue)  # DeleteMessageBatch is sqs:DeleteMessage
    assert not allowed("sqs:SendMessage", queue)


class FakeDocker:
    """Records docker commands; knows the local images it is given (name -> architecture)."""

    def __init__(self, images: dict[str, str]) -> None:
        self.images = images
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def run(self, *args: str, input: str | None = None) -> str:
        self.calls.append((args, input))
        return ""

    def architecture(self, image: str) -> str | None:
        return self.images.get(image)


def stubbed_deployer(docker: FakeDocker, **opts: Any) -> tuple[Deployer, Any, Stubber]:
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="eu-west-1")
    dep = Deployer(session, Options(region="eu-west-1", **opts), docker=docker)  # type: ignore[arg-type]
    ecr = session.client("ecr", region_name="eu-west-1")
    dep._clients["ecr"] = ecr
    dep._account = "123456789012"
    return dep, ecr, Stubber(ecr)


def test_images_step_requests_without_ecr():
    """LocalStack Community has no ECR: the images step's requests and docker commands, checked
    against botocore's service model (Stubber validates every parameter) and a fake docker."""
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    repos = res.repositories(FUNCTIONS)
    docker = FakeDocker({f"{fn.name}:latest": "amd64" for fn in FUNCTIONS})  # no vidnotes-train image: skipped
    dep, ecr, stub = stubbed_deployer(docker)
    digests = {r: "sha256:" + hashlib.sha256(r.encode()).hexdigest() for r in repos}

    def repo_doc(name: str) -> dict:
        return {
            "repositoryName": name,
            "repositoryUri": f"{registry}/{name}",
            "repositoryArn": f"arn:aws:ecr:eu-west-1:123456789012:repository/{name}",
        }

    for i, repo in enumerate(repos):
        if i == 0:  # exists already
            stub.add_response("describe_repositories", {"repositories": [repo_doc(repo)]}, {"repositoryNames": [repo]})
        else:
            stub.add_client_error("describe_repositories", "RepositoryNotFoundException", expected_params={"repositoryNames": [repo]})
            stub.add_response("create_repository", {"repository": repo_doc(repo)}, {
                "repositoryName": repo, "imageTagMutability": "MUTABLE", "imageScanningConfiguration": {"scanOnPush": True},
                "tags": [{"Key": "project", "Value": "vidnotes"}]})  # fmt: skip
        stub.add_response(
            "put_lifecycle_policy", {}, {"repositoryName": repo, "lifecyclePolicyText": json.dumps(res.ecr_lifecycle_policy())}
        )
        if repo != res.TRAIN_IMAGE:
            stub.add_response("set_repository_policy", {}, {
                "repositoryName": repo, "policyText": json.dumps(res.ecr_repository_policy("eu-west-1", "123456789012"))})  # fmt: skip
    token = base64.b64encode(b"AWS:secret-password").decode()
    stub.add_response(
        "get_authorization_token", {"authorizationData": [{"authorizationToken": token, "proxyEndpoint": f"https://{registry}"}]}, {}
    )
    for fn in FUNCTIONS:
        stub.add_response("describe_repositories", {"repositories": [repo_doc(fn.repository)]}, {"repositoryNames": [fn.repository]})
        stub.add_response("describe_images", {"imageDetails": [{"imageDigest": digests[fn.repository], "imageTags": ["latest"]}]},
                          {"repositoryName": fn.repository, "imageIds": [{"imageTag": "latest"}]})  # fmt: skip
    with stub:
        uris = dep.deploy_images()
    stub.assert_no_pending_responses()
    assert uris == {fn.name: f"{registry}/{fn.repository}@{digests[fn.repository]}" for fn in FUNCTIONS}
    expected_docker = [(("login", "--username", "AWS", "--password-stdin", f"https://{registry}"), "secret-password")]
    for fn in FUNCTIONS:
        remote = f"{registry}/{fn.repository}:latest"
        expected_docker += [(("tag", f"{fn.name}:latest", remote), None), (("push", remote), None)]
    assert docker.calls == expected_docker  # the password goes through stdin, never the command line


def test_images_step_refuses_missing_or_foreign_images():
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    for images, message in (
        ({}, "no local image vidnotes-extract-audio:latest"),
        ({"vidnotes-extract-audio:latest": "arm64"}, "built for arm64"),
    ):
        dep, ecr, stub = stubbed_deployer(FakeDocker(images))
        with pytest.raises(DeployError, match=message):
            dep.push("vidnotes-extract-audio", f"{registry}/vidnotes-extract-audio")
    # --skip-push: the function uses what ECR holds; nothing there is a clear error
    dep, ecr, stub = stubbed_deployer(FakeDocker({}), push=False)
    stub.add_client_error("describe_repositories", "RepositoryNotFoundException")
    with stub, pytest.raises(DeployError, match="not in ECR"):
        dep.image_uri(FUNCTIONS[0])


def test_local_image_architecture_from_the_docker_engine(docker_images):
    """The one docker call that reads something back, against the real engine and the function
    images `scripts/images.sh` built (fixture docker_images)."""
    from infra.deploy import Docker

    docker = Docker()
    assert docker.architecture("vidnotes-no-such-image:latest") is None
    for fn in FUNCTIONS:
        assert docker.architecture(fn.local_image) in ("amd64", "arm64"), fn.local_image


# -- against LocalStack ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A LocalStack of its own (free ports) with Lambda and Logs besides S3, SQS, STS, IAM."""
    subprocess.run([str(REPO / "localstack" / "setup.sh")], check=True, timeout=900)
    tmp = tmp_path_factory.mktemp("infra-stack")
    arch = "x86_64" if platform.machine().lower() in ("x86_64", "amd64") else "arm64"
    marker = tmp / "localstack/var/lib/localstack/lib/lambda-runtime" / RUNTIME_PLACEHOLDER / arch / "var/rapid/init"
    marker.parent.mkdir(parents=True)
    marker.write_text("placeholder: LocalStack Community cannot run image functions; only its control plane is used\n")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as mp:  # only for `stack.sh up`, which passes them to LocalStack
            for k, v in LOCALSTACK_ENV.items():
                mp.setenv(k, v)
            st = stack.enter_context(stack_up(tmp, models=None))
        yield st


def cli(stack: dict, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, DEPLOY, command, "--endpoint-url", stack["s3"], "--region", REGION, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd[2:])}\n{r.stdout}\n{r.stderr}"
    return r


def snapshot(ep: str) -> dict[str, Any]:
    """Buckets, queue attributes and the inbox notification, as AWS reports them."""
    s3, sqs = client("s3", ep), client("sqs", ep)
    queues = {}
    for name in (res.QUEUE, res.DLQ):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        queues[name] = {k: json.loads(attrs[k]) if k in ("RedrivePolicy", "Policy") else attrs[k]
                        for k in ("RedrivePolicy", "Policy", "MessageRetentionPeriod", "VisibilityTimeout") if k in attrs}  # fmt: skip
    notification = s3.get_bucket_notification_configuration(Bucket="vidnotes-inbox")
    notification.pop("ResponseMetadata")
    return {"buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]), "queues": queues, "notification": notification}


def vidnotes_queues(ep: str) -> list[str]:
    return [u.rsplit("/", 1)[1] for u in client("sqs", ep).list_queues().get("QueueUrls", []) if "vidnotes" in u]


@pytest.fixture(scope="module")
def deployed(stack):
    """What LocalStack's init hook made, removed by `destroy`, then made again by `deploy`."""
    ep = stack["s3"]
    init = snapshot(ep)
    t0 = time.monotonic()
    destroyed = cli(stack, "destroy", "--only", "resources", "--delete-buckets", "--yes")
    after_destroy = {"buckets": [b["Name"] for b in client("s3", ep).list_buckets()["Buckets"]], "queues": vidnotes_queues(ep)}
    first = cli(stack, "deploy", "--only", "resources,iam,functions", *IMAGE_ARGS)
    return {"init": init, "destroyed": destroyed, "after_destroy": after_destroy, "first": first, "seconds": time.monotonic() - t0}


def test_deploy_makes_what_the_init_hook_makes(stack, deployed):
    hooks = get_json(f"{stack['s3']}/_localstack/init/ready")["scripts"]
    assert [(h["name"], h["state"]) for h in hooks] == [("10-resources.sh", "SUCCESSFUL")]  # LocalStack ran it (no fallback)
    assert "queue vidnotes-uploads: deleted" in deployed["destroyed"].stderr
    assert deployed["after_destroy"] == {"buckets": [], "queues": []}
    init = deployed["init"]
    assert init["buckets"] == ["vidnotes-inbox", "vidnotes-models", "vidnotes-results", "vidnotes-training"]
    assert init["queues"]["vidnotes-uploads"]["RedrivePolicy"]["deadLetterTargetArn"].endswith(":vidnotes-uploads-dlq")
    assert init["queues"]["vidnotes-uploads-dlq"]["MessageRetentionPeriod"] == str(res.DLQ_RETENTION_SECONDS)
    assert [q["Id"] for q in init["notification"]["QueueConfigurations"]] == ["vidnotes-inbox-uploads"]
    assert snapshot(stack["s3"]) == init  # same names, settings and documents: one definition (infra/resources.py)
    for b in init["buckets"]:
        assert f"bucket {b}: created" in deployed["first"].stderr


def test_roles_carry_the_least_privilege_policies(stack, deployed):
    iam = client("iam", stack["s3"])
    for fn in FUNCTIONS:
        role = iam.get_role(RoleName=f"{fn.name}-role")["Role"]
        assert role["AssumeRolePolicyDocument"] == res.lambda_trust_policy()
        assert iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"] == [fn.name]
        inline = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=fn.name)["PolicyDocument"]
        assert inline == least_privilege_policy(fn.name)  # what tests/test_least_privilege.py checks the handlers against
    values = {**res.Names().policy_vars(), "Region": REGION, "AccountId": ACCOUNT}
    for name, template in ((res.AIRFLOW_POLICY, "airflow"), (res.AIRFLOW_TRAINING_POLICY, "airflow-training")):
        arn = f"arn:aws:iam::{ACCOUNT}:policy/{name}"
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        assert doc == res.policy_document(template, values)
        assert f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:vidnotes-transcribe" in json.dumps(doc)


def test_functions_are_image_functions_configured_from_functions_json(stack, deployed):
    lam, logs = client("lambda", stack["s3"]), client("logs", stack["s3"])
    assert {f["FunctionName"] for f in lam.list_functions()["Functions"]} == {fn.name for fn in FUNCTIONS}
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]}
    for fn in FUNCTIONS:
        got = lam.get_function(FunctionName=fn.name)
        conf = got["Configuration"]
        assert conf["PackageType"] == "Image" and got["Code"]["ImageUri"] == fake_image(fn.name)
        assert conf["State"] == "Active" and conf["LastUpdateStatus"] == "Successful"
        assert conf["Role"] == f"arn:aws:iam::{ACCOUNT}:role/{fn.name}-role"
        assert conf["MemorySize"] == expected(fn.name, "memory") and conf["Timeout"] == expected(fn.name, "timeout")
        assert conf["Environment"]["Variables"] == expected_environment(fn.name)  # default bucket names: as in functions.json
        storage = CONFIG["functions"][fn.name].get("ephemeral_storage", CONFIG["defaults"].get("ephemeral_storage", 512))
        assert conf["Architectures"] == ["x86_64"] and conf["EphemeralStorage"] == {"Size": storage}
        assert got["Concurrency"]["ReservedConcurrentExecutions"] == expected(fn.name, "concurrency")
        assert got["Tags"] == {"project": "vidnotes"}
        assert groups[f"/aws/lambda/{fn.name}"]["retentionInDays"] == 30


def test_an_upload_lands_in_the_queue(stack, deployed):
    s3, sqs = client("s3", stack["s3"]), client("sqs", stack["s3"])
    url = sqs.get_queue_url(QueueName="vidnotes-uploads")["QueueUrl"]
    s3.put_object(Bucket="vidnotes-inbox", Key="talks/after deploy.mp4", Body=b"not really a video")
    deadline, keys = time.monotonic() + 15, []
    while "talks/after+deploy.mp4" not in keys and "talks/after%20deploy.mp4" not in keys and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            keys += [r["s3"]["object"]["key"] for r in json.loads(m["Body"]).get("Records", [])]
    assert any(k in keys for k in ("talks/after+deploy.mp4", "talks/after%20deploy.mp4")), keys


def test_airflow_settings(stack, deployed, tmp_path):
    queue_url = client("sqs", stack["s3"]).get_queue_url(QueueName="vidnotes-uploads")["QueueUrl"]
    out = tmp_path / "airflow.env"
    r = cli(stack, "airflow", "--airflow-env", str(out))
    assert r.stdout == out.read_text() == deployed["first"].stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in r.stdout.splitlines() if line.startswith("export "))
    assert env["VIDNOTES_AIRFLOW_QUEUE_URL"] == queue_url
    conn = json.loads(env["AIRFLOW_CONN_AWS_VIDNOTES"].strip("'"))
    assert conn == {"conn_type": "aws", "extra": {"region_name": REGION, "endpoint_url": stack["s3"]}}
    assert "airflow connections add aws_vidnotes --conn-json" in r.stdout


def test_redeploy_is_idempotent_and_updates_only_what_differs(stack, deployed):
    lam = client("lambda", stack["s3"])
    revisions = {fn.name: lam.get_function_configuration(FunctionName=fn.name)["RevisionId"] for fn in FUNCTIONS}
    again = cli(stack, "deploy", "--only", "resources,iam,functions", *IMAGE_ARGS)
    progress = [line for line in again.stderr.splitlines() if line.startswith("[") and not line.startswith("[deploy")]
    changed = [
        line for line in progress if not line.endswith(("exists", "unchanged", "queue policy set")) and "exists, retention" not in line
    ]
    assert not changed, "\n".join(changed)
    assert {fn.name: lam.get_function_configuration(FunctionName=fn.name)["RevisionId"] for fn in FUNCTIONS} == revisions

    # drift and new images: `vidnotes deploy transcribe` pinned a model version (kept), someone
    # changed render-pdf's memory (put back), summarize has a new image (updated)
    conf = lam.get_function_configuration(FunctionName="vidnotes-transcribe")
    pinned = {**conf["Environment"]["Variables"], "VIDNOTES_WHISPER_VERSION": "tiny.en-ft-test"}
    lam.update_function_configuration(FunctionName="vidnotes-transcribe", Environment={"Variables": pinned})
    lam.update_function_configuration(FunctionName="vidnotes-render-pdf", MemorySize=512)
    lam.get_waiter("function_updated_v2").wait(FunctionName="vidnotes-render-pdf")
    new_image = fake_image("vidnotes-summarize", salt="v2")
    args = [a.replace(fake_image("vidnotes-summarize"), new_image) for a in IMAGE_ARGS]
    third = cli(stack, "deploy", "--only", "functions", *args)
    assert "function vidnotes-summarize: updated code" in third.stderr
    assert "function vidnotes-render-pdf: updated configuration (MemorySize)" in third.stderr
    assert "function vidnotes-transcribe: unchanged" in third.stderr
    assert lam.get_function(FunctionName="vidnotes-summarize")["Code"]["ImageUri"] == new_image
    assert lam.get_function_configuration(FunctionName="vidnotes-render-pdf")["MemorySize"] == expected("vidnotes-render-pdf", "memory")
    assert lam.get_function_configuration(FunctionName="vidnotes-transcribe")["Environment"]["Variables"] == pinned


def test_destroy_removes_what_deploy_made(stack, deployed):
    ep = stack["s3"]
    client("s3", ep).put_object(Bucket="vidnotes-results", Key="jobs/x/status.json", Body=b"{}")
    kept = cli(stack, "destroy", "--yes", "--only", "functions,iam,resources")  # no ECR in LocalStack; buckets kept by default
    assert "bucket vidnotes-results: kept" in kept.stderr
    assert {b["Name"] for b in client("s3", ep).list_buckets()["Buckets"]} == set(res.Names().buckets)
    refused = subprocess.run([sys.executable, DEPLOY, "destroy", "--endpoint-url", ep, "--region", REGION],
                             capture_output=True, text=True, env=cli_env(), stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "--yes" in refused.stderr
    gone = cli(stack, "destroy", "--delete-buckets", "--yes", "--only", "resources")
    assert "bucket vidnotes-results: deleted (1 objects)" in gone.stderr
    lam, iam, logs = client("lambda", ep), client("iam", ep), client("logs", ep)
    assert lam.list_functions()["Functions"] == []
    assert [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("vidnotes")] == []
    assert [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"].startswith("vidnotes")] == []
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/vidnotes")["logGroups"] == []
    assert vidnotes_queues(ep) == [] and client("s3", ep).list_buckets()["Buckets"] == []
    again = cli(stack, "destroy", "--delete-buckets", "--yes", "--only", "functions,iam,resources")
    assert "function vidnotes-transcribe: absent" in again.stderr and "bucket vidnotes-inbox: absent" in again.stderr
