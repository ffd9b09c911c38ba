"""Counterfactual members as LLaVA training data, and a reference ASD epoch on top of them.

Members carry LLaVA-format ``conversations`` (taxonomy.yaml). ``encode_member`` turns one into model
inputs the way LLaVA-1.5 trains (conv_vicuna_v1's system prompt, ``USER: <image>\\nQ ASSISTANT: A</s>``,
preprocess_v1's labels: the answers and their ``</s>`` only);
``concept_predictions`` asks the model the conversation's yes/no question (the logits of "Yes" and "No"
right after "ASSISTANT:", the tokens LLaVA is trained to answer with), which is what the ASD
Skew table is estimated from; ``asd_epoch`` re-estimates Skew, resamples and trains one epoch with
``exp(-Skew)``-weighted loss (arXiv 2408.06569). Any ``LlavaForConditionalGeneration``-like model and
its processor work: the tests use ``tiny:llava``.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field

from pipeline.trainers.debias import Prediction, asd_loss, resample_epoch, sample_skew, skew_table

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"  # LLaVA's placeholder; the conversations in the shards use it
YES_NO_ANSWER = "Yes."  # the gpt turn that marks a yes/no question about the concept


# LLaVA-1.5 trains with conversation template "v1" (llava/conversation.py, conv_vicuna_v1): this system
# prompt, roles USER / ASSISTANT, a space after a question and "</s>" after an answer.
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
ROLES = {"human": "USER", "gpt": "ASSISTANT"}
SEP, SEP2 = " ", "</s>"  # SEP2 is LLaMA's end-of-sequence token, written into the text


def llava_prompt(turns: list[dict], generation: bool = False, eos: str = SEP2) -> str:
    """conv_vicuna_v1.get_prompt(): the text LLaVA-1.5 tokenizes; ``generation`` leaves "ASSISTANT:" open.
    ``eos`` stands in for "</s>" with a tokenizer whose end-of-sequence token is spelled otherwise."""
    text = SYSTEM + SEP
    for i, turn in enumerate(turns):
        text += f"{ROLES[turn['from']]}: {turn['value']}" + (SEP, eos)[i % 2]
    return text + f"{ROLES['gpt']}:" if generation else text


def _tokens(tokenizer, text: str) -> list[int]:
    """What LLaVA's ``tokenizer(text).input_ids`` gives a LLaMA tokenizer: BOS, then the pieces."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + (tokenizer(text, add_special_tokens=False)["input_ids"] if text else [])


def tokenize_with_images(tokenizer, text: str, image_ids: list[int]) -> list[int]:
    """llava/mm_utils.py tokenizer_image_token: each chunk between ``<image>`` tokenized on its own (so a
    SentencePiece tokenizer gives each its dummy prefix, as in LLaVA), one BOS, ``image_ids`` in between
    (LLaVA's -200 placeholder, expanded here as the HF processor expands it)."""
    chunks = [_tokens(tokenizer, chunk) for chunk in text.split(IMAGE_TOKEN)]
    offset = 1 if tokenizer.bos_token_id is not None else 0
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids += image_ids + chunk[offset:]
    return ids


def answer_labels(tokenizer, prompt: str, ids: list[int], image_ids: list[int]) -> list[int]:
    """preprocess_v1's masking (llava/train/train.py, legacy LLaMA tokenizer): per round, everything up to
    "ASSISTANT: " is ignored; the answer's tokens and its "</s>" are trained on."""
    labels = list(ids)
    cur = cur_bos = 1 if tokenizer.bos_token_id is not None else 0
    labels[:cur] = [IGNORE_INDEX] * cur
    sep = SEP + ROLES["gpt"] + ": "
    for round_text in prompt.split(tokenizer.eos_token or SEP2):
        parts = round_text.split(sep)
        if not round_text or len(parts) != 2:
            break
        # the round's own BOS stands in for the "</s>" the split removed; without a BOS, count it
        round_len = len(tokenize_with_images(tokenizer, round_text, image_ids)) + (1 - cur_bos)
        # LLaVA takes len(parts[0] + "ASSISTANT: ") - 2: the round's own BOS, and the trailing space, which a
        # LLaMA tokenizer turns into a "\u2581" piece that in context joins the answer's first word. Counting
        # "...ASSISTANT:" without the space, less the BOS, is the same number for LLaMA and right for
        # tokenizers that do not make a piece of the space (the tiny model's CLIP BPE).
        instruction_len = len(tokenize_with_images(tokenizer, parts[0] + sep.rstrip(), image_ids)) - cur_bos
        labels[cur : cur + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur += round_len
    labels[cur:] = [IGNORE_INDEX] * (len(labels) - cur)
    if cur != len(ids):  # as LLaVA does: the sample is masked whole (trains nothing) with a warning
        warnings.warn(f"tokenization mismatch: {cur} vs. {len(ids)} tokens (a turn holding '</s>' or "
                      "' ASSISTANT: '?); the sample's labels are all ignored", stacklevel=2)
        return [IGNORE_INDEX] * len(ids)
    return labels


def image_token_count(processor) -> int:
    """How many positions the processor expands ``<image>`` into."""
    from PIL import Image

    tokenizer = processor.tokenizer
    probe = processor(images=[Image.new("RGB", (8, 8))], text=["<image>"], return_tensors="pt")
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    return int((probe["input_ids"] == image_id).sum())


def encode_member(processor, image, turns: list[dict], image_tokens: int | None = None) -> dict:
    """input_ids / labels / pixel_values for one member image and its conversation, token for token as
    LLaVA-1.5 encodes it (system prompt, USER:/ASSISTANT:, labels on the answers and their end-of-sequence).
    A conversation that ends on a question is encoded for generation: "ASSISTANT:" open, no labels."""
    tokenizer = processor.tokenizer
    image_ids = [tokenizer.convert_tokens_to_ids(processor.image_token)] * (image_tokens or image_token_count(processor))
    generation = bool(turns) and turns[-1]["from"] == "human"
    prompt = llava_prompt(turns, generation=generation, eos=tokenizer.eos_token or SEP2)
    ids = tokenize_with_images(tokenizer, prompt, image_ids)
    labels = [IGNORE_INDEX] * len(ids) if generation else answer_labels(tokenizer, prompt, ids, image_ids)
    pixels = processor.image_processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"][0]
    return {"input_ids": ids, "labels": labels, "pixel_values": pixels}


def answer_token_ids(tokenizer, answers: tuple[str, ...] = ("Yes", "No")) -> list[int]:
    """The token each answer starts with right after "ASSISTANT:", taken in context: a SentencePiece
    tokenizer encodes a lone " yes" as a bare "\u2581" piece first, so the first token of " yes" and of
    " no" is the same and tells nothing (the old bug)."""
    prefix = llava_prompt([{"from": "human", "value": "Is this a person? Answer yes or no."}], generation=True)
    before = _tokens(tokenizer, prefix)
    found = []
    for answer in answers:
        full = _tokens(tokenizer, f"{prefix} {answer}")
        if len(full) <= len(before) or full[: len(before)] != before:
            raise ValueError(f"the tokenizer does not keep the prompt's tokens when {answer!r} follows it")
        found.append(full[len(before)])
    if len(set(found)) != len(found):
        raise ValueError(f"answers {answers} start with the same token {found[0]}: they cannot be told apart")
    return found


def collate(encoded: list[dict], pad_id: int) -> dict:
    import torch

    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "pixel_values": torch.stack([e["pixel_values"] for e in encoded])}


