"""Test-time steering vectors (arXiv 2411.12590) from counterfactual sets, for any torch model.

A steering vector is a direction in one layer's hidden states that encodes a protected attribute:
  - dataset-based: mean activation over inputs that show the attribute value minus the mean over
    neutral inputs. Counterfactual sets give the cleanest contrast: the same scene with the value
    (members with it) and without (the other members of the same sets).
  - data-free, from one image: take one gradient-sign step on the image that lowers the likelihood of
    the attribute words; the vector is activation(image) - activation(perturbed image).
``steer`` applies a vector during ``forward``/``generate`` (subtract it, or project it out) and always
removes its hook on exit. Layers are named as in ``model.named_modules()``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Literal

from pipeline.trainers.llava import IGNORE_INDEX, IMAGE_TOKEN, collate, encode_member, image_token_count


def _hidden(output):
    """A layer's hidden states from its output (a tensor, or a tuple/ModelOutput led by one)."""
    if isinstance(output, tuple):
        return output[0]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    return output


def _replace_hidden(output, hidden):
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    if hasattr(output, "last_hidden_state"):
        output.last_hidden_state = hidden
        return output
    return hidden


def _token_sum(hidden, attention_mask):
    """(sum of hidden states, count) over real tokens when the layer is on the text sequence; over all
    positions otherwise."""
    if attention_mask is not None and hidden.dim() == 3 and hidden.shape[:2] == attention_mask.shape:
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=(0, 1)), float(mask.sum())
    flat = hidden.reshape(-1, hidden.shape[-1])
    return flat.sum(dim=0), float(flat.shape[0])


class _Capture:
    def __init__(self, model, layer: str):
        self.module = model.get_submodule(layer)
        self.hidden = None
        self.handle = None

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda _m, _i, out: setattr(self, "hidden", _hidden(out)))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def prompt_inputs(processor, images: list, prompt: str) -> dict:
    """A batch asking ``prompt`` about each image (LLaVA conversation format)."""
    count = image_token_count(processor)
    question = prompt if IMAGE_TOKEN in prompt else f"{IMAGE_TOKEN}\n{prompt}"
    encoded = [encode_member(processor, image, [{"from": "human", "value": question}], count) for image in images]
    batch = collate(encoded, processor.tokenizer.pad_token_id)
    batch.pop("labels")
    return batch


def mean_activation(model, layer: str, batches: Iterable[dict]):
    """Mean hidden state at ``layer`` over every token of every batch (model inputs as dicts)."""
    import torch

    total, weight = None, 0.0
    with _Capture(model, layer) as capture, torch.no_grad():
        for batch in batches:
            model(**batch)
            summed, tokens = _token_sum(capture.hidden.float(), batch.get("attention_mask"))
            total = summed if total is None else total + summed
            weight += tokens
    if total is None:
        raise ValueError("no inputs: a mean activation needs at least one batch")
    return total / weight


def steering_vector(model, processor, layer: str, with_attribute: list, neutral: list,
                    prompt: str = "Describe the person in this image.", batch_size: int = 8):
    """mean activation(images showing the attribute) - mean activation(neutral images)."""
    def batches(images):
        for start in range(0, len(images), batch_size):
            yield prompt_inputs(processor, images[start : start + batch_size], prompt)

    if not with_attribute or not neutral:
        raise ValueError("both image groups need at least one image")
    return mean_activation(model, layer, batches(with_attribute)) - mean_activation(model, layer, batches(neutral))


def steering_vector_from_sets(model, processor, layer: str, members: Iterable[dict], attribute: str, value: str,
                              **kwargs):
    """Dataset-based vector from accepted sets (``pipeline.trainers.readers.iter_members`` items): members with
    ``attribute == value`` against the other members of the same sets."""
    members = list(members)
    sets_with_value = {m["set_id"] for m in members if m["attributes"].get(attribute) == value}
    showing = [m["image"] for m in members if m["attributes"].get(attribute) == value]
    neutral = [m["image"] for m in members if m["set_id"] in sets_with_value and m["attributes"].get(attribute) != value]
    if not showing:
        raise ValueError(f"no accepted member has {attribute}={value}")
    return steering_vector(model, processor, layer, showing, neutral, **kwargs)


def gradient_steering_vector(model, processor, layer: str, image, attribute_words: list[str],
                             prompt: str = "Describe the person in this image.", step: float = 0.1):
    """Data-free vector from one image: one signed-gradient step on the pixels that lowers the likelihood
    of the attribute words as the answer; returns activation(image) - activation(perturbed)."""
    import torch

    tokenizer = processor.tokenizer
    count = image_token_count(processor)
    question = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt}"}]
    encoded = [encode_member(processor, image, question + [{"from": "gpt", "value": w}], count) for w in attribute_words]
    batch = collate(encoded, tokenizer.pad_token_id)
    pixels = batch.pop("pixel_values").clone().requires_grad_(True)
    labels = batch.pop("labels")
    model.zero_grad(set_to_none=True)
    logits = model(**batch, pixel_values=pixels).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX)  # -log p(attribute words)
    (grad,) = torch.autograd.grad(loss, pixels)
    perturbed = (pixels + step * grad.sign()).detach()  # up the loss: the attribute becomes less likely
    inputs = prompt_inputs(processor, [image], prompt)
    original = mean_activation(model, layer, [inputs])
    moved = mean_activation(model, layer, [dict(inputs, pixel_values=perturbed[:1])])
    return original - moved


@contextmanager
def steer(model, layer: str, vector, mode: Literal["subtract", "project"] = "subtract", scale: float = 1.0):
    """Within the block, ``layer``'s hidden states h become h - scale * v ("subtract") or
    h - (h . v_hat) v_hat ("project": the component along v removed)."""
    if mode not in ("subtract", "project"):
        raise ValueError(f"mode must be 'subtract' or 'project', got {mode!r}")
    module = model.get_submodule(layer)
    direction = vector.detach()
    unit = direction / direction.norm().clamp_min(1e-12)

    def hook(_module, _inputs, output):
        hidden = _hidden(output)
        v = direction.to(hidden.device, hidden.dtype)
        if mode == "subtract":
            steered = hidden - scale * v
        else:
            u = unit.to(hidden.device, hidden.dtype)
            steered = hidden - (hidden @ u).unsqueeze(-1) * u
        return _replace_hidden(output, steered)

    handle = module.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()
