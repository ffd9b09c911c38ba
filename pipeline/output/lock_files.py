"""The output lock's file, changed only by conditional operations, so that two writers racing cannot both win.

Each kind of storage gives the same four operations: ``read`` (the bytes and a version to condition on),
``create`` (only if there is no lock), ``replace`` and ``delete`` (only if the lock is still the version read);
``create`` and ``replace`` return the version written (None: the condition did not hold).

- a local folder: ``create`` links a complete file under the lock's name (``link`` fails if the name exists,
  as ``O_EXCL`` does, and no reader sees a half-written lock); ``replace`` and ``delete`` compare and act under
  a guard file made with ``O_EXCL``, so a takeover and a heartbeat cannot interleave;
- S3: conditional requests (``IfNoneMatch='*'`` to create, ``IfMatch=<ETag>`` to replace or delete);
- any other filesystem: no conditional write is known, so a write is read back (two writers racing within
  the same moment can both win there).
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from pipeline.output.storage import Storage
from schemas.layout import LOCK_FILE

GUARD_SUFFIX = ".guard"  # run.lock.guard: held for the few milliseconds of a compare-and-replace
NEW_SUFFIX = ".new"  # run.lock.<token>.new: a lock being written, linked into place whole
GUARD_STALE_S = 30.0  # a guard older than this was left by a killed process


def lock_file_names(name: str) -> bool:
    """Whether a name in an output's root is the lock or one of its passing files."""
    return name == LOCK_FILE or (name.startswith(LOCK_FILE + ".") and name.endswith((GUARD_SUFFIX, NEW_SUFFIX)))


class LocalLockFile:
    def __init__(self, path: str):
        self.path = path

    def read(self) -> tuple[bytes | None, object]:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None, None
        return data, data

    def _staged(self, data: bytes) -> str:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        staged = f"{self.path}.{uuid.uuid4().hex}{NEW_SUFFIX}"
        with open(staged, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return staged

    def create(self, data: bytes):
        staged = self._staged(data)
        try:
            os.link(staged, self.path)
            return data
        except FileExistsError:
            return None
        finally:
            os.unlink(staged)

    def _guarded(self, version, act) -> bool:
        guard = self.path + GUARD_SUFFIX
        deadline = time.monotonic() + 5.0
        while True:
            try:
                os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                break
            except FileExistsError:
                try:
                    if time.time() - os.stat(guard).st_mtime > GUARD_STALE_S:
                        os.unlink(guard)
                        continue
                except FileNotFoundError:
                    continue
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        try:
            if self.read()[1] != version:
                return False
            act()
            return True
        finally:
            os.unlink(guard)

    def replace(self, data: bytes, version):
        staged = self._staged(data)
        try:
            return data if self._guarded(version, lambda: os.replace(staged, self.path)) else None
        finally:
            if os.path.exists(staged):
                os.unlink(staged)

    def delete(self, version) -> bool:
        return self._guarded(version, lambda: os.unlink(self.path))


class S3LockFile:
    """The lock as an S3 object, written with conditional requests (botocore, as s3fs uses)."""

    def __init__(self, storage: Storage):
        import botocore.session

        bucket, _, prefix = storage.root.partition("/")
        self.bucket, self.key = bucket, posixpath.join(prefix, LOCK_FILE) if prefix else LOCK_FILE
        query = parse_qs(urlsplit(storage.uri).query) if "://" in storage.uri else {}
        first = {name: values[0] for name, values in query.items()}
        endpoint = first.get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{first.get('scheme', 'https')}://{endpoint}"
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name=first.get("region") or os.environ.get("AWS_DEFAULT_REGION"),
            aws_access_key_id=first.get("access_key"), aws_secret_access_key=first.get("secret_key"),
            aws_session_token=first.get("session_token"))

    def _failed(self, exc) -> bool:
        """A condition that did not hold (412; 409 when two conditional writes meet; 404: gone)."""
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in (404, 409, 412)

    def read(self) -> tuple[bytes | None, object]:
        from botocore.exceptions import ClientError

        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if self._failed(exc) or exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        return found["Body"].read(), found["ETag"]

    def _conditional(self, call, **kwargs):
        """The response, or None when the condition did not hold."""
        from botocore.exceptions import ClientError

        try:
            return call(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            if self._failed(exc):
                return None
            raise

    def create(self, data: bytes):
        done = self._conditional(self.client.put_object, Body=data, IfNoneMatch="*")
        return done and done["ETag"]

    def replace(self, data: bytes, version):
        done = self._conditional(self.client.put_object, Body=data, IfMatch=version)
        return done and done["ETag"]

    def delete(self, version) -> bool:
        return self._conditional(self.client.delete_object, IfMatch=version) is not None


class WrittenLockFile:
    """Any other filesystem: the previous behaviour (write, then read back who won)."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def read(self) -> tuple[bytes | None, object]:
        if not self.storage.exists(LOCK_FILE):
            return None, None
        data = self.storage.read_bytes(LOCK_FILE)
        return data, data

    def _write(self, data: bytes):
        self.storage.write_atomic(data, LOCK_FILE)
        return data if self.read()[0] == data else None

    def create(self, data: bytes):
        return self._write(data) if self.read()[0] is None else None

    def replace(self, data: bytes, version):
        return self._write(data) if self.read()[1] == version else None

    def delete(self, version) -> bool:
        if self.read()[1] != version:
            return False
        self.storage.fs.delete_file(self.storage.path(LOCK_FILE))
        return True


def lock_file(storage: Storage):
    """The lock file of ``storage``'s output, with the strongest exclusive operations its filesystem has."""
    if isinstance(storage.fs, pafs.LocalFileSystem):
        return LocalLockFile(storage.path(LOCK_FILE))
    if type(storage.fs).__name__ == "S3FileSystem":
        try:
            return S3LockFile(storage)
        except ImportError:
            pass
    return WrittenLockFile(storage)
