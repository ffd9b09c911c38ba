"""InstructPix2Pix (``StableDiffusionInstructPix2PixPipeline``): the seed photo edited by instruction."""

from __future__ import annotations

import numpy as np

from stages.editors.base import Editor


class InstructPix2PixEditor(Editor):
    prompt_field = "instruction"

    def load(self):
        from diffusers import StableDiffusionInstructPix2PixPipeline

        return self.from_pretrained(StableDiffusionInstructPix2PixPipeline, safety_checker=None,
                                    requires_safety_checker=False)

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        return self.call_pipeline(jobs, image=[source] * len(jobs),
                                  image_guidance_scale=self.config.image_guidance_scale)
