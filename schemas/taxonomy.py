"""The social taxonomy as typed records: what the planner needs to phrase a set's members.

Loaded and validated from ``configs/taxonomy.yaml`` by ``pipeline.taxonomy``; passed to stages as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AttributeValue:
    id: str
    label: str
    adjective: str
    forms: dict[str, str]  # grammatical role -> caption word (noun: woman, subject: she, ...)
    noun: str | None = None


@dataclass(frozen=True)
class Attribute:
    id: str
    label: str
    values: dict[str, AttributeValue]


@dataclass(frozen=True)
class Axis:
    id: str
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class Concept:
    id: str
    group: str
    words: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Taxonomy:
    attributes: dict[str, Attribute]
    axes: dict[str, Axis]
    concepts: dict[str, Concept]
    person_nouns: tuple[str, ...]
    instruction_template: str
    occupations: tuple[str, ...] = field(default_factory=tuple)

    def axis_value_combinations(self, axis_id: str) -> list[tuple[AttributeValue, ...]]:
        """Every member of an axis: the product of its attributes' values, in attribute order."""
        combos: list[tuple[AttributeValue, ...]] = [()]
        for attribute_id in self.axes[axis_id].attributes:
            values = list(self.attributes[attribute_id].values.values())
            combos = [combo + (value,) for combo in combos for value in values]
        return combos
