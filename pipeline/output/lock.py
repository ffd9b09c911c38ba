"""One writer per output: ``run.lock``, created exclusively, kept alive by a heartbeat thread.

A lock whose holder is gone (a dead pid on this host, or no heartbeat for ``stale_after`` seconds from another
host) is taken over; a live one refuses the second writer. Every change to the lock is conditional on the
version last read (lock_files), so of two writers that both saw no holder, or both saw the same stale one,
exactly one wins. The heartbeat runs in its own thread from the moment the lock is taken, so a run that spends
longer than ``stale_after`` loading models or on its first shard still looks alive to other hosts.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from pipeline.output.lock_files import lock_file
from pipeline.output.storage import Storage


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
    storage: Storage
    stale_after: float = 600.0
    host: str = field(default_factory=socket.gethostname)

    def __post_init__(self):
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost = False  # another writer replaced the lock: this one must stop writing
        self.file = lock_file(self.storage)
        self._version = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"token": self.token, "host": self.host, "pid": os.getpid(),
                           "heartbeat": time.time()}).encode()

    def _is_live(self, holder: dict) -> bool:
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int):
            return _pid_alive(holder["pid"])
        try:
            return time.time() - float(holder.get("heartbeat", 0)) < self.stale_after
        except (TypeError, ValueError):
            return False  # an unreadable lock is nobody's

    def acquire(self) -> None:
        for _ in range(20):
            self._version = self.file.create(self._record())
            if self._version is not None:
                break
            data, version = self.file.read()
            if data is None:
                continue  # released between our two calls: try again
            try:
                holder = json.loads(data)
            except ValueError:
                holder = {}
            holder = holder if isinstance(holder, dict) else {}
            if self._is_live(holder):
                raise OutputRefused(
                    f"{self.storage.uri} is being written by another run (pid {holder.get('pid')} on "
                    f"{holder.get('host')}); wait for it to finish or choose another output")
            self._version = self.file.replace(self._record(), version)  # a stale holder: taken over...
            if self._version is not None:  # ...unless another run was first
                break
        else:
            raise OutputRefused(f"{self.storage.uri}: other runs keep taking the lock at the same moment; try again")
        self.held, self.lost = True, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="counterfactory-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(self.stale_after / 5, 0.05)
        while not self._stop.wait(interval):
            if not self._renew():
                return

    def _renew(self) -> bool:
        try:
            version = self.file.replace(self._record(), self._version)
            if version is not None:
                self._version = version
                return True
        except Exception:  # noqa: BLE001 - a storage hiccup (OSError, botocore's errors):
            return True  # the next beat tries again
        self.lost = True
        return False

    def heartbeat(self) -> None:
        """Called between shards: stops the run if another writer has taken the lock over meanwhile."""
        if self.held and self.lost:
            raise OutputRefused(f"{self.storage.uri}: another run took this output's lock over (this run's heartbeat "
                                f"stopped for over {self.stale_after:.0f} s); stopping, run again to resume")

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost:
            self.file.delete(self._version)  # only if the lock is still the one this run last wrote
        self.held = False
