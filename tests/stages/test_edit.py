import numpy as np
import pytest

from schemas.records import SEED, SET, rows_to_table
from stages.edit.config import EditConfig
from stages.edit.instruct_pix2pix import InstructPix2PixEditor
from stages.sets.stage import PlanConfig, SetPlanner
from tests.helpers import error_seed_row, injected_faults, seed_row, noise_image


def make_editor(tiny, **overrides) -> InstructPix2PixEditor:
    settings = dict(model=tiny["instruct-pix2pix"], steps=2, resolution=32, dtype="float32", max_batch=8)
    editor = InstructPix2PixEditor(EditConfig(**{**settings, **overrides}))
    editor.start()
    return editor


@pytest.fixture(scope="module")
def editor(tiny):
    return make_editor(tiny)


def planned(taxonomy, rows, candidates=2):
    return SetPlanner(PlanConfig(axes=["gender", "race"], candidates_per_set=candidates), taxonomy, run_seed=3)(
        rows_to_table(rows, SEED)
    )


def test_every_member_and_candidate_gets_an_image_of_the_configured_size(editor, taxonomy):
    out = editor(planned(taxonomy, [seed_row(noise_image(0, 80))]))
    assert out.schema == SET
    gender, race = out.to_pylist()
    assert len(gender["candidates"]) == 2 * 2 and len(race["candidates"]) == 6 * 2
    for cand in race["candidates"]:
        assert (cand["width"], cand["height"]) == (32, 32) and len(cand["image_rgb"]) == 32 * 32 * 3
        assert cand["error"] is None
    assert {(c["member_id"], c["candidate"]) for c in race["candidates"]} == {
        (m, c) for m in ("white", "black", "indian", "asian", "middle_eastern", "latino") for c in (0, 1)
    }


def test_pixels_depend_on_the_set_not_on_which_sets_share_a_batch(editor, taxonomy):
    a, b = seed_row(noise_image(1), 0, seed_id="aaa"), seed_row(noise_image(2), 1, seed_id="bbb")
    together = editor(planned(taxonomy, [a, b])).to_pylist()
    alone = editor(planned(taxonomy, [b])).to_pylist()
    for left, right in zip(together[2:], alone):
        assert left["set_id"] == right["set_id"]
        assert [c["image_rgb"] for c in left["candidates"]] == [c["image_rgb"] for c in right["candidates"]]


def test_candidates_differ_and_members_of_a_candidate_share_noise(editor, taxonomy):
    (gender, _) = editor(planned(taxonomy, [seed_row(noise_image(4))])).to_pylist()
    by_key = {(c["member_id"], c["candidate"]): np.frombuffer(c["image_rgb"], np.uint8).astype(int) for c in gender["candidates"]}
    same_noise = np.abs(by_key[("male", 0)] - by_key[("female", 0)]).mean()
    other_noise = np.abs(by_key[("male", 0)] - by_key[("male", 1)]).mean()
    assert other_noise > 0
    assert same_noise < other_noise  # shared initial noise: members of a candidate stay close
    assert {c["noise_seed"] for c in gender["candidates"] if c["candidate"] == 0} == {gender["candidate_seeds"][0]}


def test_errored_sets_pass_through_untouched(editor, taxonomy):
    out = editor(planned(taxonomy, [error_seed_row(0)])).to_pylist()
    assert all(s["candidates"] is None and s["set_status"] == "error" for s in out)


def test_out_of_memory_splits_the_chunk_and_still_renders_every_candidate(tiny, taxonomy):
    editor = make_editor(tiny)
    with injected_faults("oom:edit:2"):
        (gender, race) = editor(planned(taxonomy, [seed_row(noise_image(5))])).to_pylist()
    assert editor.counters["oom_splits"] > 0
    assert all(c["error"] is None and c["image_rgb"] for c in gender["candidates"] + race["candidates"])


def test_a_failing_set_becomes_an_error_set_and_the_batch_goes_on(editor, taxonomy):
    with injected_faults("edit:1"):
        first, _, second, _ = editor(planned(taxonomy, [seed_row(noise_image(1), 0, seed_id="a"),
                                                         seed_row(noise_image(2), 1, seed_id="b")])).to_pylist()
    assert first["candidates"] and first["set_status"] is None
    assert second["set_status"] == "error" and "injected fault in edit" in second["set_reason"]


def test_oom_on_a_single_image_is_an_error_on_those_candidates(tiny, taxonomy):
    editor = make_editor(tiny, steps=1, max_batch=16)
    with injected_faults("oom:edit:0"):
        (gender, _) = editor(planned(taxonomy, [seed_row(noise_image(5))])).to_pylist()
    assert all(c["status"] == "error" and "OutOfMemoryError" in c["reason"] for c in gender["candidates"])
