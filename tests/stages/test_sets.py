from schemas import keys
from schemas.records import SEED, SET, rows_to_table
from stages.sets.stage import PlanConfig, SetPlanner
from tests.helpers import error_seed_row, seed_row, noise_image


def plan(taxonomy, rows, **config):
    planner = SetPlanner(PlanConfig(**config), taxonomy, run_seed=7)
    planner.start()
    table = planner(rows_to_table(rows, SEED))
    assert table.schema == SET
    return table.to_pylist()


def test_each_seed_and_axis_becomes_one_set_with_all_members(taxonomy):
    sets = plan(taxonomy, [seed_row(noise_image(), 0, caption="a man cooking in a kitchen")], axes=["gender", "race_gender"])
    assert [s["set_id"] for s in sets] == ["seed0-gender", "seed0-race_gender"]
    gender, race_gender = sets
    assert [m["member_id"] for m in gender["members"]] == ["male", "female"]
    assert len(race_gender["members"]) == 12
    assert race_gender["members"][0]["member_id"] == "white-male"
    female = gender["members"][1]
    assert female["target_caption"] == "a woman cooking in a kitchen"
    assert female["instruction"] == "turn the person into a woman"
    assert female["attributes"] == [{"attribute": "gender", "value": "female"}]


def test_concept_comes_from_source_then_caption_then_default(taxonomy):
    rows = [
        seed_row(noise_image(), 0, caption="a man cooking in a kitchen", concept="authority"),
        seed_row(noise_image(), 1, caption="a man cooking in a kitchen"),
        seed_row(noise_image(), 2, caption="a man on a bench"),
        seed_row(noise_image(), 3, caption="a man on a bench", concept="not_a_concept"),
    ]
    sets = plan(taxonomy, rows, axes=["gender"], default_concept="career")
    assert [(s["concept"], s["concept_source"]) for s in sets] == [
        ("authority", "source"), ("chef", "caption"), ("career", "default"), ("career", "default"),
    ]


def test_candidate_noise_seeds_come_from_the_set_key(taxonomy):
    (s,) = plan(taxonomy, [seed_row(noise_image(), 5)], axes=["gender"], candidates_per_set=3)
    assert s["candidate_seeds"] == [keys.noise_seed(7, "seed5-gender", c) for c in range(3)]
    (again,) = plan(taxonomy, [seed_row(noise_image(), 9, seed_id="seed5")], axes=["gender"], candidates_per_set=3)
    assert again["candidate_seeds"] == s["candidate_seeds"]  # batch position and seed index do not matter


def test_errored_seed_still_gets_its_sets_marked_error(taxonomy):
    sets = plan(taxonomy, [error_seed_row(0)], axes=["gender", "race"])
    assert [s["set_status"] for s in sets] == ["error", "error"]
    assert all(s["set_reason"] == "ingest: empty file" for s in sets)
    assert len(sets[1]["members"]) == 6 and sets[1]["members"][0]["target_caption"] is None


def test_a_caption_without_a_person_noun_gets_the_fallback_phrasing_and_says_so(taxonomy):
    rows = [seed_row(noise_image(0), 0, caption="a sunny kitchen with copper pots"),
            seed_row(noise_image(1), 1, caption="a man slicing vegetables")]
    rows[1]["caption_note"] = "first sentence kept"
    fallback, named = plan(taxonomy, rows, axes=["gender"])
    assert fallback["caption_note"].startswith("fallback phrasing: no person noun or attribute word")
    assert [m["target_caption"] for m in fallback["members"]] == [
        "a sunny kitchen with copper pots, a man", "a sunny kitchen with copper pots, a woman"]
    assert named["caption_note"] == "first sentence kept"  # the caption checks' note is kept; no fallback
    assert [m["target_caption"] for m in named["members"]] == ["a man slicing vegetables", "a woman slicing vegetables"]
