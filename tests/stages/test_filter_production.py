"""The filter at configs/production.yaml's thresholds, loaded from that file (never copied here), on inputs built
to pass and to fail each check.

Every other filter test sets its own thresholds (mini.yaml's let random-weight CLIP through). Here:
  - where scores meet thresholds (ClipChecks.failed_checks, the safety screen, the judge's comparisons):
    hand-picked scores just above, at and just below each production threshold; the judge's answers are
    written by hand, as tests/stages/test_judge_checks.py writes them (a random 987-token VLM puts ~1% of its
    mass on yes + no, so at production's min_answer_mass 0.5 it abstains on every question);
  - the whole filter stage with the tiny CLIP, on 32 x 32 images (the tiny CLIP's input size) built by gradient
    steps on that CLIP so that each candidate passes every check, or fails exactly one, by at least 0.1. The
    tiny CLIP scores every photo under production's text_image 0.2 and over its NSFW 0.5, so no shipped
    image could pass. The scores the filter records are checked against the published definitions computed
    here, and each decision against the file's thresholds;
  - drift with the tiny CLIPSeg (whose regions are what they are: solid colours make them not matter) on
    colours whose CIELAB differences are worked out by hand just inside and outside production's limits.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.config.loading import load_config
from schemas.records import CLIP_SCORES, SET, rows_to_table
from stages.filter import ClipFilter
from stages.models.clip_checks import IDENTITY_NOTE, NO_DIRECTION, ClipChecks
from stages.models.drift_checks import DriftChecks
from stages.models.judge_checks import JudgeChecks, JudgeVocabulary
from stages.models.safety import SafetyScorer
from stages.models.vlm_judge import Answer
from tests.conftest import REPO
from tests.helpers import noise_image
from tests.stages.test_drift import hue_by_hand, lab_by_hand

PRODUCTION = REPO / "configs" / "production.yaml"
SIDE = 32
CAPTION = "a woman cooking in a kitchen"  # names a woman: the female member is the identity member


@pytest.fixture(scope="module")
def production():
    """production.yaml's filter section as the pipeline loads it, checked against the file's own text."""
    loaded = load_config(PRODUCTION).config.filter
    written = yaml.safe_load(PRODUCTION.read_text())["filter"]
    assert {k: getattr(loaded.thresholds, k) for k in written["thresholds"]} == written["thresholds"]
    assert loaded.safety.enabled and loaded.safety.threshold == written["safety"]["threshold"]
    assert {k: getattr(loaded.judge.thresholds, k) for k in written["judge"]["thresholds"]} == written["judge"]["thresholds"]
    assert (loaded.drift.max_delta_l, loaded.drift.max_delta_hue) == (written["drift"]["max_delta_l"],
                                                                      written["drift"]["max_delta_hue"])
    assert loaded.min_members == written["min_members"] == 0 and loaded.rank_by == written["rank_by"]
    return loaded


def on_tiny_clip(config, tiny):
    """The production filter with the tiny CLIP in place of ViT-L-14; every threshold and rule as loaded."""
    return replace(config, model=tiny["clip"], pretrained=None, precision="fp32", device="cpu",
                   judge=replace(config.judge, enabled=False), drift=replace(config.drift, enabled=False))


@pytest.fixture(scope="module")
def checks(production, tiny):
    return ClipChecks(on_tiny_clip(production, tiny))


# -- where scores meet the thresholds ---------------------------------------------------------------------------

def test_each_clip_check_fails_just_below_its_production_threshold_and_passes_at_it(production, checks):
    thresholds = production.thresholds
    passing = {name: getattr(thresholds, name) + 0.01 for name in CLIP_SCORES}
    assert checks.failed_checks(passing) == []
    for name in CLIP_SCORES:
        minimum = getattr(thresholds, name)
        assert checks.failed_checks(passing | {name: minimum}) == []  # "below its threshold" fails, not "at"
        below = passing | {name: minimum - 1e-4}
        assert checks.failed_checks(below) == [name]
        assert checks.failure_reasons(below, [name]) == [
            f"{name} {minimum - 1e-4:.4f} < {minimum:.4f}" + (f" ({NO_DIRECTION})" if minimum - 1e-4 == 0.0 else "")]
    # the identity member: no directional score, so nothing to fail for want of a direction; the others still apply
    assert checks.failed_checks(passing | {"directional": None}) == []
    assert checks.failed_checks(passing | {"directional": None, "image_image": thresholds.image_image - 1e-4}) == [
        "image_image"]


def test_clip_scores_from_hand_made_embeddings(checks):
    # seed e1; candidate (0.8, 0.6): image_image 0.8; caption e3, target (0, 0.6, 0.8): text_image 0.6 * 0.6 = 0.36;
    # image change (-0.2, 0.6, 0), caption change (0, 0.6, -0.2): 0.36 / (sqrt(0.4) * sqrt(0.4)) = 0.9
    src, img = np.array([1.0, 0, 0]), np.array([0.8, 0.6, 0])
    text = {CAPTION: np.array([0, 0, 1.0]), "a man cooking in a kitchen": np.array([0, 0.6, 0.8])}
    male = {"target_caption": "a man cooking in a kitchen", "identity": False}
    scores = checks.score_candidate(img, src, text, CAPTION, male, np.array([0.7, 0.3]), 0)
    assert scores == pytest.approx({"text_image": 0.36, "directional": 0.9, "image_image": 0.8, "attribute_margin": 0.4})
    assert checks.failed_checks(scores) == []
    identity = {"target_caption": CAPTION, "identity": True}  # the caption itself: text_image 0.6 * 0 + 0 * 1 = 0
    scores = checks.score_candidate(img, src, text, CAPTION, identity, np.array([0.7, 0.3]), 1)
    assert scores["directional"] is None and scores["attribute_margin"] == pytest.approx(-0.4)
    assert checks.failed_checks(scores) == ["text_image", "attribute_margin"]
    assert checks.score_notes(identity) == IDENTITY_NOTE


def test_the_safety_screen_rejects_just_above_its_production_threshold(production, checks):
    scorer = SafetyScorer(production.safety, checks.embedder)
    limit = production.safety.threshold
    assert not scorer.is_unsafe(limit) and not scorer.is_unsafe(limit - 1e-4) and scorer.is_unsafe(limit + 1e-4)
    assert scorer.reason(limit + 1e-4) == f"unsafe: nsfw {limit + 1e-4:.4f} > {limit:.4f}"


class HandAnswers:
    """The judge's answers written by hand (as tests/stages/test_judge_checks.py writes them), by question text."""

    takes_two_images = True

    def __init__(self, p_yes: dict[str, float | None]):
        self.p_yes = p_yes

    def answer(self, items):
        return [Answer(self.p_yes[text], 1.0 if self.p_yes[text] is not None else 0.1) for _, text in items]


