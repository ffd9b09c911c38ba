"""The diffusers calls' shared pieces: per-image generators from candidate seeds, per-candidate draws, output to
uint8, the safety-checker argument of SD 1.5-family pipelines, and chunks of jobs as pipeline calls."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from schemas.records import STATUS_ERROR
from stages.utils import faults


@dataclass
class SetWork:
    """One set as the editor works on it: the backend's context for ``render``, the seed crop and, when the
    background is kept, its person mask."""

    context: object
    source: np.ndarray | None = None
    region: object = None


def candidate_record(job: dict, image: np.ndarray | None, error: str | None) -> dict:
    """The candidate a rendered (or failed) job becomes."""
    return {
        "member_id": job["member_id"], "candidate": job["candidate"], "noise_seed": job["noise_seed"],
        "guidance_scale": job["guidance_scale"], "p2p_fraction": job["p2p_fraction"],
        "image_rgb": image.tobytes() if image is not None else None,
        "width": image.shape[1] if image is not None else None, "height": image.shape[0] if image is not None else None,
        "error": error, "status": STATUS_ERROR if error else None, "reason": error,
    }


def to_uint8(images) -> list[np.ndarray]:
    """Pipeline output in [0, 1] (numpy, N x H x W x 3) -> uint8 arrays."""
    return [np.clip(np.round(np.asarray(img) * 255.0), 0, 255).astype(np.uint8) for img in images]


def draw_uniform(noise_seed: int, stream: int, low: float, high: float) -> float:
    """A value in [low, high] from the candidate's seed: stream 1 is guidance, 2 the p2p fraction."""
    return float(np.random.default_rng([int(noise_seed) & (2**64 - 1), stream]).uniform(low, high))


def generators(seeds) -> list:
    """One CPU generator per image: noise comes from the candidate's seed, whatever the device or batch."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def no_safety_checker(model: str) -> dict:
    """SD 1.5-family pipelines take a ``safety_checker`` (the filter's own safety check replaces it);
    SDXL pipelines have none and would warn about the argument, so a local model without one gets none."""
    index = os.path.join(model, "model_index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            if "safety_checker" not in json.load(handle):
                return {}
    return {"safety_checker": None, "requires_safety_checker": False}


class ChunkCalls:
    """How an editor's jobs become pipeline calls: chunks of at most its batch limit, a chunk of several sets'
    jobs (first_pass rounds), CUDA out-of-memory splitting, and a failed chunk's candidates as errors."""

    mixes_sets = False  # True: render_mixed makes one pipeline call of jobs from several sets

    def chunks(self, jobs: list[dict]) -> list[list[dict]]:
        size = self.batch_limit(self.config)
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    def render_mixed(self, contexts: list, jobs: list[dict]) -> list[np.ndarray]:
        """Jobs of several sets (``contexts[i]`` is job i's): one ``render`` per run of jobs sharing a context. A
        backend whose pipeline takes an image per prompt overrides this with one call."""
        out, start = [], 0
        for end in range(1, len(jobs) + 1):
            if end == len(jobs) or contexts[end] is not contexts[start]:
                out += self.render(contexts[start], jobs[start:end])
                start = end
        return out

    def render_chunk(self, contexts: list, chunk: list[dict]) -> list[np.ndarray]:
        """Render a chunk (``contexts[i]``: job i's set); on CUDA out-of-memory, split it in halves and render
        those (down to 1)."""
        import torch

        try:
            faults.check_oom("edit", len(chunk))
            return self.render_mixed(contexts, chunk)
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.counters["oom_splits"] += 1
            h = len(chunk) // 2
            return self.render_chunk(contexts[:h], chunk[:h]) + self.render_chunk(contexts[h:], chunk[h:])

    def render_jobs(self, chunk: list[dict], contexts: list) -> list[dict]:
        """The candidates of one chunk of jobs; a failed chunk makes its candidates errors."""
        try:
            images = self.render_chunk(contexts, chunk)
            side = self.config.resolution
            for image in images:  # every member is the seed crop's size, whatever the pipeline does
                if image.shape != (side, side, 3):
                    raise ValueError(f"the editor returned a {image.shape[1]}x{image.shape[0]} image, "
                                     f"not the seed crop's {side}x{side}")
            errors = [None] * len(chunk)
            self.counters["images_rendered"] += len(chunk)
        except Exception as exc:  # one failed chunk must not take the other candidates down
            images, errors = [None] * len(chunk), [self.reason(exc)] * len(chunk)
        return [candidate_record(job, image, error) for job, image, error in zip(chunk, images, errors)]
