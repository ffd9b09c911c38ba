"""Generate mode: seeds from concept prompts, text_to_image with prompt-to-prompt, whole-set selection."""

import numpy as np
import pytest

from schemas.records import SEED_REF, SET, rows_to_table
from stages.edit.config import EarlyRejectionConfig, EditConfig, PromptToPromptConfig
from stages.edit.p2p import token_map
from stages.edit.text_to_image import TextToImageEditor
from stages.filter import ClipFilter, FilterConfig
from stages.models.clip_checks import Thresholds
from stages.ingest.config import IngestConfig
from stages.ingest.decode import DecodeSeeds
from stages.ingest.listing import list_seeds
from stages.sets.stage import PlanConfig, SetPlanner

OFF = Thresholds(text_image=None, directional=None, image_image=None, attribute_margin=None)


def generated_sets(taxonomy, concepts=("chef", "science"), candidates=2, axes=("gender",)):
    ingest = IngestConfig(kind="generate", prompts=["a photo of {a_concept}"])
    refs = list_seeds(ingest, 4, concepts=[taxonomy.concepts[c] for c in concepts])
    seeds = DecodeSeeds(ingest)(refs)
    return SetPlanner(PlanConfig(axes=list(axes), candidates_per_set=candidates), taxonomy, run_seed=5)(seeds)


def make_editor(tiny, filter_config=None, **overrides):
    settings = dict(backend="text_to_image", model=tiny["stable-diffusion"], steps=4, resolution=32,
                    dtype="float32", max_batch=8)
    settings.update(overrides)
    editor = TextToImageEditor(EditConfig(**settings), filter_config)
    editor.start()
    return editor


@pytest.fixture(scope="module")
def editor(tiny):
    return make_editor(tiny)


def pixels(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, np.uint8).astype(np.int16)


def test_generated_seeds_are_neutral_base_prompts_one_per_concept_template_and_copy(taxonomy):
    config = IngestConfig(kind="generate", prompts=["a photo of {a_concept}", "{concept} at work"], seeds_per_prompt=2)
    refs = list_seeds(config, 3, concepts=[taxonomy.concepts["authority"], taxonomy.concepts["chef"]]).to_pylist()
    assert [r["source_seed_id"] for r in refs[:4]] == ["authority-p0-0", "authority-p0-1", "authority-p1-0", "authority-p1-1"]
    assert refs[0]["caption"] == "a photo of a person in a position of authority"
    assert refs[4]["caption"] == "a photo of a chef" and refs[6]["caption"] == "chef at work"
    assert [r["shard_index"] for r in refs] == [0, 0, 0, 1, 1, 1, 2, 2]
    seeds = DecodeSeeds(config)(rows_to_table(refs, SEED_REF)).to_pylist()
    assert all(s["status"] == "ok" and s["image_rgb"] is None and s["seed_id"] == s["source_seed_id"] for s in seeds)


def test_members_get_the_attribute_in_the_base_prompt(taxonomy):
    (gender,) = [s for s in generated_sets(taxonomy, ("chef",)).to_pylist()]
    assert gender["caption"] == "a photo of a chef"
    assert [m["target_caption"] for m in gender["members"]] == ["a photo of a male chef", "a photo of a female chef"]


def test_every_member_and_candidate_gets_an_image_and_each_candidate_a_base(editor, taxonomy):
    out = editor(generated_sets(taxonomy, ("chef",), candidates=3)).to_pylist()[0]
    assert {(c["member_id"], c["candidate"]) for c in out["candidates"]} == {(m, c) for m in ("male", "female") for c in range(3)}
    assert all(c["error"] is None and len(c["image_rgb"]) == 32 * 32 * 3 for c in out["candidates"])
    assert len(out["candidate_bases"]) == 3 and all(len(b) == 32 * 32 * 3 for b in out["candidate_bases"])
    assert out["image_rgb"] == out["candidate_bases"][0] and (out["width"], out["height"]) == (32, 32)
    assert len({b for b in out["candidate_bases"]}) == 3  # different noise per candidate


