import pytest

from schemas.records import SEED, rows_to_table
from stages.edit.config import EditConfig
from stages.edit.instruct_pix2pix import InstructPix2PixEditor
from stages.models.clip import ClipEmbedder
from stages.filter import ClipFilter, FilterConfig
from stages.models.clip_checks import Thresholds, directional_similarity
from stages.utils.imaging import from_raw
from stages.models.safety import SafetyConfig
from stages.sets.stage import PlanConfig, SetPlanner
from tests.helpers import seed_row, noise_image

import numpy as np

OFF = Thresholds(text_image=None, directional=None, image_image=None, attribute_margin=None)


@pytest.fixture(scope="module")
def edited(tiny, taxonomy):
    rows = [seed_row(noise_image(7), 0, caption="a man cooking"), seed_row(noise_image(8), 1, caption="a woman reading")]
    sets = SetPlanner(PlanConfig(axes=["gender"], candidates_per_set=3), taxonomy, run_seed=1)(rows_to_table(rows, SEED))
    editor = InstructPix2PixEditor(EditConfig(model=tiny["instruct-pix2pix"], steps=2, resolution=32, dtype="float32"))
    editor.start()
    return editor(sets)


def run_filter(tiny, edited, **config):
    f = ClipFilter(FilterConfig(model=tiny["clip"], precision="fp32", **config))
    f.start()
    return f(edited).to_pylist()


def test_with_checks_off_every_member_keeps_its_best_candidate(tiny, edited):
    for s in run_filter(tiny, edited, thresholds=OFF, rank_by="text_image"):
        assert s["set_status"] == "accepted"
        for member in ("male", "female"):
            cands = [c for c in s["candidates"] if c["member_id"] == member]
            accepted = [c for c in cands if c["status"] == "accepted"]
            assert len(accepted) == 1
            assert accepted[0]["text_image"] == max(c["text_image"] for c in cands)
            assert all("not the best" in c["reason"] for c in cands if c is not accepted[0])
        for c in s["candidates"]:
            assert -1.0 <= c["text_image"] <= 1.0 and -1.0 <= c["image_image"] <= 1.0
            assert -1.0 <= c["attribute_margin"] <= 1.0


def test_a_failing_check_rejects_with_the_score_and_threshold_named(tiny, edited):
    thresholds = Thresholds(text_image=None, directional=None, image_image=1.01, attribute_margin=None)
    for s in run_filter(tiny, edited, thresholds=thresholds):
        assert s["set_status"] == "rejected" and "0 of 2 members passed" in s["set_reason"]
        for c in s["candidates"]:
            assert c["status"] == "rejected" and c["failed_checks"] == ["image_image"]
            assert c["reason"].startswith("failed: image_image ") and "< 1.0100" in c["reason"]


def test_min_members_accepts_a_set_with_some_members_failing(tiny, edited):
    # attribute_margin > 0 means the member wins the zero-shot vote: with two members only one can.
    thresholds = Thresholds(text_image=None, directional=None, image_image=None, attribute_margin=0.0)
    strict = run_filter(tiny, edited, thresholds=thresholds)
    lenient = run_filter(tiny, edited, thresholds=thresholds, min_members=1)
    checked = 0
    for s_strict, s_lenient in zip(strict, lenient):
        passed = {c["member_id"] for c in s_lenient["candidates"] if not c["failed_checks"]}
        assert s_lenient["set_status"] == ("accepted" if passed else "rejected")
        assert s_strict["set_status"] == ("accepted" if len(passed) == 2 else "rejected")
        checked += len(passed) == 1
    assert checked  # the case this test is about occurred


def test_directional_similarity_is_zero_without_a_direction():
    # InstructPix2Pix's filter (F.cosine_similarity with its eps) gives 0 here, and 0 fails its 0.2 threshold
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert directional_similarity(a, b, a, a) == 0.0  # the caption did not change
    assert directional_similarity(a, a, a, b) == 0.0  # the image did not change
    assert directional_similarity(a, b, a, b) == pytest.approx(1.0)


