"""The English indefinite article rule, used wherever a phrase is made from words ("an Asian chef",
"a university student", "an hour"): one rule for captions, prompts, instructions and conversations."""

from __future__ import annotations

import re

# By sound, not letter: "a university", "a one-off", "an honest", "an hour".
_VOWEL_SOUND = re.compile(r"^(?!uni|use|usu|eu|one|once)[aeiou]|^(hour|honest|honou?r|heir)", re.IGNORECASE)
_ARTICLE = re.compile(r"\b(an?|An?|AN?)(\s+)([A-Za-z][\w-]*)")


def article_for(word: str) -> str:
    return "an" if _VOWEL_SOUND.match(word) else "a"


def with_article(words: str) -> str:
    """``"university student"`` -> ``"a university student"``."""
    return f"{article_for(words)} {words}"


def match_case(word: str, like: str) -> str:
    """``word`` in the case of ``like`` (UPPER, Capitalised or as is)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def fix_articles(text: str) -> str:
    """Every "a"/"an" in ``text`` made to agree with the word after it."""

    def repl(match: re.Match) -> str:
        article, space, word = match.group(1), match.group(2), match.group(3)
        return match_case(article_for(word), article) + space + word

    return _ARTICLE.sub(repl, text)
