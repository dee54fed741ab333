"""What every Lambda handler shares: settings from the environment, payload parsing with clear
errors, the results bucket, a structured logger. Handlers stay a few lines each."""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from vidnotes.stages import StageFailed
from vidnotes.storage import S3Storage

P = TypeVar("P", bound=BaseModel)


def results_bucket() -> str:
    bucket = os.environ.get("VIDNOTES_RESULTS_BUCKET", "").strip()
    if not bucket:
        raise StageFailed("configuration: VIDNOTES_RESULTS_BUCKET is not set for this function")
    return bucket


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def results_storage() -> S3Storage:
    return S3Storage(results_bucket(), s3_client())


def parse(model: type[P], event: Any, *, stage: str) -> P:
    """The validated payload, or :class:`StageFailed` naming each problem."""
    if isinstance(event, (str, bytes)):
        try:
            event = json.loads(event)
        except ValueError as e:
            raise StageFailed(f"{stage}: invalid payload: not JSON ({e})") from e
    if not isinstance(event, dict):
        raise StageFailed(f"{stage}: invalid payload: expected a JSON object like {_example(model)}, got {type(event).__name__}")
    try:
        return model.model_validate(event)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'payload'}: {err['msg']}" for err in e.errors()[:5])
        raise StageFailed(f"{stage}: invalid payload: {problems}. Expected {_example(model)}") from e


def _example(model: type[BaseModel]) -> str:
    fields = ", ".join(f'"{name}": ...' for name in model.model_fields)
    return "{" + fields + "}"


def logger(service: str) -> Any:
    from aws_lambda_powertools import Logger

    return Logger(service=service)
