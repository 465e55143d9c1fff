"""(image, caption, category) pairs for pretraining and SFT, with optional caption noise.

Caption noise makes pretraining captions imperfect on purpose, so the pretrained model binds
attributes imperfectly and reward fine-tuning has something to fix. A noisy caption is still
inside the grammar and still in the requested split; it is one of:

- *under-described* (still true of the image): ``drop_group`` (describe only part of the
  scene), ``drop_relation`` (a relation becomes "and"), ``drop_count`` (a numeral becomes "a");
- *wrong* (false of the image): ``wrong_colour`` (one group's colour), ``wrong_count``
  (one numeral), ``flip_relation`` (a relation reversed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from dsharp.shapes.grammar import (
    CATEGORIES,
    COLOURS,
    OPPOSITE,
    Category,
    Constraints,
    Relation,
    ShapesGrammarError,
    category_of,
)
from dsharp.shapes.prompts import Split, _check_split, in_split, random_constraints
from dsharp.shapes.world import render, sample_scene


def _drop_group(c: Constraints, rng: np.random.Generator) -> Constraints | None:
    if len(c.groups) < 2:
        return None
    k = int(rng.integers(len(c.groups)))
    groups = c.groups[:k] + c.groups[k + 1 :]
    relations = tuple(
        Relation(r.left - (r.left > k), r.right - (r.right > k), r.kind)
        for r in c.relations
        if k not in (r.left, r.right)
    )
    return Constraints(groups, relations)


def _drop_relation(c: Constraints, rng: np.random.Generator) -> Constraints | None:
    if not c.relations:
        return None
    k = int(rng.integers(len(c.relations)))
    return Constraints(c.groups, c.relations[:k] + c.relations[k + 1 :])


def _counted(c: Constraints) -> list[int]:
    return [i for i, g in enumerate(c.groups) if g.count is not None]


def _with_group(c: Constraints, i: int, **changes) -> Constraints:
    groups = list(c.groups)
    groups[i] = replace(groups[i], **changes)
    return Constraints(tuple(groups), c.relations)


def _drop_count(c: Constraints, rng: np.random.Generator) -> Constraints | None:
    counted = _counted(c)
    return _with_group(c, counted[rng.integers(len(counted))], count=None) if counted else None


def _wrong_count(c: Constraints, rng: np.random.Generator) -> Constraints | None:
    counted = _counted(c)
    if not counted:
        return None
    i = counted[rng.integers(len(counted))]
    others = [n for n in (1, 2, 3) if n != c.groups[i].count]
    return _with_group(c, i, count=others[rng.integers(len(others))])


def _wrong_colour(c: Constraints, rng: np.random.Generator) -> Constraints | None:
    i = int(rng.integers(len(c.groups)))
    others = [col for col in COLOURS if col != c.groups[i].colour]
    return _with_group(c, i, colour=others[rng.integers(len(others))])


def _flip_relation(c: Constraints, rng: np.random.Generator) -> Constraints | None:
    if not c.relations:
        return None
    k = int(rng.integers(len(c.relations)))
    r = c.relations[k]
    flipped = Relation(r.left, r.right, OPPOSITE[r.kind])
    return Constraints(c.groups, c.relations[:k] + (flipped,) + c.relations[k + 1 :])


NOISE_MODES: dict[str, Callable[[Constraints, np.random.Generator], Constraints | None]] = {
    "drop_group": _drop_group,
    "drop_relation": _drop_relation,
    "drop_count": _drop_count,
    "wrong_colour": _wrong_colour,
    "wrong_count": _wrong_count,
    "flip_relation": _flip_relation,
}


def perturb_caption(
    c: Constraints, rng: np.random.Generator, split: Split = "train"
) -> Constraints:
    """``c`` changed by one random applicable noise mode, staying in ``split``; ``c`` itself
    when no mode applies."""
    modes = list(NOISE_MODES.values())
    for k in rng.permutation(len(modes)):
        try:
            out = modes[k](c, rng)
        except ShapesGrammarError:  # e.g. a colour change that duplicates another group
            continue
        if out is not None and out != c and in_split(out, split):
            return out
    return c


def generate_pairs(
    n: int,
    seed: int,
    split: Split = "train",
    size: int = 32,
    *,
    categories: Sequence[Category] | None = None,
    caption_noise: float = 0.0,
    colour_jitter: int = 0,
) -> list[tuple[np.ndarray, str, str]]:
    """``n`` deterministic ``(image uint8 (size, size, 3), caption, category)`` triples: a
    random prompt of a random category (uniform over ``categories``, default all) from
    ``split``, a layout satisfying it, and with probability ``caption_noise`` a perturbed
    caption (see module doc); ``category`` is the returned caption's category."""
    _check_split(split)
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not 0.0 <= caption_noise <= 1.0:
        raise ValueError(f"caption_noise must be a probability in [0, 1], got {caption_noise!r}")
    cats = tuple(categories) if categories is not None else CATEGORIES
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown or not cats:
        raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}, got {cats!r}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = random_constraints(cats[rng.integers(len(cats))], rng, split)
        image = render(sample_scene(c, rng), size, rng, colour_jitter)
        if caption_noise and rng.random() < caption_noise:
            c = perturb_caption(c, rng, split)
        out.append((image, c.to_prompt(), category_of(c)))
    return out
