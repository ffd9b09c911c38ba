"""Steering vectors on a model with a planted attribute direction: a small torch language model, read
through the tiny LLaVA processor, whose hidden states after ``layers.0`` carry direction ``d`` at text
positions and ``e`` at image positions whenever the image shows the attribute (a bright image). The
dataset-based vector must recover ``d`` from the response positions (``e`` from the image positions), and
projection must remove it. The one-step gradient vector is checked on a model whose attribute words follow the
image's brightness along a known direction, either way round."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.trainers.steering import steer, steering_vector_from_sets

HIDDEN = 48


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(HIDDEN, HIDDEN)

    def forward(self, hidden):
        return hidden + 0.05 * torch.tanh(self.linear(hidden))


class PlantedModel(torch.nn.Module):
    def __init__(self, vocab: int, image_id: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, HIDDEN)
        self.layers = torch.nn.ModuleList([Block(), Block()])
        self.head = torch.nn.Linear(HIDDEN, vocab)
        self.image_id = image_id
        d, e = torch.randn(2, HIDDEN, generator=generator)
        self.d, self.e = d / d.norm(), e / e.norm()

    def forward(self, input_ids, attention_mask=None, pixel_values=None):
        shows = (pixel_values.mean(dim=(1, 2, 3)) > 0).float()[:, None, None]
        is_image = (input_ids == self.image_id).float()[..., None]
        hidden = self.embed(input_ids) + 2.0 * shows * (is_image * self.e + (1 - is_image) * self.d)
        for layer in self.layers:
            hidden = layer(hidden)
        return type("Output", (), {"logits": self.head(hidden)})()


@pytest.fixture(scope="module")
def planted(tiny):
    from transformers import AutoProcessor

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(tiny["llava"])
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return PlantedModel(len(processor.tokenizer), image_id).eval(), processor


def members() -> list[dict]:
    """4 sets of two members: the female member's image is bright (shows the planted attribute)."""
    rng = np.random.default_rng(0)
    turns = [{"from": "human", "value": "<image>\nWhat is the person in this image doing?"},
             {"from": "gpt", "value": "The image shows a chef at work in a kitchen."}]
    out = []
    for s in range(4):
        for value, base in (("female", 200), ("male", 40)):
            pixels = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            out.append({"image": Image.fromarray(pixels), "conversations": turns, "set_id": f"s{s}-gender",
                        "attributes": {"gender": value}})
    return out


def cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_the_dataset_vector_recovers_the_planted_direction_at_the_positions_asked(planted):
    model, processor = planted
    items = members()
    vectors = steering_vector_from_sets(model, processor, ["layers.0", "layers.1"], items, "gender", "female")
    assert set(vectors) == {"layers.0", "layers.1"}  # several layers at once
    assert cosine(vectors["layers.0"], model.d) > 0.9 and cosine(vectors["layers.1"], model.d) > 0.9
    image = steering_vector_from_sets(model, processor, "layers.0", items, "gender", "female", positions="image")
    assert cosine(image, model.e) > 0.9
    # over every position the image tokens' e mixes in (with LLaVA-1.5's 576 image tokens it dominates)
    everything = steering_vector_from_sets(model, processor, "layers.0", items, "gender", "female", positions="all")
    assert cosine(everything, model.e) > cosine(vectors["layers.0"], model.e) + 0.1


def outputs(model, inputs, layers) -> dict:
    """Each layer's output as the next layer sees it (hooks run in the order registered: after steer's)."""
    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
             for name in layers]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_projection_is_the_default_and_removes_the_direction(planted):
    from pipeline.trainers.steering import prompt_inputs

    model, processor = planted
    vectors = steering_vector_from_sets(model, processor, ["layers.0", "layers.1"], members(), "gender", "female")
    units = {name: v / v.norm() for name, v in vectors.items()}
    inputs = prompt_inputs(processor, [members()[0]["image"]], "What is the person in this image doing?")
    plain = outputs(model, inputs, vectors)
    assert all((plain[name] @ units[name]).abs().max() > 0.5 for name in vectors)  # a bright image: d and e there
    with steer(model, vectors):  # no mode given: projection
        steered = outputs(model, inputs, vectors)
    assert all((steered[name] @ units[name]).abs().max() < 1e-4 for name in vectors)
    with steer(model, vectors, mode="subtract"):
        subtracted = outputs(model, inputs, vectors)
    assert not torch.allclose(subtracted["layers.0"], steered["layers.0"])


class WordsFollowBrightness(torch.nn.Module):
    """The hidden state carries ``2 * mean pixel value * d`` at every position, and the head reads the attribute
    words' logits from ``sign * 4 * (h . d)``: a brighter image makes the words likelier (sign +1) or less
    likely (sign -1). The one-step vector must then point along +d or -d, by a length worked out by hand."""

    def __init__(self, vocab: int, words: list[int], sign: int):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.embed = torch.nn.Embedding(vocab, HIDDEN)
        self.layers = torch.nn.ModuleList([Block(), Block()])
        self.head = torch.nn.Linear(HIDDEN, vocab)
        d = torch.randn(HIDDEN, generator=generator)
        self.d = d / d.norm()
        with torch.no_grad():
            self.head.weight[words] += sign * 4.0 * self.d

    def forward(self, input_ids, attention_mask=None, pixel_values=None):
        brightness = pixel_values.mean(dim=(1, 2, 3))[:, None, None]
        hidden = self.embed(input_ids) + 2.0 * brightness * self.d
        for layer in self.layers:
            hidden = layer(hidden)
        return type("Output", (), {"logits": self.head(hidden)})()


def test_the_one_step_gradient_vector_points_the_way_that_makes_the_attribute_words_likelier(tiny):
    from transformers import AutoProcessor

    from pipeline.trainers.steering import gradient_steering_vector

    processor = AutoProcessor.from_pretrained(tiny["llava"])
    words = ["woman", "female"]
    ids = sorted({i for w in words for i in processor.tokenizer(" " + w, add_special_tokens=False)["input_ids"]})
    image = members()[0]["image"]
    for sign in (1, -1):
        torch.manual_seed(0)
        model = WordsFollowBrightness(len(processor.tokenizer), ids, sign).eval()
        vector = gradient_steering_vector(model, processor, "layers.0", image, words, step=0.1)
        # The step raises the loss -log p(words): every pixel moves by 0.1 against the words, so the mean pixel
        # value moves by 0.1 and the hidden state by 2 * 0.1 = 0.2 along d (less when the words follow
        # brightness); image - perturbed is then +0.2 d for sign +1 and -0.2 d for sign -1 (layers.0 adds at
        # most 0.05 * tanh of its input).
        assert sign * cosine(vector, model.d) > 0.99, sign
        assert float(vector.norm()) == pytest.approx(0.2, rel=0.1)
        assert all(p.grad is None for p in model.parameters())
