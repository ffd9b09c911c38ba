"""Cost planning: GPU-hours and wall time of a run, from measured throughput or from FLOP counts.

Built-in estimates come from FLOPs per image (shared/REFERENCES.md: an SD 1.5-class UNet call at 512 px
is ~0.85 TFLOP, an SDXL UNet call ~1.68, a FLUX.1 Kontext transformer call ~41, a VAE decode ~2.5 TFLOP,
all scaling with pixel count) and each GPU's dense bf16 peak,
at a sustained utilisation that batched diffusion reaches in practice (30%; batch-1 reaches 15-35%).
A throughput file of measured numbers replaces them:

    {"instruct_pix2pix": {"h100": 4.2}}      # edited images per second per GPU, at the config's steps
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.commands.plan import plan_counts
from stages.edit import registry

# Denoiser TFLOP per evaluation at 512 px. SD 1.5: 0.85. SDXL: 413 TFLOP for 30 steps x 2 evaluations at
# 1024 px, less the decode, is 6.7 at 1024 px. FLUX.1 Kontext: 4,600 TFLOP for 28 steps at 1024 px (one
# evaluation per step, guidance distilled; the context image doubles the image tokens) is 164 at 1024 px.
DENOISER_TFLOP_512 = {"sd": 0.85, "sdxl": 6.7 / 4, "flux": 164.0 / 4}
VAE_DECODE_TFLOP_512 = 2.5
CLIP_L14_TFLOP = 0.16
PEAK_TFLOPS = {"h100": 800.0, "h200": 800.0, "a100": 312.0, "l40s": 362.0, "a10g": 125.0, "l4": 121.0}
DEFAULT_UTILISATION = 0.30


@dataclass
class CostEstimate:
    images: int
    seconds_per_image: float
    source: str
    gpu_hours: float
    wall_hours: float
    gpus: int


def tflop_per_image(backend: str, steps: int, resolution: int, family: str = "sd") -> float:
    """``steps`` are the denoising steps actually run (img2img and inpaint run steps x strength)."""
    scale = (resolution / 512) ** 2
    denoiser = steps * registry.backend(backend).denoiser_evals_per_step * DENOISER_TFLOP_512[family] * scale
    return denoiser + VAE_DECODE_TFLOP_512 * scale + 2 * CLIP_L14_TFLOP  # + scoring candidate and seed


def images_per_second(backend: str, gpu_type: str, steps: int, resolution: int,
                      measured: dict | None = None, utilisation: float = DEFAULT_UTILISATION,
                      family: str = "sd") -> tuple[float, str]:
    if measured and backend in measured and gpu_type in measured[backend]:
        return float(measured[backend][gpu_type]), "measured (throughput file)"
    if gpu_type not in PEAK_TFLOPS:
        raise ValueError(f"unknown GPU type {gpu_type!r}; known: {', '.join(PEAK_TFLOPS)} (or give a throughput file)")
    rate = PEAK_TFLOPS[gpu_type] * utilisation / tflop_per_image(backend, steps, resolution, family)
    return rate, f"estimated from FLOPs at {utilisation:.0%} of {PEAK_TFLOPS[gpu_type]:g} TFLOP/s"


def load_throughput(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{backend: {{gpu_type: images_per_second}}}}")
    return data


def estimate(loaded, seeds: int, gpus: int, gpu_type: str, measured: dict | None = None) -> CostEstimate:
    edit = loaded.config.edit
    counts = plan_counts(loaded, seeds)
    editor = registry.backend(edit.backend)
    rate, source = images_per_second(edit.backend, gpu_type, editor.denoising_steps(edit), edit.resolution, measured,
                                     family=editor.model_family(edit))
    gpu_hours = counts["rendered_images"] / rate / 3600
    return CostEstimate(counts["rendered_images"], 1 / rate, source, gpu_hours, gpu_hours / max(gpus, 1), gpus)


def describe_cost(cost: CostEstimate, gpu_type: str) -> str:
    return "\n".join([
        f"cost on {cost.gpus} x {gpu_type}: {cost.images} images rendered at {1 / cost.seconds_per_image:.2f} images/s "
        f"per GPU ({cost.source})",
        f"  GPU-hours: {cost.gpu_hours:.2f}   wall time: {cost.wall_hours:.2f} h "
        "(editor only; captioning and CLIP scoring add a few percent)",
    ])
