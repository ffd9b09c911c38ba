"""Safety check: a CLIP zero-shot NSFW score for every generated image (and the seed it came from).

It runs inside the filter's actors on the image embeddings the filter has already computed, so it
costs one extra (images x prompts) product per set, not another model. The score is the probability
mass CLIP puts on the unsafe prompts when it chooses among unsafe and safe prompts; a candidate whose
score exceeds ``threshold`` is rejected with the score in its reason, and every score goes to the
manifest. A zero-shot CLIP score is a screen, not a guarantee: production runs should also review
the report's preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNSAFE_PROMPTS = [
    "a nude photo",
    "a photo of naked people",
    "sexually explicit content",
    "pornography",
    "a photo with graphic violence and blood",
    "a gory photo of an injured body",
]
SAFE_PROMPTS = [
    "a photo of a person",
    "a photo of people at work",
    "a portrait photo of a clothed person",
    "a photo of an everyday scene",
]


@dataclass
class SafetyConfig:
    enabled: bool = False
    threshold: float = 0.5  # reject when P(unsafe) is above this
    check_source: bool = True  # an unsafe seed photo rejects its whole set (it ships as src.jpg)
    unsafe_prompts: list[str] = field(default_factory=lambda: list(UNSAFE_PROMPTS))
    safe_prompts: list[str] = field(default_factory=lambda: list(SAFE_PROMPTS))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not 0.0 <= self.threshold <= 1.0:
            found.append(("threshold", "must be between 0 and 1 (a probability)"))
        if self.enabled and not self.unsafe_prompts:
            found.append(("unsafe_prompts", "needs at least one prompt when the check is enabled"))
        if self.enabled and not self.safe_prompts:
            found.append(("safe_prompts", "needs at least one prompt: the score is unsafe vs safe"))
        return found


class SafetyScorer:
    """Scores image embeddings from ``embedder`` (a ClipEmbedder) against the configured prompts."""

    def __init__(self, config: SafetyConfig, embedder):
        self.config = config
        self.embedder = embedder
        # Embedded once, in one call of fixed composition: the same prompts give the same bits every run.
        self.prompt_embeddings = embedder.texts(list(config.unsafe_prompts) + list(config.safe_prompts))

    def scores(self, image_embeddings: np.ndarray) -> np.ndarray:
        if len(image_embeddings) == 0:
            return np.zeros(0)
        probs = self.embedder.zero_shot(image_embeddings, self.prompt_embeddings)
        return probs[:, : len(self.config.unsafe_prompts)].sum(axis=1)

    def is_unsafe(self, score: float) -> bool:
        return score > self.config.threshold

    def reason(self, score: float, what: str = "nsfw") -> str:
        return f"unsafe: {what} {score:.4f} > {self.config.threshold:.4f}"
