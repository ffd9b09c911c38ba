"""The driver at cluster scale, on two cores: simulated GPU actors stand in for the editor; and a run with the real
mini stages, to see its shards come out as the work goes.

The run's own pieces (listing, ingest with the shared record of seeds seen, the planner, the encode stage,
the driver's shard assembler and writer, resume) run as in a real run, on Ray Data without preserve_order;
the editor is replaced by actors that sleep a fixed wall time per image and use no CPU (``num_cpus=0``), so
two cores can stand in for many GPUs. Seeds come from generate mode (no photos to read). The ``mini`` part runs
``configs/mini.yaml`` itself (tiny real models in every stage) on generated seed photos, as ``counterfactory run``
does: when its first shard is written and the longest wait between two shards, as shares of the whole run.
Prints JSON.

    python benchmarks/scale.py [--parts listing,resume,actors,slow,scale,mini] [--sizes 1000,10000,100000]
                               [--actor-counts 1,4,16,64] [--unbounded] [--mini-seeds 64]

Each measurement runs in its own process, so peak RSS is that run's alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401,E402  (repository on sys.path, Hub offline, tiny models registered)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.config.loading import load_config  # noqa: E402
from pipeline.execution.assembler import ShardAssembler  # noqa: E402
from pipeline.execution.driver_heap import HeapTrimmer  # noqa: E402
from pipeline.execution.provenance import provenance  # noqa: E402
from pipeline.execution.seen_registry import copy_rows_maker  # noqa: E402
from schemas.records import SET, STATUS_ACCEPTED  # noqa: E402
from stages.base import Resources, SetStage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "mini_generate.yaml"
EDIT_BATCH = 2  # sets per editor call where the editor costs time: configs/production.yaml's edit batch


class SleepEditor(SetStage):
    """Stands in for a GPU editor: ``seconds_per_image`` of wall time per member image, no CPU; every member
    gets one accepted 8x8 candidate. The actor whose ticket is 0 is ``slow`` times slower. Each set's editing
    time goes to the run's ``EditLog``, so throughput is measured over the editing itself, not actor start-up."""

    name = "edit"
    output_schema = SET

    def __init__(self, seconds_per_image: float, slow: float = 1.0, log=None):
        super().__init__()
        self.log = log
        self.seconds = seconds_per_image * (slow if log is not None and _ticket(log) == 0 else 1.0)
        self.pixels = np.full((8, 8, 3), 128, np.uint8).tobytes()

    def wants(self, row: dict) -> bool:
        return row["status"] == "ok" and row["set_status"] is None

    def process_row(self, row: dict) -> None:
        began = time.time()
        if self.seconds:
            time.sleep(self.seconds * len(row["members"]))
        if self.log is not None and self.seconds:  # (not at 0 s an image: 100k extra calls on two cores)
            self.log.edited.remote(began, time.time())
        row["candidates"] = [
            {"member_id": m["member_id"], "candidate": 0, "noise_seed": row["candidate_seeds"][0],
             "image_rgb": self.pixels, "width": 8, "height": 8, "status": STATUS_ACCEPTED, "failed_checks": [],
             "text_image": 0.3, "directional": 0.2, "image_image": 0.8, "attribute_margin": 0.1}
            for m in row["members"]]
        row.update(set_status=STATUS_ACCEPTED, image_rgb=self.pixels, width=8, height=8, candidate_bases=[self.pixels])


def memory_mib() -> dict[str, float]:
    """This process's resident memory by kind: private (anon), shared memory (the object store's pages it has
    mapped, which every process that reads the store counts too) and files."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("RssAnon:", "RssShmem:", "RssFile:")):
                name, value, _ = line.split()
                fields[name.rstrip(":")] = int(value) / 1024
    return fields


class EditLog:
    """Hands each editor actor a ticket (0 is the slow one) and keeps when each actor was ready and when the
    editing of each set began and ended."""

    def __init__(self):
        self.next, self.ready, self.spans = 0, [], []

    def take(self) -> int:
        self.next += 1
        self.ready.append(time.time())
        return self.next - 1

    def edited(self, began: float, ended: float) -> None:
        self.spans.append((began, ended))

    def window(self) -> dict:
        """Editing throughput over three windows: from the first set begun to the last ended; from the moment
        the last actor was ready (two cores start 64 actor processes one after another, which a cluster's
        nodes do side by side); and from then to the last set begun, while every actor still had work (the
        last batches' tail aside). Sets count by the part of their editing inside a window."""
        if not self.spans:
            return {}
        spans = np.array(self.spans)
        first, last, all_ready, drained = spans[:, 0].min(), spans[:, 1].max(), max(self.ready), spans[:, 0].max()

        def rate(start: float, end: float) -> float | None:
            inside = (np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start)).clip(0)
            done = (inside / (spans[:, 1] - spans[:, 0]).clip(1e-9)).sum()
            return round(float(done / (end - start)), 2) if end > start else None

        return {"sets": len(spans), "editing_s": round(float(last - first), 2), "editing_sets_per_s": rate(first, last),
                "all_ready_s": round(float(last - all_ready), 2), "all_ready_sets_per_s": rate(all_ready, last),
                "while_fed_s": round(float(drained - all_ready), 2), "while_fed_sets_per_s": rate(all_ready, drained)}


