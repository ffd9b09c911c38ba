"""Phrase members of a set: swap attribute words in a caption, name a person, word an instruction.

``swap_caption("a man cooking in a kitchen", [female])`` -> ``"a woman cooking in a kitchen"``; when the
caption names no value of an attribute, the target's adjective goes before the first person noun
(``"a chef at work"`` -> ``"an Asian chef at work"``), and a generic "person" takes a gendered noun.
"""

from __future__ import annotations

import re

from schemas.articles import fix_articles, match_case
from schemas.taxonomy import AttributeValue, Taxonomy

WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
# Roles whose words are also ordinary adjectives ("a black dog", "white shirt"): they count as an
# attribute word only when a person noun follows within this many words.
ADJECTIVE_ROLES = ("adjective", "alt")
ADJECTIVE_REACH = 2


def _person_noun_positions(tokens: list[re.Match], person_nouns: set[str]) -> list[int]:
    return [i for i, t in enumerate(tokens) if t.group(0).lower() in person_nouns]


def _lexicon(taxonomy: Taxonomy, attribute_id: str) -> tuple[dict[str, tuple[str, str]], re.Pattern]:
    """Caption words (some of several words, "middle eastern") of an attribute's values, and a pattern
    finding them, longest first, with spaces and hyphens inside a phrase treated alike."""
    lexicon: dict[str, tuple[str, str]] = {}
    for value in taxonomy.attributes[attribute_id].values.values():
        for role, word in [*value.forms.items(), ("adjective", value.adjective)]:
            lexicon.setdefault(re.sub(r"[\s-]+", " ", word.lower()), (value.id, role))
    phrases = sorted(lexicon, key=len, reverse=True)
    pattern = r"\b(?:" + "|".join(r"[\s-]+".join(map(re.escape, p.split(" "))) for p in phrases) + r")\b"
    return lexicon, re.compile(pattern, re.IGNORECASE)


def _swap_one(caption: str, taxonomy: Taxonomy, attribute_id: str, target: AttributeValue) -> str:
    lexicon, pattern = _lexicon(taxonomy, attribute_id)
    person_nouns = set(taxonomy.person_nouns)
    tokens = list(WORD.finditer(caption))
    nouns = _person_noun_positions(tokens, person_nouns)

    replacements: list[tuple[int, int, str]] = []
    found = False
    for match in pattern.finditer(caption):
        value_id, role = lexicon[re.sub(r"[\s-]+", " ", match.group(0).lower())]
        after = next((i for i, t in enumerate(tokens) if t.start() >= match.end()), len(tokens))
        if role in ADJECTIVE_ROLES and not any(after <= n < after + ADJECTIVE_REACH for n in nouns):
            continue
        found = True
        if value_id != target.id:
            word = target.adjective if role in ADJECTIVE_ROLES else (target.forms.get(role) or target.adjective)
            replacements.append((match.start(), match.end(), match_case(word, match.group(0))))
    if found:
        for start, end, word in reversed(replacements):
            caption = caption[:start] + word + caption[end:]
        return caption

    if nouns:
        noun = tokens[nouns[0]]
        if noun.group(0).lower() == "person" and target.noun:
            return caption[: noun.start()] + match_case(target.noun, noun.group(0)) + caption[noun.end() :]
        return caption[: noun.start()] + target.adjective + " " + caption[noun.start() :]
    return f"{caption.rstrip(' .,')}, {person_phrase((target,))}"


def has_anchor(caption: str, taxonomy: Taxonomy, attribute_id: str) -> bool:
    """Whether the caption names the person in a way ``_swap_one`` can edit: a person noun, or a word of
    the attribute; without one, the member's phrase is only appended (the fallback phrasing)."""
    tokens = list(WORD.finditer(caption))
    if _person_noun_positions(tokens, set(taxonomy.person_nouns)):
        return True
    _, pattern = _lexicon(taxonomy, attribute_id)
    return pattern.search(caption) is not None


def swap_caption(caption: str, taxonomy: Taxonomy, attribute_ids: tuple[str, ...], values: tuple[AttributeValue, ...]) -> str:
    """The caption as it would read for a person with ``values`` (one per attribute of the axis)."""
    text = caption
    for attribute_id, value in zip(attribute_ids, values):
        text = _swap_one(text, taxonomy, attribute_id, value)
    return fix_articles(text)


def person_phrase(values: tuple[AttributeValue, ...]) -> str:
    """``(asian, female)`` -> ``"an Asian woman"``; ``(obese,)`` -> ``"an obese person"``."""
    nouns = [v.noun for v in values if v.noun]
    adjectives = [v.adjective for v in values if not v.noun]
    phrase = " ".join(adjectives + [nouns[-1] if nouns else "person"])
    return fix_articles(f"a {phrase}")


def instruction(taxonomy: Taxonomy, values: tuple[AttributeValue, ...]) -> str:
    return taxonomy.instruction_template.format(phrase=person_phrase(values))
