import copy

import pytest
import yaml

from pipeline.config.errors import ConfigError
from pipeline.config.taxonomy import parse_taxonomy, restrict_values
from tests.conftest import REPO


def test_shipped_taxonomy_has_the_published_attributes_axes_and_concepts(taxonomy):
    values = {a: set(attr.values) for a, attr in taxonomy.attributes.items()}
    assert values["gender"] == {"male", "female"}
    assert values["race"] == {"white", "black", "indian", "asian", "middle_eastern", "latino"}
    assert values["age"] == {"young", "middle_aged", "old"}
    assert values["physical"] == {"skinny", "obese", "tattooed", "young", "old"}
    assert len(taxonomy.axis_value_combinations("race_gender")) == 12
    assert len(taxonomy.axis_value_combinations("physical_gender")) == 10
    assert len(taxonomy.axis_value_combinations("physical_race")) == 30
    groups = {}
    for concept in taxonomy.concepts.values():
        groups.setdefault(concept.group, set()).add(concept.id)
    assert len(taxonomy.concepts) == 18
    assert groups["personality"] == {"compassionate", "belligerent", "authority", "pleasant", "unpleasant"}
    assert len(groups["responsibility"]) == 6 and len(groups["education"]) == 7
    assert len(taxonomy.occupations) >= 20
    for attribute in taxonomy.attributes.values():
        for value in attribute.values.values():
            assert value.adjective and value.forms


def _raw():
    return yaml.safe_load((REPO / "configs" / "taxonomy.yaml").read_text())


def test_axis_naming_an_unknown_attribute_fails_with_the_field():
    data = _raw()
    data["axes"]["bad"] = {"attributes": ["race", "religion"]}
    with pytest.raises(ConfigError) as err:
        parse_taxonomy(data, "tax.yaml")
    assert "axes.bad.attributes" in str(err.value) and "religion" in str(err.value)


def test_value_ids_must_be_key_safe():
    data = _raw()
    data["attributes"]["race"]["values"]["Middle.Eastern"] = copy.deepcopy(data["attributes"]["race"]["values"]["white"])
    with pytest.raises(ConfigError, match="must match"):
        parse_taxonomy(data, "tax.yaml")


def test_restrict_values_keeps_only_listed_values(taxonomy):
    small = restrict_values(taxonomy, {"race": ["white", "asian"]})
    assert len(small.axis_value_combinations("race_gender")) == 4
    assert len(taxonomy.axis_value_combinations("race_gender")) == 12


def test_every_concept_gets_llava_turns_that_never_name_an_attribute(taxonomy):
    for concept_id, concept in taxonomy.concepts.items():
        turns = taxonomy.conversation(concept_id)
        assert [t["from"] for t in turns][:2] == ["human", "gpt"] and turns[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in turns) == 1  # one image per conversation
        assert any(concept.words in t["value"] for t in turns)
        assert all(taxonomy.attribute_words_in(t["value"]) == [] for t in turns), concept_id
    assert taxonomy.conversation("chef")[1]["value"] == "The image shows a chef."  # concept, then group
    assert taxonomy.conversation("science")[1]["value"] == "The person is a scientist in a laboratory."


def test_a_conversation_that_names_an_attribute_is_refused_at_load():
    data = _raw()
    data["conversations"]["chef"] = [{"question": "Who cooks?", "answer": "A {concept}, usually a woman."}]
    with pytest.raises(ConfigError) as err:
        parse_taxonomy(data, "tax.yaml")
    assert err.value.field == "conversations.chef" and "names attribute word(s) woman" in str(err.value)


@pytest.mark.parametrize("turn, field, words", [
    ({"question": "Is this {occupation}?", "answer": "Yes."}, "conversations.chef[0].question", "unknown placeholder {occupation}"),
    ({"question": "Who?"}, "conversations.chef[0].answer", "is required"),
])
def test_conversation_templates_are_checked_field_by_field(turn, field, words):
    data = _raw()
    data["conversations"]["chef"] = [turn]
    with pytest.raises(ConfigError) as err:
        parse_taxonomy(data, "tax.yaml")
    assert err.value.field == field and words in str(err.value)
