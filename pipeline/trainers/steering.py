"""Test-time steering vectors (arXiv 2411.12590) from counterfactual sets, for any torch model.

A steering vector is a direction in one layer's hidden states that encodes a protected attribute:
  - dataset-based: mean activation over inputs that show the attribute value minus the mean over
    neutral inputs. Counterfactual sets give the cleanest contrast: the same scene with the value
    (members with it) and without (the other members of the same sets).
  - data-free, from one image: take one gradient-sign step on the image that lowers the likelihood of
    the attribute words; the vector is activation(image) - activation(perturbed image).
Means are taken over the response's tokens by default (the image's 576 tokens would otherwise dominate;
``positions="image"`` or ``"all"`` are options), at one layer or several at once. ``steer`` applies vectors
during ``forward``/``generate``: projecting the direction out by default, as the paper does (``subtract``
is an option), and always removes its hooks on exit. Layers are named as in ``model.named_modules()``.
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


POSITIONS = ("response", "image", "all")
DEFAULT_RESPONSE = "The image shows a person."


def _position_mask(batch: dict, positions: str, image_id: int, eos_id: int):
    """(B, T) bool: the positions a mean is taken over. ``response``: the answer's tokens (labelled ones,
    the end-of-sequence left out); ``image``: the image tokens; ``all``: every real token."""
    if positions == "all":
        return batch["attention_mask"].bool()
    if positions == "image":
        return batch["input_ids"] == image_id
    return (batch["labels"] != IGNORE_INDEX) & (batch["input_ids"] != eos_id)


def _masked_sum(hidden, mask):
    """(sum of hidden states, count) over ``mask`` when the layer is on the text sequence; over all
    positions otherwise (a vision layer)."""
    if mask is not None and hidden.dim() == 3 and hidden.shape[:2] == mask.shape:
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=(0, 1)), float(weights.sum())
    flat = hidden.reshape(-1, hidden.shape[-1])
    return flat.sum(dim=0), float(flat.shape[0])


class _Capture:
    """The hidden states of several layers during one forward."""

    def __init__(self, model, layers: list[str]):
        self.modules = {layer: model.get_submodule(layer) for layer in layers}
        self.hidden: dict = {}
        self.handles: list = []

    def __enter__(self):
        for layer, module in self.modules.items():
            self.handles.append(module.register_forward_hook(
                lambda _m, _i, out, layer=layer: self.hidden.__setitem__(layer, _hidden(out))))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _special_ids(processor) -> tuple[int, int]:
    """The image token's id and the end-of-sequence id: the positions ``image`` takes and ``response`` leaves out."""
    tokenizer = processor.tokenizer
    return tokenizer.convert_tokens_to_ids(processor.image_token), tokenizer.eos_token_id


def _layers(layer: str | list[str]) -> list[str]:
    return [layer] if isinstance(layer, str) else list(layer)


def _single(layer: str | list[str], vectors: dict):
    return vectors[layer] if isinstance(layer, str) else vectors


def prompt_inputs(processor, images: list, prompt: str, response: str | None = None) -> dict:
    """A batch asking ``prompt`` about each image (LLaVA conversation format); with ``response``, the answer
    follows (teacher-forced) and ``labels`` mark its tokens."""
    count = image_token_count(processor)
    question = prompt if IMAGE_TOKEN in prompt else f"{IMAGE_TOKEN}\n{prompt}"
    turns = [{"from": "human", "value": question}] + ([{"from": "gpt", "value": response}] if response else [])
    encoded = [encode_member(processor, image, turns, count) for image in images]
    batch = collate(encoded, processor.tokenizer.pad_token_id)
    if not response:
        batch.pop("labels")
    return batch


def _member_inputs(processor, items: list, prompt: str, response: str) -> dict:
    """Members (dicts with image and conversations: their first question and answer) or plain images
    (``prompt`` and ``response``), as one teacher-forced batch with the response's tokens labelled."""
    count = image_token_count(processor)
    encoded = []
    for item in items:
        if isinstance(item, dict):
            image, turns = item["image"], item["conversations"][:2]
        else:
            question = prompt if IMAGE_TOKEN in prompt else f"{IMAGE_TOKEN}\n{prompt}"
            image, turns = item, [{"from": "human", "value": question}, {"from": "gpt", "value": response}]
        encoded.append(encode_member(processor, image, turns, count))
    return collate(encoded, processor.tokenizer.pad_token_id)


def mean_activation(model, layer: str | list[str], batches: Iterable[dict], positions: str = "all",
                    image_id: int = -1, eos_id: int = -1):
    """Mean hidden state at ``layer`` (or each of several layers: a dict) over the chosen positions of
    every batch (model inputs as dicts; ``response`` needs their ``labels``)."""
    import torch

    if positions not in POSITIONS:
        raise ValueError(f"positions={positions!r}; allowed: {', '.join(POSITIONS)}")
    layers = _layers(layer)
    totals: dict = {}
    weight = dict.fromkeys(layers, 0.0)
    with _Capture(model, layers) as capture, torch.no_grad():
        for batch in batches:
            mask = _position_mask(batch, positions, image_id, eos_id) if "attention_mask" in batch else None
            model(**{k: v for k, v in batch.items() if k != "labels"})
            for name in layers:
                summed, count = _masked_sum(capture.hidden[name].float(), mask)
                totals[name] = summed if name not in totals else totals[name] + summed
                weight[name] += count
    if not totals:
        raise ValueError("no inputs: a mean activation needs at least one batch")
    if not all(weight.values()):
        raise ValueError(f"no {positions} positions in the inputs to average over")
    return _single(layer, {name: totals[name] / weight[name] for name in layers})


