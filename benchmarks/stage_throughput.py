"""Per-stage throughput as plain callables, and the Ray pipeline against the same work in one process.

Prints JSON. With the tiny models this measures the pipeline's own overhead (listing, Arrow batches,
actor start-up, shard writing), not diffusion speed: point --config at a real config on a GPU for that.

    python benchmarks/stage_throughput.py [--config configs/mini.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import common  # noqa: F401,E402  (sets sys.path and HF_HUB_OFFLINE)

from pipeline.config.loading import load_config  # noqa: E402
from pipeline.execution.local import run_stages  # noqa: E402
from pipeline.execution.provenance import provenance  # noqa: E402
from pipeline.execution.run import run_pipeline  # noqa: E402
from pipeline.output.shard_writer import ShardWriter  # noqa: E402
from pipeline.output.storage import Storage  # noqa: E402


def plain_loop(loaded, output: str) -> dict:
    """The script a user would write instead: every stage in turn, in one process."""
    result = run_stages(loaded)
    table, timings = result.table, result.timings
    writer = ShardWriter(loaded.config.shards, Storage(output), provenance(loaded))
    writer.setup()
    started = time.perf_counter()
    rows = table.to_pylist()
    for index in sorted({r["shard_index"] for r in rows}):
        writer.write_shard(index, [r for r in rows if r["shard_index"] == index])
    timings["write"] = {"run_s": round(time.perf_counter() - started, 3), "rows_in": len(rows)}
    images = sum(len(r["candidates"] or []) for r in rows)
    return {"stages": timings, "edited_images": images}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mini.yaml")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    loaded = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        loop = plain_loop(loaded, os.path.join(tmp, "loop"))
        loop_s = time.perf_counter() - started
        runs = []
        for i in range(args.repeat):
            started = time.perf_counter()
            summary = run_pipeline(loaded, output=os.path.join(tmp, f"ray{i}"), log=lambda line: None)
            runs.append(time.perf_counter() - started)
    images = loop["edited_images"]
    result = {
        "benchmark": "stage_throughput",
        "config": args.config,
        "config_hash": loaded.config_hash,
        "cpus": os.cpu_count(),
        "edited_images": images,
        "plain_loop_s": round(loop_s, 2),
        "plain_loop_images_per_s": round(images / loop_s, 2),
        "ray_pipeline_s": [round(r, 2) for r in runs],
        "ray_pipeline_images_per_s": round(images / min(runs), 2),
        "ray_vs_loop": round(loop_s / min(runs), 3),
        "stages": loop["stages"],
        "accepted_sets": summary.stats["sets"].get("accepted", 0), "accepted_members": summary.stats["samples"],
        "note": "tiny random models on CPU: measures plumbing overhead, not diffusion speed",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
