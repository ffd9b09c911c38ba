import pytest

from schemas.articles import fix_articles
from stages.sets.phrasing import instruction, person_phrase, swap_caption


def values(taxonomy, *pairs):
    return tuple(taxonomy.attributes[a].values[v] for a, v in pairs)


def swap(taxonomy, caption, *pairs):
    return swap_caption(caption, taxonomy, tuple(a for a, _ in pairs), values(taxonomy, *pairs))


def test_gender_words_are_swapped_by_role(taxonomy):
    assert swap(taxonomy, "a man cooking; he holds his knife", ("gender", "female")) == "a woman cooking; she holds her knife"
    assert swap(taxonomy, "A Woman at work", ("gender", "male")) == "A Man at work"


def test_caption_already_matching_the_target_is_unchanged(taxonomy):
    assert swap(taxonomy, "a woman reading a book", ("gender", "female")) == "a woman reading a book"


def test_missing_attribute_is_inserted_before_the_person_noun_with_the_article_fixed(taxonomy):
    assert swap(taxonomy, "a chef in a kitchen", ("race", "asian")) == "an Asian chef in a kitchen"
    assert swap(taxonomy, "a person holding a hammer", ("gender", "female")) == "a woman holding a hammer"


def test_colour_words_are_not_mistaken_for_race(taxonomy):
    assert swap(taxonomy, "a man in a white shirt", ("race", "black")) == "a Black man in a white shirt"
    assert swap(taxonomy, "a white man smiling", ("race", "latino")) == "a Latino man smiling"


def test_intersectional_member_reads_naturally(taxonomy):
    assert swap(taxonomy, "a man cooking", ("race", "indian"), ("gender", "female")) == "an Indian woman cooking"
    assert swap(taxonomy, "a nurse at a desk", ("physical", "obese"), ("race", "white")) == "an obese White nurse at a desk"


def test_caption_without_any_person_noun_gets_the_person_appended(taxonomy):
    assert swap(taxonomy, "kitchen with pots.", ("gender", "male")) == "kitchen with pots, a man"


def test_person_phrase_and_instruction(taxonomy):
    assert person_phrase(values(taxonomy, ("race", "asian"), ("gender", "female"))) == "an Asian woman"
    assert person_phrase(values(taxonomy, ("physical", "tattooed"))) == "a tattooed person"
    assert instruction(taxonomy, values(taxonomy, ("age", "old"))) == "turn the person into an old person"


@pytest.mark.parametrize("text, fixed", [("a apple", "an apple"), ("an university", "a university"), ("An man", "A man")])
def test_articles(text, fixed):
    assert fix_articles(text) == fixed


def test_multi_word_values_are_found_and_replaced_whole(taxonomy):
    assert swap(taxonomy, "a Middle Eastern man cooking", ("race", "asian")) == "an Asian man cooking"
    once = swap(taxonomy, "a chef", ("race", "middle_eastern"))
    assert once == "a Middle Eastern chef" and swap(taxonomy, once, ("race", "middle_eastern")) == once
