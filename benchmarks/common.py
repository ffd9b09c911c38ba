"""Shared pieces of the benchmarks: synthetic seed folders, a process-tree RSS sampler, a timed run.
Importing it puts the repository on sys.path, keeps the Hub offline and registers the tiny models."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.testing import tiny_models  # noqa: F401,E402  (registers tiny:NAME model references)


def write_seeds(root: Path, count: int, size: int = 96) -> Path:
    """``count`` distinct seed photos-to-be (smooth colour fields with grain) under ``root/chef``."""
    folder = root / "chef"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        base = np.stack([x * rng.uniform(50, 255), y * rng.uniform(50, 255), (x + y) * rng.uniform(20, 120)], -1)
        image = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"seed{i:05d}.png")
    return root


class RssSampler:
    """Peak resident memory of this process and of its Ray worker processes, sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.interval = interval
        self.me = psutil.Process()
        self.peak_driver = 0
        self.peak_workers = 0  # the largest sum over live worker processes at one instant
        self.peak_worker = 0  # the largest single worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.peak_driver = max(self.peak_driver, self.me.memory_info().rss)
                total = 0
                for child in self.me.children(recursive=True):
                    try:
                        if child.name().startswith("ray::"):
                            rss = child.memory_info().rss
                            total += rss
                            self.peak_worker = max(self.peak_worker, rss)
                    except psutil.Error:
                        continue
                self.peak_workers = max(self.peak_workers, total)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def as_mib(self) -> dict:
        mib = 1024 * 1024
        return {"driver_peak_mib": round(self.peak_driver / mib, 1),
                "workers_peak_total_mib": round(self.peak_workers / mib, 1),
                "largest_worker_peak_mib": round(self.peak_worker / mib, 1)}


def timed_pipeline_run(loaded, output: str) -> dict:
    """Run the Ray pipeline; time Ray start-up apart, and the steady state from shard write times."""
    import ray

    from pipeline.execution.ray_executor import init_ray
    from pipeline.execution.run import run_pipeline

    started = time.perf_counter()
    init_ray(loaded.config.ray)
    ray_start_s = time.perf_counter() - started
    shard_times: list[float] = []

    def log(line: str) -> None:
        if line.startswith("counterfactory: wrote "):
            shard_times.append(time.perf_counter())

    started = time.perf_counter()
    summary = run_pipeline(loaded, output=output, log=log, report=False)
    total = time.perf_counter() - started
    ray.shutdown()
    sets_per_shard = loaded.config.shards.seeds_per_shard * len(loaded.config.plan.axes)
    steady = None
    if len(shard_times) >= 3:  # from the first shard out to the last: actor start-up and warm-up excluded
        steady = sets_per_shard * (len(shard_times) - 1) / (shard_times[-1] - shard_times[0])
    return {"ray_start_s": round(ray_start_s, 2), "run_s": round(total, 2), "shards": len(shard_times),
            "steady_sets_per_s": round(steady, 3) if steady else None, "summary": summary}
