"""Noun phrases of a prompt, for T2I-CompBench-style questions ("a green bench?").

T2I-CompBench takes spaCy's ``en_core_web_sm`` noun chunks. When spaCy and that model are
installed, ``method="spacy"`` (or ``"auto"``) does the same. Otherwise ``"rules"`` is a
small, dependency-free chunker that handles the benchmark's attribute prompts ("a green bench
and a blue bowl", "a red apple and yellow bananas") exactly and longer sentences
approximately:

1. the prompt is split into words and punctuation;
2. boundaries are punctuation, conjunctions ("and", "or", ...), prepositions and relation
   words ("with", "on", "next to", "in front of", ...), relative pronouns and a list of
   common verbs ("is", "holds", "sits", ...);
3. each run of words between boundaries is split again before every determiner or number
   word ("a", "the", "two", ...), so "a cat a dog" gives two phrases;
4. "and", "or" and commas after a colour, size, shape or material word do not split unless
   a determiner follows, so "a black and white cat" stays one phrase while "a red orange and
   a brown sheep" gives two; a participle after "is"/"are" ("is parked") is
   skipped;
5. phrases that name only a place or a pronoun ("the left", "top", "the other") are dropped,
   as T2I-CompBench drops "top", "the side", "the left" and "the right".

It has no part-of-speech tagger: an unknown verb stays inside a phrase ("fluffy notebook jot
down ideas"). Such prompts are better served by spaCy.
"""

from __future__ import annotations

import functools
import re

METHODS = ("auto", "spacy", "rules")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_DETERMINERS = _words(
    "a an the this that these those some many several each every another his her their its "
    "my our your one two three four five six seven eight nine ten"
)
_CONJUNCTIONS = _words("and or but nor while as then plus")
_PREPOSITIONS = _words(
    "with without on in at by near under underneath above below behind beside besides "
    "between among amongst over into onto inside outside from to toward towards against "
    "along around across through within beneath atop next of for like upon off up down "
    "out about after before during"
)
_RELATIVES = _words("which who whom whose where when there here it they them")
_VERBS = _words(  # only words that are rarely nouns or adjectives in prompts
    "is are was were be been being am has have had do does did could will would might "
    "should must hold holds held holding sit sits sat sitting stood standing lie lies lay "
    "lying resting hangs hung hanging perches perched perching lean leans leaning floating "
    "flying looks looking provide provides provided makes making contains containing "
    "covering wears wearing eat eats eating playing running walking swims swimming grows "
    "growing reflects reflecting creates creating adds adding sleeps sleeping jumps jumping "
    "fills filling surrounds surrounding showing stays staying keeps keeping"
)
_BOUNDARIES = _CONJUNCTIONS | _PREPOSITIONS | _RELATIVES | _VERBS
_PLACES = _words(
    "top bottom side left right front back middle center centre other others edge corner "
    "background foreground distance way"
)
_ADJECTIVES = _words(  # attributes that coordinate before one noun: "black and white cat"
    "red green blue yellow black white brown pink purple orange gray grey silver gold golden "
    "tan beige violet cyan magenta turquoise maroon navy teal crimson scarlet ivory cream "
    "bronze copper dark light pale bright long short tall big small large tiny huge narrow "
    "wide round square oval wooden metallic metal glass plastic leather fabric rubber "
    "fluffy soft hard striped checkered spotted"
)
_BE = _words("is are was were be been being")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


def _is_place_or_pronoun(words: list[str]) -> bool:
    """True for "top", "the left", "one side", "the other": no object to ask about."""
    content = [w for w in words if w.lower() not in _DETERMINERS]
    return not content or all(w.lower() in _PLACES for w in content)


def rule_noun_phrases(prompt: str) -> list[str]:
    """Noun phrases by the documented rules (no dependencies), in prompt order."""
    phrases: list[str] = []
    current: list[str] = []

    def close() -> None:
        while current and current[-1].lower() in ("and", "or"):
            current.pop()
        if current and not _is_place_or_pronoun(current):
            phrases.append(" ".join(current))
        current.clear()

    previous = ""
    for token in _WORD.findall(prompt):
        lower = token.lower()
        coordinating = lower in ("and", "or", ",")
        if coordinating and current and current[-1].lower() in _ADJECTIVES:
            if lower != ",":
                current.append(token)
        elif (
            not token[0].isalnum()
            or lower in _BOUNDARIES
            or (previous in _BE and lower.endswith("ed"))  # "is parked"
        ):
            close()
        elif lower in _DETERMINERS and current:  # "a red orange and a ...": not coordinated
            close()
            current.append(token)
        else:
            current.append(token)
        previous = lower
    close()
    return phrases


@functools.lru_cache(maxsize=1)
def _spacy_pipeline():
    import spacy

    return spacy.load("en_core_web_sm")


def spacy_available() -> bool:
    """Whether spaCy and its ``en_core_web_sm`` model can be loaded."""
    try:
        _spacy_pipeline()
    except Exception:  # not installed, or installed without the English model
        return False
    return True


def spacy_noun_phrases(prompt: str) -> list[str]:
    """spaCy noun chunks, without those T2I-CompBench drops (places such as "the left")."""
    doc = _spacy_pipeline()(prompt)
    return [c.text for c in doc.noun_chunks if not _is_place_or_pronoun(c.text.split())]


def resolve_method(method: str) -> str:
    """``"auto"`` -> ``"spacy"`` when it is usable, else ``"rules"``; others are checked."""
    if method not in METHODS:
        raise ValueError(f"noun phrase method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "spacy" if spacy_available() else "rules"
    if method == "spacy" and not spacy_available():
        raise RuntimeError(
            "noun phrase method 'spacy' needs spaCy with en_core_web_sm installed "
            "(python -m spacy download en_core_web_sm); use 'rules' or 'auto' otherwise"
        )
    return method


def noun_phrases(prompt: str, method: str = "auto") -> list[str]:
    """The noun phrases of ``prompt`` by ``method`` ("auto", "spacy" or "rules")."""
    if resolve_method(method) == "spacy":
        return spacy_noun_phrases(prompt)
    return rule_noun_phrases(prompt)
