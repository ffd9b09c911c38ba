"""A chat VLM as a yes/no judge: P(yes) of the next token, the VQAScore way (Lin et al., ECCV 2024).

Each question is put to the model as one user turn of its processor's chat template, its image(s) first and
then the question and " Answer yes or no.", with the generation prompt. ONE forward pass per batch reads the
raw logits at the last position (left padding puts every row's last prompt token there) and takes their
softmax: P(yes) is the mass on every vocabulary token spelling yes, P(no) on every token spelling no, and the
answer is ``p_yes = P(yes) / (P(yes) + P(no))``. ``generate(output_scores=True)`` is not used: it applies the
checkpoint's repetition penalty (and other logits processors) to the scores it returns.

``mass = P(yes) + P(no)`` says how much the model meant to answer yes or no at all; below ``min_answer_mass``
the answer is an abstention (``p_yes`` None, the mass kept).

Yes/no tokens differ by tokenizer, so they are found by spelling over the whole vocabulary
(:func:`yes_no_token_ids`): byte-level BPE (Qwen2, SmolLM2/SmolVLM) keeps ``Yes``, ``yes`` and ``ĠYes``
apart, SentencePiece (Llama, so LLaVA-1.5) has ``▁Yes``, CLIP-style BPE ends a word with ``</w>``.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any

from stages.utils.torch_runtime import resolve_device, resolve_dtype

ANSWER_SUFFIX = " Answer yes or no."

# What may come before a word in one token: a space (decoded byte-level BPE, or a decoder that keeps it), the
# SentencePiece word marker, the byte-level BPE space symbol. CLIP-style BPE marks a word's END with "</w>".
_WORD_START_MARKERS = (" ", "\u2581", "\u0120")  # " ", "▁", "Ġ"
_WORD_END_MARKER = "</w>"

# model_type of the families whose processor and model take several images in one prompt (each image's
# placeholder expanded where the template put it, trained on multi-image data): Qwen2-VL, Qwen2.5-VL (and
# Qwen3-VL), SmolVLM (model_type "smolvlm"; SmolVLM-Instruct 2.2B itself is "idefics3") and Idefics 1-3.
# LLaVA-1.5 ("llava") takes one image a prompt: its processor expands one <image> into a fixed number of
# patch tokens and the model was trained on single images. Any other model_type counts as one image a prompt.
MULTI_IMAGE_MODEL_TYPES = frozenset({
    "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "smolvlm", "idefics", "idefics2", "idefics3",
})


def takes_two_images_for(model_type: str) -> bool:
    """Whether a model of this config ``model_type`` may be shown two images in one prompt."""
    return model_type in MULTI_IMAGE_MODEL_TYPES


def _yes_no_word(text: Any) -> str | None:
    """'yes' or 'no' when ``text`` is a single-token spelling of one: case-insensitive, at most one word-start
    marker before it (space, '▁', 'Ġ') or CLIP's '</w>' after it, nothing else."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None
    if text.endswith(_WORD_END_MARKER):
        text = text[: -len(_WORD_END_MARKER)]
    if text[:1] in _WORD_START_MARKERS:
        text = text[1:]
    word = text.lower()
    return word if text.isascii() and word in ("yes", "no") else None


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """``(yes_ids, no_ids)``: every id of ``tokenizer``'s vocabulary (added tokens included) whose one-token
    decoding or whose token string is a single-token spelling of yes / no ("Yes", " yes", "▁YES", "Ġno",
    "no</w>"; not "yesterday", "nothing", "No.", "\\nYes"). Sorted. Raises ValueError when either is empty
    (a judge that cannot read that answer must not start) or an id is in both."""
    ids = sorted(set(tokenizer.get_vocab().values()))
    tokens = tokenizer.convert_ids_to_tokens(ids)
    found: dict[str, list[int]] = {"yes": [], "no": []}
    for token_id, token in zip(ids, tokens):
        decoded = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        words = {_yes_no_word(decoded), _yes_no_word(token)} - {None}
        for word in words:
            found[word].append(token_id)
    name = f"{type(tokenizer).__name__} {getattr(tokenizer, 'name_or_path', '') or '(in memory)'}"
    for word in ("yes", "no"):
        if not found[word]:
            raise ValueError(f"tokenizer {name} has no single-token spelling of {word!r}: cannot read that answer")
    both = sorted(set(found["yes"]) & set(found["no"]))
    if both:
        raise ValueError(f"tokenizer {name}: token ids {both} spell both yes and no")
    return found["yes"], found["no"]


