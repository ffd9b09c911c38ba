"""What Ray Data keeps on the driver for every block: capped to the most recent blocks of each operator.

Each of Ray Data's map operators appends the stats of every block it hands on (rows, bytes, the task's timings
and node: three objects and their dicts) to a list it keeps for the life of the run, for ``Dataset.stats()``.
Over the benchmark's five operators that was 0.28 blocks a set (5,625 after 20k sets), so the driver grew with
the input. Here each such list keeps the stats of its last ``KEPT_BLOCKS`` to twice as many blocks. Ray Data's summary
(``Dataset.stats()``, its log at the end of a run) then covers only those: its task and block counts, row and
byte totals and rates are the kept blocks', not the run's; the run's own counts are in stats.json.
"""

from __future__ import annotations

import functools

from pipeline.execution.ray_policies import add_policy

KEPT_BLOCKS = 256  # per operator: enough blocks for representative timings in Ray Data's summary
KEPT_BLOCKS_KEY = "counterfactory.kept_block_stats"


class RecentBlockStats(list):
    """A list of block stats that drops its oldest entries once it holds twice ``keep`` (so trimming costs a
    slice now and then, not a shift per block)."""

    def __init__(self, items=(), keep: int = KEPT_BLOCKS):
        super().__init__(items)
        self.keep = max(int(keep), 1)
        self._trim()

    def _trim(self) -> None:
        if len(self) > 2 * self.keep:
            del self[:len(self) - self.keep]

    def append(self, item) -> None:
        super().append(item)
        self._trim()

    def extend(self, items) -> None:
        super().extend(items)
        self._trim()

    def __iadd__(self, items):
        self.extend(items)
        return self

    def __reduce__(self):
        # Ray Data sends the stats to its stats actor, a detached actor that may serve other jobs and cannot be
        # counted on to import this project: it gets the plain list this replaces.
        return (list, (list(self),))


def cap_block_stats(context, keep: int = KEPT_BLOCKS) -> None:
    """Install the cap on a Dataset's DataContext (the Datasets made from it share it), as a backpressure policy
    that holds nothing back (the internals it uses: ray_seams, checked at start-up)."""
    add_policy(context, capped_block_stats_policy, {KEPT_BLOCKS_KEY: int(keep)})


@functools.cache
def capped_block_stats_policy() -> type:
    """The policy class (built on first use: Ray Data is imported only where a graph is built)."""
    from ray.data._internal.execution.backpressure_policy import BackpressurePolicy

    class CappedBlockStats(BackpressurePolicy):
        """Swaps each operator's per-block stats list, still empty when an execution builds its policies, for a
        ``RecentBlockStats``; holds nothing back (the base class's answers)."""

        def __init__(self, data_context, topology, resource_manager):
            super().__init__(data_context, topology, resource_manager)
            keep = data_context.get_config(KEPT_BLOCKS_KEY, KEPT_BLOCKS)
            for op in topology:
                kept = getattr(op, "_output_blocks_stats", None)
                if type(kept) is list:
                    op._output_blocks_stats = RecentBlockStats(kept, keep)

    return CappedBlockStats
