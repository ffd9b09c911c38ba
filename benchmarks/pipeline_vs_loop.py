"""The Ray pipeline against the plain script a user would write instead, and against the local executor
(``pipeline/execution/local.py``), on the same seeds and models. Prints JSON.

Each is measured as a user waits for it: in a process of its own, from the moment that process is started (imports,
Ray start-up and model set-up included), on seeds written beforehand: when each set row is done (at the driver for
the pipeline, at the end of its chunk for the loop), the first shard, the longest wait between two shards, and the
steady sets/s between the arrival of a quarter and of three quarters of the rows.

With ``--repeat N`` the three run N times in turn (loop, local, pipeline, loop, ...), so that a machine's drift over
minutes falls on all three alike; each round's numbers are printed, and the median of each over the rounds. (On a
2-core VM one pipeline run's editor took 2.4 s a batch, the next 3.0 s: one run is not a measurement.)

    python benchmarks/pipeline_vs_loop.py [--config configs/mini.yaml] [--seeds 64] [--chunk 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import streaming, timed_pipeline_run, write_seeds  # noqa: E402  (sets sys.path and HF_HUB_OFFLINE)

from pipeline.config.loading import load_config  # noqa: E402
from pipeline.config.model_refs import with_models_resolved  # noqa: E402
from pipeline.execution.local import run_local  # noqa: E402
from pipeline.execution.provenance import provenance  # noqa: E402
from pipeline.execution.stage_list import stage_specs  # noqa: E402
from pipeline.output.shard_writer import ShardWriter  # noqa: E402
from pipeline.output.storage import Storage  # noqa: E402
from stages.ingest.listing import list_seeds  # noqa: E402

RESULT = "pipeline_vs_loop result: "  # the child's line to read among whatever else it prints


def plain_loop(loaded, output: str, chunk: int, started: float) -> dict:
    """Load every model once, then push ``chunk`` seeds at a time through each stage and write their shards."""
    config = with_models_resolved(loaded.config)
    record = provenance(loaded)
    stages = [spec.factory() for spec in stage_specs(config, loaded.taxonomy, record)]
    for stage in stages:
        stage.start()
    writer = ShardWriter(config.shards, Storage(output), record)
    writer.setup()
    setup_s = time.time() - started
    refs = list_seeds(config.input, config.shards.seeds_per_shard)
    arrivals, shard_times = [], []
    for start in range(0, refs.num_rows, chunk):
        table = refs.slice(start, chunk)
        for stage in stages:
            table = stage(table)
        rows = table.to_pylist()
        arrivals.extend([time.time() - started] * len(rows))
        for index in sorted({r["shard_index"] for r in rows}):
            writer.write_shard(index, [r for r in rows if r["shard_index"] == index])
            shard_times.append(time.time() - started)
    total = time.time() - started
    return {"setup_s": round(setup_s, 2), "run_s": round(total - setup_s, 2), "end_to_end_s": round(total, 2),
            "sets": len(arrivals), "shards": len(shard_times), **streaming(arrivals, shard_times, total)}


def local_run(loaded, output: str, started: float) -> dict:
    """The local executor's whole run (every stage on all seeds in turn, then the shards), from the start."""
    run_local(loaded, output)
    return {"end_to_end_s": round(time.time() - started, 2)}


def one_part(part: str, config: str, seeds: str, chunk: int, output: str, started: float) -> dict:
    loaded = load_config(config, {"input.path": seeds, "shards.seeds_per_shard": chunk})
    if part == "loop":
        return plain_loop(loaded, output, chunk, started)
    if part == "local":
        return local_run(loaded, output, started)
    run = timed_pipeline_run(loaded, output, started)
    summary = run.pop("summary")
    return {**run, "accepted_sets": summary.stats["sets"].get("accepted", 0), "accepted_members": summary.stats["samples"]}


def in_a_process_of_its_own(part: str, args, seeds: str, output: str) -> dict:
    """``part`` run by a fresh interpreter, timed from just before it is started: what a user's command costs."""
    started = time.time()
    done = subprocess.run([sys.executable, __file__, "--config", args.config, "--chunk", str(args.chunk), "--part", part,
                           "--seeds-dir", seeds, "--output", output, "--started", repr(started)],
                          stdout=subprocess.PIPE, text=True, check=True)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    return json.loads(line[len(RESULT):])


def one_round(runs: dict) -> dict:
    """One run of each part, and the ratios the targets are about."""
    loop, local, ray_run = runs.get("loop", {}), runs.get("local", {}), dict(runs.get("pipeline", {}))

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    return {"sets": ray_run.get("sets") or loop.get("sets"),
            "accepted_sets": ray_run.pop("accepted_sets", None), "accepted_members": ray_run.pop("accepted_members", None),
            "plain_loop": loop, "local_executor": local, "pipeline": ray_run,
            "steady_ratio": ratio(ray_run.get("steady_sets_per_s"), loop.get("steady_sets_per_s")),
            "end_to_end_ratio": ratio(loop.get("end_to_end_s"), ray_run.get("end_to_end_s")),
            "vs_local_executor": ratio(ray_run.get("end_to_end_s"), local.get("end_to_end_s"))}


def medians(rounds: list[dict]) -> dict:
    """Each number's median over the rounds (a ratio's median, not the ratio of medians), keyed as in a round."""
    def median_of(values: list):
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return round(statistics.median(numbers), 3) if numbers and len(numbers) == len(values) else values[0]

    def merge(items: list):
        if isinstance(items[0], dict):
            return {key: merge([item.get(key) for item in items]) for key in items[0]}
        return median_of(items)

    return merge(rounds)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mini.yaml")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8, help="seeds per shard and per loop iteration")
    parser.add_argument("--parts", default="loop,local,pipeline", help="which of the three to run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the parts, in turn; medians reported")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # a child process: this part only, as one RESULT line
    parser.add_argument("--seeds-dir", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(RESULT + json.dumps(one_part(args.part, args.config, args.seeds_dir, args.chunk, args.output, args.started)))
        return 0
    if args.repeat < 1:
        parser.error(f"--repeat: at least 1 round, not {args.repeat}")
    parts = args.parts.split(",")
    # The models built and read once before any part (the tiny ones into their cache, every library through the page
    # cache), so that the first part measured does not pay for what the others find done.
    with_models_resolved(load_config(args.config).config)
    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        seeds = str(write_seeds(Path(tmp) / "seeds", args.seeds))
        for n in range(args.repeat):
            runs = {part: in_a_process_of_its_own(part, args, seeds, os.path.join(tmp, f"{part}-{n}"))
                    for part in ("loop", "local", "pipeline") if part in parts}
            rounds.append(one_round(runs))
    result = {
        "benchmark": "pipeline_vs_loop", "config": args.config, "seeds": args.seeds, "cpus": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **(rounds[0] if len(rounds) == 1 else {"rounds": rounds, "median": medians(rounds)}),
        "targets": {"steady_ratio": ">= 0.85", "end_to_end_ratio": ">= 0.7 (loop's time / pipeline's)",
                    "vs_local_executor": "<= 2 (pipeline's time / local executor's)",
                    "pipeline.first_shard_share": "< 0.4", "pipeline.max_shard_gap_share": "<= 0.25"},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
