"""The trainers' side on mini-run shards with a tiny LLaVA-style model: instruction records, an ASD
epoch, steering vectors applied during generate, and ``evaluate`` on a dataset with a known answer."""

import json
import math
import random

import pytest
import torch
from PIL import Image

from pipeline.commands import cli
from pipeline.trainers.debias import Prediction, sample_skew, skew_table
from pipeline.trainers.evaluate import evaluate_output
from pipeline.trainers.llava import IGNORE_INDEX, asd_epoch, concept_predictions, encode_member
from pipeline.trainers.readers import iter_members
from pipeline.trainers.steering import gradient_steering_vector, steer, steering_vector_from_sets
from stages.models.clip import ClipEmbedder
from stages.encode import ShardConfig
from tests.helpers import set_row, write_sets

LAYER = "model.language_model.layers.0"


@pytest.fixture(scope="module")
def llava(tiny):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    torch.manual_seed(0)
    from pipeline.trainers.steering import prompt_inputs

    model = LlavaForConditionalGeneration.from_pretrained(tiny["llava"]).eval()
    processor = AutoProcessor.from_pretrained(tiny["llava"])
    with torch.no_grad():  # transformers installs its own output hooks on the first forward
        model(**prompt_inputs(processor, [Image.new("RGB", (32, 32))], "warm up"))
    model._hooks_at_load = hook_counts(model)
    return model, processor


@pytest.fixture(scope="module")
def members(mini_output):
    items = list(iter_members(str(mini_output)))
    assert len(items) >= 8
    return items


def hook_counts(model) -> list[int]:
    return [len(m._forward_hooks) for m in model.modules()]


def no_hooks(model) -> bool:
    """None of ours left behind (transformers has hooks of its own: compare with the warmed-up model)."""
    return hook_counts(model) == model._hooks_at_load


