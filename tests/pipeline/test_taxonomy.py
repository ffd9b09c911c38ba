import copy

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.taxonomy import parse_taxonomy, restrict_values
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
