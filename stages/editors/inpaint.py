"""Inpainting restricted to the person (``AutoPipelineForInpainting``: SD 1.5 or SDXL inpainting models).

Per set, CLIPSeg finds the region named by ``edit.mask.prompt`` (or the axis attributes' own prompts,
such as "face" for age); the region is dilated, repainted toward each member's target caption, and
blended back with a feathered edge. Outside the feathered mask the seed's pixels are returned unchanged
(exactly: the blend takes them from the seed, not from the model's VAE round trip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from stages.editors.base import Editor, generators, no_safety_checker, to_uint8
from stages.editors.masks import RegionMask, RegionSegmenter, blend
from stages.imaging import from_raw, square_crop


@dataclass
class InpaintContext:
    source: Image.Image
    region: RegionMask


class InpaintEditor(Editor):
    prompt_field = "target_caption"

    def load(self):
        from diffusers import AutoPipelineForInpainting

        self.segmenter = RegionSegmenter(self.config.mask, self.device, self.config.allow_pickle)
        self.segmenter.setup()
        return self.from_pretrained(AutoPipelineForInpainting, **no_safety_checker(self.config.model))

    def prepare(self, row: dict) -> InpaintContext:
        source = square_crop(from_raw(row["image_rgb"], row["width"], row["height"]), self.config.resolution)
        attribute_ids = [a["attribute"] for a in row["members"][0]["attributes"]]
        return InpaintContext(source=source, region=self.segmenter.mask(source, attribute_ids))

    def render(self, context: InpaintContext, jobs: list[dict]) -> list[np.ndarray]:
        mask_image = Image.fromarray(context.region.hard.astype(np.uint8) * 255, mode="L")
        side = self.config.resolution
        result = self.pipe(
            prompt=[j["prompt"] for j in jobs],
            image=[context.source] * len(jobs),
            mask_image=[mask_image] * len(jobs),
            strength=self.config.strength,
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
            generator=generators(j["noise_seed"] for j in jobs),
            height=side, width=side,
            output_type="np",
        )
        source = np.asarray(context.source)
        return [blend(source, edited, context.region.soft) for edited in to_uint8(result.images)]
