"""Exact compositional verifier for shapes-world images (numpy only, batched).

Pipeline, all vectorised over the batch:

1. **Colour**: the background is black, so a soft or blurred edge is a palette colour scaled
   towards black. Each pixel therefore takes the palette colour whose ray from black it lies
   closest to (RGB distance to the ray), provided it is at least ``MIN_BRIGHTNESS`` of the
   way along that ray and within ``MAX_RAY_DISTANCE`` of it; every other pixel (dark, or an
   off-palette hue) is background.
2. **Objects**: 4-connected components of same-colour pixels, found with a vectorised
   union-find (hook roots along edges, then pointer-jump). Components with fewer pixels than
   ``MIN_AREA_FRACTION`` of the image, or a box side under ``MIN_SIDE_FRACTION`` of it, are
   noise and ignored (objects are drawn at least 7/32 of the image wide).
3. **Shape** from geometry: bounding-box aspect ratio must be near 1 and the side at most
   ``MAX_SIDE_FRACTION`` of the image; *asymmetry* (how far the share of pixels in the
   top/left half of the box is from 1/2) separates triangles (~0.25) from circles and squares
   (0); *corner fill* (the filled share of the four small corner triangles of the box, legs
   ``max(1, 0.2 * side)`` px) separates squares (1) from circles (0), which fill alone cannot
   at 7 px; *fill* (area / box area: square 1, circle ~0.785, triangle ~0.5) must agree.
   Anything else is ``"unknown"`` and matches no prompt word.
4. **Constraints** from the parsed prompt, each with its ``kind``: per group "at least one"
   object of that colour and shape (``presence``) and, for numerals, "exactly n" (``count``);
   per relation (``relation``), every matching object of the left group is in that relation
   to every matching object of the right group (centroids, offset along the axis at least
   ``RELATION_MARGIN`` of the image and larger than the offset along the other axis).

Score = fraction of constraints met; ``strict`` = all met.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsharp.shapes.grammar import COLOURS, RELATION_WORDS, SHAPES, Constraints, parse
from dsharp.shapes.world import BACKGROUND, PALETTE, axis_offsets

MIN_BRIGHTNESS = 0.5
MAX_RAY_DISTANCE = 60.0
MIN_AREA_FRACTION = 12 / 1024
MIN_SIDE_FRACTION = 5 / 32
MAX_SIDE_FRACTION = 0.6
MAX_ASPECT = 1.4
TRIANGLE_ASYMMETRY = 0.12
TRIANGLE_FILL = (0.35, 0.75)
CIRCLE_FILL = (0.6, 0.95)
CIRCLE_MAX_CORNER = 0.25
SQUARE_FILL = 0.85
SQUARE_MIN_CORNER = 0.75
RELATION_MARGIN = 0.05

_COLOURS = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
_NORM2 = (_COLOURS * _COLOURS).sum(-1)
assert BACKGROUND == (0, 0, 0), "the colour rays assume a black background"


@dataclass(frozen=True)
class Detected:
    """An object found in an image: colour, shape (or "unknown"), centroid in ``[0, 1]``
    image coordinates, and area in pixels."""

    colour: str
    shape: str
    x: float
    y: float
    area: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "x": round(self.x, 4),
            "y": round(self.y, 4),
            "area": self.area,
        }


def _as_batch(images: np.ndarray) -> np.ndarray:
    """``(B, H, W, 3)`` uint8 or float in [0, 1] -> float32 in [0, 255]."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected images (B, H, W, 3), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected uint8 or float images, got dtype {arr.dtype}")
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(arr, 0.0, 1.0) * 255.0


def colour_classes(images: np.ndarray) -> np.ndarray:
    """Per-pixel class ``(B, H, W)`` int8: 0 background, ``1 + COLOURS.index(c)`` for colour c."""
    x = _as_batch(images)
    dot = x @ _COLOURS.T
    # Squared distance to each colour's ray: |x|^2 - (x . c)^2 / |c|^2.
    ray2 = (x * x).sum(-1, keepdims=True) - dot * dot / _NORM2
    ray2[dot < MIN_BRIGHTNESS * _NORM2] = np.inf
    cls = (ray2.argmin(-1) + 1).astype(np.int8)
    cls[ray2.min(-1) > MAX_RAY_DISTANCE**2] = 0
    return cls