def test_members_carry_llava_turns_and_only_answers_are_trained_on(members, llava, taxonomy):
    model, processor = llava
    for m in members:
        turns = m["conversations"]
        assert turns[0]["value"].startswith("<image>\n") and [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns == taxonomy.conversation(m["concept"])
        assert all(taxonomy.attribute_words_in(t["value"]) == [] for t in turns)
    encoded = encode_member(processor, members[0]["image"], members[0]["conversations"])
    trained = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    answers = [t["value"] for t in members[0]["conversations"] if t["from"] == "gpt"]
    expected = []
    for answer in answers:
        expected += processor.tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
    assert trained == expected
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert encoded["input_ids"].count(image_id) == model.config.image_seq_length  # one image, fully expanded


def test_an_asd_epoch_trains_tiny_llava_with_the_published_resampling_and_weights(members, llava):
    model, processor = llava
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    predictions = concept_predictions(model, processor, members)
    table = skew_table([Prediction(m["concept"], m["attributes"], p) for m, p in zip(members, predictions)])
    expected_skews = [sample_skew(table, m["concept"], m["attributes"]) for m in members]
    # Skew by hand for one pairing: ln(add-one share among positives / share in the pool), both over the
    # concept's members that carry the attribute, clipped to [-3, 3]
    m0 = members[0]
    (attribute, value), *_ = m0["attributes"].items()
    pool = [m for m in members if m["concept"] == m0["concept"] and attribute in m["attributes"]]
    pos = [m for m, p in zip(members, predictions) if p and any(m is q for q in pool)]
    values = {m["attributes"][attribute] for m in pool}
    count = lambda group: sum(g["attributes"][attribute] == value for g in group)  # noqa: E731
    by_hand = math.log(((count(pos) + 1) / (len(pos) + len(values))) / (count(pool) / len(pool)))
    assert table[m0["concept"]][(attribute, value)] == pytest.approx(min(max(by_hand, -3.0), 3.0))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    epoch = asd_epoch(model, processor, members, optimizer, random.Random(0), batch_size=4, max_steps=3)
    assert epoch.skews == pytest.approx(expected_skews)
    assert len(epoch.losses) == min(3, math.ceil(len(epoch.order) / 4)) and all(math.isfinite(x) for x in epoch.losses)
    for step, weights in enumerate(epoch.weights):
        picked = epoch.order[step * 4 : step * 4 + 4]
        assert weights == pytest.approx([math.exp(-expected_skews[i]) for i in picked])
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it trained


# The concept question every member of the hand-built table below is asked: the same words for all, so the
# tiny model's answer depends on the image alone.
YES_NO_TURNS = [{"from": "human", "value": "<image>\nWould you describe this person as a chef? Answer yes or no."},
                {"from": "gpt", "value": "Yes."}]


def image_the_model_says_yes_to(model, processor) -> Image.Image:
    """A 32 x 32 image (the tiny LLaVA's input size) made by gradient ascent on P(yes) - P(no) for YES_NO_TURNS:
    the random-weight model says "no" to every photo, solid colour and noise tried (margins -0.16 to -0.03)."""
    from pipeline.trainers.llava import YES_NO_ANSWER, answer_token_ids, collate, image_token_count, yes_no_question

    yes, no = answer_token_ids(processor.tokenizer, (YES_NO_ANSWER.rstrip("."), "No"))
    batch = collate([encode_member(processor, Image.new("RGB", (32, 32)), yes_no_question(YES_NO_TURNS),
                                   image_token_count(processor))], processor.tokenizer.pad_token_id)
    last = int(batch["attention_mask"].sum()) - 1
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    pixels = torch.zeros(1, 3, 32, 32, requires_grad=True)
    optimizer = torch.optim.Adam([pixels], lr=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small steps: threads only fight over a loaded machine's cores
    try:
        for _ in range(60):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           pixel_values=(torch.sigmoid(pixels) - mean) / std).logits[0, last]
            optimizer.zero_grad()
            (logits[no] - logits[yes]).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.zero_grad(set_to_none=True)
    array = torch.sigmoid(pixels[0]).permute(1, 2, 0).detach().numpy()
    return Image.fromarray((array * 255).round().astype("uint8"))


def test_an_asd_epoch_on_a_hand_built_member_table_has_the_skews_worked_out_by_hand(tiny):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny["llava"]).eval()  # its own: ASD trains it
    processor = AutoProcessor.from_pretrained(tiny["llava"])
    for p in model.parameters():
        p.requires_grad_(False)
    yes, no = image_the_model_says_yes_to(model, processor), Image.new("RGB", (32, 32))
    for p in model.parameters():
        p.requires_grad_(True)
    table = [  # (image the model answers, concept, attributes)
        (yes, "chef", {"gender": "male"}),                      # 0
        (yes, "chef", {"gender": "male"}),                      # 1
        (yes, "chef", {"gender": "female"}),                    # 2
        (no, "chef", {"gender": "female"}),                     # 3
        (yes, "chef", {"race": "white"}),                       # 4
        (no, "chef", {"race": "black"}),                        # 5
        (no, "chef", {"race": "black"}),                        # 6
        (no, "chef", {"gender": "female", "race": "black"}),    # 7
        (yes, "nurse", {"gender": "male"}),                     # 8
        (no, "nurse", {"gender": "female"}),                    # 9
    ]
    items = [{"image": image, "conversations": YES_NO_TURNS, "concept": concept, "attributes": attributes}
             for image, concept, attributes in table]
    assert concept_predictions(model, processor, items) == [True, True, True, False, True, False, False, False, True, False]
    # Skew_a = ln(((pos_a + 1) / (pos + V)) / (n_a / n)) over the concept's members that carry a's attribute.
    # chef, gender (members 0, 1, 2, 3, 7): n = 5, male 2 (2 yes), female 3 (1 yes); pos = 3, V = 2
    #   male   ((2 + 1) / (3 + 2)) / (2 / 5) = 0.6 / 0.4 = 3/2     female ((1 + 1) / 5) / (3 / 5) = 0.4 / 0.6 = 2/3
    # chef, race (members 4, 5, 6, 7): n = 4, white 1 (1 yes), black 3 (0 yes); pos = 1, V = 2
    #   white  ((1 + 1) / (1 + 2)) / (1 / 4) = 8/3                 black  ((0 + 1) / 3) / (3 / 4) = 4/9
    # nurse, gender (members 8, 9): n = 2, male 1 (1 yes), female 1 (0 yes); pos = 1, V = 2
    #   male   ((1 + 1) / 3) / (1 / 2) = 4/3                       female ((0 + 1) / 3) / (1 / 2) = 2/3
    # Member 7 takes the larger magnitude of female's ln(2/3) = -0.405 and black's ln(4/9) = -0.811.
    by_hand = [math.log(3 / 2), math.log(3 / 2), math.log(2 / 3), math.log(2 / 3), math.log(8 / 3),
               math.log(4 / 9), math.log(4 / 9), math.log(4 / 9), math.log(4 / 3), math.log(2 / 3)]

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    epoch = asd_epoch(model, processor, items, optimizer, random.Random(0), batch_size=4, max_steps=1)
    assert epoch.skews == pytest.approx(by_hand)
    # The resampler keeps every member with Skew <= 0 and adds a copy each time the running sum of |Skew| passes
    # 1: 2 (0.405), 3 (0.811), 5 (1.622: a copy of 5, 0.622 left), 6 (1.433: a copy, 0.433), 7 (1.244: a copy,
    # 0.244), 9 (0.649). Members with Skew > 0 are each kept once or dropped.
    assert sorted(i for i in epoch.order if by_hand[i] <= 0) == [2, 3, 5, 5, 6, 6, 7, 7, 9]
    assert all(epoch.order.count(i) <= 1 for i in (0, 1, 4, 8))
    assert epoch.weights[0] == pytest.approx([math.exp(-by_hand[i]) for i in epoch.order[:4]])


