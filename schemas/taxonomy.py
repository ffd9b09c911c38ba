"""The social taxonomy as typed records: what the planner needs to phrase a set's members.

Loaded and validated from ``configs/taxonomy.yaml`` by ``pipeline.config.taxonomy``; passed to stages as data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from schemas.articles import with_article


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
    # concept id, group or "default" -> ((question, answer), ...) with {concept} / {a_concept} placeholders
    conversations: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def conversation(self, concept_id: str | None) -> list[dict[str, str]]:
        """The LLaVA-format turns for a concept: [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]."""
        concept = self.concepts.get(concept_id) if concept_id else None
        pairs = ()
        for key in ((concept.id, concept.group) if concept else ()) + ("default",):
            if key in self.conversations:
                pairs = self.conversations[key]
                break
        words = concept.words if concept else "person"
        fill = {"concept": words, "a_concept": with_article(words)}
        turns = []
        for i, (question, answer) in enumerate(pairs):
            turns.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + question.format(**fill)})
            turns.append({"from": "gpt", "value": answer.format(**fill)})
        return turns

    def attribute_words(self) -> set[str]:
        """Every word or phrase naming an attribute value (labels, adjectives, nouns, caption forms), lower case."""
        return {
            text.lower().strip()
            for attribute in self.attributes.values()
            for value in attribute.values.values()
            for text in (value.label, value.adjective, value.noun or "", *value.forms.values())
            if text.strip()
        }

    def attribute_words_in(self, text: str) -> list[str]:
        """The attribute words or phrases ``text`` contains as whole words ("middle school" has none)."""
        lowered = text.lower()
        return sorted(w for w in self.attribute_words() if re.search(rf"(?<![a-z0-9-]){re.escape(w)}(?![a-z0-9-])", lowered))

    def axis_value_combinations(self, axis_id: str) -> list[tuple[AttributeValue, ...]]:
        """Every member of an axis: the product of its attributes' values, in attribute order."""
        combos: list[tuple[AttributeValue, ...]] = [()]
        for attribute_id in self.axes[axis_id].attributes:
            values = list(self.attributes[attribute_id].values.values())
            combos = [combo + (value,) for combo in combos for value in values]
        return combos