def test_pixels_depend_on_the_set_not_on_its_batch_or_chunking(tiny, editor, taxonomy):
    together = editor(generated_sets(taxonomy, ("chef", "science"), axes=("gender", "race"))).to_pylist()
    alone = editor(generated_sets(taxonomy, ("science",), axes=("race",))).to_pylist()
    want = together[3]
    assert want["set_id"] == alone[0]["set_id"] == "science-p0-0-race"
    # Same config: the set is chunked the same way whatever shares its batch, so the bytes are identical.
    assert [c["image_rgb"] for c in alone[0]["candidates"]] == [c["image_rgb"] for c in want["candidates"]]
    assert alone[0]["candidate_bases"] == want["candidate_bases"]
    # Other chunking (max_batch 3: each part of a candidate carries its own base row): the same images up
    # to float32 rounding, since GEMM kernels block by batch size. Stated tolerance: 2 levels of 255.
    (chunked,) = make_editor(tiny, max_batch=3)(generated_sets(taxonomy, ("science",), axes=("race",))).to_pylist()
    for got, expected in zip(chunked["candidates"], want["candidates"]):
        diff = np.abs(pixels(got["image_rgb"]) - pixels(expected["image_rgb"]))
        assert diff.max() <= 2 and diff.mean() < 0.05


def test_prompt_to_prompt_keeps_members_closer_to_their_base(tiny, taxonomy):
    def distance(editor) -> float:
        (row,) = editor(generated_sets(taxonomy, ("chef",), axes=("race_gender",))).to_pylist()
        bases = [pixels(b) for b in row["candidate_bases"]]
        return float(np.mean([np.abs(pixels(c["image_rgb"]) - bases[c["candidate"]]).mean() for c in row["candidates"]]))

    off = distance(make_editor(tiny, p2p=PromptToPromptConfig(enabled=False)))
    self_only = distance(make_editor(tiny, p2p=PromptToPromptConfig(fraction=1.0)))
    with_cross = distance(make_editor(tiny, p2p=PromptToPromptConfig(fraction=1.0, cross_attention=True)))
    assert off > 0
    assert self_only < 0.8 * off
    assert with_cross < self_only


def test_controlling_both_guidance_halves_keeps_members_closer_than_the_conditional_half_alone(tiny, taxonomy):
    # SocialCounterfactuals' attention.py copies the base row's self-attention into the unconditional rows
    # too; google/prompt-to-prompt controls the conditional half only. Same fraction, same noise.
    def distance(control: str) -> float:
        editor = make_editor(tiny, p2p=PromptToPromptConfig(fraction=0.5, control=control))
        (row,) = editor(generated_sets(taxonomy, ("chef",), axes=("race_gender",))).to_pylist()
        bases = [pixels(b) for b in row["candidate_bases"]]
        return float(np.mean([np.abs(pixels(c["image_rgb"]) - bases[c["candidate"]]).mean() for c in row["candidates"]]))

    both, conditional = distance("both"), distance("conditional")
    assert both < conditional


def test_p2p_control_is_checked_at_load():
    assert PromptToPromptConfig(control="unconditional").problems() == [
        ("control", "unknown 'unconditional'; allowed: both, conditional")]


def test_guidance_and_p2p_fraction_are_drawn_per_candidate_from_its_seed(tiny, taxonomy):
    editor = make_editor(tiny, steps=2, guidance_range=[7.5, 15.0],
                         p2p=PromptToPromptConfig(fraction_range=[0.1, 0.9]))
    first = editor(generated_sets(taxonomy, ("chef",), candidates=4)).to_pylist()[0]
    again = editor(generated_sets(taxonomy, ("chef",), candidates=4)).to_pylist()[0]
    draws = {c["candidate"]: (c["guidance_scale"], c["p2p_fraction"]) for c in first["candidates"]}
    assert draws == {c["candidate"]: (c["guidance_scale"], c["p2p_fraction"]) for c in again["candidates"]}
    assert len(set(draws.values())) == 4
    assert all(7.5 <= g <= 15.0 and 0.1 <= f <= 0.9 for g, f in draws.values())
    for cand in first["candidates"]:  # members of a candidate share its draws
        assert (cand["guidance_scale"], cand["p2p_fraction"]) == draws[cand["candidate"]]


