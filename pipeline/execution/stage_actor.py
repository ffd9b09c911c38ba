"""The Ray Data callable class a stage pool's actors run: its stages built and started once per actor, then each
batch through them in turn, on one thread of the actor's own; what each stage counted goes to the WorkCounter."""

from __future__ import annotations

import gc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import pyarrow as pa

from stages.utils import faults


class StageActor:
    """Ray Data callable class around a pool's stages (one, or a ``ray.fuse`` group): built and started once per
    actor, then each batch through them in turn; what each stage's counters gained goes to the WorkCounter.

    The stages are built, started and called on one thread of the actor's own. Ray Data calls ``__call__`` from
    a pool thread, not the one ``__init__`` ran on, and PyTorch's CPU kernels run on a thread other than the
    one that first used them at half speed or worse (OpenMP keeps its thread count and thread team per calling
    thread): the mini config's editor took 125 s of a 178 s run that way, 86 s of a 143 s run on one thread."""

    def __init__(self, stages: Sequence[tuple[str, Callable[[], object], int]], fault_spec: str | None = None,
                 work=None):
        faults.install(fault_spec)
        self.names = [name for name, _, _ in stages]
        self.batch_sizes = [batch_size for _, _, batch_size in stages]
        self.work = work
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{'+'.join(self.names)}-compute")
        self.stages = self.compute.submit(_started, [factory for _, factory, _ in stages]).result()
        # What set-up made (modules, models) lives as long as the actor: left out of the collector's passes, so the
        # process's exit does not walk it. A torch and transformers process spent 1.4 s of CPU exiting, 0.3 s so; a
        # pool whose work is done exits while the ones after it run, and on two cores the mini editor's first batch
        # took 4.2-4.8 s beside the captioning pool's exit against 3.2 s without it.
        gc.freeze()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.compute.submit(self._through, batch).result()

    def _through(self, batch: pa.Table) -> pa.Table:
        gained = {}
        for name, stage, size in zip(self.names, self.stages, self.batch_sizes):
            faults.before_batch(name)
            before = Counter(stage.counters)
            # a fused stage after the first takes what the one before made (a seed's sets, say) in its own batches;
            # an empty batch still goes through once
            parts = [stage(batch.slice(start, size)) for start in range(0, batch.num_rows, size)] or [stage(batch)]
            batch = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
            counts = stage.counters - before
            if counts:
                gained[name] = dict(counts)
        if self.work is not None and gained:
            import ray

            # Waited for: an actor Ray Data tears down must not take its last counts with it.
            ray.get(self.work.add.remote(gained))
        return batch


def _started(factories: Sequence[Callable[[], object]]) -> list:
    stages = [factory() for factory in factories]
    for stage in stages:
        stage.start()
    return stages


def named_actor_class(stages: Sequence[str]) -> type:
    """A StageActor subclass named after its stages, so Ray's progress and dashboard say ``MapBatches(EditStage)``
    or ``MapBatches(SetsEditFilterEncodeStage)`` rather than the same name for every pool (pickled by value)."""
    name = "".join(stage.title() for stage in stages) + "Stage"
    return type(name, (StageActor,), {"__qualname__": f"named_actor_class.<locals>.{name}"})
