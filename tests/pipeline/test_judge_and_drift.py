"""The mini config with the VLM judge, the seed screen and drift on: what each check recorded, parity by value in
stats.json and the card. Tiny random models: the answers are noise, so the tests check what is recorded and
that the recorded numbers agree with one another, not what a real judge would say."""

import json

import pyarrow.parquet as pq
import pytest

from pipeline.config.loading import load_config
from pipeline.execution.local import run_local, run_stages
from pipeline.output.verify import verify_output
from pipeline.report.build import write_report
from pipeline.output.storage import Storage
from schemas.sample import member_errors
from tests.conftest import REPO
from tests.helpers import read_output_sets

JUDGED = {
    "filter.judge.enabled": True, "filter.judge.model": "tiny:qwen2.5-vl", "filter.judge.dtype": "float32",
    "filter.judge.min_answer_mass": 0.0,  # a random 987-token model puts ~1% on yes + no: answer anyway
    # its answers are near 0.5 whatever the image: thresholds that let sets through, as mini.yaml's CLIP ones do
    "filter.judge.thresholds": {"judge_attribute": -1.0, "judge_concept": 0.0, "judge_scene": 0.0},
    "filter.drift.enabled": True, "filter.drift.mask.model": "tiny:clipseg", "filter.drift.mask.threshold": 0.3,
    "filter.drift.max_delta_l": 1000.0, "filter.drift.max_delta_hue": 180.0,  # measure; reject nothing for colour
}