def test_token_map_aligns_shared_words_and_leaves_the_new_ones_free():
    base = [1, 10, 11, 12, 13, 2, 2, 2]  # <start> a photo of chef <end> <pad> <pad>
    member = [1, 10, 11, 12, 50, 13, 2, 2]  # <start> a photo of female chef <end> <pad>
    assert token_map(base, member) == [0, 1, 2, 3, -1, 4, 5, 6]


def test_filter_keeps_one_whole_candidate_set_and_its_base_becomes_the_source(tiny, editor, taxonomy):
    edited = editor(generated_sets(taxonomy, ("chef", "science"), candidates=3))
    judge = ClipFilter(FilterConfig(model=tiny["clip"], precision="fp32", thresholds=OFF, rank_by="text_image"))
    judge.start()
    for row in judge(edited).to_pylist():
        assert row["set_status"] == "accepted"
        accepted = [c for c in row["candidates"] if c["status"] == "accepted"]
        (chosen,) = {c["candidate"] for c in accepted}
        assert len(accepted) == len(row["members"])
        means = {k: np.mean([c["text_image"] for c in row["candidates"] if c["candidate"] == k]) for k in range(3)}
        assert chosen == max(means, key=means.get)
        assert row["image_rgb"] == row["candidate_bases"][chosen]
        others = [c for c in row["candidates"] if c["candidate"] != chosen]
        assert all(f"candidate set {chosen} was kept" in c["reason"] for c in others)


def test_the_sdxl_family_renders_sets_with_attention_control_too(tiny, taxonomy):
    def rendered(p2p):
        editor = make_editor(tiny, model=tiny["sdxl"], p2p=p2p)
        assert editor.sampler.is_xl
        (row,) = editor(generated_sets(taxonomy, ("chef",), candidates=1, axes=("race_gender",))).to_pylist()
        assert all(c["error"] is None and len(c["image_rgb"]) == 32 * 32 * 3 for c in row["candidates"])
        base = pixels(row["candidate_bases"][0])
        return float(np.mean([np.abs(pixels(c["image_rgb"]) - base).mean() for c in row["candidates"]]))

    assert rendered(PromptToPromptConfig(fraction=1.0)) < rendered(PromptToPromptConfig(enabled=False))


