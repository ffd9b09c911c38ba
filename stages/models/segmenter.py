"""Text-prompted region masks (CLIPSeg via transformers) for the inpaint backend, and their config.

``probabilities`` gives CLIPSeg's per-pixel probability for each prompt at the image's size; ``region_mask``
turns them into the hard mask the inpainting model repaints (union over prompts, thresholded, dilated)
and the soft mask the result is blended with (the hard mask feathered by a Gaussian blur). Where the soft
mask is 0 the blend returns the seed's pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter



@dataclass
class MaskConfig:
    """Where the inpaint backend may paint (``edit.mask``): a text-prompted CLIPSeg mask of the person."""

    model: str = "CIDAS/clipseg-rd64-refined"  # Hub id, local directory, or tiny:clipseg
    revision: str | None = None
    prompt: str = "person"
    # Region prompt per attribute, for edits that need less than the whole person (age: "face").
    # An intersectional axis paints the union of its attributes' regions.
    prompts_by_attribute: dict[str, str] = field(default_factory=dict)
    threshold: float = 0.4  # CLIPSeg probability above which a pixel is the region
    dilate: int = 8  # grow the region by this many pixels (at edit.resolution) so edges can change
    feather: float = 4.0  # Gaussian blur radius (pixels) of the blend between edit and original

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not 0.0 < self.threshold < 1.0:
            found.append(("threshold", "must be in (0, 1)"))
        if self.dilate < 0:
            found.append(("dilate", "must be >= 0"))
        if self.feather < 0:
            found.append(("feather", "must be >= 0"))
        if not self.prompt.strip():
            found.append(("prompt", "must not be empty"))
        return found


@dataclass
class RegionMask:
    hard: np.ndarray  # bool H x W: what the inpainting model repaints
    soft: np.ndarray  # uint8 H x W, 0..255: blend weight of the repainted image
    max_probability: float


class RegionSegmenter:
    def __init__(self, config: MaskConfig, device: str, allow_pickle: bool = False):
        self.config = config
        self.device = device
        self.allow_pickle = allow_pickle
        self.model = None

    def setup(self) -> None:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        kwargs = {"revision": self.config.revision}
        self.processor = CLIPSegProcessor.from_pretrained(self.config.model, **kwargs)
        self.model = CLIPSegForImageSegmentation.from_pretrained(
            self.config.model, use_safetensors=None if self.allow_pickle else True, **kwargs
        ).to(self.device).eval()

    def probabilities(self, image: Image.Image, prompts: list[str]) -> np.ndarray:
        """prompts x H x W probabilities in [0, 1], at the image's size."""
        import torch

        inputs = self.processor(text=prompts, images=[image] * len(prompts), return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = self.model(**inputs.to(self.device)).logits.float()
        logits = logits.reshape(len(prompts), 1, *logits.shape[-2:])
        size = (image.height, image.width)
        probs = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False).sigmoid()
        return probs[:, 0].cpu().numpy()

    def prompts_for(self, attribute_ids) -> list[str]:
        by_attribute = self.config.prompts_by_attribute
        return list(dict.fromkeys(by_attribute.get(a, self.config.prompt) for a in attribute_ids))

    def mask(self, image: Image.Image, attribute_ids) -> RegionMask:
        prompts = self.prompts_for(attribute_ids)
        probs = self.probabilities(image, prompts)
        region = region_mask(probs, self.config.threshold, self.config.dilate, self.config.feather)
        if not region.hard.any():
            raise ValueError(
                f"no {' / '.join(repr(p) for p in prompts)} region found in the seed (CLIPSeg max probability "
                f"{region.max_probability:.2f} <= edit.mask.threshold {self.config.threshold:.2f})"
            )
        return region


def region_mask(probs: np.ndarray, threshold: float, dilate: int, feather: float) -> RegionMask:
    hard = (probs.max(axis=0) > threshold).astype(np.uint8) * 255
    image = Image.fromarray(hard, mode="L")
    if dilate > 0:
        image = image.filter(ImageFilter.MaxFilter(2 * dilate + 1))
    hard_grown = np.asarray(image) > 0
    soft = image.filter(ImageFilter.GaussianBlur(feather)) if feather > 0 else image
    return RegionMask(hard=hard_grown, soft=np.asarray(soft, dtype=np.uint8), max_probability=float(probs.max()))


def blend(source: np.ndarray, edited: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """``edited`` where the soft mask is 255, ``source`` where it is 0 (exactly), a mix in between."""
    weight = soft.astype(np.uint32)[..., None]
    mixed = (edited.astype(np.uint32) * weight + source.astype(np.uint32) * (255 - weight) + 127) // 255
    return mixed.astype(np.uint8)
