"""Does a run stream? Runs of N and 4N seeds: wall-time ratio and peak RSS of the driver and workers.

Memory must not grow with N (target: peak at 4N within 15% of N). Prints JSON.

    python benchmarks/scaling.py [--config configs/mini.yaml] [--seeds 32]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import RssSampler, timed_pipeline_run, write_seeds  # noqa: E402

from pipeline.config.loading import load_config  # noqa: E402


def one_run(config: str, seeds: int, tmp: Path) -> dict:
    folder = write_seeds(tmp / f"seeds{seeds}", seeds)
    loaded = load_config(config, {"input.path": str(folder), "shards.seeds_per_shard": 8})
    with RssSampler() as rss:
        run = timed_pipeline_run(loaded, str(tmp / f"out{seeds}"))
    run.pop("summary")
    return {"seeds": seeds, **run, **rss.as_mib()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mini.yaml")
    parser.add_argument("--seeds", type=int, default=32, help="N; the second run has 4N")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = one_run(args.config, args.seeds, Path(tmp))
        large = one_run(args.config, 4 * args.seeds, Path(tmp))

    def ratio(key):
        return round(large[key] / small[key], 3) if small[key] else None

    print(json.dumps({
        "benchmark": "scaling", "config": args.config, "cpus": os.cpu_count(), "n": small, "4n": large,
        "wall_time_ratio": ratio("run_s"), "driver_peak_ratio": ratio("driver_peak_mib"),
        "workers_peak_ratio": ratio("workers_peak_total_mib"),
        "target": "peak memory at 4N within 1.15 x N; wall time ~4x (linear)",
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
