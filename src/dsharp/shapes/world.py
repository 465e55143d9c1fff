"""Shapes-world scenes: the palette, the scene type, rendering and layout sampling.

A :class:`Scene` lives in normalised coordinates (``[0, 1]`` across the image, y pointing down)
so that one scene renders at any resolution. Images have a plain **black** background
(``BACKGROUND``) and 1 to 3 flat-coloured objects (no anti-aliasing): circles, squares and
upward-pointing isosceles triangles (base = height). Layouts keep every object's bounding
box at least ``GAP`` apart and ``BORDER`` inside the image, with sides between ``MIN_SIDE``
and ``MAX_SIDE`` (7 to 12 px at 32x32), so objects never touch and stay identifiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsharp.shapes.grammar import COLOURS, SHAPES, Constraints, parse

BACKGROUND: tuple[int, int, int] = (0, 0, 0)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 210, 30),
    "purple": (150, 40, 190),
    "white": (235, 235, 235),
}
assert tuple(PALETTE) == COLOURS

MIN_IMAGE_SIZE = 32
MIN_SIDE = 7 / 32
MAX_SIDE = 12 / 32
GAP = 2 / 32
BORDER = 1 / 32
# Layouts satisfy a relation with this margin along its axis, and the axis must dominate
# the other one by RELATION_DOMINANCE; the verifier asks for less (see verifier.py).
RELATION_MARGIN = 0.15
RELATION_DOMINANCE = 0.05
_CANDIDATES = 512
_MAX_ROUNDS = 40
_SHRINK_ROUNDS = 8


@dataclass(frozen=True)
class SceneObject:
    """One object: colour and shape names, top-left corner and side of its bounding box."""

    colour: str
    shape: str
    x: float
    y: float
    side: float

    @property
    def centroid(self) -> tuple[float, float]:
        """Centre of mass of the filled shape (a triangle's sits 2/3 of the way down)."""
        down = 2 / 3 if self.shape == "triangle" else 1 / 2
        return self.x + self.side / 2, self.y + self.side * down


@dataclass(frozen=True)
class Scene:
    """Objects in normalised coordinates; ``group_of[i]`` is the prompt group of object i."""

    objects: tuple[SceneObject, ...]
    group_of: tuple[int, ...] = ()


def _check_size(size: int) -> None:
    if not isinstance(size, int | np.integer) or size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image size must be an int >= {MIN_IMAGE_SIZE} (objects must stay 7+ px), got {size!r}"
        )


def render(
    scene: Scene,
    size: int = 32,
    rng: np.random.Generator | None = None,
    colour_jitter: int = 0,
) -> np.ndarray:
    """Draw ``scene`` as a ``(size, size, 3)`` uint8 image. With ``colour_jitter > 0`` each
    object's RGB is shifted by up to that many levels per channel, drawn from ``rng``, so
    pretraining data is not pixel-exact palette colours."""
    _check_size(size)
    if colour_jitter and rng is None:
        raise ValueError("render: colour_jitter needs an rng")
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    py, px = centres[:, None], centres[None, :]
    for obj in scene.objects:
        x0, y0, s = obj.x, obj.y, obj.side
        if obj.shape == "square":
            mask = (px >= x0) & (px <= x0 + s) & (py >= y0) & (py <= y0 + s)
        elif obj.shape == "circle":
            r = s / 2
            mask = (px - x0 - r) ** 2 + (py - y0 - r) ** 2 <= r * r
        elif obj.shape == "triangle":
            mask = (py >= y0) & (py <= y0 + s) & (np.abs(px - x0 - s / 2) <= (py - y0) / 2)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")
        if obj.colour not in PALETTE:
            raise ValueError(f"unknown colour {obj.colour!r}; known: {', '.join(PALETTE)}")
        colour = np.array(PALETTE[obj.colour], dtype=np.int64)
        if colour_jitter:
            assert rng is not None
            colour = colour + rng.integers(-colour_jitter, colour_jitter + 1, size=3)
        image[mask] = np.clip(colour, 0, 255).astype(np.uint8)
    return image


#: A centroid offset: one float, or an array of them.
Offset = float | np.ndarray


def axis_offsets(kind: str, dx: Offset, dy: Offset) -> tuple[Offset, Offset]:
    """For a relation "A kind B" and the centroid offset ``(dx, dy) = B - A`` (floats or
    arrays): the signed offset along the relation's axis (positive when it holds) and the
    offset along the other axis."""
    if kind == "left_of":
        return dx, dy
    if kind == "right_of":
        return -dx, dy
    if kind == "above":
        return dy, dx
    if kind == "below":
        return -dy, dx
    raise ValueError(f"unknown relation {kind!r}")


def sample_scene(prompt: str | Constraints, rng: np.random.Generator) -> Scene:
    """A random layout that satisfies ``prompt``: one object per "a" group, ``n`` per numeral
    group, relations with a clear margin. Rejection-samples candidate layouts in batches."""
    c = parse(prompt) if isinstance(prompt, str) else prompt
    if c.n_objects > 3:
        raise ValueError(
            f"prompt {c.to_prompt()!r} asks for {c.n_objects} objects; scenes hold at most 3"
        )
    specs = [(g.colour, g.shape, gi) for gi, g in enumerate(c.groups) for _ in range(g.n_objects)]
    n = len(specs)
    tri = np.array([s[1] == "triangle" for s in specs])
    for round_ in range(_MAX_ROUNDS):
        # Crowded prompts (three objects in a column) rarely fit at full size: later rounds
        # draw smaller objects, down to MIN_SIDE from round _SHRINK_ROUNDS on.
        top = MAX_SIDE - (MAX_SIDE - MIN_SIDE) * min(1.0, round_ / _SHRINK_ROUNDS)
        side = rng.uniform(MIN_SIDE, top, size=(_CANDIDATES, n))
        x = BORDER + rng.random((_CANDIDATES, n)) * (1 - 2 * BORDER - side)
        y = BORDER + rng.random((_CANDIDATES, n)) * (1 - 2 * BORDER - side)
        ok = np.ones(_CANDIDATES, dtype=bool)
        for i in range(n):
            for j in range(i + 1, n):
                apart_x = (x[:, i] + side[:, i] + GAP <= x[:, j]) | (
                    x[:, j] + side[:, j] + GAP <= x[:, i]
                )
                apart_y = (y[:, i] + side[:, i] + GAP <= y[:, j]) | (
                    y[:, j] + side[:, j] + GAP <= y[:, i]
                )
                ok &= apart_x | apart_y
        cx = x + side / 2
        cy = y + side * np.where(tri, 2 / 3, 1 / 2)
        for rel in c.relations:
            for i in (k for k in range(n) if specs[k][2] == rel.left):
                for j in (k for k in range(n) if specs[k][2] == rel.right):
                    dx, dy = cx[:, j] - cx[:, i], cy[:, j] - cy[:, i]
                    main, other = axis_offsets(rel.kind, dx, dy)
                    ok &= (main >= RELATION_MARGIN) & (main - np.abs(other) >= RELATION_DOMINANCE)
        hits = np.flatnonzero(ok)
        if hits.size:
            k = hits[0]
            objects = tuple(
                SceneObject(colour, shape, float(x[k, i]), float(y[k, i]), float(side[k, i]))
                for i, (colour, shape, _) in enumerate(specs)
            )
            return Scene(objects, tuple(s[2] for s in specs))
    raise RuntimeError(f"no layout found for prompt {c.to_prompt()!r}")
