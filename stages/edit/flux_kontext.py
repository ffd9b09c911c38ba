"""FLUX.1 Kontext (``FluxKontextPipeline``): instruction editing with a 12B rectified-flow DiT.

The highest-quality editor here and by far the most expensive (about 80x an InstructPix2Pix edit in
FLOPs). Run it in bfloat16 on the GPU (float16 overflows in FLUX). The seed is given at exactly
``edit.resolution`` (Kontext's own resizing to its preferred sizes is turned off so every backend's
members are the same size as the seed crop).
"""

from __future__ import annotations

import numpy as np

from stages.edit.base import Editor
from stages.edit.config import EditConfig


class FluxKontextEditor(Editor):
    backend = "flux_kontext"
    summary = "FLUX.1 Kontext instruction editing (DiT family, highest quality, highest cost)"
    prompt_field = "instruction"
    default_steps = 28  # the model card's
    default_guidance_scale = 2.5  # the distilled guidance the model card uses
    resolution_multiple = 16  # 8x VAE, 2x2 patches
    follows_identity_clause = True

    @classmethod
    def denoiser_evals_per_step(cls, edit: EditConfig) -> int:
        return 1  # guidance-distilled

    @classmethod
    def model_family(cls, edit: EditConfig) -> str:
        return "flux"

    @classmethod
    def context_pixels(cls, edit: EditConfig) -> int:
        return edit.resolution**2  # the seed crop, given at exactly the output size

    def load(self):
        from diffusers import FluxKontextPipeline

        return self.from_pretrained(FluxKontextPipeline)

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        side = self.config.resolution
        return self.call_pipeline(
            jobs, image=source, height=side, width=side, max_area=side * side, _auto_resize=False,
            max_sequence_length=self.config.max_sequence_length,
        )