def yes_no_question(turns: list[dict]) -> list[dict]:
    """The conversation's yes/no question about the concept, as a one-turn prompt with the image."""
    for i, turn in enumerate(turns):
        if i and turn["from"] == "gpt" and turn["value"] == YES_NO_ANSWER:
            question = turns[i - 1]["value"]
            if IMAGE_TOKEN not in question:
                question = f"{IMAGE_TOKEN}\n{question}"
            return [{"from": "human", "value": question}]
    raise ValueError(f"the conversation has no yes/no question about the concept (a gpt turn {YES_NO_ANSWER!r})")


def concept_predictions(model, processor, items: list[dict], batch_size: int = 8) -> list[bool]:
    """Does the model say "yes" (over "no") to each item's yes/no concept question?"""
    import torch

    tokenizer = processor.tokenizer
    yes, no = answer_token_ids(tokenizer, (YES_NO_ANSWER.rstrip("."), "No"))
    count = image_token_count(processor)
    out: list[bool] = []
    model.eval()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        encoded = [encode_member(processor, it["image"], yes_no_question(it["conversations"]), count) for it in chunk]
        batch = collate(encoded, tokenizer.pad_token_id)
        last = batch["attention_mask"].sum(dim=1) - 1  # the position after "ASSISTANT:" predicts the answer
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           pixel_values=batch["pixel_values"]).logits
        at = logits[torch.arange(len(chunk)), last]
        out.extend(bool(v) for v in (at[:, yes] > at[:, no]))
    return out


@dataclass
class AsdEpoch:
    skews: list[float]  # Skew(P_i) per pool item, from this epoch's predictions
    order: list[int]  # the resampled epoch: pool indices, repeated or dropped
    losses: list[float] = field(default_factory=list)  # weighted loss per optimizer step
    weights: list[list[float]] = field(default_factory=list)  # exp(-Skew) of each step's samples


def asd_epoch(model, processor, items: list[dict], optimizer, rng: random.Random, batch_size: int = 4,
              tau1: float = 1.0, tau2: float = 1.0, max_steps: int | None = None) -> AsdEpoch:
    """One ASD epoch over ``items`` (dicts with image, conversations, concept, attributes: what
    ``pipeline.trainers.readers.iter_members`` yields): Skew re-estimated, pool resampled, weighted loss."""
    import math

    predictions = concept_predictions(model, processor, items)
    table = skew_table([Prediction(it["concept"], it["attributes"], p) for it, p in zip(items, predictions)])
    skews = [sample_skew(table, it["concept"], it["attributes"]) for it in items]
    epoch = AsdEpoch(skews=skews, order=resample_epoch(skews, rng, tau1, tau2))
    count = image_token_count(processor)
    model.train()
    for start in range(0, len(epoch.order), batch_size):
        if max_steps is not None and len(epoch.losses) >= max_steps:
            break
        picked = epoch.order[start : start + batch_size]
        batch = collate([encode_member(processor, items[i]["image"], items[i]["conversations"], count) for i in picked],
                        processor.tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"]).logits
        # causal LM: position t predicts token t + 1
        loss = asd_loss(logits[:, :-1], batch["labels"][:, 1:], [skews[i] for i in picked])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        epoch.losses.append(float(loss.detach()))
        epoch.weights.append([math.exp(-skews[i]) for i in picked])
    model.eval()
    return epoch
