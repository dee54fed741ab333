"""Where stage inputs and outputs live: S3 (boto3) or a local directory tree.

The stages see only this small interface, so the same code runs inside Lambda (S3) and in
``vidnotes run`` (local directories, no AWS at all). Keys are always validated: no absolute
paths, no ``..`` parts, no control characters, at most 1024 bytes (S3's limit).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol


class StorageError(RuntimeError):
    """An object could not be read or written."""


class NotFound(StorageError):
    pass


class Forbidden(StorageError):
    """The object may not be read (on AWS: outside the function's IAM policy)."""


def check_key(key: str) -> str:
    if not key or len(key.encode("utf-8")) > 1024:
        raise StorageError(f"invalid object key (empty or longer than 1024 bytes): {key[:80]!r}")
    if key.startswith("/") or any(part in ("..", ".") for part in key.split("/")):
        raise StorageError(f"invalid object key {key[:200]!r}: no absolute paths or '.'/'..' parts")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise StorageError(f"invalid object key {key[:200]!r}: control characters are not allowed")
    return key


class Storage(Protocol):
    bucket: str

    def download(self, key: str, dest: Path) -> Path: ...
    def upload(self, src: Path, key: str, *, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def metadata(self, key: str) -> dict[str, str]: ...
    def list(self, prefix: str) -> list[str]: ...
    def uri(self, key: str) -> str: ...


class LocalStorage:
    """A "bucket" that is a directory."""

    def __init__(self, root: str | os.PathLike[str], bucket: str = "local") -> None:
        self.root = Path(root)
        self.bucket = bucket

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def download(self, key: str, dest: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"{self.uri(key)} does not exist")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def upload(self, src: Path, key: str, *, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)

    def get_bytes(self, key: str) -> bytes:
        p = self._path(key)
        if not p.is_file():
            raise NotFound(f"{self.uri(key)} does not exist")
        return p.read_bytes()

    def put_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(dst)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        p = self._path(key)
        if not p.is_file():
            raise NotFound(f"{self.uri(key)} does not exist")
        return p.stat().st_size

    def metadata(self, key: str) -> dict[str, str]:
        """A file has no user metadata (S3's ``x-amz-meta-*``)."""
        self.size(key)
        return {}

    def list(self, prefix: str) -> list[str]:
        base = self.root
        return sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".part") and p.relative_to(base).as_posix().startswith(prefix)
        )

    def uri(self, key: str) -> str:
        return str(self.root / key)


class S3Storage:
    """A bucket in S3 (or LocalStack: ``AWS_ENDPOINT_URL``)."""

    def __init__(self, bucket: str, client: object | None = None) -> None:
        self.bucket = bucket
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def _translated(self, e: Exception, key: str) -> StorageError | None:
        """NotFound or Forbidden for S3's answers that mean so, else None."""
        # only a ClientError has a response; a connection that broke off mid-answer has none
        response = getattr(e, "response", None) or {}
        code = response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            return NotFound(f"{self.uri(key)} does not exist")
        if code in ("403", "AccessDenied", "Forbidden"):
            return Forbidden(f"{self.uri(key)} may not be read (access denied)")
        return None

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, check_key(key), str(dest))
        except Exception as e:
            if (err := self._translated(e, key)) is not None:
                raise err from e
            raise
        return dest

    def upload(self, src: Path, key: str, *, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        extra: dict[str, object] = {"ContentType": content_type} if content_type else {}
        if metadata:
            extra["Metadata"] = metadata  # x-amz-meta-<name>
        self.client.upload_file(str(src), self.bucket, check_key(key), ExtraArgs=extra or None)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()
        except Exception as e:
            if (err := self._translated(e, key)) is not None:
                raise err from e
            raise

    def put_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> None:
        kw = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, **kw)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def _head(self, key: str) -> dict:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except Exception as e:
            if (err := self._translated(e, key)) is not None:
                raise err from e
            raise

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def metadata(self, key: str) -> dict[str, str]:
        """The object's user metadata (``x-amz-meta-*``, names lower-case without the prefix)."""
        return {str(k).lower(): str(v) for k, v in (self._head(key).get("Metadata") or {}).items()}

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
