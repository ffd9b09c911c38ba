"""The Ray graph's plumbing: the input source and how work reaches a stage's actors."""

from __future__ import annotations

import functools
import os
import time
from collections import Counter

import pyarrow as pa
import pytest

from stages.base import Resources, Stage
from stages.ingest.listed import ListedSeeds, seed_ref_table


def listing(count: int) -> pa.Table:
    listed = ListedSeeds()
    for i in range(count):
        listed.add(f"s3://bucket/{i:03d}.jpg", concept="chef" if i % 2 else None)
    return seed_ref_table(listed.table(), 4)


def rows_of(dataset) -> list[dict]:
    import ray

    return [row for ref in dataset.to_arrow_refs() for row in ray.get(ref).to_pylist()]


@pytest.mark.parametrize("count", [0, 1, 32, 33])
def test_the_input_source_hands_over_every_listed_seed_once(local_ray, count):
    """The run's input on Ray: read tasks slicing the one copy of the listing give back the listing, row for row."""
    from pipeline.execution.ray_executor import seed_dataset

    table = listing(count)
    assert sorted(rows_of(seed_dataset(table)), key=lambda r: r["seed_index"]) == table.to_pylist()


class PassThrough(Stage):
    """Passes rows through, noting the process that handled each; with ``slow_marker``, the actors after the
    first (the one that claims the marker) take ``slow_seconds`` a batch."""

    output_schema = pa.schema([("seed_index", pa.int64()), ("worker", pa.int64())])

    def __init__(self, slow_marker: str | None = None, slow_seconds: float = 0.0):
        super().__init__()
        self.seconds = 0.0
        if slow_marker is not None:
            try:
                os.close(os.open(slow_marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                self.seconds = slow_seconds

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(self.seconds)
        return pa.table({"seed_index": batch["seed_index"], "worker": [os.getpid()] * batch.num_rows},
                        schema=self.output_schema)


def test_a_slow_gpu_actor_holds_one_batch_not_a_block(local_ray, tmp_path):
    """Ray Data hands an actor whole upstream blocks (32 seeds here), whatever the batch size, and queues two per
    actor. A GPU stage's work is cut to one batch a task, queued one at a time: while one of two GPU actors takes
    3 s a batch, the other edits everything else."""
    from pipeline.execution.ray_executor import map_stage, seed_dataset

    upstream = map_stage(seed_dataset(listing(96)), "ingest", PassThrough, Resources(num_cpus=0.1, batch_size=16))
    slow = functools.partial(PassThrough, str(tmp_path / "slow"), 3.0)
    gpu = Resources(num_cpus=0.1, num_gpus=0.5, actors=2, batch_size=2)
    rows = rows_of(map_stage(upstream, "edit", slow, gpu))
    assert sorted(row["seed_index"] for row in rows) == list(range(96))
    by_worker = sorted(Counter(row["worker"] for row in rows).values())
    assert len(by_worker) == 2 and by_worker[0] <= 3 * gpu.batch_size  # a block would have been 32