def steering_vector(model, processor, layer: str | list[str], with_attribute: list, neutral: list,
                    prompt: str = "Describe the person in this image.", response: str = DEFAULT_RESPONSE,
                    positions: str = "response", batch_size: int = 8):
    """mean activation(inputs showing the attribute) - mean activation(neutral inputs), per layer, over
    the response's tokens by default (``image``: the image tokens, ``all``: every token). Inputs are
    members (their own first question and answer) or images (``prompt`` and ``response``)."""
    ids = _special_ids(processor)

    def batches(items):
        for start in range(0, len(items), batch_size):
            yield _member_inputs(processor, items[start : start + batch_size], prompt, response)

    if not with_attribute or not neutral:
        raise ValueError("both groups need at least one input")
    showing = mean_activation(model, _layers(layer), batches(with_attribute), positions, *ids)
    other = mean_activation(model, _layers(layer), batches(neutral), positions, *ids)
    return _single(layer, {name: showing[name] - other[name] for name in showing})


def steering_vector_from_sets(model, processor, layer: str | list[str], members: Iterable[dict], attribute: str,
                              value: str, **kwargs):
    """Dataset-based vector from accepted sets (``pipeline.trainers.readers.iter_members`` items): members with
    ``attribute == value`` against the other members of the same sets, each read with its own conversation."""
    members = list(members)
    sets_with_value = {m["set_id"] for m in members if m["attributes"].get(attribute) == value}
    showing = [m for m in members if m["attributes"].get(attribute) == value]
    neutral = [m for m in members if m["set_id"] in sets_with_value and m["attributes"].get(attribute) != value]
    if not showing:
        raise ValueError(f"no accepted member has {attribute}={value}")
    return steering_vector(model, processor, layer, showing, neutral, **kwargs)


def gradient_steering_vector(model, processor, layer: str | list[str], image, attribute_words: list[str],
                             prompt: str = "Describe the person in this image.", step: float = 0.1,
                             response: str = DEFAULT_RESPONSE, positions: str = "response"):
    """Data-free vector from one image: one signed-gradient step on the pixels that lowers the likelihood
    of the attribute words as the answer (their tokens only: the end-of-sequence label is left out);
    returns activation(image) - activation(perturbed) at each layer."""
    import torch

    tokenizer = processor.tokenizer
    count = image_token_count(processor)
    question = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt}"}]
    encoded = [encode_member(processor, image, question + [{"from": "gpt", "value": w}], count) for w in attribute_words]
    batch = collate(encoded, tokenizer.pad_token_id)
    pixels = batch.pop("pixel_values").clone().requires_grad_(True)
    labels = batch.pop("labels")
    labels = labels.masked_fill(labels == tokenizer.eos_token_id, IGNORE_INDEX)
    model.zero_grad(set_to_none=True)
    logits = model(**batch, pixel_values=pixels).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX)  # -log p(attribute words)
    (grad,) = torch.autograd.grad(loss, pixels)
    perturbed = (pixels + step * grad.sign()).detach()  # up the loss: the attribute becomes less likely
    inputs = _member_inputs(processor, [image], prompt, response)
    ids = _special_ids(processor)
    original = mean_activation(model, _layers(layer), [inputs], positions, *ids)
    moved = mean_activation(model, _layers(layer), [dict(inputs, pixel_values=perturbed[:1])], positions, *ids)
    return _single(layer, {name: original[name] - moved[name] for name in original})


@contextmanager
def steer(model, layer: str | dict, vector=None, mode: Literal["project", "subtract"] = "project", scale: float = 1.0):
    """Within the block, each steered layer's hidden states h become h - (h . v_hat) v_hat ("project", the
    default and the paper's: the attribute direction removed) or h - scale * v ("subtract"). ``layer``
    names one layer (with ``vector``) or maps several layers to their vectors."""
    if mode not in ("subtract", "project"):
        raise ValueError(f"mode must be 'project' or 'subtract', got {mode!r}")
    vectors = layer if isinstance(layer, dict) else {layer: vector}

    def hook_for(direction):
        direction = direction.detach()
        unit = direction / direction.norm().clamp_min(1e-12)

        def hook(_module, _inputs, output):
            hidden = _hidden(output)
            if mode == "subtract":
                steered = hidden - scale * direction.to(hidden.device, hidden.dtype)
            else:
                u = unit.to(hidden.device, hidden.dtype)
                steered = hidden - (hidden @ u).unsqueeze(-1) * u
            return _replace_hidden(output, steered)

        return hook

    handles = [model.get_submodule(name).register_forward_hook(hook_for(v)) for name, v in vectors.items()]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