def _components(cls: np.ndarray) -> np.ndarray:
    """Root index (into the flattened batch) of each pixel's 4-connected same-class component."""
    flat = cls.reshape(-1)
    idx = np.arange(flat.size).reshape(cls.shape)
    fg = cls > 0
    right = fg[:, :, :-1] & (cls[:, :, :-1] == cls[:, :, 1:])
    down = fg[:, :-1, :] & (cls[:, :-1, :] == cls[:, 1:, :])
    u = np.concatenate([idx[:, :, :-1][right], idx[:, :-1, :][down]])
    v = np.concatenate([idx[:, :, 1:][right], idx[:, 1:, :][down]])
    parent = np.arange(flat.size)
    while u.size:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        u, v, pu, pv = u[differ], v[differ], pu[differ], pv[differ]
        # Hook the larger root onto the smaller: parents only ever decrease, so no cycles.
        parent[np.maximum(pu, pv)] = np.minimum(pu, pv)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def _classify(h, w, fill, asym, corner, side_limit) -> np.ndarray:
    """Shape index per component (``len(SHAPES)`` = unknown), from box and pixel statistics."""
    out = np.full(fill.shape, len(SHAPES), dtype=np.int64)
    long, short = np.maximum(h, w), np.minimum(h, w)
    regular = (long <= MAX_ASPECT * short) & (long <= side_limit)
    tri = regular & (asym >= TRIANGLE_ASYMMETRY)
    tri &= (fill >= TRIANGLE_FILL[0]) & (fill <= TRIANGLE_FILL[1])
    sym = regular & (asym < TRIANGLE_ASYMMETRY)
    square = sym & (corner >= SQUARE_MIN_CORNER) & (fill >= SQUARE_FILL)
    circle = sym & (corner <= CIRCLE_MAX_CORNER)
    circle &= (fill >= CIRCLE_FILL[0]) & (fill <= CIRCLE_FILL[1])
    out[tri] = SHAPES.index("triangle")
    out[square] = SHAPES.index("square")
    out[circle] = SHAPES.index("circle")
    return out


