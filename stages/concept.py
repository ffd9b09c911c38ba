"""Concept: label seeds that came without a social concept by CLIP zero-shot classification.

Seeds whose source already names an allowed concept keep it. For the others the image is compared with
"a photo of a {concept words}" for every allowed concept; the best one is kept when its probability
reaches ``min_probability``, otherwise the row stays unlabelled and the planner falls back to caption
keywords, then to the configured default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from schemas.records import SEED, STATUS_OK
from schemas.taxonomy import Concept
from stages.base import Resources, SeedStage
from stages.models.clip import ClipEmbedder
from stages.utils.imaging import from_raw


@dataclass
class ConceptConfig:
    model: str | None = None  # open_clip model as in filter.model; null turns zero-shot labelling off
    pretrained: str | None = None
    prompt: str = "a photo of a {words}"
    min_probability: float = 0.0
    device: str = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp16"
    # Pickle checkpoints (.bin/.pt/.ckpt) can run code when loaded: refused unless you trust them.
    allow_pickle: bool = False
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.1, batch_size=32))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if "{words}" not in self.prompt:
            found.append(("prompt", "must contain {words}"))
        if not 0.0 <= self.min_probability <= 1.0:
            found.append(("min_probability", "must be between 0 and 1"))
        return found


class ZeroShotConcept(SeedStage):
    name = "concept"
    output_schema = SEED

    def __init__(self, config: ConceptConfig, concepts: list[Concept]):
        super().__init__()
        self.config = config
        self.concepts = list(concepts)
        self.allowed = {c.id for c in self.concepts}

    def setup(self) -> None:
        self.embedder = ClipEmbedder(self.config.model, self.config.pretrained, self.config.device, self.config.precision)
        self.text = self.embedder.texts([self.config.prompt.format(words=c.words) for c in self.concepts])

    def classify(self, image) -> tuple[str, float]:
        embedding = self.embedder.images([image])  # one image per call: results independent of batching
        (probs,) = self.embedder.zero_shot(embedding, self.text)
        best = int(np.argmax(probs))
        return self.concepts[best].id, float(probs[best])

    def wants(self, row: dict) -> bool:
        return row["status"] == STATUS_OK and row.get("concept") not in self.allowed

    def process_row(self, row: dict) -> None:
        concept, probability = self.classify(from_raw(row["image_rgb"], row["width"], row["height"]))
        if probability >= self.config.min_probability:
            row["concept"], row["concept_source"] = concept, "zero_shot"
            self.counters["labelled"] += 1
