"""Caption: describe each seed image with a transformers image-to-text model, written for editing.

Two ways to drive a model (``style``): ``prefix``, the BLIP way (an optional text prefix, ``generate``,
the prefix stripped), and ``chat``, today's chat VLMs (LLaVA, Qwen2.5-VL, SmolVLM, Idefics): the
processor's chat template around ``instruction``, left padding so a batch's prompts end together, and
only the new tokens decoded, so the instruction never reaches the caption. ``auto`` picks ``chat`` when
the processor has a chat template. Every caption is then checked before planning edits it: its first
sentence only, at most ``max_words`` words, at least ``min_words`` (else the fallback caption); what was
done is recorded in ``caption_note``. Rows whose source gave a caption keep it unless ``overwrite``.
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
STYLES = ("auto", "prefix", "chat")
# What the planner needs: one sentence naming the person by a plain noun it can swap ("a woman"), plus
# what stays the same across members (clothing, action, setting).
DEFAULT_INSTRUCTION = ("Describe this image in one sentence: the person (call them by a plain noun such as "
                       "\"a man\", \"a woman\" or \"a person\"), their clothing, what they are doing, and the setting.")


@dataclass
class CaptionConfig:
    model: str = "Salesforce/blip-image-captioning-large"  # Hub id, local directory, or tiny:NAME
    revision: str | None = None
    style: Literal["auto", "prefix", "chat"] = "auto"  # auto: chat when the processor has a chat template
    prompt: str | None = None  # prefix style: conditional captioning prefix ("a photography of")
    instruction: str = DEFAULT_INSTRUCTION  # chat style: the user turn next to the image
    min_words: int = 3  # shorter captions are replaced by the fallback caption (noted)
    max_words: int = 40  # longer ones are cut (noted)
    # For plan's cost: parameters (billions) and tokens read per image; null: looked up by model id
    params_b: float | None = None
    image_tokens: int | None = None
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
        if not 1 <= self.min_words <= self.max_words:
            found.append(("min_words", "must be between 1 and max_words"))
        if not self.instruction.strip():
            found.append(("instruction", "must not be empty"))
        return found


def clean_caption(text: str, prompt: str | None) -> str:
    text = re.sub(r"\s+", " ", text or "").strip()
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt) :].strip()
    return text or FALLBACK_CAPTION


def check_caption(text: str, min_words: int, max_words: int) -> tuple[str, str | None]:
    """``(caption, note)``: the first sentence, cut to ``max_words``; the fallback caption when fewer than
    ``min_words`` words remain. ``note`` says what was changed (None when nothing was)."""
    notes = []
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)
    if len(sentence) > 1:
        notes.append("first sentence kept")
    words = sentence[0].rstrip(".!? ").split()
    if len(words) > max_words:
        words = words[:max_words]
        notes.append(f"cut to {max_words} words")
    if len(words) < min_words:
        # the model's text stays out of the note: notes are counted by kind, the text before any ":"
        return FALLBACK_CAPTION, f"fallback caption: {len(words)} of at least {min_words} words"
    return " ".join(words), "; ".join(notes) or None


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
        self.chat = self.config.style == "chat" or (
            self.config.style == "auto" and bool(getattr(self.processor, "chat_template", None)))
        if self.chat:
            if not getattr(self.processor, "chat_template", None):
                raise ValueError(f"caption.style chat: {self.config.model}'s processor has no chat template")
            self.processor.tokenizer.padding_side = "left"  # a batch's prompts end where generation starts

    def chat_prompt(self) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.config.instruction}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def caption_images(self, images: list) -> list[str]:
        import torch

        kwargs = {"images": images, "return_tensors": "pt"}
        if self.chat:
            kwargs.update(text=[self.chat_prompt()] * len(images), padding=True)
        elif self.config.prompt:
            kwargs["text"] = [self.config.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, num_beams=self.config.num_beams, do_sample=False
            )
        if self.chat:  # a decoder-only model's output starts with the prompt: keep the new tokens only
            output = output[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        self.counters["images_captioned"] += len(images)
        return [clean_caption(t, None if self.chat else self.config.prompt) for t in texts]

    def set_caption(self, row: dict, text: str) -> None:
        row["caption"], row["caption_note"] = check_caption(text, self.config.min_words, self.config.max_words)
        if row["caption_note"]:
            self.counters["captions_changed_by_checks"] += 1

    def wants(self, row: dict) -> bool:
        return row["status"] == STATUS_OK and (self.config.overwrite or not (row.get("caption") or "").strip())

    def process_row(self, row: dict) -> None:
        (caption,) = self.caption_images([from_raw(row["image_rgb"], row["width"], row["height"])])
        self.set_caption(row, caption)

    def process_rows(self, rows: list[dict]) -> list[dict]:
        todo = [row for row in rows if self.wants(row)]
        if self.config.batch_across_seeds and todo:
            try:
                captions = self.caption_images([from_raw(r["image_rgb"], r["width"], r["height"]) for r in todo])
            except Exception:  # fall back to one seed at a time to find the culprit
                return super().process_rows(rows)
            for row, caption in zip(todo, captions):
                self.set_caption(row, caption)
            self.counters["rows"] += len(todo)
            return rows
        return super().process_rows(rows)
