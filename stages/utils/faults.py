"""Fault injection for tests of the pipeline's failure handling; inert unless a spec is installed.

A spec is a comma-separated list read on the driver from ``COUNTERFACTORY_INJECT_FAULTS`` and handed to
each stage actor:
  ``edit:3``             the edit stage raises for the row(s) of seed_index 3
  ``crash:filter:PATH``  the filter actor's process dies on its first batch, once: PATH marks that it
                         happened, so the restarted actor carries on
  ``oom:edit:2``         the editor raises CUDA out-of-memory for any chunk larger than 2 images
  ``slow:edit:1.5``      the edit actor waits 1.5 s before each batch (a run long enough to lose a node in)
"""

from __future__ import annotations

import os
import time

ENV = "COUNTERFACTORY_INJECT_FAULTS"

_row_faults: set[tuple[str, int]] = set()
_crashes: dict[str, str] = {}
_oom_above: dict[str, int] = {}
_pauses: dict[str, float] = {}


class InjectedFault(RuntimeError):
    pass


def install(spec: str | None) -> None:
    _row_faults.clear()
    _crashes.clear()
    _oom_above.clear()
    _pauses.clear()
    for item in (spec or "").split(","):
        parts = item.strip().split(":", 2)
        if len(parts) == 3 and parts[0] == "crash":
            _crashes[parts[1]] = parts[2]
        elif len(parts) == 3 and parts[0] == "oom":
            _oom_above[parts[1]] = int(parts[2])
        elif len(parts) == 3 and parts[0] == "slow":
            _pauses[parts[1]] = float(parts[2])
        elif len(parts) == 2:
            _row_faults.add((parts[0], int(parts[1])))


def check_row(stage: str, row: dict) -> None:
    if _row_faults and (stage, row.get("seed_index")) in _row_faults:
        raise InjectedFault(f"injected fault in {stage} for seed_index {row.get('seed_index')}")


def before_batch(stage: str) -> None:
    """A stage actor's hook before each batch: the crash and the pause of the spec, if any."""
    check_crash(stage)
    if stage in _pauses:
        time.sleep(_pauses[stage])


def check_crash(stage: str) -> None:
    marker = _crashes.get(stage)
    if marker and not os.path.exists(marker):
        with open(marker, "w") as handle:
            handle.write(f"{stage} crashed in pid {os.getpid()}\n")
        os._exit(17)


def check_oom(stage: str, batch: int) -> None:
    limit = _oom_above.get(stage)
    if limit is not None and batch > limit:
        import torch

        raise torch.cuda.OutOfMemoryError(f"injected CUDA out of memory for a chunk of {batch} images")