def test_a_steering_vector_from_mini_run_sets_is_applied_during_generate(members, llava):
    model, processor = llava
    value = next(iter(members[0]["attributes"].values()))
    attribute = next(iter(members[0]["attributes"]))
    vector = steering_vector_from_sets(model, processor, LAYER, members, attribute, value)
    assert vector.shape == (model.config.text_config.hidden_size,) and torch.isfinite(vector).all()
    assert float(vector.norm()) > 0 and no_hooks(model)

    from pipeline.trainers.steering import prompt_inputs

    inputs = prompt_inputs(processor, [members[0]["image"]], "Describe the person in this image.")
    plain = model.generate(**inputs, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with steer(model, LAYER, vector * 50, mode="subtract"):
        steered = model.generate(**inputs, max_new_tokens=4, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True)
    assert steered.sequences.shape[1] > inputs["input_ids"].shape[1]  # it generated
    assert not torch.allclose(plain.scores[0], steered.scores[0])  # the vector changed what it generates
    assert no_hooks(model)


def test_projection_removes_the_component_and_subtraction_shifts_by_the_vector(members, llava):
    model, processor = llava
    from pipeline.trainers.steering import prompt_inputs

    inputs = prompt_inputs(processor, [members[0]["image"]], "Describe the person in this image.")
    vector = torch.randn(model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    seen = {}
    layer = model.get_submodule(LAYER)

    def capture(name):
        return lambda _m, _i, out: seen.__setitem__(name, (out[0] if isinstance(out, tuple) else out).detach())

    with torch.no_grad():
        handle = layer.register_forward_hook(capture("plain"))
        model(**inputs)
        handle.remove()
        for mode in ("project", "subtract"):
            with steer(model, LAYER, vector, mode=mode):
                handle = layer.register_forward_hook(capture(mode))  # runs after the steering hook
                model(**inputs)
                handle.remove()
    unit = vector / vector.norm()
    assert (seen["plain"] @ unit).abs().max() > 1e-3
    assert (seen["project"] @ unit).abs().max() < 1e-4
    assert torch.allclose(seen["subtract"], seen["plain"] - vector, atol=1e-5)
    assert no_hooks(model)
    with pytest.raises(RuntimeError):
        with steer(model, LAYER, vector):
            raise RuntimeError("a failure inside the block")
    assert no_hooks(model)  # removed on the way out of an exception too


def test_the_one_step_gradient_vector_comes_from_a_single_image(members, llava):
    model, processor = llava
    vector = gradient_steering_vector(model, processor, LAYER, members[0]["image"], ["woman", "female"])
    assert vector.shape == (model.config.text_config.hidden_size,)
    assert torch.isfinite(vector).all() and float(vector.norm()) > 0
    assert no_hooks(model) and all(p.grad is None for p in model.parameters())


def write_known_dataset(out, clip_dir, balanced: bool):
    """Two images A and B; gender sets whose members are A or B. Which one CLIP puts closer to
    "a photo of a chef" decides the top K, so the answer is known before evaluating."""
    a = Image.new("RGB", (32, 32), (220, 30, 30))
    b = Image.new("RGB", (32, 32), (30, 30, 220))
    rows = []
    for i in range(2):
        swap = balanced and i % 2 == 1
        rows.append(set_row(i, "accepted", images={"female": b if swap else a, "male": a if swap else b}))
    write_sets(out, rows, 0, ShardConfig(prefix="k"))
    # Score A and B as stored (JPEG) to know which value the closer image carries in the first set.
    first = {m["member_id"]: m["image"] for m in iter_members(str(out)) if m["set_id"] == "s0-gender"}
    embedder = ClipEmbedder(clip_dir, None, "cpu", "fp32")
    text = embedder.texts(["a photo of a chef"])[0]
    score_female, score_male = embedder.images([first["female"], first["male"]]) @ text
    assert abs(score_female - score_male) > 1e-4
    return "female" if score_female > score_male else "male"


def test_evaluate_finds_the_known_max_skew(tiny, tmp_path):
    favoured = write_known_dataset(tmp_path / "skewed", tiny["clip"], balanced=False)
    (row,) = evaluate_output(str(tmp_path / "skewed"), tiny["clip"])
    assert (row.concept, row.axis, row.images, row.k) == ("chef", "gender", 4, 2)
    assert row.top_k == [favoured, favoured]  # both copies of the closer image share one value
    assert row.max_skew == pytest.approx(math.log(2))  # top-2 share 1 against a pool share of 1/2
    favoured = write_known_dataset(tmp_path / "balanced", tiny["clip"], balanced=True)
    (row,) = evaluate_output(str(tmp_path / "balanced"), tiny["clip"])
    assert row.max_skew == pytest.approx(0.0, abs=1e-12)
    assert row.top_k == [favoured, "male" if favoured == "female" else "female"]  # the closer image twice


def test_evaluate_command_prints_a_table_and_writes_json(tiny, tmp_path, capsys):
    write_known_dataset(tmp_path / "out", tiny["clip"], balanced=False)
    assert cli.main(["evaluate", str(tmp_path / "out"), "--clip", "tiny:clip", "--json", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    assert "MaxSkew@K" in printed and "chef" in printed and "0.6931" in printed
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["clip_model"] == "tiny:clip" and result["results"][0]["max_skew"] == pytest.approx(math.log(2))