@dataclass
class Answer:
    p_yes: float | None  # P(yes) / (P(yes) + P(no)); None = abstained
    mass: float  # P(yes) + P(no) of the next token

    @property
    def abstained(self) -> bool:
        return self.p_yes is None


class VlmJudge:
    """A transformers chat VLM (``AutoModelForImageTextToText``) answering yes/no questions about images."""

    def __init__(self, model: str, revision: str | None, device: str, dtype: str, allow_pickle: bool = False,
                 min_answer_mass: float = 0.5, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_ref = model
        self.revision = revision
        self.device_name = device
        self.dtype_name = dtype
        self.allow_pickle = allow_pickle
        self.min_answer_mass = min_answer_mass
        self.batch_size = batch_size
        self.model = None

    def setup(self) -> None:
        import inspect

        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = resolve_device(self.device_name)
        self.dtype = resolve_dtype(self.dtype_name, self.device)
        common = dict(revision=self.revision, trust_remote_code=False)
        self.processor = AutoProcessor.from_pretrained(self.model_ref, **common)
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"vlm judge: {self.model_ref}'s processor has no chat template")
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # every row's last prompt token at position -1
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.model_ref, dtype=self.dtype, use_safetensors=None if self.allow_pickle else True, **common
        ).to(self.device).eval()
        self.model_type = self.model.config.model_type
        self.takes_two_images = takes_two_images_for(self.model_type)
        self.yes_ids, self.no_ids = yes_no_token_ids(self.tokenizer)
        head = self.model.get_output_embeddings()
        if head is not None and max(self.yes_ids + self.no_ids) >= head.weight.shape[0]:
            raise ValueError(f"vlm judge: yes/no token ids beyond {self.model_ref}'s output vocabulary")
        self._keep_last_only = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def prompt(self, n_images: int, question: str) -> str:
        content = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": question + ANSWER_SUFFIX})
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def answer(self, items: list[tuple[list, str]]) -> list[Answer]:
        """One :class:`Answer` per ``(images, question)``, in order, ``batch_size`` items a forward pass."""
        if self.model is None:
            raise RuntimeError("VlmJudge.setup() must run before answer()")
        for images, _ in items:
            if not images:
                raise ValueError("vlm judge: every question needs at least one image")
            if len(images) > 1 and not self.takes_two_images:
                raise ValueError(f"vlm judge: {self.model_ref} ({self.model_type}) takes one image a prompt, "
                                 f"got {len(images)}")
        answers: list[Answer] = []
        for start in range(0, len(items), self.batch_size):
            answers.extend(self._answer_batch(items[start : start + self.batch_size]))
        return answers

    def _answer_batch(self, batch: list[tuple[list, str]]) -> list[Answer]:
        import torch

        prompts = [self.prompt(len(images), question) for images, question in batch]
        images = [[image.convert("RGB") for image in item_images] for item_images, _ in batch]
        inputs = self.processor(text=prompts, images=images, padding=True, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if "attention_mask" in inputs and not bool(inputs["attention_mask"][:, -1].all()):
            raise RuntimeError("vlm judge: a prompt does not end at the last position (padding is not on the left)")
        extra = {"logits_to_keep": 1} if self._keep_last_only else {}
        with torch.inference_mode():
            logits = self.model(**inputs, **extra).logits[:, -1, :]
        probs = logits.float().softmax(dim=-1)
        p_yes = probs[:, self.yes_ids].sum(dim=-1).cpu().tolist()
        p_no = probs[:, self.no_ids].sum(dim=-1).cpu().tolist()
        answers = []
        for yes, no in zip(p_yes, p_no):
            if not (math.isfinite(yes) and math.isfinite(no)):  # overflowed logits (fp16): no answer, not a pass
                answers.append(Answer(p_yes=None, mass=0.0))
                continue
            mass = min(max(yes + no, 0.0), 1.0)
            abstain = mass <= 0.0 or mass < self.min_answer_mass
            answers.append(Answer(p_yes=None if abstain else min(max(yes / (yes + no), 0.0), 1.0), mass=mass))
        return answers
