"""Random prompts per category and the fixed train/val prompt sets.

Held-out combinations: the colour-shape pairs in ``HELD_OUT_PAIRS`` (one per colour, two per
shape: red triangle, green square, blue circle, yellow triangle, purple square, white circle)
never appear in a train prompt of any category, and every val prompt contains at least one
of them. So val measures compositional generalisation: each held-out colour and shape was
seen in training, never together.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np

from dsharp.shapes.grammar import (
    CATEGORIES,
    COLOURS,
    RELATION_PHRASES,
    SHAPES,
    Category,
    Constraints,
    Group,
    Relation,
    category_of,
)

Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "triangle"),
        ("green", "square"),
        ("blue", "circle"),
        ("yellow", "triangle"),
        ("purple", "square"),
        ("white", "circle"),
    }
)
# At most this many prompts per category in prompt_sets(); small categories hold fewer
# (single: 12 train / 6 val, counting: 36 / 18).
SET_SIZE: dict[Split, int] = {"train": 300, "val": 100}
_SET_SEED = 20250212
_PAIRS = tuple((c, s) for c in COLOURS for s in SHAPES)
_KINDS = tuple(RELATION_PHRASES.values())
# (first, second) group counts for two-group complex prompts; None = "a".
_COMPLEX_COUNTS = ((None, 1), (1, None), (1, 1), (None, 2), (2, None), (1, 2), (2, 1))


def uses_held_out(c: Constraints) -> bool:
    """Whether any group of ``c`` is a held-out colour-shape pair."""
    return any((g.colour, g.shape) in HELD_OUT_PAIRS for g in c.groups)


def in_split(c: Constraints, split: Split) -> bool:
    """Train prompts avoid every held-out pair; val prompts contain at least one."""
    return uses_held_out(c) == (split == "val")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def _groups(rng: np.random.Generator, counts: tuple[int | None, ...]) -> tuple[Group, ...]:
    """Groups with distinct colour-shape pairs."""
    while True:
        picks = rng.integers(len(_PAIRS), size=len(counts))
        if len(set(picks.tolist())) == len(counts):
            return tuple(Group(*_PAIRS[p], n) for p, n in zip(picks, counts, strict=True))


def _links(rng: np.random.Generator, n_groups: int, always: bool) -> tuple[Relation, ...]:
    """Links between adjacent groups: each one of the four relations or, unless ``always``,
    "and" (no relation), all equally likely."""
    out = []
    for i in range(n_groups - 1):
        k = rng.integers(len(_KINDS) if always else len(_KINDS) + 1)
        if k < len(_KINDS):
            out.append(Relation(i, i + 1, _KINDS[k]))
    return tuple(out)


def _draw(category: Category, rng: np.random.Generator) -> Constraints:
    if category == "single":
        return Constraints(_groups(rng, (None,)))
    if category == "counting":
        return Constraints(_groups(rng, (int(rng.integers(1, 4)),)))
    if category == "color":
        while True:
            groups = _groups(rng, (None, None))
            if groups[0].colour != groups[1].colour:
                return Constraints(groups)
    if category == "spatial":
        return Constraints(_groups(rng, (None, None)), _links(rng, 2, always=True))
    if category == "complex":
        if rng.random() < 0.5:
            counts = _COMPLEX_COUNTS[rng.integers(len(_COMPLEX_COUNTS))]
            return Constraints(_groups(rng, counts), _links(rng, 2, always=False))
        return Constraints(_groups(rng, (None, None, None)), _links(rng, 3, always=False))
    raise ValueError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")


def random_constraints(
    category: Category, rng: np.random.Generator, split: Split = "train"
) -> Constraints:
    """A random prompt of ``category`` (as :class:`Constraints`) that belongs to ``split``."""
    _check_split(split)
    while True:
        c = _draw(category, rng)
        if in_split(c, split):
            assert category_of(c) == category
            return c


def _distinct_prompts(
    draw: Callable[[int], str], cap: int, exclude: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    """Up to ``cap`` distinct prompts from ``draw``, none in ``exclude``, sorted.

    ``draw(k)`` gets ``k`` = prompts found + draws missed since the last find. Stops at the
    cap, or once 300 draws in a row found nothing new (the category is exhausted).
    """
    found: set[str] = set()
    misses = 0
    while len(found) < cap and misses < 300:
        prompt = draw(len(found) + misses)
        if prompt in found or prompt in exclude:
            misses += 1
        else:
            misses = 0
            found.add(prompt)
    return tuple(sorted(found))


@lru_cache(maxsize=2)
def _prompt_sets(split: Split) -> dict[str, tuple[str, ...]]:
    out = {}
    for k, category in enumerate(CATEGORIES):
        rng = np.random.default_rng([_SET_SEED, k, SPLITS.index(split)])
        out[category] = _distinct_prompts(
            lambda _, c=category, r=rng: random_constraints(c, r, split).to_prompt(),
            SET_SIZE[split],
        )
    return out


def prompt_sets(split: Split) -> dict[str, list[str]]:
    """Fixed prompt lists per category for ``split`` (deterministic; see ``HELD_OUT_PAIRS``)."""
    _check_split(split)
    return {k: list(v) for k, v in _prompt_sets(split).items()}


@lru_cache(maxsize=1)
def _grammar_sets() -> dict[str, tuple[str, ...]]:
    val = frozenset(p for group in _prompt_sets("val").values() for p in group)
    out = {}
    for k, category in enumerate(CATEGORIES):
        rng = np.random.default_rng([_SET_SEED, k, len(SPLITS)])
        # Alternate the splits so that held-out pairs are as common as the others.
        out[category] = _distinct_prompts(
            lambda i, c=category, r=rng: random_constraints(c, r, SPLITS[i % 2]).to_prompt(),
            SET_SIZE["train"],
            exclude=val,
        )
    return out


def grammar_prompt_sets() -> dict[str, list[str]]:
    """Prompts per category from the whole grammar, held-out colour-shape pairs included,
    never one of the val prompts (deterministic).

    For reward fine-tuning, which needs prompts but no images: the verifier can teach the
    pairs that pretraining never showed, and the val prompts stay unseen, so val still
    measures prompts the model was not trained on.
    """
    return {k: list(v) for k, v in _grammar_sets().items()}
