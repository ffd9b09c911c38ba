"""One article rule for every phrase the pipeline writes: captions, generate-mode prompts and the LLaVA
turns in the shards say "a university student", never "an university student"."""

import pytest

from schemas.articles import fix_articles, with_article
from stages.ingest.config import base_prompt


@pytest.mark.parametrize("words,expected", [
    ("university student", "a university student"),
    ("European tourist", "a European tourist"),
    ("one-armed sailor", "a one-armed sailor"),
    ("engineer", "an engineer"),
    ("honest broker", "an honest broker"),
    ("hour-long shift worker", "an hour-long shift worker"),
    ("Asian chef", "an Asian chef"),
    ("chef", "a chef"),
])
def test_the_article_follows_the_sound_of_the_next_word(words, expected):
    assert with_article(words) == expected
    assert fix_articles(f"a {words}") == expected and fix_articles(f"an {words}") == expected


def test_llava_turns_and_generate_prompts_name_a_concept_with_the_same_article(taxonomy):
    turns = taxonomy.conversation("university")
    assert turns[1]["value"] == "The person is a university student."
    assert turns[2]["value"] == "Is this a university student? Answer yes or no."
    assert base_prompt("a photo of {a_concept}", taxonomy.concepts["university"].words) == "a photo of a university student"
    assert taxonomy.conversation("career")[1]["value"] == "The image shows a person at work in an office."
