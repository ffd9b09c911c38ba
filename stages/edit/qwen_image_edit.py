"""Qwen-Image-Edit-2511 (``QwenImageEditPlusPipeline``, Apache-2.0): instruction editing with a 20B MMDiT
conditioned on Qwen2.5-VL-7B, which reads the instruction and the seed photo together.

Guidance is true classifier-free guidance: ``edit.guidance_scale`` is the pipeline's ``true_cfg_scale``
(4.0 by default), run against ``edit.negative_prompt`` (" " by default), two transformer evaluations a
step; at 1 or below no negative prompt is passed and one evaluation a step runs. 40 steps by default, as
the model card uses. The pipeline renders one image a call (it raises for more prompts), so ``edit.max_batch``
is 1. It always VAE-encodes its context image at about 1 MP and shows the vision-language encoder 384^2,
whatever the output size: the cost model counts 4,096 context tokens at any ``edit.resolution``.
"""

from __future__ import annotations

import numpy as np

from stages.edit.base import Editor
from stages.edit.config import EditConfig

CONTEXT_PIXELS = 1024 * 1024  # QwenImageEditPlusPipeline's VAE_IMAGE_SIZE
DEFAULT_NEGATIVE_PROMPT = " "  # the model card's


class QwenImageEditEditor(Editor):
    backend = "qwen_image_edit"
    summary = "Qwen-Image-Edit-2511 instruction editing (20B MMDiT, true CFG; Apache-2.0)"
    prompt_field = "instruction"
    default_steps = 40
    default_guidance_scale = 4.0
    resolution_multiple = 16  # 8x VAE, 2x2 patches
    max_images_per_call = 1
    takes_negative_prompt = True
    follows_identity_clause = True

    @classmethod
    def denoiser_evals_per_step(cls, edit: EditConfig) -> int:
        return 2 if edit.guidance_scale > 1 else 1

    @classmethod
    def model_family(cls, edit: EditConfig) -> str:
        return "qwen_image"

    @classmethod
    def context_pixels(cls, edit: EditConfig) -> int:
        return CONTEXT_PIXELS

    @classmethod
    def negative_prompt(cls, edit: EditConfig) -> str:
        return DEFAULT_NEGATIVE_PROMPT if edit.negative_prompt is None else edit.negative_prompt

    @classmethod
    def generation_settings(cls, config) -> dict:
        return {"true_cfg_scale": config.edit.guidance_scale, "negative_prompt": cls.negative_prompt(config.edit)}

    @classmethod
    def card_settings(cls, edit: dict) -> str:
        negative = DEFAULT_NEGATIVE_PROMPT if edit.get("negative_prompt") is None else edit["negative_prompt"]
        return f"true CFG {edit.get('guidance_scale')} against the negative prompt {negative!r}, "

    def load(self):
        from diffusers import QwenImageEditPlusPipeline

        return self.from_pretrained(QwenImageEditPlusPipeline)

    def guidance_arguments(self, jobs: list[dict]) -> dict:
        if self.config.guidance_scale <= 1:
            return {"true_cfg_scale": 1.0}
        return {"true_cfg_scale": self.config.guidance_scale, "negative_prompt": [self.negative_prompt(self.config)] * len(jobs)}

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        side = self.config.resolution
        return self.call_pipeline(jobs, image=source, height=side, width=side)
