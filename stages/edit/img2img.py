"""SDEdit / img2img (``AutoPipelineForImage2Image``: SD 1.5 or SDXL families): the seed photo is noised to
``strength`` and denoised toward the member's target caption. Cheap and global: the whole image may change."""

from __future__ import annotations

import numpy as np

from stages.edit.base import Editor
from stages.edit.calls import no_safety_checker
from stages.edit.config import EditConfig


class Img2ImgEditor(Editor):
    backend = "img2img"
    summary = "SDEdit: noise the seed photo to strength and denoise toward the target caption"
    mixes_sets = True
    prompt_field = "target_caption"

    @classmethod
    def denoising_steps(cls, edit: EditConfig) -> int:
        """The pipeline starts part-way, at ``strength``, as diffusers counts it."""
        return max(1, int(edit.steps * edit.strength))

    @classmethod
    def generation_settings(cls, config) -> dict:
        return {"strength": config.edit.strength}

    @classmethod
    def card_settings(cls, edit: dict) -> str:
        return f"strength {edit.get('strength')}, "

    def load(self):
        from diffusers import AutoPipelineForImage2Image

        return self.from_pretrained(AutoPipelineForImage2Image, **no_safety_checker(self.config.model))

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        return self.render_mixed([source] * len(jobs), jobs)

    def render_mixed(self, sources: list, jobs: list[dict]) -> list[np.ndarray]:
        """One call whatever sets the jobs come from: the pipeline takes an image per prompt."""
        return self.call_pipeline(jobs, image=list(sources), strength=self.config.strength)
