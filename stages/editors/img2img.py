"""SDEdit / img2img (``AutoPipelineForImage2Image``: SD 1.5 or SDXL families): the seed photo is noised to
``strength`` and denoised toward the member's target caption. Cheap and global: the whole image may change."""

from __future__ import annotations

import numpy as np

from stages.editors.base import Editor, generators, no_safety_checker, to_uint8


class Img2ImgEditor(Editor):
    prompt_field = "target_caption"

    def load(self):
        from diffusers import AutoPipelineForImage2Image

        return self.from_pretrained(AutoPipelineForImage2Image, **no_safety_checker(self.config.model))

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        result = self.pipe(
            prompt=[j["prompt"] for j in jobs],
            image=[source] * len(jobs),
            strength=self.config.strength,
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
            generator=generators(j["noise_seed"] for j in jobs),
            output_type="np",
        )
        return to_uint8(result.images)