def test_an_unchanged_image_fails_the_directional_check_and_the_reason_says_why(tiny, edited):
    unchanged = edited.to_pylist()
    for row in unchanged:
        for cand in row["candidates"]:  # the editor handed back the seed itself
            cand.update(image_rgb=row["image_rgb"], width=row["width"], height=row["height"])
    thresholds = Thresholds(text_image=None, directional=0.2, image_image=None, attribute_margin=None)
    # seed 0's caption "a man cooking" names male, seed 1's "a woman reading" female: those are the identity members
    identity = {"seed0-gender": "male", "seed1-gender": "female"}
    for s in run_filter(tiny, rows_to_table(unchanged, edited.schema), thresholds=thresholds):
        assert s["set_status"] == "rejected"
        for c in s["candidates"]:
            if c["member_id"] == identity[s["set_id"]]:  # no text change: the check does not apply
                assert c["directional"] is None and c["failed_checks"] == []
                assert c["score_notes"] == "directional: identity member: no text change"
            else:
                assert c["directional"] == 0.0 and c["failed_checks"] == ["directional"]
                assert "directional 0.0000 < 0.2000 (no edit direction: the image or the caption did not change)" in c["reason"]


def test_the_identity_member_is_ranked_by_image_image_when_rank_by_is_directional(tiny, edited):
    identity = {"seed0-gender": "male", "seed1-gender": "female"}
    for s in run_filter(tiny, edited, thresholds=OFF, rank_by="directional"):
        assert s["set_status"] == "accepted"
        for member in ("male", "female"):
            cands = [c for c in s["candidates"] if c["member_id"] == member]
            (kept,) = [c for c in cands if c["status"] == "accepted"]
            score = "image_image" if member == identity[s["set_id"]] else "directional"
            assert kept[score] == max(c[score] for c in cands)
            assert all(c["reason"] == f"passed, but not the best candidate by {score}" for c in cands if c is not kept)
            assert all((c["directional"] is None) == (score == "image_image") for c in cands)


def test_the_safety_check_is_off_by_default_and_leaves_no_score(tiny, edited):
    for s in run_filter(tiny, edited, thresholds=OFF):
        assert all(c["nsfw"] is None for c in s["candidates"])


def test_safety_scores_every_candidate_and_rejects_those_above_the_threshold(tiny, edited):
    lenient = run_filter(tiny, edited, thresholds=OFF, safety=SafetyConfig(enabled=True, threshold=1.0))
    scores = sorted(c["nsfw"] for s in lenient for c in s["candidates"])
    assert all(0.0 <= x <= 1.0 for x in scores) and all(s["set_status"] == "accepted" for s in lenient)
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # half above, half below
    strict = run_filter(tiny, edited, thresholds=OFF,
                        safety=SafetyConfig(enabled=True, threshold=threshold, check_source=False))
    for s_lenient, s_strict in zip(lenient, strict):
        for before, after in zip(s_lenient["candidates"], s_strict["candidates"]):
            assert after["nsfw"] == before["nsfw"]  # the score does not depend on the threshold
            if after["nsfw"] > threshold:
                assert after["status"] == "rejected" and after["failed_checks"] == ["nsfw"]
                assert f"unsafe: nsfw {after['nsfw']:.4f} > {threshold:.4f}" in after["reason"]
            else:
                assert "nsfw" not in after["failed_checks"]


def test_the_safety_score_is_clip_zero_shot_over_the_configured_prompts(tiny, edited):
    config = SafetyConfig(enabled=True, threshold=1.0, unsafe_prompts=["a nude photo"], safe_prompts=["a photo of a chef"])
    (s, *_) = run_filter(tiny, edited, thresholds=OFF, safety=config)
    embedder = ClipEmbedder(tiny["clip"], None, "cpu", "fp32")
    cand = s["candidates"][0]
    image = embedder.images([from_raw(cand["image_rgb"], cand["width"], cand["height"])])
    prompts = embedder.texts(["a nude photo", "a photo of a chef"])
    logits = embedder.logit_scale * (image @ prompts.T)[0]
    assert cand["nsfw"] == pytest.approx(1.0 / (1.0 + np.exp(logits[1] - logits[0])), abs=1e-5)


def test_an_unsafe_seed_photo_rejects_its_whole_set(tiny, edited):
    config = SafetyConfig(enabled=True, threshold=0.0)  # every score is above 0: the seed is "unsafe"
    for s in run_filter(tiny, edited, thresholds=OFF, safety=config):
        assert s["set_status"] == "rejected" and s["set_reason"].startswith("unsafe: seed image nsfw ")
        assert all(c["status"] == "rejected" and c["failed_checks"] == ["nsfw_source"] for c in s["candidates"])
