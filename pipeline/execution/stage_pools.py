"""The run's stages as Ray Data actor pools: one pool a stage, except the groups ``ray.fuse`` names, whose stages
run in one actor, each batch through them in turn (a stage in a group keeps its own counters, faults and errors).

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
    """What one actor running these stages one after another asks for: the most any of them asks for (they never
    run at once, so not the sum), its first stage's batch size (the rows that enter it), and the fewest tasks in
    flight any of them sets (else the default for the pool's GPUs)."""
    first = stages[0]
    explicit = [r.tasks_in_flight for r in stages if r.tasks_in_flight is not None]
    return dataclasses.replace(
        first,
        num_cpus=max(r.num_cpus for r in stages), num_gpus=max(r.num_gpus for r in stages),
        actors=max(r.actors for r in stages), max_restarts=max(r.max_restarts for r in stages),
        tasks_in_flight=min(explicit) if explicit else None,
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
