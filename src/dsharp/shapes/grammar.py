"""The shapes-world prompt grammar: vocabulary, typed constraints, parser and categories.

Grammar (lower-case, words separated by spaces, an optional trailing full stop)::

    prompt   := group (link group)*
    link     := "and" | "to the left of" | "to the right of" | "above" | "below"
    group    := ("a" | "an") colour shape | "one" colour shape | ("two" | "three") colour shape "s"

A relation binds only the two groups on either side of it: in
``a red circle above a blue square and a green triangle`` the triangle has no relation.
Each colour-shape pair may appear in at most one group of a prompt.

Count semantics (what the verifier checks): ``a``/``an`` means *at least one* matching object;
a numeral (``one``, ``two``, ``three``) means *exactly* that many. Objects the prompt does not
mention are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
NUMERALS: dict[str, int] = {"one": 1, "two": 2, "three": 3}
ARTICLES: tuple[str, ...] = ("a", "an")
RelationKind = Literal["left_of", "right_of", "above", "below"]
RELATION_PHRASES: dict[str, RelationKind] = {
    "to the left of": "left_of",
    "to the right of": "right_of",
    "above": "above",
    "below": "below",
}
RELATION_WORDS: dict[RelationKind, str] = {v: k for k, v in RELATION_PHRASES.items()}
OPPOSITE: dict[RelationKind, RelationKind] = {
    "left_of": "right_of",
    "right_of": "left_of",
    "above": "below",
    "below": "above",
}
Category = Literal["single", "color", "spatial", "counting", "complex"]
CATEGORIES: tuple[Category, ...] = ("single", "color", "spatial", "counting", "complex")

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
_VOCABULARY = frozenset(
    [*COLOURS, *SHAPES, *(s + "s" for s in SHAPES), *NUMERALS, *ARTICLES, "and"]
    + [w for phrase in RELATION_PHRASES for w in phrase.split()]
)


class ShapesGrammarError(ValueError):
    """A prompt is outside the shapes-world grammar; the message names the offending word."""


@dataclass(frozen=True)
class Group:
    """Objects of one colour and shape. ``count`` None means "a" (at least one), an int
    means exactly that many (written as a numeral)."""

    colour: str
    shape: str
    count: int | None = None

    @property
    def n_objects(self) -> int:
        """How many objects a scene for this group draws."""
        return 1 if self.count is None else self.count

    def phrase(self) -> str:
        """The group as the grammar writes it ("a red square", "two blue circles")."""
        if self.count is None:
            return f"a {self.colour} {self.shape}"
        plural = "s" if self.count > 1 else ""
        return f"{_NUMBER_WORDS[self.count]} {self.colour} {self.shape}{plural}"


@dataclass(frozen=True)
class Relation:
    """Every object of group ``left`` stands in ``kind`` to every object of group ``right``
    (the groups are adjacent in the prompt: ``right == left + 1``)."""

    left: int
    right: int
    kind: RelationKind


@dataclass(frozen=True)
class Constraints:
    """A parsed prompt: object groups in prompt order and relations between adjacent groups."""

    groups: tuple[Group, ...]
    relations: tuple[Relation, ...] = ()

    def __post_init__(self) -> None:
        if not self.groups:
            raise ShapesGrammarError("a prompt needs at least one object group")
        pairs = [(g.colour, g.shape) for g in self.groups]
        for i, pair in enumerate(pairs):
            if pair in pairs[:i]:
                raise ShapesGrammarError(
                    f"'{pair[0]} {pair[1]}' appears in two groups; each colour-shape pair "
                    "may appear once per prompt"
                )
        for g in self.groups:
            if g.colour not in COLOURS or g.shape not in SHAPES:
                raise ShapesGrammarError(f"unknown colour or shape in group {g}")
            if g.count is not None and g.count not in _NUMBER_WORDS:
                raise ShapesGrammarError(f"count must be 1, 2 or 3 (or None for 'a'), got {g}")
        for r in self.relations:
            if r.right != r.left + 1 or not 0 <= r.left < len(self.groups) - 1:
                raise ShapesGrammarError(f"a relation must join adjacent groups, got {r}")
        if len({r.left for r in self.relations}) != len(self.relations):
            raise ShapesGrammarError("two relations join the same pair of groups")

    @property
    def n_objects(self) -> int:
        return sum(g.n_objects for g in self.groups)

    def relation_after(self, i: int) -> Relation | None:
        """The relation linking group ``i`` to group ``i + 1``, if any."""
        return next((r for r in self.relations if r.left == i), None)

    def to_prompt(self) -> str:
        """The canonical prompt text (``parse(c.to_prompt()) == c``)."""
        parts = [self.groups[0].phrase()]
        for i, g in enumerate(self.groups[1:]):
            rel = self.relation_after(i)
            parts.append(RELATION_WORDS[rel.kind] if rel else "and")
            parts.append(g.phrase())
        return " ".join(parts)


def _tokens(prompt: str) -> list[str]:
    if not isinstance(prompt, str):
        raise ShapesGrammarError(f"a prompt must be a string, got {type(prompt).__name__}")
    text = prompt.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    words = text.split()
    if not words:
        raise ShapesGrammarError(f"empty prompt {prompt!r}")
    for w in words:
        if w not in _VOCABULARY:
            raise ShapesGrammarError(f"unknown word {w!r} in prompt {prompt!r}")
    return words


def _match_relation(words: list[str], i: int) -> tuple[RelationKind, int] | None:
    for phrase, kind in RELATION_PHRASES.items():
        n = len(phrase.split())
        if " ".join(words[i : i + n]) == phrase:
            return kind, i + n
    return None


@lru_cache(maxsize=4096)
def parse(prompt: str) -> Constraints:
    """Parse a prompt into :class:`Constraints`; raises :class:`ShapesGrammarError` naming the
    first unknown or misplaced word."""
    words = _tokens(prompt)

    def fail(i: int, expected: str) -> ShapesGrammarError:
        got = f"word {words[i]!r}" if i < len(words) else "the end of the prompt"
        return ShapesGrammarError(
            f"expected {expected} at word {i + 1} in prompt {prompt!r}, got {got}"
        )

    groups: list[Group] = []
    relations: list[Relation] = []
    i = 0
    while True:
        if i >= len(words) or words[i] not in (*ARTICLES, *NUMERALS):
            raise fail(i, "'a', 'an', 'one', 'two' or 'three'")
        count = NUMERALS.get(words[i])
        if i + 1 >= len(words) or words[i + 1] not in COLOURS:
            raise fail(i + 1, "a colour (" + ", ".join(COLOURS) + ")")
        colour = words[i + 1]
        plural = count is not None and count > 1
        shape_word = words[i + 2] if i + 2 < len(words) else ""
        shape = shape_word[:-1] if plural else shape_word
        if shape not in SHAPES:
            form = "a plural shape (circles, squares, triangles)" if plural else "a shape"
            raise fail(i + 2, form + ("" if plural else " (circle, square, triangle)"))
        groups.append(Group(colour, shape, count))
        i += 3
        if i == len(words):
            break
        if words[i] == "and":
            i += 1
            continue
        rel = _match_relation(words, i)
        if rel is None:
            raise fail(i, "'and', 'to the left of', 'to the right of', 'above' or 'below'")
        relations.append(Relation(len(groups) - 1, len(groups), rel[0]))
        i = rel[1]
    try:
        return Constraints(tuple(groups), tuple(relations))
    except ShapesGrammarError as err:
        raise ShapesGrammarError(f"{err} (prompt {prompt!r})") from None


def category_of(prompt: str | Constraints) -> Category:
    """The T2I-CompBench-style category of a prompt: one "a" group is ``single``, one numeral
    group ``counting``; two "a" groups joined by "and" ``color``, by a relation ``spatial``;
    anything else (three groups, or a numeral next to another group) ``complex``."""
    c = parse(prompt) if isinstance(prompt, str) else prompt
    if len(c.groups) == 1:
        return "single" if c.groups[0].count is None else "counting"
    if len(c.groups) == 2 and all(g.count is None for g in c.groups):
        return "spatial" if c.relations else "color"
    return "complex"
