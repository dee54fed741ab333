"""The model store: ``<root>/<task>/<version>/`` directories, each with a ``manifest.json``.

The root is a local directory or ``s3://bucket/prefix``. A version's manifest lists every file
with its sha256 and size; :meth:`ModelStore.fetch` verifies them and refuses a mismatch, so a
corrupt or half-uploaded model is never served. ``<root>/<task>/CURRENT`` names the version that
inference uses when none is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CURRENT = "CURRENT"


class ModelStoreError(RuntimeError):
    """A model, version or manifest is missing or invalid."""


class ModelIntegrityError(ModelStoreError):
    """A model file does not match the sha256 or size in its manifest."""


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _check_name(kind: str, value: str) -> str:
    if not value or value in {".", ".."} or "/" in value or "\\" in value or value.startswith("."):
        raise ModelStoreError(f"invalid {kind} name {value!r}")
    return value


@dataclass(frozen=True)
class _S3Root:
    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


class ModelStore:
    """Publish, list and fetch model versions under a local or S3 root."""

    def __init__(self, root: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None) -> None:
        root_s = str(root)
        self.root = root_s
        self._s3_client: Any = None
        if root_s.startswith("s3://"):
            bucket, _, prefix = root_s[5:].partition("/")
            if not bucket:
                raise ModelStoreError(f"invalid S3 root {root_s!r}")
            self._s3: _S3Root | None = _S3Root(bucket, prefix.strip("/"))
            default_cache = Path(tempfile.gettempdir()) / "vidnotes-models"
            self.cache_dir = Path(cache_dir) if cache_dir else default_cache
        else:
            self._s3 = None
            self._local = Path(root_s)
            self.cache_dir = Path(cache_dir) if cache_dir else self._local

    def __repr__(self) -> str:
        return f"ModelStore({self.root!r})"

    # -- low-level I/O -------------------------------------------------------------------
    def _client(self) -> Any:
        if self._s3_client is None:
            import boto3  # only for S3 roots

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            self._s3_client = boto3.client("s3", endpoint_url=endpoint)
        return self._s3_client

    def _read_text(self, *parts: str) -> str | None:
        if self._s3 is None:
            p = self._local.joinpath(*parts)
            return p.read_text() if p.is_file() else None
        client = self._client()
        try:
            obj = client.get_object(Bucket=self._s3.bucket, Key=self._s3.key(*parts))
        except client.exceptions.NoSuchKey:
            return None
        return obj["Body"].read().decode()

    def _write_text(self, text: str, *parts: str) -> None:
        if self._s3 is None:
            p = self._local.joinpath(*parts)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(p)
        else:
            self._client().put_object(Bucket=self._s3.bucket, Key=self._s3.key(*parts), Body=text.encode())

    # -- public API ----------------------------------------------------------------------
    def versions(self, task: str) -> list[str]:
        _check_name("task", task)
        if self._s3 is None:
            d = self._local / task
            if not d.is_dir():
                return []
            return sorted(p.name for p in d.iterdir() if (p / MANIFEST).is_file())
        client = self._client()
        out: list[str] = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._s3.bucket, Prefix=self._s3.key(task) + "/", Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                out.append(cp["Prefix"].rstrip("/").rsplit("/", 1)[-1])
        return sorted(v for v in out if self._read_text(task, v, MANIFEST) is not None)

    def current(self, task: str) -> str | None:
        text = self._read_text(_check_name("task", task), CURRENT)
        return text.strip() if text else None

    def set_current(self, task: str, version: str) -> None:
        self.manifest(task, version)  # must exist
        self._write_text(version + "\n", task, CURRENT)

    def resolve(self, task: str, version: str | None = None) -> str:
        """The version to use: the one asked for, else CURRENT."""
        v = version or self.current(task)
        if not v:
            raise ModelStoreError(f"no version of {task!r} in {self.root}; run `make models` (or give a version)")
        return _check_name("version", v)

    def manifest(self, task: str, version: str | None = None) -> dict[str, Any]:
        v = self.resolve(task, version)
        text = self._read_text(task, v, MANIFEST)
        if text is None:
            raise ModelStoreError(f"{task}/{v} not found in {self.root}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelStoreError(f"{task}/{v}: manifest.json is not valid JSON: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise ModelStoreError(f"{task}/{v}: manifest.json has no 'files' table")
        return data

    def publish(
        self,
        task: str,
        version: str,
        src_dir: Path,
        manifest: dict[str, Any],
        *,
        make_current: bool = True,
    ) -> dict[str, Any]:
        """Copy every file of ``src_dir`` into ``<task>/<version>/`` and write its manifest last."""
        _check_name("task", task)
        _check_name("version", version)
        src_dir = Path(src_dir)
        files = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
        if not files:
            raise ModelStoreError(f"nothing to publish in {src_dir}")
        table = {
            p.relative_to(src_dir).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
        }
        full = {
            **manifest,
            "task": task,
            "version": version,
            "created": manifest.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": table,
        }
        if self._s3 is None:
            dst = self._local / task / version
            if dst.resolve() != src_dir.resolve():
                if dst.exists():
                    shutil.rmtree(dst)
                dst.mkdir(parents=True)
                for p in files:
                    target = dst / p.relative_to(src_dir)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, target)
        else:
            client = self._client()
            for p in files:
                client.upload_file(str(p), self._s3.bucket, self._s3.key(task, version, p.relative_to(src_dir).as_posix()))
        self._write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", task, version, MANIFEST)
        if make_current:
            self.set_current(task, version)
        return full

    def fetch(self, task: str, version: str | None = None) -> tuple[Path, dict[str, Any]]:
        """A local directory holding ``task/version`` (downloaded and cached for S3), verified
        against its manifest. Raises :class:`ModelIntegrityError` on any mismatch."""
        v = self.resolve(task, version)
        manifest = self.manifest(task, v)
        if self._s3 is None:
            local = self._local / task / v
        else:
            local = self.cache_dir / task / v
            client = self._client()
            for name, meta in manifest["files"].items():
                target = local / name
                if target.is_file() and target.stat().st_size == meta["bytes"] and sha256_file(target) == meta["sha256"]:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                client.download_file(self._s3.bucket, self._s3.key(task, v, name), str(tmp))
                tmp.replace(target)
        verify(local, manifest)
        return local, manifest


def verify(local: Path, manifest: dict[str, Any]) -> None:
    label = f"{manifest.get('task')}/{manifest.get('version')}"
    for name, meta in manifest["files"].items():
        p = local / name
        if not p.is_file():
            raise ModelIntegrityError(f"model {label}: file {name} is missing")
        if p.stat().st_size != meta["bytes"]:
            raise ModelIntegrityError(f"model {label}: {name} has {p.stat().st_size} bytes, manifest says {meta['bytes']}")
        digest = sha256_file(p)
        if digest != meta["sha256"]:
            raise ModelIntegrityError(
                f"model {label}: {name} sha256 {digest[:12]}... does not match manifest {meta['sha256'][:12]}...; "
                "the store copy is corrupt: re-publish it (make models)"
            )


def multilingual_versions(store: ModelStore) -> list[str]:
    """The whisper versions in ``store`` that decode more than English (by their manifest's
    ``multilingual``; older manifests without it by their tokenizer)."""
    out = []
    for v in store.versions("whisper"):
        flag = store.manifest("whisper", v).get("multilingual")
        if flag is None:
            from vidnotes.tokenizer import WhisperTokenizer

            flag = WhisperTokenizer.from_dir(store.fetch("whisper", v)[0]).multilingual
        if flag:
            out.append(v)
    return out


def default_store() -> ModelStore:
    """The store named by ``VIDNOTES_MODEL_STORE`` (default: ``./models`` in the repository)."""
    return ModelStore(os.environ.get("VIDNOTES_MODEL_STORE", str(Path.cwd() / "models")))
