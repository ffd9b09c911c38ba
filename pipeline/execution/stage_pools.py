"""The run's stages as Ray Data actor pools: one pool a stage, except the groups ``ray.fuse`` names, whose stages
run in one actor, each batch through them in turn (a stage in a group keeps its own batch size, counters, faults
and errors).

A fused group starts one worker process and imports its libraries once instead of once a stage: on two cores a
mini-run's seven pools spent 16 s starting processes and 13 s more loading models before the first edit, with
every model's process contending for the same cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from pipeline.execution.stage_list import StageSpec
from stages.base import Resources

POOL_JOIN = "+"  # a fused pool's name: its stages' names joined, "sets+edit+filter+encode"


@dataclass
class StagePool:
    stages: list[StageSpec]
    resources: Resources

    @property
    def name(self) -> str:
        return POOL_JOIN.join(spec.name for spec in self.stages)


def pool_stage_names(pool_name: str) -> list[str]:
    return pool_name.split(POOL_JOIN)


def fused_resources(stages: Sequence[Resources]) -> Resources:
    """What one actor running these stages one after another asks for. CPUs: the most any asks for (they never
    compute at once). GPUs: the sum of their fractions (each model stays loaded on the device), at most one device
    or the largest whole-GPU ask (every model loads on the actor's first device: more would sit idle).
    Actors: the most any GPU stage asks for, else the most any asks for. Restarts: the most. Batches: the first
    stage's (the rows that enter the pool; inside, each stage takes its own ``batch_size``). Queued: the fewest
    batches in flight any of them allows (a GPU stage's 1 included)."""
    first = stages[0]
    gpus = sum(r.num_gpus for r in stages)
    on_gpus = [r for r in stages if r.num_gpus > 0]
    queued = [q for q in (r.batches_in_flight() for r in stages) if q is not None]
    return dataclasses.replace(
        first,
        num_cpus=max(r.num_cpus for r in stages), num_gpus=min(gpus, max(1.0, *(r.num_gpus for r in stages))),
        actors=max(r.actors for r in (on_gpus or stages)), max_restarts=max(r.max_restarts for r in stages),
        tasks_in_flight=min(queued) if queued else None,
    )


def stage_pools(specs: Sequence[StageSpec], fuse: Sequence[Sequence[str]] = ()) -> list[StagePool]:
    """``specs`` in order as pools; each group of ``fuse`` (consecutive stage names, checked at load time) one pool."""
    group_of = {name: i for i, group in enumerate(fuse) for name in group}
    pools: list[StagePool] = []
    for spec in specs:
        group = group_of.get(spec.name)
        last = pools[-1] if pools else None
        if group is not None and last is not None and group_of.get(last.stages[-1].name) == group:
            last.stages.append(spec)
            last.resources = fused_resources([s.resources for s in last.stages])
        else:
            pools.append(StagePool([spec], spec.resources))
    return pools
