"""InstructPix2Pix (``StableDiffusionInstructPix2PixPipeline``): the seed photo edited by instruction."""

from __future__ import annotations

import numpy as np

from stages.editors.base import Editor, generators, to_uint8


class InstructPix2PixEditor(Editor):
    prompt_field = "instruction"

    def load(self):
        from diffusers import StableDiffusionInstructPix2PixPipeline

        return self.from_pretrained(StableDiffusionInstructPix2PixPipeline, safety_checker=None,
                                    requires_safety_checker=False)

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        result = self.pipe(
            prompt=[j["prompt"] for j in jobs],
            image=[source] * len(jobs),
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
            image_guidance_scale=self.config.image_guidance_scale,
            generator=generators(j["noise_seed"] for j in jobs),
            output_type="np",
        )
        return to_uint8(result.images)
