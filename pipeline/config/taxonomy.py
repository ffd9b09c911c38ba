"""Load and validate the taxonomy YAML into :class:`schemas.taxonomy.Taxonomy`."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.taxonomy import Attribute, AttributeValue, Axis, Concept, Taxonomy
from pipeline.config.errors import ConfigError, read_yaml_mapping

_ID = re.compile(r"\A[a-z0-9_]+\Z")
_TOP_KEYS = {"schema_version", "attributes", "axes", "person_nouns", "instruction_template", "concepts", "occupations",
             "conversations"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CONVERSATION_FIELDS = {"concept", "a_concept"}


def _require_mapping(value, where: str, source: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(source, where, f"expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(data: dict, allowed: set[str], required: set[str], where: str, source: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(source, f"{where}.{key}".lstrip("."), f"unknown key; allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in data:
            raise ConfigError(source, f"{where}.{key}".lstrip("."), "is required")


def _check_id(value: str, where: str, source: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigError(source, where, f"id {value!r} must match [a-z0-9_]+")
    return value


def parse_taxonomy(data: dict, source: str = "<taxonomy>") -> Taxonomy:
    _require_mapping(data, "", source)
    _check_keys(data, _TOP_KEYS, {"attributes", "axes", "concepts", "person_nouns", "instruction_template"}, "", source)

    attributes: dict[str, Attribute] = {}
    for attr_id, attr in _require_mapping(data["attributes"], "attributes", source).items():
        where = f"attributes.{attr_id}"
        _check_id(attr_id, where, source)
        _require_mapping(attr, where, source)
        _check_keys(attr, {"label", "values"}, {"values"}, where, source)
        values: dict[str, AttributeValue] = {}
        for value_id, value in _require_mapping(attr["values"], f"{where}.values", source).items():
            vwhere = f"{where}.values.{value_id}"
            _check_id(value_id, vwhere, source)
            _require_mapping(value, vwhere, source)
            _check_keys(value, {"label", "adjective", "noun", "forms"}, {"adjective", "forms"}, vwhere, source)
            forms = _require_mapping(value["forms"], f"{vwhere}.forms", source)
            if not forms or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in forms.items()):
                raise ConfigError(source, f"{vwhere}.forms", "must map role names to non-empty words")
            values[value_id] = AttributeValue(
                id=value_id,
                label=str(value.get("label", value_id)),
                adjective=str(value["adjective"]),
                forms={k: v.lower() for k, v in forms.items()},
                noun=value.get("noun"),
            )
        if len(values) < 2:
            raise ConfigError(source, f"{where}.values", "an attribute needs at least two values")
        attributes[attr_id] = Attribute(id=attr_id, label=str(attr.get("label", attr_id)), values=values)

    axes: dict[str, Axis] = {}
    for axis_id, axis in _require_mapping(data["axes"], "axes", source).items():
        where = f"axes.{axis_id}"
        _check_id(axis_id, where, source)
        _require_mapping(axis, where, source)
        _check_keys(axis, {"attributes"}, {"attributes"}, where, source)
        names = axis["attributes"]
        if not isinstance(names, list) or not names:
            raise ConfigError(source, f"{where}.attributes", "must be a non-empty list of attribute ids")
        for name in names:
            if name not in attributes:
                raise ConfigError(
                    source, f"{where}.attributes", f"unknown attribute {name!r}; allowed: {', '.join(attributes)}"
                )
        if len(set(names)) != len(names):
            raise ConfigError(source, f"{where}.attributes", "lists an attribute twice")
        axes[axis_id] = Axis(id=axis_id, attributes=tuple(names))

    concepts: dict[str, Concept] = {}
    for concept_id, concept in _require_mapping(data["concepts"], "concepts", source).items():
        where = f"concepts.{concept_id}"
        _check_id(concept_id, where, source)
        _require_mapping(concept, where, source)
        _check_keys(concept, {"group", "words", "keywords"}, {"group", "words"}, where, source)
        concepts[concept_id] = Concept(
            id=concept_id,
            group=str(concept["group"]),
            words=str(concept["words"]),
            keywords=tuple(str(k).lower() for k in concept.get("keywords", [])),
        )

    template = data["instruction_template"]
    if not isinstance(template, str) or "{phrase}" not in template:
        raise ConfigError(source, "instruction_template", "must be a string containing {phrase}")
    nouns = data["person_nouns"]
    if not isinstance(nouns, list) or not nouns:
        raise ConfigError(source, "person_nouns", "must be a non-empty list of words")
    taxonomy = Taxonomy(
        attributes=attributes,
        axes=axes,
        concepts=concepts,
        person_nouns=tuple(str(n).lower() for n in nouns),
        instruction_template=template,
        occupations=tuple(str(o) for o in data.get("occupations", [])),
        conversations=_parse_conversations(data.get("conversations", {}), concepts, source),
    )
    _check_conversations_name_no_attribute(taxonomy, source)
    return taxonomy


def _parse_conversations(data, concepts: dict[str, Concept], source: str) -> dict[str, tuple[tuple[str, str], ...]]:
    groups = {c.group for c in concepts.values()}
    allowed = ["default", *sorted(groups), *concepts]
    out = {}
    for key, turns in _require_mapping(data, "conversations", source).items():
        where = f"conversations.{key}"
        if key not in allowed:
            raise ConfigError(source, where, f"unknown concept or group {key!r}; allowed: {', '.join(allowed)}")
        if not isinstance(turns, list) or not turns:
            raise ConfigError(source, where, "must be a non-empty list of {question, answer}")
        pairs = []
        for i, turn in enumerate(turns):
            twhere = f"{where}[{i}]"
            _require_mapping(turn, twhere, source)
            _check_keys(turn, {"question", "answer"}, {"question", "answer"}, twhere, source)
            for part in ("question", "answer"):
                text = turn[part]
                if not isinstance(text, str) or not text.strip():
                    raise ConfigError(source, f"{twhere}.{part}", "must be a non-empty string")
                for name in _PLACEHOLDER.findall(text):
                    if name not in _CONVERSATION_FIELDS:
                        raise ConfigError(source, f"{twhere}.{part}",
                                          f"unknown placeholder {{{name}}}; allowed: {{concept}}, {{a_concept}}")
            pairs.append((turn["question"], turn["answer"]))
        out[key] = tuple(pairs)
    return out


def _check_conversations_name_no_attribute(taxonomy: Taxonomy, source: str) -> None:
    """Instruction answers that name the attribute would teach the model the stereotype we remove."""
    for concept_id in taxonomy.concepts:
        for turn in taxonomy.conversation(concept_id):
            leaked = taxonomy.attribute_words_in(turn["value"])
            if leaked:
                key = next(k for k in (concept_id, taxonomy.concepts[concept_id].group, "default") if k in taxonomy.conversations)
                raise ConfigError(source, f"conversations.{key}",
                                  f"for concept {concept_id!r} the turn {turn['value']!r} names attribute word(s) "
                                  f"{', '.join(leaked)}; conversations must not mention the protected attributes")


def load_taxonomy(path: str | Path) -> Taxonomy:
    data = read_yaml_mapping(path, "taxonomy")
    return parse_taxonomy(data, str(path))


def restrict_values(taxonomy: Taxonomy, keep: dict[str, list[str]]) -> Taxonomy:
    """The taxonomy with only the listed values of some attributes (validated by the caller)."""
    if not keep:
        return taxonomy
    attributes = dict(taxonomy.attributes)
    for attribute_id, values in keep.items():
        old = attributes[attribute_id]
        attributes[attribute_id] = Attribute(
            id=old.id, label=old.label, values={v: old.values[v] for v in old.values if v in set(values)}
        )
    return Taxonomy(
        attributes=attributes, axes=taxonomy.axes, concepts=taxonomy.concepts, person_nouns=taxonomy.person_nouns,
        instruction_template=taxonomy.instruction_template, occupations=taxonomy.occupations,
        conversations=taxonomy.conversations,
    )
