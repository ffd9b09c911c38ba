"""The stage contract: what a stage declares, and the per-row accounting the base does for it.

A stage is built from its config on the driver, shipped to a worker, ``start()``-ed once there (which runs
its ``setup()``: load models), then called on pyarrow batches. A subclass says:

  ``name``            the stage's name: in error reasons (``edit: OutOfMemoryError: ...``), counters, plans
  ``output_schema``   the schema of the batches it returns (schemas.records)
  ``setup()``         what to do once per worker
  ``wants(row)``      which rows it works on (the others pass through unchanged: rows already failed)
  ``process_row(row)`` the work on one row: change it in place (return None) or return the rows it becomes

and the base owns the batch loop, the fault hooks (stages.utils.faults), turning an exception into error
rows that name the stage (``on_error``), and the counters (``counters``) the executor adds up into
``stats.json``: ``rows`` worked on and ``errors``, plus whatever the stage counts itself.
Models: NeMo Curator's ProcessingStage and datatrove's BaseFilter (the subclass decides, the base counts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from schemas.records import STATUS_ERROR, rows_to_table
from stages.utils import faults
from stages.utils.errors import StageSetupError, describe_error


@dataclass
class Resources:
    """What a stage asks of the cluster; the executor passes it to Ray Data unchanged."""

    num_cpus: float = 1.0  # per actor; fractional values let small stages share a core
    num_gpus: float = 0.0  # per actor; fractional (0.5) packs two actors on one GPU
    actors: int = 1  # actor-pool size
    batch_size: int = 8  # rows per batch handed to the stage
    max_restarts: int = 3  # times a crashed actor is restarted and its batch retried
    # Batches queued on one actor. None: 1 for GPU stages, Ray Data's default (2 blocks) otherwise.
    tasks_in_flight: int | None = None

    def batches_in_flight(self) -> int | None:
        """Batches queued per actor, when the stage's tasks are cut to one batch each; None: Ray Data's
        defaults (a task takes whole upstream blocks, 32 rows or more, two in flight). GPU stages' batches
        take seconds each, so there a task is one batch and one waits per actor: a slow GPU then holds no
        work another could do."""
        if self.tasks_in_flight is not None:
            return self.tasks_in_flight
        return 1 if self.num_gpus > 0 else None

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.num_cpus < 0:
            found.append(("num_cpus", "must be >= 0"))
        if self.num_gpus < 0:
            found.append(("num_gpus", "must be >= 0"))
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            found.append(("num_gpus", "above 1 must be a whole number of GPUs"))
        if self.actors < 1:
            found.append(("actors", "must be >= 1"))
        if self.max_restarts < 0:
            found.append(("max_restarts", "must be >= 0"))
        if self.batch_size < 1:
            found.append(("batch_size", "must be >= 1"))
        if self.tasks_in_flight is not None and self.tasks_in_flight < 1:
            found.append(("tasks_in_flight", "must be >= 1 (or left out: 1 for GPU stages, 2 otherwise)"))
        return found


def fail_seed(row: dict, reason: str) -> None:
    """A seed-level row (before the sets stage) that cannot go on."""
    row["status"], row["error"] = STATUS_ERROR, reason


def fail_set(row: dict, reason: str) -> None:
    """A set row: the set and every candidate it has become errors with ``reason``."""
    row["set_status"], row["set_reason"] = STATUS_ERROR, reason
    for cand in row.get("candidates") or []:
        cand["status"], cand["reason"] = STATUS_ERROR, reason


class Stage:
    name: str = ""
    output_schema: pa.Schema

    def __init__(self) -> None:
        self.counters: Counter = Counter()
        self._started = False

    # -- what a stage writes --------------------------------------------------------------------------
    def setup(self) -> None:
        """Once per worker, before the first batch: load models."""

    def wants(self, row: dict) -> bool:
        return True

    def process_row(self, row: dict) -> list[dict] | None:
        raise NotImplementedError

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        """The rows a row becomes when ``process_row`` raised; seed and set stages say how."""
        raise NotImplementedError

    # -- what the base does ---------------------------------------------------------------------------
    def reason(self, exc: Exception) -> str:
        return f"{self.name}: {describe_error(exc)}"

    def start(self) -> None:
        if not self._started:
            try:
                self.setup()
            except Exception as exc:
                first = describe_error(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StageSetupError(f"stage {self.name} could not set up (load its model): {first}") from exc
            self._started = True

    def process_rows(self, rows: list[dict]) -> list[dict]:
        out: list[dict] = []
        for row in rows:
            if not self.wants(row):
                out.append(row)
                continue
            self.counters["rows"] += 1
            try:
                faults.check_row(self.name, row)
                result = self.process_row(row)
            except Exception as exc:  # one bad row must not take its batch down
                self.counters["errors"] += 1
                out.extend(self.on_error(row, exc))
                continue
            out.extend([row] if result is None else result)
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.start()
        return rows_to_table(self.process_rows(batch.to_pylist()), self.output_schema)


class SeedStage(Stage):
    """A stage on seed rows (ingest, caption, concept): a failed row becomes an error seed."""

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        fail_seed(row, self.reason(exc))
        return [row]


class SetStage(Stage):
    """A stage on set rows (edit, filter, encode): a failed set and its candidates become errors."""

    def on_error(self, row: dict, exc: Exception) -> list[dict]:
        fail_set(row, self.reason(exc))
        return [row]


@dataclass(frozen=True)
class ModelUse:
    """A model a run loads: which stage role, the config field naming it, and how it is loaded.
    ``marker`` is the file whose presence in the Hugging Face cache means a Hub model is there."""

    role: str  # captioner | concept | editor | segmenter | clip
    field: str  # the config field, e.g. "edit.mask.model"
    ref: str  # Hub id, local directory, open_clip name, or tiny:NAME
    revision: str | None = None  # what provenance records as the model's revision
    allow_pickle: bool = False
    marker: str = "config.json"