def _ticket(handle):
    import ray

    return ray.get(handle.take.remote())


def loaded_for(seeds: int, seeds_per_shard: int):
    """Generate mode sized to ``seeds``: concepts x prompts x seeds_per_prompt, gender sets only."""
    prompts = ["a photo of {a_concept}"]
    loaded = load_config(CONFIG, {"plan.axes": ["gender"], "input.prompts": prompts, "report.enabled": False})
    per_prompt = -(-seeds // len(loaded.concepts))
    return load_config(CONFIG, {"plan.axes": ["gender"], "input.prompts": prompts, "input.seeds_per_prompt": per_prompt,
                                "shards.seeds_per_shard": seeds_per_shard, "shards.thumbnail_size": 0,
                                "report.enabled": False})


def one_run(seeds: int, actors: int, seconds_per_image: float, slow: float, seeds_per_shard: int,
            edit_batch: int = 16, tasks_in_flight: int | None = 1, bounded: bool = True) -> dict:
    """One streamed run into a temporary output; what the driver saw. ``edit_batch``: sets per editor call;
    ``tasks_in_flight``: editor batches queued per actor (None: Ray Data's defaults, whole blocks per task);
    ``bounded``: the driver's memory held as a run holds it: seeds in flight bounded, the stats of recent blocks only,
    the heap trimmed (False: Ray Data's and glibc's defaults, the input read as far ahead as Ray Data goes)."""
    import ray

    from pipeline.execution.ray_executor import init_ray, map_stage, start_registry
    from pipeline.execution.ray_block_stats import cap_block_stats
    from pipeline.execution.ray_input import seed_dataset, seeds_in_flight_for
    from pipeline.execution.ray_output import batches_as_done
    from pipeline.output.shard_writer import ShardWriter
    from pipeline.output.storage import Storage
    from stages.encode import SampleEncoder
    from stages.ingest.decode import DecodeSeeds
    from stages.ingest.listing import list_seeds
    from stages.sets.stage import SetPlanner

    loaded = loaded_for(seeds, seeds_per_shard)
    config = loaded.config
    init_ray(config.ray)
    started = time.perf_counter()
    todo = list_seeds(config.input, config.shards.seeds_per_shard, seeds, loaded.concepts)
    listed = time.perf_counter() - started
    registry = start_registry(todo.column("seed_index").to_numpy(), {}, {})
    record = provenance(loaded)
    edit_log = ray.remote(num_cpus=0)(EditLog).remote()
    stages = [
        ("ingest", functools.partial(DecodeSeeds, config.input, registry.claim), Resources(0.2, batch_size=16)),
        ("sets", functools.partial(SetPlanner, config.plan, loaded.taxonomy, config.run.seed),
         Resources(0.2, batch_size=16)),
        # num_cpus=0 and no GPU declared: tasks_in_flight=1 is what a GPU stage gets by default
        ("edit", functools.partial(SleepEditor, seconds_per_image, slow, edit_log),
         Resources(0, actors=actors, batch_size=edit_batch, tasks_in_flight=tasks_in_flight)),
        ("encode", functools.partial(SampleEncoder, config.shards, record), Resources(0.5, batch_size=16)),
    ]
    in_flight = seeds_in_flight_for([(name, resources) for name, _, resources in stages], 1) if bounded else None
    ds = seed_dataset(todo, in_flight)
    if bounded:
        cap_block_stats(ds.context)
    for name, factory, resources in stages:
        ds = map_stage(ds, name, factory, resources)
    with tempfile.TemporaryDirectory() as out:
        writer = ShardWriter(config.shards, Storage(out), record)
        writer.setup()
        first = []

        def write(index: int, rows: list[dict]) -> None:
            writer.write_shard(index, rows)
            if not first:
                first.append(time.perf_counter() - started)

        assembler = ShardAssembler(todo.column("seed_index").to_numpy(), todo.column("shard_index").to_numpy(), 1,
                                   registry, write, copy_rows_maker(todo, loaded))
        ready = time.perf_counter() - started  # the graph built, nothing run yet
        rows, first_row, busy = 0, None, 0.0  # busy: the driver's own seconds (rows to dicts, assemble, write)
        peak_private = 0.0
        heap = HeapTrimmer() if bounded else None
        for number, batch in enumerate(batches_as_done(ds)):
            began = time.perf_counter()
            if first_row is None:
                first_row = began
            for row in batch.to_pylist():
                assembler.add(row)
                rows += 1
            assembler.flush()
            if heap is not None:
                heap.tick()
            busy += time.perf_counter() - began
            if number % 20 == 0:
                peak_private = max(peak_private, memory_mib().get("RssAnon", 0.0))
        assembler.flush(final=True)
        total = time.perf_counter() - started
        steady = (rows - 16) / max(time.perf_counter() - first_row, 1e-9)  # after the first batch: start-up aside
    end_memory = memory_mib()  # before the object store is unmapped
    editing = ray.get(edit_log.window.remote())
    ray.shutdown()
    return {"seeds": todo.num_rows, "sets": rows, "actors": actors, "seconds_per_image": seconds_per_image,
            "slow_actor": slow, "seeds_in_flight": in_flight, "listed_s": round(listed, 2), "graph_built_s": round(ready, 2),
            "first_row_s": round(first_row - started, 2), "first_shard_s": round(first[0], 2), "total_s": round(total, 2),
            "sets_per_s": round(rows / total, 1), "steady_sets_per_s": round(steady, 2),
            **{key: value for key, value in editing.items() if key != "sets"},
            "shards": len(assembler.written),
            "driver_busy_s": round(busy, 2), "driver_ceiling_sets_per_s": round(rows / busy, 1),
            "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "driver_peak_private_mib": round(max(peak_private, end_memory.get("RssAnon", 0.0)), 1),
            "driver_end_memory_mib": {k: round(v, 1) for k, v in end_memory.items()}}


def mini_run(seeds: int, seeds_per_shard: int = 8) -> dict:
    """``configs/mini.yaml`` on ``seeds`` generated photos: when its rows and shards reached the driver."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = common.write_seeds(Path(tmp) / "seeds", seeds)
        loaded = load_config(REPO / "configs" / "mini.yaml", {"input.path": str(folder),
                                                               "shards.seeds_per_shard": seeds_per_shard})
        run = common.timed_pipeline_run(loaded, os.path.join(tmp, "out"))
    run.pop("summary")
    return {"seeds": seeds, "seeds_per_shard": seeds_per_shard, **run, "load_average": round(os.getloadavg()[0], 2)}


def resume_decision(shards: int) -> dict:
    """``completed_shards`` over an output with ``shards`` finished manifests (10 seeds each)."""
    from pipeline.output.state import completed_shards
    from pipeline.output.storage import Storage
    from schemas.layout import MANIFEST_DIR, SETS_DIR, SHARDS_DIR, manifest_name, tar_name
    from stages.ingest.listing import list_seeds

    loaded = loaded_for(shards * 10, 10)
    refs = list_seeds(loaded.config.input, 10, shards * 10, loaded.concepts)
    with tempfile.TemporaryDirectory() as out:
        storage = Storage(out)
        for folder in (MANIFEST_DIR, SHARDS_DIR, SETS_DIR):
            storage.makedirs(folder)
        prefix = loaded.config.shards.prefix
        for index in range(shards):
            for folder in (SHARDS_DIR, SETS_DIR):
                Path(out, folder, tar_name(prefix, index)).touch()
            part = refs.slice(index * 10, 10)
            table = pa.table({"seed_index": part.column("seed_index"), "source_uri": part.column("source_uri")})
            pq.write_table(table, os.path.join(out, MANIFEST_DIR, manifest_name(loaded.config.shards.prefix, index)))
        started = time.perf_counter()
        done = completed_shards(storage, refs, loaded.config.shards.prefix)
        seconds = time.perf_counter() - started
    return {"completed_shards": len(done), "decide_s": round(seconds, 2)}


def listing(seeds: int) -> dict:
    """Listing a parquet list of ``seeds`` paths (listing only: no image is read)."""
    from stages.ingest.config import IngestConfig
    from stages.ingest.listing import list_seeds

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seeds.parquet")
        pq.write_table(pa.table({"path": [f"s3://bucket/seeds/{i:08d}.jpg" for i in range(seeds)]}), path)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        refs = list_seeds(IngestConfig(kind="parquet", path=path, allow_paths=["s3://bucket/"]), 100)
        seconds = time.perf_counter() - started
    return {"seeds": refs.num_rows, "list_s": round(seconds, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_mib": round(before / 1024, 1)}


def gpus_fed(sets_per_s: float) -> dict:
    """How many GPUs the driver's ceiling feeds at the FLOP-estimated rate of the production config."""
    from pipeline.commands.cost import estimate
    from pipeline.commands.plan import plan_counts

    loaded = load_config(REPO / "configs" / "production.yaml")
    cost = estimate(loaded, 1000, 1, "h100")
    images_per_set = plan_counts(loaded, 1000)["rendered_images"] / plan_counts(loaded, 1000)["sets"]
    per_gpu_sets = 1 / (cost.seconds_per_image * images_per_set)
    return {"production_images_per_set": round(images_per_set, 2), "h100_sets_per_s": round(per_gpu_sets, 4),
            "h100s_fed": int(sets_per_s / per_gpu_sets)}


def child(args: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True,
                            cwd=REPO, timeout=3600)
    if result.returncode:
        raise SystemExit(f"{args}: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="listing,resume,actors,slow,scale,mini")
    parser.add_argument("--mini-seeds", type=int, default=64, help="seeds for the mini part (8 to a shard)")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--actor-counts", default="1,4,16,64", help="editor pool sizes for the actors part")
    parser.add_argument("--unbounded", action="store_true",
                        help="scale part with Ray Data's and glibc's defaults: no bound on seeds in flight, every "
                             "block's stats kept, the driver's heap never trimmed")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *values = json.loads(args.child)
        result = {"run": lambda: one_run(*values), "resume": lambda: resume_decision(*values),
                  "listing": lambda: listing(*values), "mini": lambda: mini_run(*values)}[kind]()
        print(json.dumps(result))
        return 0
    parts, report = args.parts.split(","), {}

    def done(name: str, value) -> None:  # each part as it finishes: the long ones last
        report[name] = value
        print(json.dumps({name: value}), flush=True)

    if "listing" in parts:
        done("listing", child(["listing", 1_000_000]))
    if "resume" in parts:
        done("resume", child(["resume", 10000]))
    windows = ("editing", "all_ready", "while_fed")
    if "actors" in parts:
        runs = []
        for actors in map(int, args.actor_counts.split(",")):
            run = child(["run", 40 * actors, actors, 1.0, 1.0, 20, EDIT_BATCH])
            ideal = actors / (1.0 * 2)  # sets/s: two members a set, one second an image
            runs.append({**run, "ideal_sets_per_s": ideal,
                         "of_ideal": {w: round(run[f"{w}_sets_per_s"] / ideal, 2) for w in windows}})
        done("actors", runs)
    if "slow" in parts:
        even = child(["run", 640, 16, 1.0, 1.0, 20, EDIT_BATCH])
        slow = child(["run", 640, 16, 1.0, 5.0, 20, EDIT_BATCH])
        queued = child(["run", 640, 16, 1.0, 5.0, 20, EDIT_BATCH, None])  # Ray Data's defaults

        def ratio(run: dict) -> dict:
            return {w: round(run[f"{w}_sets_per_s"] / even[f"{w}_sets_per_s"], 3) for w in windows}

        done("slow_actor", {"even": even, "one_5x_slower": slow, "one_5x_slower_ray_defaults": queued,
                            "throughput_ratio": ratio(slow), "throughput_ratio_ray_defaults": ratio(queued),
                            "fair_share_ratio": round((15 + 0.2) / 16, 3)})
    if "scale" in parts:
        sizes = map(int, args.sizes.split(","))
        runs = [child(["run", n, 16, 0.0, 1.0, 100, 16, 1, not args.unbounded]) for n in sizes]
        base, mid, top = runs[0], runs[min(1, len(runs) - 1)], runs[-1]
        done("scale", {
            "runs": runs, "first_shard_ratio_top_vs_base": round(top["first_shard_s"] / base["first_shard_s"], 2),
            "driver_rss_ratio_top_vs_mid": round(top["driver_peak_rss_mib"] / mid["driver_peak_rss_mib"], 2),
            "driver_ceiling": gpus_fed(min(r["driver_ceiling_sets_per_s"] for r in runs))})
    if "mini" in parts:
        run = child(["mini", args.mini_seeds])
        done("mini", {**run, "targets": {"first_shard_share": "< 0.4", "max_shard_gap_share": "<= 0.25"}})
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