VOCABULARY = JudgeVocabulary({"gender": {"male": "a man", "female": "a woman"}}, {"gender": "gender"},
                             {"chef": "a chef"})


def test_the_judge_rejects_just_below_its_production_thresholds_and_an_abstention_is_no_failure(production):
    config = production.judge
    thresholds = config.thresholds
    judge = JudgeChecks(config, VOCABULARY, "cpu")
    row = {"concept": "chef", "members": [{"member_id": m, "attributes": [{"attribute": "gender", "value": m}]}
                                          for m in ("male", "female")]}
    member = row["members"][0]
    image = Image.new("RGB", (8, 8))
    man, woman = (config.attribute_question.format(phrase=p) for p in ("a man", "a woman"))
    chef = config.concept_question.format(a_concept="a chef")
    scene = config.scene_question.format(attributes="gender")

    def verdict(attribute: float, concept: float | None, same: float) -> tuple[list[str], list[str]]:
        # judge_attribute = P(yes | a man) - P(yes | a woman): 0.5 + attribute - 0.5
        judge.judge = HandAnswers({man: 0.5 + attribute, woman: 0.5, chef: concept, scene: same})
        ((failed, reasons),) = judge.judge_set(row, image, [({}, member, image)])
        return failed, reasons

    at = (thresholds.judge_attribute, thresholds.judge_concept, thresholds.judge_scene)
    assert verdict(*at) == ([], [])
    for index, name in enumerate(("judge_attribute", "judge_concept", "judge_scene")):
        below = list(at)
        below[index] -= 0.01
        failed, reasons = verdict(*below)
        assert failed == [name] and reasons == [f"{name} {at[index] - 0.01:.4f} < {at[index]:.4f}"]
    assert verdict(at[0], None, at[2]) == ([], [])  # the concept question abstained: neither pass nor fail


# -- the whole filter stage on images built for the tiny CLIP ---------------------------------------------------

