"""Edit: render every member (and candidate) of a set with a diffusers editor.

First backend: InstructPix2Pix (``StableDiffusionInstructPix2PixPipeline``). All members of a set go
through the pipeline together, in chunks of at most ``max_batch`` images. Each image gets its own
``torch.Generator`` seeded from its candidate's noise seed, so members of a candidate share their
initial noise and the pixels depend only on (run seed, set id, candidate), never on batching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from schemas.records import SET, STATUS_ERROR, STATUS_OK, rows_to_table
from stages import faults
from stages.imaging import describe_error, from_raw, square_crop
from stages.row_errors import fail_set
from stages.resources import Resources
from stages.torch_runtime import resolve_device, resolve_dtype, set_threads


@dataclass
class EditConfig:
    backend: Literal["instruct_pix2pix"] = "instruct_pix2pix"
    model: str = "timbrooks/instruct-pix2pix"  # Hub id, local directory, or tiny:NAME
    revision: str | None = None
    steps: int = 20
    guidance_scale: float = 7.5  # text guidance
    image_guidance_scale: float = 1.5  # how closely to keep the seed image
    resolution: int = 512  # seeds are scaled and centre-cropped to a square of this side
    max_batch: int = 16  # images per pipeline call
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    threads: int = 0
    # Pickle checkpoints (.bin/.pt/.ckpt) can run code when loaded: refused unless you trust them.
    allow_pickle: bool = False
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=1, batch_size=4))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.steps < 1:
            found.append(("steps", "must be >= 1"))
        if self.resolution < 8 or self.resolution % 8:
            found.append(("resolution", "must be a positive multiple of 8"))
        if self.max_batch < 1:
            found.append(("max_batch", "must be >= 1"))
        if self.guidance_scale < 0 or self.image_guidance_scale < 0:
            found.append(("guidance_scale", "guidance scales must be >= 0"))
        return found


class InstructPix2PixEditor:
    def __init__(self, config: EditConfig):
        self.config = config
        self.pipe = None
        self.oom_splits = 0  # how often a chunk was split after running out of GPU memory

    def setup(self) -> None:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        set_threads(self.config.threads)
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        self.pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            self.config.model, revision=self.config.revision, torch_dtype=self.dtype,
            use_safetensors=None if self.config.allow_pickle else True,
            safety_checker=None, requires_safety_checker=False,
        ).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def render(self, image, prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
        """One pipeline call: ``prompts[i]`` rendered with noise seed ``seeds[i]``; uint8 HxWx3 arrays."""
        import torch

        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        result = self.pipe(
            prompt=prompts,
            image=[image] * len(prompts),
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
            image_guidance_scale=self.config.image_guidance_scale,
            generator=generators,
            output_type="np",
        )
        return [np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8) for img in result.images]

    def render_chunk(self, source, chunk: list[dict]) -> list[np.ndarray]:
        """Render a chunk; on CUDA out-of-memory, split it in halves and render those (down to 1)."""
        import torch

        try:
            faults.check_oom("edit", len(chunk))
            return self.render(source, [j["prompt"] for j in chunk], [j["noise_seed"] for j in chunk])
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.oom_splits += 1
            half = len(chunk) // 2
            return self.render_chunk(source, chunk[:half]) + self.render_chunk(source, chunk[half:])

    def edit_set(self, row: dict) -> list[dict]:
        faults.check_row("edit", row)
        source = square_crop(from_raw(row["image_rgb"], row["width"], row["height"]), self.config.resolution)
        jobs = [
            {"member_id": member["member_id"], "candidate": c, "noise_seed": seed, "prompt": member["instruction"]}
            for c, seed in enumerate(row["candidate_seeds"])
            for member in row["members"]
        ]
        candidates = []
        for start in range(0, len(jobs), self.config.max_batch):
            chunk = jobs[start : start + self.config.max_batch]
            try:
                images = self.render_chunk(source, chunk)
                errors = [None] * len(chunk)
            except Exception as exc:  # one failed chunk must not take the other candidates down
                images = [None] * len(chunk)
                errors = [f"edit: {describe_error(exc)}"] * len(chunk)
            for job, image, error in zip(chunk, images, errors):
                candidates.append(
                    {
                        "member_id": job["member_id"], "candidate": job["candidate"], "noise_seed": job["noise_seed"],
                        "image_rgb": image.tobytes() if image is not None else None,
                        "width": image.shape[1] if image is not None else None,
                        "height": image.shape[0] if image is not None else None,
                        "error": error, "status": STATUS_ERROR if error else None, "reason": error,
                    }
                )
        return candidates

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.pipe is None:
            self.setup()
        rows = batch.to_pylist()
        for row in rows:
            if row["status"] == STATUS_OK and row["set_status"] is None:
                try:
                    row["candidates"] = self.edit_set(row)
                except Exception as exc:
                    fail_set(row, "edit", exc)
        return rows_to_table(rows, SET)


EDITORS = {"instruct_pix2pix": InstructPix2PixEditor}


def make_editor(config: EditConfig):
    return EDITORS[config.backend](config)
