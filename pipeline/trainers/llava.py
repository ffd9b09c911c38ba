"""Counterfactual members as LLaVA training data, and a reference ASD epoch on top of them.

Members carry LLaVA-format ``conversations`` (taxonomy.yaml). ``encode_member`` turns one into model
inputs the way LLaVA-1.5 trains (``USER: <image>\\nQ ASSISTANT: A</s>``, loss on the answers only);
``concept_predictions`` asks the model the conversation's yes/no question, which is what the ASD
Skew table is estimated from; ``asd_epoch`` re-estimates Skew, resamples and trains one epoch with
``exp(-Skew)``-weighted loss (arXiv 2408.06569). Any ``LlavaForConditionalGeneration``-like model and
its processor work: the tests use ``tiny:llava``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipeline.trainers.debias import Prediction, asd_loss, resample_epoch, sample_skew, skew_table

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"  # LLaVA's placeholder; the conversations in the shards use it
YES_NO_ANSWER = "Yes."  # the gpt turn that marks a yes/no question about the concept


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []


def image_token_count(processor) -> int:
    """How many positions the processor expands ``<image>`` into."""
    from PIL import Image

    tokenizer = processor.tokenizer
    probe = processor(images=[Image.new("RGB", (8, 8))], text=["<image>"], return_tensors="pt")
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    return int((probe["input_ids"] == image_id).sum())


def encode_member(processor, image, turns: list[dict], image_tokens: int | None = None) -> dict:
    """input_ids / labels (answers only) / pixel_values for one member image and its conversation."""
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    image_tokens = image_tokens or image_token_count(processor)
    ids: list[int] = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    for turn in turns:
        if turn["from"] == "human":
            before, _, after = turn["value"].partition(processor.image_token)
            part = _tokens(tokenizer, "USER: " + before)
            if _:
                part += [image_id] * image_tokens + _tokens(tokenizer, after)
            part += _tokens(tokenizer, " ASSISTANT:")
            ids += part
            labels += [IGNORE_INDEX] * len(part)
        else:
            part = _tokens(tokenizer, " " + turn["value"]) + [tokenizer.eos_token_id]
            ids += part
            labels += part
    pixels = processor.image_processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"][0]
    return {"input_ids": ids, "labels": labels, "pixel_values": pixels}


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
    yes, no = _tokens(tokenizer, " yes")[0], _tokens(tokenizer, " no")[0]
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
