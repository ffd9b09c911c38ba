"""SDEdit / img2img (``AutoPipelineForImage2Image``: SD 1.5 or SDXL families): the seed photo is noised to
``strength`` and denoised toward the member's target caption. Cheap and global: the whole image may change."""

from __future__ import annotations

import numpy as np

from stages.editors.base import Editor, no_safety_checker


class Img2ImgEditor(Editor):
    prompt_field = "target_caption"

    def load(self):
        from diffusers import AutoPipelineForImage2Image

        return self.from_pretrained(AutoPipelineForImage2Image, **no_safety_checker(self.config.model))

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        return self.call_pipeline(jobs, image=[source] * len(jobs), strength=self.config.strength)