def detect(images: np.ndarray) -> list[list[Detected]]:
    """Objects found in each image of a ``(B, H, W, 3)`` batch."""
    cls = colour_classes(images)
    b, h, w = cls.shape
    roots = _components(cls)
    fg = np.flatnonzero(cls.reshape(-1) > 0)
    if fg.size == 0:
        return [[] for _ in range(b)]
    comp_roots, inv = np.unique(roots[fg], return_inverse=True)
    area = np.bincount(inv)
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(area)[:-1]])
    pix = fg[order]
    ys = (pix // w) % h
    xs = pix % w
    y0 = np.minimum.reduceat(ys, starts)
    y1 = np.maximum.reduceat(ys, starts) + 1
    x0 = np.minimum.reduceat(xs, starts)
    x1 = np.maximum.reduceat(xs, starts) + 1
    comp = inv[order]
    # Twice the pixel-centre coordinate versus twice the box centre: exact in integers.
    ty = np.sign((y0 + y1)[comp] - (2 * ys + 1))
    tx = np.sign((x0 + x1)[comp] - (2 * xs + 1))
    top = (np.add.reduceat(ty, starts) / area) / 2
    left = (np.add.reduceat(tx, starts) / area) / 2
    asym = np.maximum(np.abs(top), np.abs(left))
    bh, bw = y1 - y0, x1 - x0
    fill = area / (bh * bw)
    # Corner cells: pixels whose row + column distance to a box corner is below k.
    k = np.maximum(1, (0.2 * np.minimum(bh, bw)).astype(np.int64))
    dy = np.minimum(ys - y0[comp], y1[comp] - 1 - ys)
    dx = np.minimum(xs - x0[comp], x1[comp] - 1 - xs)
    in_corner = (dy + dx < k[comp]).astype(np.int64)
    corner = np.add.reduceat(in_corner, starts) / (2 * k * (k + 1))
    shape = _classify(bh, bw, fill, asym, corner, MAX_SIDE_FRACTION * min(h, w))
    cx = (np.add.reduceat(xs, starts) / area + 0.5) / w
    cy = (np.add.reduceat(ys, starts) / area + 0.5) / h
    colour = cls.reshape(-1)[comp_roots]
    image_of = comp_roots // (h * w)
    big = (area >= MIN_AREA_FRACTION * h * w) & (
        np.maximum(bh, bw) >= MIN_SIDE_FRACTION * min(h, w)
    )
    keep = np.flatnonzero(big)
    names = (*SHAPES, "unknown")
    found: list[list[Detected]] = [[] for _ in range(b)]
    for j in keep:
        found[image_of[j]].append(
            Detected(
                COLOURS[colour[j] - 1], names[shape[j]], float(cx[j]), float(cy[j]), int(area[j])
            )
        )
    return found


def check(constraints: Constraints, objects: Sequence[Detected]) -> tuple[float, dict[str, Any]]:
    """Score detected objects against parsed constraints: ``(fraction met, info)``."""
    matches = [
        [o for o in objects if o.colour == g.colour and o.shape == g.shape]
        for g in constraints.groups
    ]
    results: list[dict[str, Any]] = []
    for g, found in zip(constraints.groups, matches, strict=True):
        name = f"{g.colour} {g.shape}"
        results.append(
            {"description": f"at least one {name}", "kind": "presence", "ok": len(found) >= 1}
        )
        if g.count is not None:
            results.append(
                {
                    "description": f"exactly {g.count} x {name}",
                    "kind": "count",
                    "ok": len(found) == g.count,
                }
            )
    for r in constraints.relations:
        a, b = constraints.groups[r.left], constraints.groups[r.right]
        ok = bool(matches[r.left]) and bool(matches[r.right])
        for oa in matches[r.left]:
            for ob in matches[r.right]:
                main, other = axis_offsets(r.kind, ob.x - oa.x, ob.y - oa.y)
                ok = ok and main >= RELATION_MARGIN and main > abs(other)
        desc = f"{a.colour} {a.shape} {RELATION_WORDS[r.kind]} {b.colour} {b.shape}"
        results.append({"description": desc, "kind": "relation", "ok": ok})
    met = sum(r["ok"] for r in results)
    score = met / len(results)
    return score, {"strict": met == len(results), "constraints": results}


def verify_batch(
    images: np.ndarray | Sequence[np.ndarray], prompts: Sequence[str]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Score a batch ``(B, H, W, 3)`` (uint8, or float in [0, 1]) against one prompt each.
    Returns float32 scores ``(B,)`` and per-image info (``strict``, ``constraints``,
    ``objects``). Raises ``ShapesGrammarError`` for a prompt outside the grammar."""
    if not isinstance(images, np.ndarray):
        shapes = {np.shape(im) for im in images}
        if len(shapes) > 1:
            raise ValueError(f"images in one batch must share a shape, got {sorted(shapes)}")
        images = (
            np.stack([np.asarray(im) for im in images])
            if len(images)
            else np.zeros((0, 1, 1, 3), dtype=np.uint8)
        )
    if isinstance(prompts, str):
        raise ValueError("prompts must be a sequence of strings, one per image, not one string")
    if len(prompts) != len(images):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
    parsed = [parse(p) for p in prompts]
    if len(images) == 0:
        return np.zeros(0, dtype=np.float32), []
    found = detect(images)
    scores = np.zeros(len(parsed), dtype=np.float32)
    infos: list[dict[str, Any]] = []
    for i, (c, objs) in enumerate(zip(parsed, found, strict=True)):
        scores[i], info = check(c, objs)
        info["objects"] = [o.as_dict() for o in objs]
        infos.append(info)
    return scores, infos


def verify(image: np.ndarray, prompt: str) -> tuple[float, dict[str, Any]]:
    """Score one ``(H, W, 3)`` image (uint8, or float in [0, 1]) against ``prompt``."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an image (H, W, 3), got shape {arr.shape}")
    scores, infos = verify_batch(arr[None], [prompt])
    return float(scores[0]), infos[0]