class TinyClipScores:
    """The four scores and the NSFW score of images as the clip_checks docstring and safety.py define them
    (InstructPix2Pix / SocialCounterfactuals conventions), in torch, so images can be built by gradient steps."""

    def __init__(self, embedder, config, members: list[dict]):
        self.embedder, self.members = embedder, members
        self.mean = torch.tensor(embedder.preprocess.transforms[-1].mean)[:, None, None]
        self.std = torch.tensor(embedder.preprocess.transforms[-1].std)[:, None, None]
        prompts = [config.attribute_prompt.format(phrase=m["phrase"]) for m in members]
        texts = [CAPTION] + [m["target_caption"] for m in members] + prompts
        self.text = dict(zip(texts, torch.tensor(embedder.texts(texts))))
        self.prompts = torch.stack([self.text[p] for p in prompts])
        self.safety = torch.tensor(embedder.texts(config.safety.unsafe_prompts + config.safety.safe_prompts))
        self.unsafe = len(config.safety.unsafe_prompts)
        for p in embedder.model.parameters():
            p.requires_grad_(False)

    def embed(self, pixels):  # (N, 3, 32, 32) in [0, 1]
        features = self.embedder.model.encode_image((pixels - self.mean) / self.std)
        return features / features.norm(dim=-1, keepdim=True)

    def nsfw(self, image):
        return torch.softmax(self.embedder.logit_scale * (self.safety @ image), 0)[: self.unsafe].sum()

    def scores(self, image, source, index: int) -> dict:
        member = self.members[index]
        target = self.text[member["target_caption"]]
        probs = torch.softmax(self.embedder.logit_scale * (self.prompts @ image), 0)
        found = {"text_image": image @ target, "image_image": image @ source,
                 "attribute_margin": probs[index] - torch.cat([probs[:index], probs[index + 1:]]).max(),
                 "nsfw": self.nsfw(image)}
        if not member["identity"]:
            change, caption_change = image - source, target - self.text[CAPTION]
            found["directional"] = (change @ caption_change) / (change.norm() * caption_change.norm())
        return found


def build(step_loss, count: int, start, steps: int = 600) -> list[Image.Image]:
    """``count`` images from ``start`` (logits of pixels) by Adam steps until ``step_loss`` is 0 (on one thread:
    threads fighting over a loaded machine's cores made the 190 small steps take 70 s instead of 2)."""
    logits = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = step_loss(torch.sigmoid(logits))
            if float(loss.detach()) == 0.0:
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    assert float(loss.detach()) == 0.0, f"could not build the images (loss {float(loss.detach()):.4f})"
    arrays = (torch.sigmoid(logits).detach().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays][:count]


def hinge(value, low=None, high=None):
    return (torch.relu(low - value) if low is not None else 0) + (torch.relu(value - high) if high is not None else 0)


MEMBERS = [
    {"member_id": "male", "attributes": [{"attribute": "gender", "value": "male"}], "phrase": "a man",
     "target_caption": "a man cooking in a kitchen", "instruction": "turn the person into a man", "identity": False},
    {"member_id": "female", "attributes": [{"attribute": "gender", "value": "female"}], "phrase": "a woman",
     "target_caption": CAPTION, "instruction": "turn the person into a woman", "identity": True},
]
# Per set: whether its seed must look like a woman to the tiny CLIP, and its candidates as (member index, the
# check it is built to fail or None; it is built to pass every other). A candidate that loses the man-woman vote
# while moving towards "a man cooking" needs a seed CLIP already calls a woman; one that moves without the
# caption's direction needs a seed that it does not (a single seed for both could not be built).
PLANS = [
    (False, [(0, None), (0, "text_image"), (0, "directional"), (0, "image_image"), (0, "nsfw"), (1, None),
             (1, "image_image")]),
    (True, [(0, None), (0, "attribute_margin"), (1, None)]),
]
BY = 0.1  # every built score clears its threshold, on the side it is meant to be, by at least this
WOMAN_BY = 0.3  # P(a photo of a woman) - P(a photo of a man) of a seed that must look like a woman


