"""InstructPix2Pix (``StableDiffusionInstructPix2PixPipeline``): the seed photo edited by instruction."""

from __future__ import annotations

import numpy as np

from stages.edit.base import Editor


class InstructPix2PixEditor(Editor):
    backend = "instruct_pix2pix"
    summary = "InstructPix2Pix instruction editing of the seed photo"
    mixes_sets = True
    prompt_field = "instruction"

    @classmethod
    def denoiser_evals_per_step(cls, edit) -> int:
        return 3  # guided on text and on the seed image

    @classmethod
    def generation_settings(cls, config) -> dict:
        return {"image_guidance_scale": config.edit.image_guidance_scale}

    @classmethod
    def card_settings(cls, edit: dict) -> str:
        return f"image guidance {edit.get('image_guidance_scale')}, "

    def load(self):
        from diffusers import StableDiffusionInstructPix2PixPipeline

        return self.from_pretrained(StableDiffusionInstructPix2PixPipeline, safety_checker=None,
                                    requires_safety_checker=False)

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        return self.render_mixed([source] * len(jobs), jobs)

    def render_mixed(self, sources: list, jobs: list[dict]) -> list[np.ndarray]:
        """One call whatever sets the jobs come from: the pipeline takes an image per prompt."""
        return self.call_pipeline(jobs, image=list(sources), image_guidance_scale=self.config.image_guidance_scale)
