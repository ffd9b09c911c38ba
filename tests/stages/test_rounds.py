"""first_pass over-generation (plan.candidates.stop first_pass, stages/edit/rounds.py): candidates rendered in
rounds until a member's first pass, judged in the editor by the filter's own checks."""

import pytest

from schemas.records import SEED, STATUS_ACCEPTED, rows_to_table
from stages.edit.config import EarlyRejectionConfig, EditConfig
from stages.edit.instruct_pix2pix import InstructPix2PixEditor
from stages.edit.text_to_image import TextToImageEditor
from stages.filter import ClipFilter, FilterConfig
from stages.ingest.config import IngestConfig
from stages.ingest.decode import DecodeSeeds
from stages.ingest.listing import list_seeds
from stages.models.clip_checks import Thresholds
from stages.sets.stage import CandidatesConfig, PlanConfig, SetPlanner
from tests.helpers import noise_image, seed_row

FIRST_PASS = CandidatesConfig(max=4, stop="first_pass")
# The tiny random CLIP's scores on these seeds: about half the candidates pass (mini.yaml's thresholds).
SOME_PASS = Thresholds(text_image=-1.0, directional=-0.2, image_image=0.5, attribute_margin=-0.3)
ALL_PASS = Thresholds(text_image=None, directional=None, image_image=None, attribute_margin=None)
NONE_PASS = Thresholds(text_image=None, directional=None, image_image=1.01, attribute_margin=None)  # cosine <= 1


def filter_config(tiny, thresholds, **extra) -> FilterConfig:
    return FilterConfig(model=tiny["clip"], pretrained=None, precision="fp32", thresholds=thresholds, **extra)


def photo_editor(tiny, thresholds, candidates=FIRST_PASS, **extra) -> InstructPix2PixEditor:
    edit = EditConfig(model=tiny["instruct-pix2pix"], steps=1, resolution=32, dtype="float32", max_batch=8)
    editor = InstructPix2PixEditor(edit, filter_config(tiny, thresholds, **extra), candidates)
    editor.start()
    return editor


def photo_sets(taxonomy, seeds: list[int]):
    rows = [seed_row(noise_image(s), i, seed_id=f"seed{s}") for i, s in enumerate(seeds)]
    plan = PlanConfig(axes=["gender", "race"], candidates=FIRST_PASS)
    return SetPlanner(plan, taxonomy, run_seed=3)(rows_to_table(rows, SEED))


def rendered(row) -> list[tuple[str, int]]:
    return [(c["member_id"], c["candidate"]) for c in row["candidates"]]


@pytest.fixture(scope="module")
def some_pass(tiny):
    return photo_editor(tiny, SOME_PASS)


def test_a_set_alone_and_inside_a_larger_batch_gives_the_same_bytes(some_pass, taxonomy):
    some_pass.counters.clear()
    together = some_pass(photo_sets(taxonomy, [11, 12])).to_pylist()
    counted = dict(some_pass.counters)
    alone = some_pass(photo_sets(taxonomy, [12])).to_pylist()
    assert [r["set_id"] for r in together[2:4]] == [r["set_id"] for r in alone] == ["seed12-gender", "seed12-race"]
    for left, right in zip(together[2:4], alone):
        assert rendered(left) == rendered(right)
        assert [c["image_rgb"] for c in left["candidates"]] == [c["image_rgb"] for c in right["candidates"]]
    # the rounds did stop some members early and go on with others, or the test would show nothing
    members = sum(len(r["members"]) for r in together)
    assert members < sum(len(r["candidates"]) for r in together) < 4 * members
    # the four sets' rounds were packed together: fewer calls than set-rounds, each padded to the batch limit
    assert counted["round_calls"] < counted["rounds"]
    assert counted["round_images"] + counted["padded_rows"] == 8 * counted["round_calls"]


def test_each_member_stops_at_its_first_passing_candidate_and_the_filter_accepts_that_one(tiny, some_pass, taxonomy):
    sets = some_pass(photo_sets(taxonomy, [21, 22]))
    judged = ClipFilter(filter_config(tiny, SOME_PASS))(sets).to_pylist()
    stopped_short = 0
    for row in judged:
        own = {m["member_id"]: [c for c in row["candidates"] if c["member_id"] == m["member_id"]]
               for m in row["members"]}
        ran_out = any(len(c) == 4 and all(x["failed_checks"] for x in c) for c in own.values())
        for cands in own.values():
            # candidates 0, 1, ... in order, and only the last may pass: a member stops at its first pass
            assert [c["candidate"] for c in cands] == list(range(len(cands)))
            assert all(c["failed_checks"] for c in cands[:-1])
            if not cands[-1]["failed_checks"] and row["set_status"] == STATUS_ACCEPTED:
                assert cands[-1]["status"] == STATUS_ACCEPTED
            if len(cands) < 4 and cands[-1]["failed_checks"]:
                # stopped without a pass: another member failed all four, so the set could no longer be kept
                assert ran_out and row["set_status"] == "rejected"
                stopped_short += 1
    assert stopped_short > 0  # the seeds do show members stopped early because their set was lost


