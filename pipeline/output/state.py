"""What an output folder already holds: its lock, the config it was made with, its completed shards.

A shard counts as complete only when its manifest exists (the manifest is renamed into place after
the tar) and lists exactly the seeds the current listing assigns to that shard. Anything else is redone.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa

from pipeline.output.manifest import read_manifest
from pipeline.output.storage import Storage
from schemas.keys import parse_shard_name
from schemas.layout import LOCK_FILE, MANIFEST_DIR, RUN_FILE, SETS_DIR, SHARDS_DIR, TEMPORARY_PREFIX, THUMBS_DIR, tar_name


class OutputRefused(RuntimeError):
    """This output cannot be written by this run; the message says why and what to do."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class OutputLock:
    """One writer per output. A lock whose holder is gone (dead pid on this host, or no heartbeat
    for ``stale_after`` seconds elsewhere) is taken over; a live one refuses the second run."""

    storage: Storage
    stale_after: float = 600.0

    def __post_init__(self):
        self.token = uuid.uuid4().hex
        self.held = False

    def _holder(self) -> dict | None:
        if not self.storage.exists(LOCK_FILE):
            return None
        try:
            return json.loads(self.storage.read_bytes(LOCK_FILE))
        except (ValueError, OSError):
            return None

    def _is_live(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return _pid_alive(holder["pid"])
        return time.time() - float(holder.get("heartbeat", 0)) < self.stale_after

    def _write(self) -> None:
        record = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}
        self.storage.write_atomic(json.dumps(record).encode(), LOCK_FILE)

    def acquire(self) -> None:
        holder = self._holder()
        if holder and holder.get("token") != self.token and self._is_live(holder):
            raise OutputRefused(
                f"{self.storage.uri} is being written by another run (pid {holder.get('pid')} on "
                f"{holder.get('host')}); wait for it to finish or choose another output"
            )
        self._write()
        holder = self._holder()  # two runs racing: the last writer wins, the other backs off
        if not holder or holder.get("token") != self.token:
            raise OutputRefused(f"{self.storage.uri}: another run took the lock at the same moment")
        self.held = True

    def heartbeat(self) -> None:
        if self.held:
            self._write()

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("token") == self.token:
                self.storage.fs.delete_file(self.storage.path(LOCK_FILE))
            self.held = False


def check_config_hash(storage: Storage, config_hash: str) -> bool:
    """True when the output already holds a run of this config; refuses one of another config."""
    if not storage.exists(RUN_FILE):
        if storage.list(MANIFEST_DIR) or storage.list(SHARDS_DIR):
            raise OutputRefused(f"{storage.uri} holds shards but no {RUN_FILE}: not an output of this tool?")
        return False
    try:
        previous = json.loads(storage.read_bytes(RUN_FILE)).get("config_hash")
    except ValueError:
        raise OutputRefused(f"{storage.uri}/{RUN_FILE} is unreadable; move the output aside") from None
    if previous != config_hash:
        raise OutputRefused(
            f"{storage.uri} was made with a different config (hash {previous}, this one is {config_hash}); "
            "use another output, or delete it to start over"
        )
    return True


def remove_temporaries(storage: Storage, *folders: str) -> int:
    """Delete files left under temporary names (by a killed writer) in ``folders`` (default: the run's)."""
    removed = 0
    for folder in folders or (SHARDS_DIR, SETS_DIR, THUMBS_DIR, MANIFEST_DIR, ""):
        for name in storage.list(folder) if folder else storage.list():
            if name.startswith(TEMPORARY_PREFIX):
                storage.fs.delete_file(storage.path(folder, name) if folder else storage.path(name))
                removed += 1
    return removed


def completed_shards(storage: Storage, seed_refs: pa.Table, prefix: str) -> set[int]:
    """Shard indices whose manifest exists and covers exactly the seeds now assigned to them."""
    expected: dict[int, set] = {}
    for index, seed_index, uri in zip(
        seed_refs.column("shard_index").to_pylist(), seed_refs.column("seed_index").to_pylist(),
        seed_refs.column("source_uri").to_pylist(),
    ):
        expected.setdefault(index, set()).add((seed_index, uri))
    tars = set(storage.list(SHARDS_DIR)) & set(storage.list(SETS_DIR))
    done = set()
    for name in storage.list(MANIFEST_DIR):
        try:
            name_prefix, index, ext = parse_shard_name(name)
        except ValueError:
            continue
        if ext != "parquet" or name_prefix != prefix or index not in expected:
            continue
        if tar_name(prefix, index) not in tars:
            continue
        table = read_manifest(storage, name, ["seed_index", "source_uri"])
        covered = set(zip(table.column("seed_index").to_pylist(), table.column("source_uri").to_pylist()))
        if covered == expected[index]:
            done.add(index)
    return done
