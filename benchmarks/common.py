"""Shared pieces of the benchmarks: synthetic seed folders, a process-tree RSS sampler, a timed run.
Importing it puts the repository on sys.path, keeps the Hub offline and registers the tiny models."""

from __future__ import annotations

import os
import re
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


class RowClock:
    """A progress stream that timestamps the run's own progress lines: with a tiny ``report.progress_interval``
    the run prints one per row that reaches the driver, so each line says when the count of sets there rose.
    ``started``: a ``time.time()``, so that a time taken before this process began can be the start."""

    def __init__(self, started: float):
        self.started, self.arrivals = started, []

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> None:
        match = re.search(r"\| sets ([^|]*)\|", text)
        if match:
            sets = sum(int(n) for n in re.findall(r"\d+", match.group(1)))
            now = time.time() - self.started
            self.arrivals.extend([now] * (sets - len(self.arrivals)))

    def flush(self) -> None:
        pass


def steady_rate(arrivals: list[float], low: float = 0.25, high: float = 0.75) -> float | None:
    """Rows per second between the arrival of the ``low`` and the ``high`` share of the rows (sorted times): the
    middle of a run, its start-up and its tail aside."""
    if len(arrivals) < 4:
        return None
    a, b = int(low * len(arrivals)), int(high * len(arrivals)) - 1
    span = arrivals[b] - arrivals[a]
    return (b - a) / span if span > 0 else None


def streaming(arrivals: list[float], shard_times: list[float], total: float) -> dict:
    """What a user waits for, in seconds from the start and as shares of the whole run: the first row and the first
    shard out, the longest wait between two consecutive shards, and the steady sets/s (rows at the driver)."""
    gaps = [b - a for a, b in zip(shard_times, shard_times[1:])]
    steady = steady_rate(arrivals)
    return {"first_row_s": round(arrivals[0], 2) if arrivals else None,
            "first_shard_s": round(shard_times[0], 2) if shard_times else None,
            "first_shard_share": round(shard_times[0] / total, 3) if shard_times else None,
            "max_shard_gap_s": round(max(gaps), 2) if gaps else None,
            "max_shard_gap_share": round(max(gaps) / total, 3) if gaps else None,
            "steady_sets_per_s": round(steady, 3) if steady else None}


def timed_pipeline_run(loaded, output: str, started: float | None = None) -> dict:
    """Run the Ray pipeline as ``counterfactory run`` does, Ray start-up included but timed apart; when each row
    reached the driver (from the run's progress lines) and each shard was written (from its log lines), in seconds
    from ``started`` (a ``time.time()``; None: now)."""
    import dataclasses

    import ray

    from pipeline.execution.ray_executor import init_ray
    from pipeline.execution.run import run_pipeline

    config = loaded.config
    every_row = dataclasses.replace(loaded, config=dataclasses.replace(
        config, report=dataclasses.replace(config.report, progress_interval=1e-6)))
    started = time.time() if started is None else started
    ray_started = time.time()
    init_ray(loaded.config.ray)
    ray_start_s = time.time() - ray_started
    shard_times: list[float] = []
    clock = RowClock(started)

    def log(line: str) -> None:
        if line.startswith("counterfactory: wrote "):
            shard_times.append(time.time() - started)

    summary = run_pipeline(every_row, output=output, log=log, report=False, progress_stream=clock)
    total = time.time() - started
    ray.shutdown()
    before_ray_s = ray_started - started
    return {"before_ray_s": round(before_ray_s, 2), "ray_start_s": round(ray_start_s, 2),
            "run_s": round(total - before_ray_s - ray_start_s, 2), "end_to_end_s": round(total, 2),
            "sets": len(clock.arrivals), "shards": len(shard_times), **streaming(clock.arrivals, shard_times, total), "summary": summary}
