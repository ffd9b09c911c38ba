"""The judge's scoring of recorded answers and the seed screen's verdicts, on answers written by hand (no model)."""

import numpy as np

from stages.models.drift import measure_drift
from stages.models.judge_checks import JudgeChecks, JudgeConfig, JudgeVocabulary, Question
from stages.models.vlm_judge import Answer
from stages.screen import CHILD, PERSON, SEVERAL, SeedScreen

VOCABULARY = JudgeVocabulary({"gender": {"male": "a man", "female": "a woman"},
                              "race": {"white": "a White person", "black": "a Black person", "asian": "an Asian person"}},
                             {"gender": "gender", "race": "race"}, {"chef": "a chef"})
MEMBER = {"member_id": "black-female", "attributes": [{"attribute": "race", "value": "black"},
                                                      {"attribute": "gender", "value": "female"}]}


def scores(answers: dict) -> tuple[dict, list[str]]:
    checks = JudgeChecks(JudgeConfig(), VOCABULARY, "cpu")
    asked = [(Question(0, "attribute", [], f"{a}={v}", a, v), Answer(p, 1.0 if p is not None else 0.01))
             for (a, v), p in answers.items()]
    return checks._scores(MEMBER, asked)


def test_the_attribute_score_is_the_worst_attributes_contrast():
    found, _ = scores({("race", "white"): 0.2, ("race", "black"): 0.9, ("race", "asian"): 0.6,
                       ("gender", "male"): 0.7, ("gender", "female"): 0.4})
    assert found["judge_attribute"] == 0.4 - 0.7  # race: 0.9 - 0.6 = 0.3; gender: -0.3, the worst


def test_an_abstention_on_another_value_leaves_it_out_but_the_clear_failure_stands():
    found, notes = scores({("race", "white"): 0.1, ("race", "black"): 0.8, ("race", "asian"): None,
                           ("gender", "male"): 0.98, ("gender", "female"): 0.02})
    assert found["judge_attribute"] == 0.02 - 0.98
    assert any("abstained" in n for n in notes)


def test_no_answer_for_the_own_value_gives_no_score_for_that_attribute():
    found, _ = scores({("race", "white"): 0.1, ("race", "black"): None, ("race", "asian"): 0.3,
                       ("gender", "male"): 0.2, ("gender", "female"): 0.7})
    assert found["judge_attribute"] == 0.7 - 0.2  # race could not be judged; gender could


def screen(people: str, **p_yes) -> str | None:
    stage = SeedScreen(JudgeConfig(), people)
    answers = {PERSON: Answer(p_yes.get("person", 0.9), 1.0), CHILD: Answer(p_yes.get("child", 0.1), 1.0),
               SEVERAL: Answer(p_yes.get("several", 0.1), 1.0)}
    return stage.verdict(answers)


def test_the_screen_stops_children_empty_and_crowded_seeds_and_edits_when_unsure_of_nothing():
    assert screen("any") is None
    assert screen("any", child=0.7).startswith("child (P(yes) 0.70")
    assert screen("any", child=None).startswith("child (the judge abstained")  # unsure of a child: not edited
    assert screen("any", person=0.2).startswith("no person")
    assert screen("any", several=0.9) is None  # several people are allowed with input.people: any
    assert screen("one", several=0.9).startswith("several people")


def test_a_grey_skin_region_is_not_compared_by_hue():
    grey = np.full((8, 8, 3), 128, np.uint8)
    tinted = grey.copy()
    tinted[..., 0] += 2  # two levels of red: a hue angle far from the grey one, a colour no one would see
    region = np.ones((8, 8), bool)
    values = measure_drift(grey, tinted, region, region, None)
    assert values["skin_hue_seed"] is not None and values["skin_hue"] is not None and values["delta_hue"] is None
    assert values["delta_l"] is not None  # lightness still compares
    skin = np.full((8, 8, 3), (200, 150, 120), np.uint8)
    darker = np.full((8, 8, 3), (180, 130, 100), np.uint8)
    assert measure_drift(skin, darker, region, region, None)["delta_hue"] is not None
