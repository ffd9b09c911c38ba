"""The Ray pipeline against the plain script a user would write instead, on the same seeds and models.

Steady-state sets/s for both (pipeline: from its first shard written to its last; loop: every chunk of
seeds after the first), their ratio, and Ray start-up apart. Prints JSON.

    python benchmarks/pipeline_vs_loop.py [--config configs/mini.yaml] [--seeds 64] [--chunk 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import timed_pipeline_run, write_seeds  # noqa: E402  (sets sys.path and HF_HUB_OFFLINE)

from pipeline.config.loading import load_config  # noqa: E402
from pipeline.config.model_refs import with_models_resolved  # noqa: E402
from pipeline.execution.provenance import provenance  # noqa: E402
from pipeline.execution.stage_list import stage_specs  # noqa: E402
from pipeline.output.shard_writer import ShardWriter  # noqa: E402
from pipeline.output.storage import Storage  # noqa: E402
from stages.ingest.listing import list_seeds  # noqa: E402


def plain_loop(loaded, output: str, chunk: int) -> dict:
    """Load every model once, then push ``chunk`` seeds at a time through each stage and write a tar."""
    config = with_models_resolved(loaded.config)
    started = time.perf_counter()
    record = provenance(loaded)
    stages = [spec.factory() for spec in stage_specs(config, loaded.taxonomy, record)]
    for stage in stages:
        stage.start()
    writer = ShardWriter(config.shards, Storage(output), record)
    writer.setup()
    setup_s = time.perf_counter() - started
    refs = list_seeds(config.input, config.shards.seeds_per_shard)
    chunk_times, sets = [], 0
    for start in range(0, refs.num_rows, chunk):
        began = time.perf_counter()
        table = refs.slice(start, chunk)
        for stage in stages:
            table = stage(table)
        rows = table.to_pylist()
        for index in sorted({r["shard_index"] for r in rows}):
            writer.write_shard(index, [r for r in rows if r["shard_index"] == index])
        chunk_times.append((time.perf_counter() - began, len(rows)))
        sets += len(rows)
    steady_s = sum(t for t, _ in chunk_times[1:])
    steady_sets = sum(n for _, n in chunk_times[1:])
    return {"setup_s": round(setup_s, 2), "run_s": round(sum(t for t, _ in chunk_times), 2), "sets": sets,
            "steady_sets_per_s": round(steady_sets / steady_s, 3) if steady_s else None}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mini.yaml")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8, help="seeds per shard and per loop iteration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seeds = write_seeds(Path(tmp) / "seeds", args.seeds)
        loaded = load_config(args.config, {"input.path": str(seeds), "shards.seeds_per_shard": args.chunk})
        loop = plain_loop(loaded, os.path.join(tmp, "loop"), args.chunk)
        ray_run = timed_pipeline_run(loaded, os.path.join(tmp, "ray"))
    summary = ray_run.pop("summary")
    result = {
        "benchmark": "pipeline_vs_loop", "config": args.config, "seeds": args.seeds, "cpus": os.cpu_count(),
        "sets": loop["sets"], "accepted_sets": summary.stats["sets"].get("accepted", 0),
        "accepted_members": summary.stats["samples"],
        "plain_loop": loop, "pipeline": ray_run,
        "steady_ratio": round(ray_run["steady_sets_per_s"] / loop["steady_sets_per_s"], 3)
        if ray_run["steady_sets_per_s"] and loop["steady_sets_per_s"] else None,
        "target": "steady_ratio >= 0.85 at >= 64 seeds",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
