"""Inpainting restricted to the person (``AutoPipelineForInpainting``: SD 1.5 or SDXL inpainting models).

Per set, CLIPSeg finds the region named by ``edit.mask.prompt`` (or the axis attributes' own prompts,
such as "face" for age); the region is dilated and repainted toward each member's target caption, and the
base class blends the result back with a feathered edge (``masks_person``: the same composite that
``edit.keep_background`` gives any photo backend). Outside the feathered mask the seed's pixels are returned
unchanged (exactly: the blend takes them from the seed, not from the model's VAE round trip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from stages.edit.calls import no_safety_checker
from stages.edit.img2img import Img2ImgEditor


@dataclass
class InpaintContext:
    source: Image.Image
    mask_image: Image.Image  # the hard region, as the pipeline takes it


class InpaintEditor(Img2ImgEditor):
    """img2img restricted to a mask: the same target captions, strength and steps, plus the mask."""

    backend = "inpaint"
    summary = "repaint only the person (a CLIPSeg mask, dilated and feathered); the rest is kept"
    masks_person = True

    def load(self):
        from diffusers import AutoPipelineForInpainting

        return self.from_pretrained(AutoPipelineForInpainting, **no_safety_checker(self.config.model))

    def prepare(self, row: dict, source, region) -> InpaintContext:
        return InpaintContext(source=source, mask_image=Image.fromarray(region.hard.astype(np.uint8) * 255, mode="L"))

    def render(self, context: InpaintContext, jobs: list[dict]) -> list[np.ndarray]:
        return self.render_mixed([context] * len(jobs), jobs)

    def render_mixed(self, contexts: list[InpaintContext], jobs: list[dict]) -> list[np.ndarray]:
        """One call whatever sets the jobs come from: each job's own seed crop and mask."""
        side = self.config.resolution
        return self.call_pipeline(
            jobs, image=[c.source for c in contexts], mask_image=[c.mask_image for c in contexts],
            strength=self.config.strength, height=side, width=side,
        )
