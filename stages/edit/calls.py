"""The diffusers calls' shared pieces: per-image generators from candidate seeds, per-candidate draws, output to
uint8, and the safety-checker argument of SD 1.5-family pipelines."""

from __future__ import annotations

import json
import os

import numpy as np


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
