"""Edit: render every member (and candidate) of a set with a diffusers model.

Backends (``edit.backend``), each in ``stages/editors/``:
  instruct_pix2pix  InstructPix2Pix instruction editing of the seed photo
  img2img           SDEdit: noise the seed photo to ``strength`` and denoise toward the target caption
  inpaint           repaint only the person (a CLIPSeg mask, dilated and feathered); the rest is kept
  flux_kontext      FLUX.1 Kontext instruction editing (DiT family, highest quality, highest cost)
  text_to_image     generate mode: no seed photo; base image and members from text with shared noise
                    and prompt-to-prompt attention injection (SD 1.5 and SDXL families)

All members of a set go through the model together, in chunks of at most ``max_batch`` images. Each image
gets its own noise from its candidate's seed, so members of a candidate share their initial noise and the
pixels depend only on (run seed, set id, candidate), never on batching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stages.resources import Resources

BACKENDS = ("instruct_pix2pix", "img2img", "inpaint", "flux_kontext", "text_to_image")
PHOTO_BACKENDS = ("instruct_pix2pix", "img2img", "inpaint", "flux_kontext")  # edit a seed photo


@dataclass
class PromptToPromptConfig:
    """Attention control of the text_to_image backend (Hertz et al., prompt-to-prompt)."""

    enabled: bool = True
    # Share of the denoising steps (from the start) during which every member uses the base prompt's
    # self-attention maps. Fixed, or drawn per candidate from fraction_range (SocialCounterfactuals: [0.1, 0.9]).
    fraction: float = 0.5
    fraction_range: list[float] | None = None
    # Also replace cross-attention maps of the tokens the member prompt shares with the base prompt
    # (prompt-to-prompt "refine"); the attribute words keep their own maps.
    cross_attention: bool = False

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not 0.0 <= self.fraction <= 1.0:
            found.append(("fraction", "must be in [0, 1]"))
        if self.fraction_range is not None and (
            len(self.fraction_range) != 2 or not 0.0 <= self.fraction_range[0] <= self.fraction_range[1] <= 1.0
        ):
            found.append(("fraction_range", "must be [low, high] with 0 <= low <= high <= 1"))
        return found


@dataclass
class MaskConfig:
    """Where the inpaint backend may paint: a text-prompted CLIPSeg mask of the person."""

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
class EarlyRejectionConfig:
    """text_to_image: part-way through sampling, score each member's predicted clean image with the
    filter's own CLIP checks against its candidate's predicted base image, and stop the members that
    fail a check by more than ``margin``. The filter would reject them, so their remaining steps would
    be wasted; they are recorded as rejected, with the predicted scores and the reason."""

    enabled: bool = False
    at_fraction: float = 0.5  # check once, after this share of the denoising steps
    margin: float = 0.05  # stop only when a score is below its filter threshold by more than this

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not 0.0 < self.at_fraction < 1.0:
            found.append(("at_fraction", "must be in (0, 1)"))
        if self.margin < 0:
            found.append(("margin", "must be >= 0"))
        return found


@dataclass
class EditConfig:
    backend: Literal["instruct_pix2pix", "img2img", "inpaint", "flux_kontext", "text_to_image"] = "instruct_pix2pix"
    model: str = "timbrooks/instruct-pix2pix"  # Hub id, local directory, or tiny:NAME
    revision: str | None = None
    steps: int = 20
    guidance_scale: float = 7.5  # text guidance (flux_kontext: the distilled guidance, 2.5 is usual)
    # text_to_image only: draw the guidance per candidate from [low, high] (SocialCounterfactuals: [7.5, 15])
    guidance_range: list[float] | None = None
    image_guidance_scale: float = 1.5  # instruct_pix2pix: how closely to keep the seed image
    strength: float = 0.75  # img2img and inpaint: how far into the noise the seed is pushed (1 = all)
    resolution: int = 512  # seeds are scaled and centre-cropped to a square of this side
    max_batch: int = 16  # images per model call
    max_sequence_length: int = 512  # flux_kontext: T5 prompt tokens
    p2p: PromptToPromptConfig = field(default_factory=PromptToPromptConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    early_rejection: EarlyRejectionConfig = field(default_factory=EarlyRejectionConfig)
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    threads: int = 0
    # Pickle checkpoints (.bin/.pt/.ckpt) can run code when loaded: refused unless you trust them.
    allow_pickle: bool = False
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=1, batch_size=4))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.steps < 1:
            found.append(("steps", "must be >= 1"))
        if self.resolution < 8 or self.resolution % 8:
            found.append(("resolution", "must be a positive multiple of 8"))
        if self.max_batch < 1:
            found.append(("max_batch", "must be >= 1"))
        if self.backend == "text_to_image" and self.max_batch < 2:
            found.append(("max_batch", "text_to_image needs >= 2: a base image and at least one member per call"))
        if self.guidance_scale < 0 or self.image_guidance_scale < 0:
            found.append(("guidance_scale", "guidance scales must be >= 0"))
        if self.guidance_range is not None:
            if self.backend != "text_to_image":
                found.append(("guidance_range", f"only the text_to_image backend draws guidance (backend is {self.backend})"))
            elif len(self.guidance_range) != 2 or not 0 <= self.guidance_range[0] <= self.guidance_range[1]:
                found.append(("guidance_range", "must be [low, high] with 0 <= low <= high"))
        if not 0.0 < self.strength <= 1.0:
            found.append(("strength", "must be in (0, 1]"))
        if self.max_sequence_length < 1:
            found.append(("max_sequence_length", "must be >= 1"))
        if self.early_rejection.enabled and self.backend != "text_to_image":
            found.append(("early_rejection.enabled", f"only the text_to_image backend can stop members part-way "
                                                     f"(backend is {self.backend})"))
        if self.early_rejection.enabled and self.steps < 2:
            found.append(("early_rejection.enabled", "needs steps >= 2: a check part-way and steps after it"))
        return found


def make_editor(config: EditConfig, filter_config=None):
    """The configured backend; ``filter_config`` (stages.filter.FilterConfig) is what early rejection
    judges with."""
    from stages.editors import EDITORS

    return EDITORS[config.backend](config, filter_config)

