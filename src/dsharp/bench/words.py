"""Small word lists that stand in for a part-of-speech tagger when spaCy is not installed.

They serve two T2I-CompBench steps: dropping adjectives from complex prompts before CLIP
scoring (upstream removes spaCy ``ADJ`` tokens) and finding the head noun of a phrase for the
spatial detector. Written for the benchmark's vocabulary (attribute words of the color, shape
and texture categories and the descriptive words of the complex prompts); a word missing here
is kept, which is the conservative error for both uses.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


COLORS = _words(
    "red green blue yellow black white brown pink purple orange gray grey silver gold golden "
    "tan beige violet cyan magenta turquoise maroon navy teal crimson scarlet ivory cream "
    "bronze copper colorful colourful multicolored rainbow"
)
SHAPES = _words(
    "round square rectangular triangular oval circular cubic spherical cylindrical conical "
    "pyramidal pentagonal hexagonal octagonal oblong diamond teardrop heart-shaped star-shaped "
    "curved angular flat"
)
TEXTURES = _words(
    "wooden metallic metal plastic glass leather fabric rubber fluffy furry woolen wool "
    "cotton silk silky velvet satin ceramic stone marble concrete paper cardboard knitted "
    "striped checkered spotted plaid glossy matte shiny smooth rough soft hard fuzzy bumpy "
    "spiky prickly jagged rugged sleek polished translucent opaque transparent"
)
DESCRIPTIVE = _words(
    "big small large tiny huge giant little tall short long wide narrow thick thin deep "
    "bright dark pale light hot cold cool warm cozy crisp juicy sweet sour tart ripe fresh "
    "old new young ancient modern vintage delicate fragile sturdy bulky heavy clean dirty "
    "wet dry sharp dull bold vibrant vivid elegant graceful gentle fierce fiery blazing "
    "fragrant sparkling gleaming glowing shimmering serene calm peaceful quiet loud busy "
    "beautiful pretty cute ugly happy sad angry sleepy lazy weathered towering streamlined "
    "hardcover tiled stunning majestic rustic lush dense sheer rocky sandy snowy sunny cloudy "
    "stormy misty foggy icy frozen golden-brown"
)
ADJECTIVES = COLORS | SHAPES | TEXTURES | DESCRIPTIVE
"""Words treated as adjectives by the rule-based fallbacks."""

IRREGULAR_PAST = _words(
    "sat lay stood hung swam flew ran sank rose fell grew slept knelt shone drove rode "
    "spun wove hid bit caught threw stuck swung clung led lit dug froze broke"
)
"""Irregular past-tense verbs that the rule-based noun phrases can leave inside a phrase."""

_TOKEN = re.compile(r"\S+")


def drop_adjectives(prompt: str) -> str:
    """``prompt`` without the words of :data:`ADJECTIVES` (a dropped word takes its attached
    punctuation with it); the rule-based stand-in for removing spaCy ADJ tokens."""
    kept = []
    for token in _TOKEN.findall(prompt):
        core = token.strip(".,;:!?\"'()").lower()
        if core in ADJECTIVES:
            continue
        kept.append(token)
    return " ".join(kept)
