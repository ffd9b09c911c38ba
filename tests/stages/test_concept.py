from schemas.records import SEED, rows_to_table
from stages.concept import ConceptConfig, ZeroShotConcept
from stages.sets.stage import PlanConfig, SetPlanner
from tests.helpers import error_seed_row, noise_image, seed_row


def test_unlabelled_seeds_get_a_zero_shot_concept_and_labelled_ones_keep_theirs(tiny, taxonomy):
    concepts = [taxonomy.concepts[c] for c in ("chef", "science", "arts")]
    stage = ZeroShotConcept(ConceptConfig(model=tiny["clip"], precision="fp32"), concepts)
    stage.start()
    rows = [
        seed_row(noise_image(1), 0, caption="a man"),
        dict(seed_row(noise_image(2), 1, caption="a man"), concept="chef", concept_source="source"),
        dict(seed_row(noise_image(3), 2, caption="a man"), concept="not_allowed"),
        error_seed_row(3),
    ]
    out = stage(rows_to_table(rows, SEED))
    assert out.schema == SEED
    labelled = out.to_pylist()
    assert labelled[0]["concept"] in {"chef", "science", "arts"} and labelled[0]["concept_source"] == "zero_shot"
    assert (labelled[1]["concept"], labelled[1]["concept_source"]) == ("chef", "source")
    assert labelled[2]["concept_source"] == "zero_shot"
    assert labelled[3]["concept"] is None
    sets = SetPlanner(PlanConfig(axes=["gender"]), taxonomy, 0)(out).to_pylist()
    assert [s["concept_source"] for s in sets[:3]] == ["zero_shot", "source", "zero_shot"]


def test_below_min_probability_the_seed_stays_unlabelled(tiny, taxonomy):
    concepts = [taxonomy.concepts[c] for c in ("chef", "science")]
    stage = ZeroShotConcept(ConceptConfig(model=tiny["clip"], precision="fp32", min_probability=1.0), concepts)
    (row,) = stage(rows_to_table([seed_row(noise_image(1), 0)], SEED)).to_pylist()
    assert row["concept"] is None and row["concept_source"] is None
