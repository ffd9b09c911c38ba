"""FLUX.2 [klein] 4B (``Flux2KleinPipeline``, Apache-2.0): instruction editing with a 4B rectified-flow DiT
and a Qwen3-4B text encoder, step-distilled to 4 steps with no guidance.

The distilled model (``black-forest-labs/FLUX.2-klein-4B``) ignores guidance: one transformer evaluation a
step, ``guidance_scale`` 1.0 (a config asking for more is refused: it would be recorded but not used). The base variant
(a model id with "base" in it, or a local model whose ``model_index.json`` says ``is_distilled: false``) runs
CFG against the empty prompt when ``guidance_scale > 1``: 50 steps and two evaluations a step by default.

A chunk is one pipeline call: every prompt of a set with the seed crop as the one reference image they share
(``image=[a, b]`` would mean two references for every prompt) and one CPU generator per image. The seed crop
goes in at the output size (a multiple of 16, at least 64 px: the pipeline refuses smaller references), so
the pipeline neither shrinks nor crops it and every member is the seed crop's size.
"""

from __future__ import annotations

import json
import os

import numpy as np

from stages.edit.base import Editor
from stages.edit.config import EditConfig

MIN_REFERENCE_SIDE = 64  # Flux2KleinPipeline refuses a reference image smaller than this on either side


class Flux2KleinEditor(Editor):
    backend = "flux2_klein"
    summary = "FLUX.2 [klein] 4B instruction editing (DiT, distilled to 4 steps; Apache-2.0)"
    prompt_field = "instruction"
    resolution_multiple = 16  # 8x VAE, 2x2 patches
    follows_identity_clause = True

    @classmethod
    def distilled(cls, edit: EditConfig) -> bool:
        """The step-distilled variant, told from the local model's own index or else the Hub id."""
        index = os.path.join(edit.model, "model_index.json")
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as handle:
                return bool(json.load(handle).get("is_distilled", True))
        return "base" not in edit.model.lower()

    @classmethod
    def defaults(cls, edit: EditConfig) -> tuple[int, float]:
        return (4, 1.0) if cls.distilled(edit) else (50, 4.0)  # BFL's settings for each variant

    @classmethod
    def config_problems(cls, config) -> list[tuple[str, str]]:
        found = super().config_problems(config)
        if cls.distilled(config.edit) and config.edit.guidance_scale != 1.0:
            found.append(("edit.guidance_scale", f"the distilled {config.edit.model} ignores guidance: leave it null "
                                                 f"or 1.0, or use the base variant (got {config.edit.guidance_scale})"))
        if config.edit.resolution < MIN_REFERENCE_SIDE:
            found.append(("edit.resolution", f"flux2_klein needs >= {MIN_REFERENCE_SIDE}: the pipeline refuses a "
                                             f"smaller reference image (got {config.edit.resolution})"))
        return found

    @classmethod
    def denoiser_evals_per_step(cls, edit: EditConfig) -> int:
        return 1 if cls.distilled(edit) or edit.guidance_scale <= 1 else 2

    @classmethod
    def model_family(cls, edit: EditConfig) -> str:
        return "flux2_klein"

    @classmethod
    def context_pixels(cls, edit: EditConfig) -> int:
        return edit.resolution**2  # the seed crop, at the output size

    @classmethod
    def generation_settings(cls, config) -> dict:
        return {"distilled": cls.distilled(config.edit)}

    @classmethod
    def card_settings(cls, edit: dict) -> str:
        return "FLUX.2 [klein], the seed crop as its reference image, "

    def load(self):
        from diffusers import Flux2KleinPipeline

        return self.from_pretrained(Flux2KleinPipeline)

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        side = self.config.resolution
        return self.call_pipeline(jobs, image=source, height=side, width=side)
