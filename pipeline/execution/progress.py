"""Live progress of a run: one rewritten line on a terminal, periodic log lines elsewhere (CI,
``ray job logs``), at a bounded rate either way. Ray Data's own per-operator progress shows rows per stage;
this line shows what a person waits for: seeds done, sets accepted so far, throughput and ETA."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Callable, TextIO

from schemas.records import STATUS_ACCEPTED, STATUS_ERROR, STATUS_REJECTED


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    def __init__(self, total_seeds: int, already_done: int = 0, stream: TextIO | None = None,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic, tty: bool | None = None,
                 rows_per_seed: int = 1):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.5 if self.tty else interval
        self.clock = clock
        self.total = total_seeds
        self.done = already_done
        self.started_with = already_done
        self.sets = Counter()
        self.shards = 0
        self.start = clock()
        self.last_print = None
        self.rows_per_seed = rows_per_seed  # a seed is done when all its set rows are in, in whatever order
        self._rows_in: Counter = Counter()

    def row(self, row: dict) -> None:
        """A set row reached the writer (in any order)."""
        seed = row["seed_index"]
        self._rows_in[seed] += 1
        if self._rows_in[seed] == self.rows_per_seed:
            del self._rows_in[seed]
            self.done += 1
        self.sets[row.get("set_status") or STATUS_ERROR] += 1
        self.maybe_print()

    def shard_written(self) -> None:
        self.shards += 1
        self.maybe_print()

    def line(self) -> str:
        elapsed = self.clock() - self.start
        new = self.done - self.started_with
        rate = new / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "?"
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "-"
        sets = " ".join(f"{k} {self.sets[k]}" for k in (STATUS_ACCEPTED, STATUS_REJECTED, STATUS_ERROR) if self.sets[k])
        return (f"progress: seeds {self.done}/{self.total} ({share}) | sets {sets or 'none yet'} | "
                f"{rate:.2f} seeds/s | ETA {eta} | {self.shards} shard(s) written")

    def maybe_print(self, force: bool = False) -> None:
        now = self.clock()
        if not force and self.last_print is not None and now - self.last_print < self.interval:
            return
        self.last_print = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self.maybe_print(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