def test_early_rejection_stops_members_the_filter_would_reject_and_the_others_finish_unchanged(tiny, editor, taxonomy):
    def early_editor(text_image: float):
        thresholds = Thresholds(text_image=text_image, directional=None, image_image=None, attribute_margin=None)
        judge = FilterConfig(model=tiny["clip"], precision="fp32", thresholds=thresholds)
        # max_batch 9: the three candidates (a base and two members each) share one call
        return make_editor(tiny, judge, max_batch=9,
                           early_rejection=EarlyRejectionConfig(enabled=True, at_fraction=0.5, margin=0.0))

    sets = generated_sets(taxonomy, ("chef", "science"), candidates=3)
    before = editor.counters["denoised_rows"]
    full = editor(sets).to_pylist()
    full_rows = editor.counters["denoised_rows"] - before
    members = [(r["set_id"], c["candidate"], c["member_id"]) for r in full for c in r["candidates"]]

    strict = early_editor(1.0)  # no image reaches a cosine of 1: every member stops after 2 of 4 steps
    stopped = strict(sets).to_pylist()
    # Two sets, one call each: 3 base rows finish their 4 steps, 6 member rows stop after 2.
    assert strict.counters["denoised_rows"] == 2 * (3 * 4 + 6 * 2) and full_rows > strict.counters["denoised_rows"]
    for early, done in zip(stopped, full):
        for cand, final in zip(early["candidates"], done["candidates"]):
            assert cand["status"] == "rejected" and cand["failed_checks"] == ["text_image"]
            assert cand["reason"].startswith("early rejection after 2 of 4 steps: predicted text_image ")
            assert cand["text_image"] < 1.0 and cand["image_rgb"] != final["image_rgb"]  # the prediction at step 2
        for base, full_base in zip(early["candidate_bases"], done["candidate_bases"]):
            assert np.abs(pixels(base) - pixels(full_base)).max() <= 2

    # A bar between candidates' weakest members: some candidates lose a member, some keep all.
    weakest = {}
    for r in stopped:
        for c in r["candidates"]:
            key = (r["set_id"], c["candidate"])
            weakest[key] = min(weakest.get(key, 1.0), c["text_image"])
    bar = float(np.median(list(weakest.values())))
    partial = early_editor(bar)(sets).to_pylist()
    judged = ClipFilter(FilterConfig(model=tiny["clip"], precision="fp32", thresholds=OFF, rank_by="text_image"))
    judged.start()
    kept = judged(rows_to_table(partial, SET)).to_pylist()
    predicted = {(r["set_id"], c["candidate"], c["member_id"]): c["text_image"] for r in stopped for c in r["candidates"]}
    for early, done, after in zip(partial, full, kept):
        for cand, final, verdict in zip(early["candidates"], done["candidates"], after["candidates"]):
            key = (early["set_id"], cand["candidate"], cand["member_id"])
            # A failing member stops, and so do the others of its candidate: the filter keeps whole
            # candidate sets (min_members 0: all), so that one can no longer be kept.
            fails = predicted[key] < bar
            sinks = any(predicted[(early["set_id"], cand["candidate"], m["member_id"])] < bar for m in early["members"])
            assert (cand["status"] == "rejected") == sinks
            if fails:
                assert "predicted text_image" in cand["reason"]
            elif sinks:
                assert f"candidate set {cand['candidate']} cannot be kept: 1 of its 2 members fail" in cand["reason"]
            if cand["status"] is None:  # finished in a smaller batch: the same image
                assert np.abs(pixels(cand["image_rgb"]) - pixels(final["image_rgb"])).max() <= 2
            else:  # the filter keeps the editor's verdict
                assert verdict["status"] == "rejected" and verdict["reason"] == cand["reason"]
    assert 0 < sum(c["status"] == "rejected" for r in partial for c in r["candidates"]) < len(members)


def test_a_base_image_that_misses_its_own_prompt_fails_its_whole_candidate_set(tiny, editor, taxonomy):
    # InstructPix2Pix keeps a pair only when both images match their captions. Members pass (checks off);
    # a base minimum no image reaches (cosine <= 1) fails every candidate, naming the base.
    edited = editor(generated_sets(taxonomy, ("chef",), candidates=2))
    thresholds = Thresholds(text_image=None, directional=None, image_image=None, attribute_margin=None,
                            base_text_image=1.01)
    judge = ClipFilter(FilterConfig(model=tiny["clip"], precision="fp32", thresholds=thresholds))
    judge.start()
    for row in judge(edited).to_pylist():
        assert row["set_status"] == "rejected"
        for cand in row["candidates"]:
            assert cand["failed_checks"] == ["base_text_image"]
            assert "base text_image" in cand["reason"] and "< 1.0100 (the base image does not match its prompt)" in cand["reason"]
    # with text_image's threshold standing in for it (base_text_image null), a minimum of -1 keeps them
    lenient = Thresholds(text_image=-1.0, directional=None, image_image=None, attribute_margin=None)
    judge = ClipFilter(FilterConfig(model=tiny["clip"], precision="fp32", thresholds=lenient))
    judge.start()
    assert all(r["set_status"] == "accepted" for r in judge(edited).to_pylist())