@pytest.fixture(scope="module")
def output(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("judged") / "out"
    # the random judge calls most seeds a child (P(yes) ~0.53): the screen has its own test below
    overrides = {"input.path": str(REPO / "configs" / "mini_seeds"), **JUDGED, "filter.judge.screen_seeds": False}
    result = run_local(load_config(REPO / "configs" / "mini.yaml", overrides), str(out))
    write_report(Storage(str(out)), pictures=True)
    return out, result


def manifest(out) -> list[dict]:
    return pq.read_table(out / "manifest").to_pylist()


def test_the_screen_stops_seeds_before_any_edit_and_says_why(tiny_cache):
    loaded = load_config(REPO / "configs" / "mini.yaml", {"input.path": str(REPO / "configs" / "mini_seeds"),
                                                           "input.people": "one", **JUDGED})
    result = run_stages(loaded, stop_before="sets")
    rows = result.table.to_pylist()
    counters = result.stages["screen"].counters
    assert counters["screened"] == 6  # the seven mini seeds less broken.jpg, which ingest already failed
    screened = [r for r in rows if (r["error"] or "").startswith("screen: ")]
    assert sum(v for k, v in counters.items() if k.startswith("screened_")) == len(screened)
    for row in screened:
        reason = row["error"].removeprefix("screen: ")
        p_yes = float(reason.split("P(yes) ")[1].split(" ")[0])
        if reason.startswith("child"):  # more likely yes than no
            assert p_yes > 0.5 and "edits of minors are never made" in reason
        elif reason.startswith("no person"):
            assert p_yes < 0.5
        else:
            assert reason.startswith("several people") and p_yes > 0.5 and "input.people is one" in reason


def test_the_output_verifies(output):
    out, _ = output
    assert verify_output(str(out))[0] == []
    assert {r["status"] for r in manifest(out)} >= {"accepted", "rejected", "error"}


def test_every_judged_candidate_records_its_questions_and_the_scores_follow_from_its_answers(output):
    out, _ = output
    judged = [r for r in manifest(out) if r["judge_answers"]]
    assert judged and all(r["judge_model"].endswith("qwen2.5-vl") for r in judged)
    for row in judged:
        answers = json.loads(row["judge_answers"])
        own = json.loads(row["attributes"])
        # judge_attribute by hand: per attribute, P(yes) to the own value's question minus the best other's
        margins = []
        for attribute, value in own.items():
            asked = [a for a in answers if a["check"] == "attribute"]
            mine = [a["p_yes"] for a in asked if a["question"] == question_for(value, attribute)]
            others = [a["p_yes"] for a in asked if a["question"] in other_questions(value, attribute, row)]
            margins.append(mine[0] - max(others))
        assert row["judge_attribute"] == pytest.approx(min(margins), abs=1e-6)
        concept = [a for a in answers if a["check"] == "concept"]
        assert len(concept) == 1 and row["judge_concept"] == pytest.approx(concept[0]["p_yes"], abs=1e-6)
        scene = [a for a in answers if a["check"] == "scene"]  # Qwen2.5-VL takes two images in one prompt
        assert len(scene) == 1 and "Apart from the person's" in scene[0]["question"]
        assert all(0.0 <= a["p_yes"] <= 1.0 and 0.0 <= a["mass"] <= 1.0 for a in answers)
    # only the candidates that passed the CLIP checks are judged
    assert all(not (r["reason"] or "").startswith("failed: ") or "judge_" in r["reason"] or r["judge_answers"] is None
               for r in manifest(out))


PHRASES = {("gender", "male"): "a man", ("gender", "female"): "a woman", ("race", "white"): "a White person",
           ("race", "black"): "a Black person", ("race", "asian"): "an Asian person"}


def question_for(value: str, attribute: str) -> str:
    return f"Is the person in this image {PHRASES[(attribute, value)]}?"


def other_questions(value: str, attribute: str, row: dict) -> set[str]:
    return {question_for(v, a) for (a, v) in PHRASES if a == attribute and v != value}


def test_drift_is_measured_for_every_edited_candidate(output):
    out, result = output
    edited = [r for r in manifest(out) if r["set_status"] != "error" and r["status"] != "error"]
    assert edited and result.stages["filter"].counters["drift_measured"] == len(edited)
    assert sum(r["delta_l"] is not None for r in edited) > len(edited) / 2  # the tiny CLIPSeg finds a "face"
    assert sum(r["outside_mad"] is not None for r in edited) > len(edited) / 2
    for row in edited:
        if row["skin_l"] is not None:
            assert row["delta_l"] == pytest.approx(row["skin_l"] - row["skin_l_seed"], abs=1e-3)
            assert -180.0 < row["delta_hue"] <= 180.0
        assert row["outside_mad"] is None or 0.0 <= row["outside_mad"] <= 255.0


def test_samples_carry_the_judge_and_drift_scores(output):
    out, _ = output
    found = read_output_sets(out)
    assert found
    for sample in found.values():
        for member in sample["members"].values():
            meta = member["meta"]
            assert member_errors(meta) == []
            assert meta["judge_answers"] and meta["scores"]["judge_concept"] is not None
            assert "delta_l" in meta["scores"] and "outside_ssim" in meta["scores"]
        assert sample["meta"]["models"]["judge"].endswith("qwen2.5-vl")


def test_parity_by_value_in_stats_and_the_card_counted_from_the_manifest(output):
    out, _ = output
    stats = json.loads((out / "stats.json").read_text())
    # by hand: a member (set, member) of an edited set is judged once and accepted when one of its candidates
    # was; identity members (asked to change nothing) and editor errors are not the filter's verdicts
    rows = [r for r in manifest(out) if r["set_status"] != "error" and r["status"] != "error"
            and not r["identity_member"]]
    members: dict = {}
    for r in rows:
        key = (r["set_id"], r["member_id"])
        members[key] = members.get(key, False) or r["status"] == "accepted"
    gender = {}
    for (set_id, member_id), accepted in members.items():
        if set_id.endswith("-gender"):
            judged, kept = gender.get(member_id, (0, 0))
            gender[member_id] = (judged + 1, kept + accepted)
    parity = stats["parity"]["all/gender"]["gender"]
    for value, (judged, kept) in gender.items():
        assert (parity[value]["members"], parity[value]["accepted"]) == (judged, kept)
    best = max(kept / judged for judged, kept in gender.values())
    for value, (judged, kept) in gender.items():  # at least 10 judged to be flagged
        assert parity[value]["flagged"] == (best > 0 and kept / judged < 0.8 * best and judged >= 10)
        assert parity[value]["too_few"] == (judged < 10)
    card = (out / "README.md").read_text()
    assert "## Parity by attribute value" in card and "| gender | gender | male |" in card
    assert (out / "plots" / "acceptance_per_value.png").stat().st_size > 0


def test_runs_summary_line_names_the_values_under_four_fifths():
    from pipeline.commands.cli import _parity_line

    stats = {"parity_flagged": [
        {"scope": "all/race", "attribute": "race", "value": "black", "acceptance": 0.3, "ratio_to_best": 0.5, "members": 10},
        {"scope": "chef/race", "attribute": "race", "value": "asian", "acceptance": 0.2, "ratio_to_best": 0.4, "members": 5}]}
    assert _parity_line(stats) == ("1 value(s) under four fifths of the best acceptance: black on race (0.50) "
                                   "(see README.md)")
    assert _parity_line({"parity_flagged": []}).startswith("no attribute value")


def test_hugging_face_datasets_reads_the_judged_samples_with_their_answers(output, tmp_path):
    """The judge's fields read with a consumer's own reader, which infers one schema from the samples."""
    import datasets

    out, _ = output
    accepted = {r["sample_key"]: json.loads(r["judge_answers"]) for r in manifest(out) if r["status"] == "accepted"}
    assert accepted
    ds = datasets.load_dataset("webdataset", data_files={"train": [str(p) for p in sorted((out / "shards").glob("*.tar"))]},
                               split="train", cache_dir=str(tmp_path / "hf"))
    found = {row["__key__"]: row["json"] for row in ds}
    assert set(found) == set(accepted)
    for key, meta in found.items():
        assert [(a["check"], a["question"]) for a in meta["judge_answers"]] == [(a["check"], a["question"])
                                                                               for a in accepted[key]]
        assert meta["scores"]["judge_concept"] == pytest.approx(
            next(a["p_yes"] for a in accepted[key] if a["check"] == "concept"), abs=1e-6)