def pixels_of(image: Image.Image):
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def built(production, checks):
    """Per PLANS entry: the seed and its candidates, built on the tiny CLIP against the production thresholds."""
    torch.manual_seed(0)
    model = TinyClipScores(checks.embedder, production, MEMBERS)
    limit, t = production.safety.threshold, production.thresholds
    out = []
    for woman, plan in PLANS:
        def seed_loss(x):
            image = model.embed(x)[0]
            probs = torch.softmax(model.embedder.logit_scale * (model.prompts @ image), 0)
            return hinge(model.nsfw(image), high=limit - 2 * BY) + (hinge(probs[1] - probs[0], low=WOMAN_BY) if woman else 0)

        (seed,) = build(seed_loss, 1, torch.randn(1, 3, SIDE, SIDE) * 0.1)
        source = model.embed(pixels_of(seed)[None])[0].detach()

        def loss(pixels):
            total = 0
            for image, (index, fails) in zip(model.embed(pixels), plan):
                for name, value in model.scores(image, source, index).items():
                    if name == "nsfw":
                        total = total + (hinge(value, low=limit + 2 * BY) if fails == name else hinge(value, high=limit - 2 * BY))
                    else:
                        minimum = getattr(t, name)
                        total = total + (hinge(value, high=minimum - BY) if fails == name else hinge(value, low=minimum + BY))
            return total

        start = torch.logit(pixels_of(seed).clamp(1 / 255, 254 / 255))[None].repeat(len(plan), 1, 1, 1)
        out.append((seed, build(loss, len(plan), start + torch.randn(len(plan), 3, SIDE, SIDE) * 0.5)))
    return model, out


def raw(image: Image.Image) -> dict:
    return {"image_rgb": image.tobytes(), "width": image.width, "height": image.height}


def set_row(seed: Image.Image, candidates: list[tuple[int, int, Image.Image]], index: int) -> dict:
    """A set as the editor hands it to the filter; ``candidates`` are (candidate index, member index, image)."""
    return {
        "seed_index": index, "shard_index": 0, "source_uri": f"seeds/{index}.png", "concept": "chef",
        "caption": CAPTION, "seed_id": f"p{index}", **raw(seed), "status": "ok", "set_id": f"p{index}-gender",
        "axis": "gender", "members": MEMBERS, "candidate_seeds": [c for c, _, _ in candidates],
        "candidates": [{"member_id": MEMBERS[m]["member_id"], "candidate": c, "noise_seed": c, **raw(image),
                        "error": None, "status": None, "reason": None} for c, m, image in candidates],
    }


@pytest.fixture(scope="module")
def filtered(production, tiny, built):
    """The filter stage on: each PLANS set (the first with one more male candidate, the seed itself: the editor
    did nothing); the first without the identity member's passing candidate; its candidates with a noise seed."""
    _, sets = built
    stage = ClipFilter(on_tiny_clip(production, tiny))
    stage.start()
    rows = []
    for index, ((_, plan), (seed, images)) in enumerate(zip(PLANS, sets)):
        unchanged = [(len(plan), 0, seed)] if index == 0 else []
        rows.append(set_row(seed, [(c, m, images[c]) for c, (m, _) in enumerate(plan)] + unchanged, index))
    (_, plan), (seed, images) = PLANS[0], sets[0]
    rows.append(set_row(seed, [(c, m, images[c]) for c, (m, fails) in enumerate(plan) if (m, fails) != (1, None)], 2))
    rows.append(set_row(noise_image(0, SIDE), [(c, m, images[c]) for c, (m, _) in enumerate(plan)], 3))
    return stage(rows_to_table(rows, SET)).to_pylist()


def test_built_candidates_pass_or_fail_exactly_the_check_they_were_built_for(production, built, filtered):
    model, sets = built
    thresholds, limit = production.thresholds, production.safety.threshold
    for (_, plan), (seed, images), row in zip(PLANS, sets, filtered):
        assert row["set_status"] == "accepted" and row["set_reason"] is None
        embeddings = torch.tensor(model.embedder.images([seed] + images))  # as stored: after rounding to 8 bits
        for cand in row["candidates"][: len(plan)]:
            index, fails = plan[cand["candidate"]]
            by_hand = {k: float(v) for k, v in model.scores(embeddings[1 + cand["candidate"]], embeddings[0], index).items()}
            for name, value in by_hand.items():  # the filter's scores are the published definitions
                assert cand[name] == pytest.approx(value, abs=1e-4), (cand["candidate"], name)
            if MEMBERS[index]["identity"]:
                assert cand["directional"] is None and cand["score_notes"] == IDENTITY_NOTE
            if fails is None:
                assert cand["failed_checks"] == [] and cand["status"] == "accepted" and cand["reason"] is None
                continue
            assert cand["failed_checks"] == [fails] and cand["status"] == "rejected", cand["candidate"]
            if fails == "nsfw":
                prefix, suffix = "failed: unsafe: nsfw ", f" > {limit:.4f}"
                assert cand["nsfw"] > limit + BY
            else:
                minimum = getattr(thresholds, fails)
                prefix, suffix = f"failed: {fails} ", f" < {minimum:.4f}"
                assert cand[fails] < minimum - BY + 1e-3
            assert cand["reason"].startswith(prefix) and cand["reason"].endswith(suffix), cand["reason"]
            assert float(cand["reason"][len(prefix):-len(suffix)]) == pytest.approx(by_hand[fails], abs=2e-4)
    unchanged = filtered[0]["candidates"][len(PLANS[0][1])]
    assert unchanged["directional"] == 0.0 and "directional" in unchanged["failed_checks"]
    assert f"directional 0.0000 < {thresholds.directional:.4f} ({NO_DIRECTION})" in unchanged["reason"]


