"""Inpainting restricted to the person (``AutoPipelineForInpainting``: SD 1.5 or SDXL inpainting models).

Per set, CLIPSeg finds the region named by ``edit.mask.prompt`` (or the axis attributes' own prompts,
such as "face" for age); the region is dilated, repainted toward each member's target caption, and
blended back with a feathered edge. Outside the feathered mask the seed's pixels are returned unchanged
(exactly: the blend takes them from the seed, not from the model's VAE round trip).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from stages.base import ModelUse
from stages.edit.base import no_safety_checker
from stages.edit.config import EditConfig
from stages.edit.img2img import Img2ImgEditor
from stages.models.segmenter import RegionMask, RegionSegmenter, blend


@dataclass
class InpaintContext:
    source: Image.Image
    region: RegionMask
    mask_image: Image.Image  # the hard region, as the pipeline takes it


class InpaintEditor(Img2ImgEditor):
    """img2img restricted to a mask: the same target captions, strength and steps, plus the mask."""

    backend = "inpaint"
    summary = "repaint only the person (a CLIPSeg mask, dilated and feathered); the rest is kept"

    @classmethod
    def generation_settings(cls, config) -> dict:
        mask = {k: v for k, v in asdict(config.edit.mask).items() if k not in ("model", "revision")}
        return {**super().generation_settings(config), "mask": mask}

    @classmethod
    def card_settings(cls, edit: dict) -> str:
        mask = edit.get("mask") or {}
        return (f"{super().card_settings(edit)}CLIPSeg mask `{mask.get('model')}` \"{mask.get('prompt')}\" "
                f"(threshold {mask.get('threshold')}, dilate {mask.get('dilate')} px, feather {mask.get('feather')} px), ")

    @classmethod
    def models(cls, edit: EditConfig) -> list[ModelUse]:
        return super().models(edit) + [
            ModelUse("segmenter", "edit.mask.model", edit.mask.model, edit.mask.revision, edit.allow_pickle)
        ]

    def load(self):
        from diffusers import AutoPipelineForInpainting

        self.segmenter = RegionSegmenter(self.config.mask, self.device, self.config.allow_pickle)
        self.segmenter.setup()
        return self.from_pretrained(AutoPipelineForInpainting, **no_safety_checker(self.config.model))

    def prepare(self, row: dict) -> InpaintContext:
        source = super().prepare(row)
        attribute_ids = [a["attribute"] for a in row["members"][0]["attributes"]]
        region = self.segmenter.mask(source, attribute_ids)
        mask_image = Image.fromarray(region.hard.astype(np.uint8) * 255, mode="L")
        return InpaintContext(source=source, region=region, mask_image=mask_image)

    def render(self, context: InpaintContext, jobs: list[dict]) -> list[np.ndarray]:
        side = self.config.resolution
        edited = self.call_pipeline(
            jobs, image=[context.source] * len(jobs), mask_image=[context.mask_image] * len(jobs),
            strength=self.config.strength, height=side, width=side,
        )
        source = np.asarray(context.source)
        return [blend(source, image, context.region.soft) for image in edited]
