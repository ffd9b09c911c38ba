"""The ``edit`` section: the settings every backend shares, and those of the backends that read them
(``image_guidance_scale``: instruct_pix2pix; ``strength``: img2img and inpaint; ``mask``: inpaint and
``keep_background``; ``max_sequence_length``: flux_kontext; ``negative_prompt``: qwen_image_edit;
``guidance_range``, ``p2p``, ``early_rejection``: text_to_image).
``steps``, ``guidance_scale`` and ``preserve_identity`` left null take the backend's own defaults when the
config loads (``Editor.with_defaults``). Checks that depend on the backend live in the backend's own
module (``config_problems``) or in the base class's declarations (resolution multiple, batch limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stages.base import Resources
from stages.models.segmenter import MaskConfig


P2P_CONTROLS = ("both", "conditional")


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
    # Which half of the classifier-free guidance batch the self-attention control covers: `both` (the
    # unconditional and the conditional rows, as SocialCounterfactuals' and InstructPix2Pix's code do) or
    # `conditional` (google/prompt-to-prompt's ptp_utils). Cross-attention refine is conditional either way.
    control: str = "both"

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.control not in P2P_CONTROLS:
            found.append(("control", f"unknown {self.control!r}; allowed: {', '.join(P2P_CONTROLS)}"))
        if not 0.0 <= self.fraction <= 1.0:
            found.append(("fraction", "must be in [0, 1]"))
        if self.fraction_range is not None and (
            len(self.fraction_range) != 2 or not 0.0 <= self.fraction_range[0] <= self.fraction_range[1] <= 1.0
        ):
            found.append(("fraction_range", "must be [low, high] with 0 <= low <= high <= 1"))
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
    backend: str = "instruct_pix2pix"  # a name in stages.edit.registry.BACKENDS
    model: str = "timbrooks/instruct-pix2pix"  # Hub id, local directory, or tiny:NAME
    revision: str | None = None
    steps: int | None = None  # null: the backend's default (instruct_pix2pix 20, flux2_klein 4, qwen_image_edit 40)
    # Text guidance; null: the backend's default (flux_kontext: the distilled guidance, 2.5; qwen_image_edit: its
    # true CFG scale, 4.0; flux2_klein: ignored by the distilled model, CFG for the base one)
    guidance_scale: float | None = None
    negative_prompt: str | None = None  # qwen_image_edit's true CFG; null: the backend's default (" ")
    # text_to_image only: draw the guidance per candidate from [low, high] (SocialCounterfactuals: [7.5, 15])
    guidance_range: list[float] | None = None
    image_guidance_scale: float = 1.5  # instruct_pix2pix: how closely to keep the seed image
    strength: float = 0.75  # img2img and inpaint: how far into the noise the seed is pushed (1 = all)
    resolution: int = 512  # seeds are scaled and centre-cropped to a square of this side (the members' size)
    # Composite every member onto the seed outside the person mask (``mask``: CLIPSeg, dilate, feather): each
    # pixel outside the feathered mask is the seed's, exactly, whatever the editor did there. Any photo
    # backend; inpaint always does it.
    keep_background: bool = False
    # Append identity_clause to instruction prompts; null: on for the backends whose model follows it.
    preserve_identity: bool | None = None
    identity_clause: str = "Keep the same face shape, clothing, pose and background."
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
        if self.steps is not None and self.steps < 1:
            found.append(("steps", "must be >= 1"))
        if self.resolution < 8:
            found.append(("resolution", "must be a positive multiple of 8"))
        if self.max_batch < 1:
            found.append(("max_batch", "must be >= 1"))
        if (self.guidance_scale or 0) < 0 or self.image_guidance_scale < 0:
            found.append(("guidance_scale", "guidance scales must be >= 0"))
        if self.guidance_range is not None and (
            len(self.guidance_range) != 2 or not 0 <= self.guidance_range[0] <= self.guidance_range[1]
        ):
            found.append(("guidance_range", "must be [low, high] with 0 <= low <= high"))
        if not 0.0 < self.strength <= 1.0:
            found.append(("strength", "must be in (0, 1]"))
        if self.max_sequence_length < 1:
            found.append(("max_sequence_length", "must be >= 1"))
        if self.preserve_identity and not self.identity_clause.strip():
            found.append(("identity_clause", "must not be empty while preserve_identity is on"))
        return found