def test_production_needs_every_member_and_a_safe_seed(production, filtered):
    *_, short, unsafe_seed = filtered
    # min_members 0: all of them. The identity member has only a failing candidate left, so the set goes.
    assert short["set_status"] == "rejected" and short["set_reason"] == "1 of 2 members passed (needs 2)"
    kept = next(c for c in short["candidates"] if c["candidate"] == 0)
    assert kept["failed_checks"] == [] and kept["reason"] == "set rejected: 1 of 2 members passed (needs 2)"
    # a noise seed: the tiny CLIP gives it P(unsafe) over production's 0.5, which rejects every candidate with it
    assert unsafe_seed["set_status"] == "rejected"
    assert unsafe_seed["set_reason"].startswith("unsafe: seed image nsfw ")
    assert unsafe_seed["set_reason"].endswith(f" > {production.safety.threshold:.4f}")
    assert all(c["failed_checks"] == ["nsfw_source"] for c in unsafe_seed["candidates"])


# -- drift on colours worked out by hand ---------------------------------------------------------------------------

SKIN = (200, 150, 120)  # CIELAB (hand): L* 66.10, hue 57.30 degrees, chroma 27.5
# Colours found by search with tests/stages/test_drift.lab_by_hand; their differences from SKIN, by hand:
NEAR = {
    (186, 135, 104): (-5.5210, 0.0156),    # lightness just inside 6
    (181, 133, 104): (-6.5720, -0.0064),   # lightness just outside 6
    (209, 148, 92): (0.0466, 9.0007),      # hue just inside 10 degrees
    (212, 147, 80): (-0.0027, 10.9755),    # hue just outside 10 degrees
    (151, 107, 80): (-16.9980, 0.0769),    # far darker
}


def by_hand(colour) -> tuple[float, float]:
    l_seed, a_seed, b_seed = lab_by_hand(SKIN)
    lightness, a, b = lab_by_hand(colour)
    hue = (hue_by_hand(a, b) - hue_by_hand(a_seed, b_seed) + 180) % 360 - 180
    return lightness - l_seed, hue


def test_drift_rejects_just_outside_production_limits_and_only_records_on_a_race_axis(production, tiny):
    config = production.drift
    drift = DriftChecks(replace(config, mask=replace(config.mask, model=tiny["clipseg"])), "cpu")
    drift.setup()
    for colour, (delta_l, delta_hue) in NEAR.items():
        assert by_hand(colour) == pytest.approx((delta_l, delta_hue), abs=1e-3)
    seed = Image.new("RGB", (64, 64), SKIN)
    judged = [({}, Image.new("RGB", (64, 64), colour)) for colour in NEAR]
    for attribute, record_only in (("gender", False), ("race", True)):
        assert (attribute in config.record_only_attributes) == record_only
        row = {"members": [{"attributes": [{"attribute": attribute, "value": "x"}]}]}
        verdicts = drift.judge_set(row, seed, judged)
        for (cand, _), (failed, reasons), (delta_l, delta_hue) in zip(judged, verdicts, NEAR.values()):
            assert cand["delta_l"] == pytest.approx(delta_l, abs=1e-3) and cand["delta_hue"] == pytest.approx(delta_hue, abs=1e-3)
            expected = [] if record_only else (["delta_l"] if abs(delta_l) > config.max_delta_l else []) + (
                ["delta_hue"] if abs(delta_hue) > config.max_delta_hue else [])
            assert failed == expected, (attribute, cand["delta_l"], cand["delta_hue"])
        if not record_only:
            assert [f for f, _ in verdicts] == [[], ["delta_l"], [], ["delta_hue"], ["delta_l"]]
            assert verdicts[1][1] == [f"delta_l {NEAR[(181, 133, 104)][0]:+.4f} beyond +/-{config.max_delta_l:.4f} "
                                      "(the person's skin lightness changed)"]