def test_all_passing_renders_only_the_first_candidate(tiny, taxonomy):
    gender, race = photo_editor(tiny, ALL_PASS)(photo_sets(taxonomy, [31])).to_pylist()
    assert rendered(gender) == [("male", 0), ("female", 0)]
    assert len(race["candidates"]) == 6 and {c["candidate"] for c in race["candidates"]} == {0}


def test_none_passing_stops_each_set_when_its_first_member_is_out_of_candidates(tiny, taxonomy):
    """Every member must pass (min_members 0): after round 0 a set renders one member at a time, and the first to
    fail all four ends it. Worked by hand for a gender set (2 members) and a race set (6) sharing calls of 8:
    round 0 is one full call (2 + 6); round 1 asks for male 1 and white 1, and its 6 free slots take, a set in turn,
    male 2, white 2, male 3, white 3, female 1, black 1; rounds 2 and 3 are served from those, with no call."""
    editor = photo_editor(tiny, NONE_PASS)
    gender, race = editor(photo_sets(taxonomy, [31])).to_pylist()
    assert [m["member_id"] for m in race["members"]][:2] == ["white", "black"]
    assert rendered(gender) == [("male", 0), ("female", 0), ("male", 1), ("male", 2), ("male", 3)]
    assert rendered(race) == [(m["member_id"], 0) for m in race["members"]] + [("white", c) for c in (1, 2, 3)]
    counted = editor.counters
    assert (counted["round_calls"], counted["images_rendered"], counted["padded_rows"]) == (2, 14, 0)
    assert (counted["lookahead_rows"], counted["lookahead_used"], counted["lookahead_unused"]) == (6, 4, 2)
    # best_of would have rendered 8 members x 4 = 32 images in 4 calls


def test_a_set_stops_at_the_round_where_min_members_have_passed(tiny, taxonomy):
    config = filter_config(tiny, SOME_PASS, min_members=1)
    editor = photo_editor(tiny, SOME_PASS, min_members=1)
    judged = ClipFilter(config)(editor(photo_sets(taxonomy, [51, 52]))).to_pylist()
    left_waiting = 0
    for row in judged:
        passing = sorted(c["candidate"] for c in row["candidates"] if c["failed_checks"] == [])
        last = max(c["candidate"] for c in row["candidates"])
        # one passing member is enough: the set ends with the first round that has one (or after all four)
        assert last == (passing[0] if passing else 3)
        assert row["set_status"] == (STATUS_ACCEPTED if passing else "rejected")
        final = [c for c in row["candidates"] if c["candidate"] == last]
        left_waiting += sum(c["failed_checks"] != [] for c in final) if last < 3 else 0
    assert left_waiting > 0  # members that had not passed got no further candidate


def generated_sets(taxonomy, concepts: tuple[str, ...]):
    ingest = IngestConfig(kind="generate", prompts=["a photo of {a_concept}"])
    seeds = DecodeSeeds(ingest)(list_seeds(ingest, 4, concepts=[taxonomy.concepts[c] for c in concepts]))
    plan = PlanConfig(axes=["gender", "race"], candidates=CandidatesConfig(max=3, stop="first_pass"))
    return SetPlanner(plan, taxonomy, run_seed=5)(seeds)


def generate_editor(tiny, thresholds, early: bool = False) -> TextToImageEditor:
    edit = EditConfig(backend="text_to_image", model=tiny["stable-diffusion"], steps=2, resolution=32,
                      dtype="float32", max_batch=8, guidance_scale=7.5,
                      early_rejection=EarlyRejectionConfig(enabled=early, margin=0.0))
    editor = TextToImageEditor(edit, filter_config(tiny, thresholds), CandidatesConfig(max=3, stop="first_pass"))
    editor.start()
    return editor


def test_generate_mode_stops_at_the_first_candidate_set_that_passes(tiny, taxonomy):
    gender, race = generate_editor(tiny, ALL_PASS)(generated_sets(taxonomy, ("chef",))).to_pylist()
    assert rendered(gender) == [("male", 0), ("female", 0)]
    assert gender["candidate_bases"][0] is not None and gender["candidate_bases"][1:] == [None, None]
    assert gender["image_rgb"] == gender["candidate_bases"][0]
    gender, _ = generate_editor(tiny, NONE_PASS)(generated_sets(taxonomy, ("chef",))).to_pylist()
    assert rendered(gender) == [(m, c) for c in range(3) for m in ("male", "female")]


def test_generate_mode_with_early_rejection_inside_rounds_does_not_depend_on_the_batch(tiny, taxonomy):
    editor = generate_editor(tiny, Thresholds(text_image=-0.05, directional=-0.5, image_image=0.5,
                                              attribute_margin=-0.3), early=True)
    together = editor(generated_sets(taxonomy, ("chef", "science"))).to_pylist()
    alone = editor(generated_sets(taxonomy, ("science",))).to_pylist()
    assert [r["set_id"] for r in together[2:]] == [r["set_id"] for r in alone]
    for left, right in zip(together[2:], alone):
        assert rendered(left) == rendered(right)
        assert [c["image_rgb"] for c in left["candidates"]] == [c["image_rgb"] for c in right["candidates"]]
        assert left["candidate_bases"] == right["candidate_bases"]
    reasons = [c["reason"] or "" for r in together for c in r["candidates"]]
    assert any(reason.startswith("early rejection") for reason in reasons)
