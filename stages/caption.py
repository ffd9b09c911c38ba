"""Caption: describe each seed image with a transformers image-to-text model (BLIP-style by default).

Rows whose source already gave a caption keep it unless ``overwrite`` is set; errored rows pass through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from schemas.records import SEED, STATUS_OK
from stages.base import Resources, SeedStage
from stages.utils.imaging import from_raw
from stages.utils.torch_runtime import resolve_device, resolve_dtype, set_threads

FALLBACK_CAPTION = "a photo of a person"


@dataclass
class CaptionConfig:
    model: str = "Salesforce/blip-image-captioning-large"  # Hub id, local directory, or tiny:NAME
    revision: str | None = None
    prompt: str | None = None  # conditional captioning prefix ("a photography of")
    max_new_tokens: int = 30
    num_beams: int = 3
    overwrite: bool = False  # recaption even when the source gave a caption
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    threads: int = 0  # torch CPU threads per actor; 0 leaves the default
    trust_remote_code: bool = False
    # Pickle checkpoints (.bin/.pt/.ckpt) can run code when loaded: refused unless you trust them.
    allow_pickle: bool = False
    # true: several seeds per generate() call (faster on a GPU), but then a caption can change in a
    # rare token with how Ray happened to batch the seeds; false keeps runs reproducible.
    batch_across_seeds: bool = False
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.25, batch_size=16))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.max_new_tokens < 1:
            found.append(("max_new_tokens", "must be >= 1"))
        if self.num_beams < 1:
            found.append(("num_beams", "must be >= 1"))
        return found


def clean_caption(text: str, prompt: str | None) -> str:
    text = re.sub(r"\s+", " ", text or "").strip()
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt) :].strip()
    return text or FALLBACK_CAPTION


class Captioner(SeedStage):
    name = "caption"
    output_schema = SEED

    def __init__(self, config: CaptionConfig):
        super().__init__()
        self.config = config

    def setup(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        set_threads(self.config.threads)
        self.device = resolve_device(self.config.device)
        dtype = resolve_dtype(self.config.dtype, self.device)
        common = dict(revision=self.config.revision, trust_remote_code=self.config.trust_remote_code)
        self.processor = AutoProcessor.from_pretrained(self.config.model, **common)
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.config.model, dtype=dtype, use_safetensors=None if self.config.allow_pickle else True, **common
        ).to(self.device).eval()
        self.dtype = dtype

    def caption_images(self, images: list) -> list[str]:
        import torch

        kwargs = {"images": images, "return_tensors": "pt"}
        if self.config.prompt:
            kwargs["text"] = [self.config.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, num_beams=self.config.num_beams, do_sample=False
            )
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        self.counters["images_captioned"] += len(images)
        return [clean_caption(t, self.config.prompt) for t in texts]

    def wants(self, row: dict) -> bool:
        return row["status"] == STATUS_OK and (self.config.overwrite or not (row.get("caption") or "").strip())

    def process_row(self, row: dict) -> None:
        (row["caption"],) = self.caption_images([from_raw(row["image_rgb"], row["width"], row["height"])])

    def process_rows(self, rows: list[dict]) -> list[dict]:
        todo = [row for row in rows if self.wants(row)]
        if self.config.batch_across_seeds and todo:
            try:
                captions = self.caption_images([from_raw(r["image_rgb"], r["width"], r["height"]) for r in todo])
            except Exception:  # fall back to one seed at a time to find the culprit
                return super().process_rows(rows)
            for row, caption in zip(todo, captions):
                row["caption"] = caption
            self.counters["rows"] += len(todo)
            return rows
        return super().process_rows(rows)
