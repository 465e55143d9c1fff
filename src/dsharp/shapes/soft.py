"""The ``shapes_soft`` reward: a differentiable surrogate of the exact ``shapes`` reward.

Why it exists: ReFL-style methods (IterPO) back-propagate the reward into the model, and the
exact verifier (``verifier.py``) thresholds pixels and counts connected components, so it has
no gradient; the model rewards that have one (CLIP, ImageReward, ...) need downloaded
weights. This surrogate scores the same prompts with torch ops on ``images.tensor``, so
gradients reach every pixel, offline. Report the exact ``shapes`` score in evaluation: this
one is a training signal built to rise and fall with it, not a replacement.

Design, and why each part is there:

1. **Colour classes.** The verifier calls a pixel colour *c* when it is at least
   ``MIN_BRIGHTNESS`` of the way along the ray from black through *c* and within
   ``MAX_RAY_DISTANCE`` of it (blurred edges are palette colours darkened towards the black
   background); else background. The soft version (:func:`soft_colour_classes`) is a softmax
   over the squared ray distances ``-d_c / tau`` against a background logit
   ``-MAX_RAY_DISTANCE^2 / tau``, times a sigmoid brightness gate, so its boundaries are the
   verifier's, smoothed. Plain nearest-colour ``|x - c|^2`` would disagree with the verifier
   on dim edges.
2. **Straight-through** (default): the terms below are computed on the verifier's *hard*
   classes in the forward pass, with the soft classes' gradients in the backward pass
   (``hard + soft - soft.detach()``). Why: scored on soft classes, gradient ascent on pixels
   found images where a faint, sub-threshold tint over the whole background counted as "a red
   circle" (soft score 1, exact score 0). With hard classes forward, the score only rises when
   pixels really change class, so the logged reward stays honest, and ``tau`` only shapes the
   gradients: 0.05 let pixel-space ascent recolour an object (exact 0 -> 1) where 0.01 gave
   vanishing gradients. ``straight_through=False`` scores the soft classes (use a small
   ``tau`` then, e.g. 0.01, so clean pixels are nearly one-hot).
3. **Amount of each colour** (``mass``: its share of the image), against object areas derived
   from the world's constants (sides uniform in ``MIN_SIDE..MAX_SIDE``; a square fills its
   box, a circle pi/4 of it, a triangle 1/2):
   * ``presence`` per group (the verifier's "at least one"): ``min(1, mass / need)``, written
     ``1 - relu(1 - mass / need)``, with ``need`` the smallest object the world draws, so a
     correct small object is not penalised.
   * ``count`` per numeral group ("exactly n"): a Gaussian in ``log(mass / expected)`` around
     ``n`` typical objects. Area is a weak proxy for a count (sizes vary about 3x), so the term
     is broad: it tells one object from three better than from two.
   * ``excess`` per named colour: mass beyond the most the prompt could hold (every free object
     slot at ``MAX_SIDE``) is penalised. The verifier rejects giant blobs as "unknown" shapes;
     without this term, flooding the image with the named colours would max the score.
   * ``unnamed`` (only with ``penalize_unnamed=True``): mass of colours the prompt does not
     name. The verifier ignores unmentioned objects, and this term lowered the correlation
     with it (below), so by default the amount is only reported (``info["unnamed_mass"]``).
     Unnamed colour raises no other term, so leaving it out opens no shortcut.
   Two groups of one colour ("a red circle and a red square") pool their areas.
4. **Shape**, for a group that is the only object of its colour (one object, no other group
   of that colour): central moments of the colour's mass. "Flare" ``E[dx^2 dy]`` (normalised)
   is positive for the world's upward triangles, which widen downwards, and 0 for circles and
   squares; "corner" ``E[dx^2 dy^2] / (E[dx^2] E[dy^2])`` is 1 for a square and 2/3 for a
   circle; a blob much longer one way than the shape should be (the verifier's "unknown")
   fits no shape. The ``shape`` term is the prompt's shape's probability (saturated, see 6)
   times presence times a size check (no bigger than the world's largest such object). Why
   moments: on dsharp-mini's own val samples the colours are nearly always right and the
   shapes are what fail (held-out colour-shape pairs): a colour-only version of this reward
   had a Pearson correlation of 0.04 with the exact score there. Vertical skewness, the
   obvious triangle cue, swung from -1.1 to +0.2 on 7-px renders; flare stays in 0.37..0.83.
   Moments cannot separate the objects of a colour with several (counts, shared colours):
   those groups get no shape term, and the surrogate does not see their shapes. On
   dsharp-mini samples with one object per colour the term agreed with the verifier's shape
   86% of the time.
5. **Relations** from centroids of each colour's class mass (pixel centres, plus a one-pixel
   prior at the image centre so an absent colour has a finite centroid). As in the verifier
   the offset along the relation's axis must beat both ``RELATION_MARGIN`` and the offset
   along the other axis: ``sigmoid((main - max(margin, |other|)) / relation_scale)``, times the
   smaller of the two groups' presence (times shape where judged): the verifier fails a
   relation whose objects it does not find. Two groups of one colour share a centroid: their
   relation is not observable and scores a constant 0.5 x that gate.
6. **Saturation**: shape and relation probabilities count as a full pass from 0.9 on
   (``min(1, p / 0.9)``), so a met prompt scores exactly 1 and has no gradient left. A bare
   sigmoid never reaches 1, and in pixel-space ascent with Adam (which rescales steps) its
   last tiny gradients kept moving the pixels of an already-correct circle until it grew
   into a blob, or broke into fragments, that the verifier rejects. ReFL's own margin loss
   follows the same idea.

Score = mean of the terms, in ``[0, 1]``. ``info["terms"]`` has, per term kind, one value per
image (mean of that kind's terms, None when the prompt has none); ``info["details"]`` lists
every term of every image with a description.

Agreement with the exact reward, on ~300 shapes-world scenes (12 grammar prompts per
category, each rendered as drawn and as variants with one colour, shape, count or relation
changed, a group dropped or an object added; a third blurred, a third noisy; four seeds):
Pearson 0.87-0.88, Spearman 0.87-0.88; without the shape swaps 0.96 and 0.94. Without the
shape term (``judge_shapes=False``) the first pair is 0.60-0.63 / 0.56-0.60, with
``penalize_unnamed`` 0.75-0.77 / 0.76-0.80, scoring soft classes (``straight_through=False,
tau=0.01``) 0.73-0.75 / 0.71-0.75. On dsharp-mini's own samples (108 images of val prompts,
untrained model) agreement is weak, Pearson 0.17: the exact score there is mostly 0 or 1/3,
and most of the gap is counting prompts (several objects of one colour: no shape judged, and
area only roughly tells a count) and blobs the verifier calls "unknown" that moments call
regular.

Known weakness: unconstrained gradient ascent on pixels (Adam, 150 steps) recoloured objects
honestly (exact score up on 16 of 30 scenes; never a soft 0.95 without an exact 1) but,
asked to change a shape, reached a soft score of 0.95 with the exact score below 1 on 20 of 30
scenes: pixel patterns with the moments of a circle that the verifier does not accept. A
model's output is far more constrained than free pixels, but watch the exact score during
training; ``judge_shapes=False`` removes this lever (and the shape signal with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from dsharp.rewards.base import RewardError, RewardImages
from dsharp.shapes.grammar import (
    COLOURS,
    RELATION_WORDS,
    SHAPES,
    Constraints,
    ShapesGrammarError,
    parse,
)
from dsharp.shapes.verifier import MAX_RAY_DISTANCE, MIN_BRIGHTNESS, RELATION_MARGIN
from dsharp.shapes.world import BACKGROUND, MAX_SIDE, MIN_SIDE, PALETTE, axis_offsets

TERM_KINDS: tuple[str, ...] = ("presence", "shape", "count", "relation", "excess", "unnamed")
# Share of its bounding box each shape fills (render(): square, inscribed circle, triangle
# with base = height).
FILL: dict[str, float] = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}
# E[side^2] for sides uniform in MIN_SIDE..MAX_SIDE, as a fraction of the image area.
MEAN_SIDE2 = (MAX_SIDE**3 - MIN_SIDE**3) / (3 * (MAX_SIDE - MIN_SIDE))
# Presence saturates at this share of the smallest object's area (pixelisation of a 7 px
# shape loses a few pixels); excess starts beyond this multiple of the largest.
PRESENCE_SLACK = 0.75
EXCESS_SLACK = 1.25
# Width (in log area ratio) of the count term: log(2) ~ 0.69 -> 0.38, log(3) -> 0.09.
COUNT_LOG_SIGMA = 0.5
MAX_OBJECTS = 3
# Width of the brightness gate, in units of distance along a ray (1 = the palette colour).
BRIGHTNESS_SCALE = 0.05
# Shape from the central moments of a colour's mass (see the module docstring). "Flare",
# E[dx^2 dy] / (E[dx^2] E[dy^2]^(1/2)), is 0.57 for an upward triangle (wider at the bottom)
# and 0 for circles and squares; "corner", E[dx^2 dy^2] / (E[dx^2] E[dy^2]), is 1 for a
# square and 2/3 for a circle. Measured on renders and dsharp-mini samples, one object per
# colour: flare 0.53 +- 0.14 for triangles, within +-0.15 for the others (a few to 0.3);
# corner 0.73 +- 0.12 for circles, 0.94 and up for squares.
TRIANGLE_FLARE = 0.3
FLARE_SCALE = 0.05
SQUARE_CORNER = 0.88
CORNER_SCALE = 0.03
# E[dx^2] / E[dy^2] of each shape (a triangle with base = height: 3/4). The verifier calls
# boxes with an aspect ratio over 1.4 "unknown"; the variance ratio of such blobs is beyond
# about 1.8 (or under 1 / 1.8) of the shape's own.
VARIANCE_RATIO: dict[str, float] = {"circle": 1.0, "square": 1.0, "triangle": 0.75}
MAX_ELONGATION = math.log(1.8)
ELONGATION_SCALE = 0.1
_MOMENT_EPS = 1e-6
# Shape and relation probabilities at or above this count as a full pass (see _saturate).
SATURATION = 0.9
# Centroid prior: this fraction of the image (about one pixel at 32x32) sits at the centre.
_CENTROID_PRIOR = 1e-3
_TYPICAL_OBJECT = MEAN_SIDE2 * sum(FILL.values()) / len(FILL)
_BACKGROUND_RAY2 = (MAX_RAY_DISTANCE / 255.0) ** 2
assert BACKGROUND == (0, 0, 0), "the colour rays assume a black background"


def _rays(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness along each palette ray (1 = the palette colour) and squared distance to it,
    each ``(B, H, W, K)``, for pixels ``x`` ``(B, H, W, 3)``."""
    rays = torch.tensor([PALETTE[c] for c in COLOURS], dtype=x.dtype, device=x.device) / 255.0
    norm2 = (rays * rays).sum(-1)
    dot = x @ rays.T
    ray2 = ((x * x).sum(-1, keepdim=True) - dot * dot / norm2).clamp(min=0)
    return dot / norm2, ray2


def soft_colour_classes(
    pixels: torch.Tensor, tau: float, brightness_scale: float = BRIGHTNESS_SCALE
) -> torch.Tensor:
    """Class probabilities ``(B, 1 + len(COLOURS), H, W)`` of images ``(B, 3, H, W)`` in
    ``[0, 1]``: channel 0 background, ``1 + COLOURS.index(c)`` colour c (see the module
    docstring). Differentiable in ``pixels``; NaN or infinite pixels count as black/white."""
    x = torch.nan_to_num(pixels.float(), nan=0.0, posinf=1.0, neginf=0.0).permute(0, 2, 3, 1)
    along, ray2 = _rays(x)
    background = torch.full_like(ray2[..., :1], _BACKGROUND_RAY2)
    hue = torch.softmax(-torch.cat([background, ray2], dim=-1) / tau, dim=-1)
    bright = torch.sigmoid((along - MIN_BRIGHTNESS) / brightness_scale)
    colours = hue[..., 1:] * bright  # a dark pixel on a colour's ray is background
    probs = torch.cat([1 - colours.sum(-1, keepdim=True), colours], dim=-1)
    return probs.permute(0, 3, 1, 2)


@torch.no_grad()
def hard_colour_classes(pixels: torch.Tensor) -> torch.Tensor:
    """One-hot ``(B, 1 + len(COLOURS), H, W)`` of the verifier's own colour rule
    (``verifier.colour_classes``), in torch on the pixels' device; no gradient."""
    x = torch.nan_to_num(pixels.detach().float(), nan=0.0, posinf=1.0, neginf=0.0)
    along, ray2 = _rays(x.clamp(0, 1).permute(0, 2, 3, 1))
    ray2 = ray2.masked_fill(along < MIN_BRIGHTNESS, math.inf)
    best, index = ray2.min(-1)
    cls = torch.where(best > _BACKGROUND_RAY2, 0, index + 1)
    return torch.nn.functional.one_hot(cls, 1 + len(COLOURS)).permute(0, 3, 1, 2).to(x.dtype)


def _shape_probabilities(
    probs: torch.Tensor,
    weight: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
) -> torch.Tensor:
    """``(B, 1 + K, len(SHAPES))``: how much each class's mass looks like a circle, square or
    triangle, from its central moments (meaningful when the class holds one object)."""
    dx = xs - cx[..., None, None]  # (B, 1 + K, 1, W)
    dy = ys[:, None] - cy[..., None, None]  # (B, 1 + K, H, 1)

    def moment(f: torch.Tensor) -> torch.Tensor:
        return (probs * f).mean(dim=(2, 3)) / weight

    vxx, vyy = moment(dx**2), moment(dy**2)
    flare = moment(dx**2 * dy) / ((vxx + _MOMENT_EPS) * (vyy + _MOMENT_EPS).sqrt())
    corner = moment(dx**2 * dy**2) / (vxx * vyy + _MOMENT_EPS**2)
    triangle = torch.sigmoid((flare - TRIANGLE_FLARE) / FLARE_SCALE)
    square = (1 - triangle) * torch.sigmoid((corner - SQUARE_CORNER) / CORNER_SCALE)
    by_name = {"circle": 1 - triangle - square, "square": square, "triangle": triangle}
    ratio = (vxx + _MOMENT_EPS) / (vyy + _MOMENT_EPS)
    out = []
    for s in SHAPES:  # an elongated blob is no shape at all for the verifier
        elongation = torch.log(ratio / VARIANCE_RATIO[s]).abs()
        out.append(by_name[s] * torch.sigmoid((MAX_ELONGATION - elongation) / ELONGATION_SCALE))
    return torch.stack(out, dim=-1)


def _saturate(p: torch.Tensor) -> torch.Tensor:
    """``min(1, p / SATURATION)``: a clear pass scores exactly 1 and stops pulling. A sigmoid
    never reaches 1, and its last, tiny gradients were enough for optimisers that rescale
    steps (Adam) to keep pushing pixels long after the verifier was satisfied."""
    return 1 - torch.relu(1 - p / SATURATION)


def _areas(c: Constraints, colour: str) -> tuple[float, float, float]:
    """(need, expected, upper) image fractions of ``colour`` for prompt ``c``: the smallest
    amount that holds one object per group, the typical amount of the objects it asks for,
    and the most it could hold (free object slots filled at ``MAX_SIDE``)."""
    free = max(0, MAX_OBJECTS - c.n_objects)
    need = expected = upper = 0.0
    for g in c.groups:
        if g.colour != colour:
            continue
        need += PRESENCE_SLACK * MIN_SIDE**2 * FILL[g.shape]
        expected += g.n_objects * MEAN_SIDE2 * FILL[g.shape]
        most = g.count if g.count is not None else 1 + free
        upper += EXCESS_SLACK * most * MAX_SIDE**2 * FILL[g.shape]
    return need, expected, upper


def _unnamed_mass(c: Constraints, mass: torch.Tensor) -> torch.Tensor:
    """Total class mass ``mass`` ``(1 + K,)`` of the palette colours ``c`` does not name."""
    named = {g.colour for g in c.groups}
    return mass[[1 + k for k, col in enumerate(COLOURS) if col not in named]].sum()


def check_shapes_soft_options(options: Mapping[str, Any]) -> None:
    """``ValueError`` for an option value the ``shapes_soft`` reward refuses: checked by
    ``recipes validate`` and before a model loads, and again when the reward is built."""
    for name in ("tau", "relation_scale"):
        if name not in options:
            continue
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"shapes_soft reward option {name!r} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"shapes_soft reward option {name!r} must be > 0, got {value!r}")
    for name in ("penalize_unnamed", "straight_through", "judge_shapes"):
        flag = options.get(name, False)  # only a given value is checked
        if not isinstance(flag, bool):
            raise ValueError(
                f"shapes_soft reward option {name!r} must be true or false, got {flag!r}"
            )
    on_error = options.get("on_error", "raise")
    if on_error not in ("raise", "missing"):
        raise ValueError(
            f"shapes_soft reward on_error must be 'raise' or 'missing', got {on_error!r}"
        )


class SoftShapesReward:
    """Differentiable surrogate of the ``shapes`` reward: colour amounts, single-object shape
    moments and centroids against the prompt's groups, counts and relations; mean of terms
    in ``[0, 1]``.

    A prompt outside the shapes grammar raises :class:`RewardError`, or with
    ``on_error="missing"`` scores NaN for that sample only (its error is in ``info["errors"]``).
    """

    differentiable = True

    def __init__(
        self,
        tau: float = 0.05,
        relation_scale: float = 0.05,
        penalize_unnamed: bool = False,
        straight_through: bool = True,
        judge_shapes: bool = True,
        on_error: Literal["raise", "missing"] = "raise",
    ):
        check_shapes_soft_options(
            {
                "tau": tau,
                "relation_scale": relation_scale,
                "penalize_unnamed": penalize_unnamed,
                "straight_through": straight_through,
                "judge_shapes": judge_shapes,
                "on_error": on_error,
            }
        )
        self.tau = float(tau)
        self.relation_scale = float(relation_scale)
        self.penalize_unnamed = penalize_unnamed
        self.straight_through = straight_through
        self.judge_shapes = judge_shapes
        self.on_error = on_error

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if isinstance(prompts, str) or len(prompts) != len(images):
            raise ValueError(
                f"shapes_soft reward got {len(images)} images but {len(prompts)} prompts"
            )
        parsed: list[Constraints | None] = []
        errors: list[str | None] = []
        for p in prompts:
            try:
                parsed.append(parse(p))
                errors.append(None)
            except ShapesGrammarError as err:
                if self.on_error == "raise":
                    raise RewardError(f"shapes_soft reward: {err}") from err
                parsed.append(None)
                errors.append(str(err))
        pixels = images.tensor
        probs = soft_colour_classes(pixels, self.tau)
        _, _, h, w = probs.shape
        if self.straight_through:  # the verifier's classes forward, soft gradients back
            probs = hard_colour_classes(pixels) + probs - probs.detach()
        mass = probs.mean(dim=(2, 3))  # (B, 1 + K)
        ys = (torch.arange(h, device=probs.device, dtype=probs.dtype) + 0.5) / h
        xs = (torch.arange(w, device=probs.device, dtype=probs.dtype) + 0.5) / w
        weight = mass + _CENTROID_PRIOR
        cx = ((probs * xs).mean(dim=(2, 3)) + _CENTROID_PRIOR * 0.5) / weight
        cy = ((probs * ys[:, None]).mean(dim=(2, 3)) + _CENTROID_PRIOR * 0.5) / weight
        shapes = _shape_probabilities(probs, weight, cx, cy, xs, ys) if self.judge_shapes else None

        nan = torch.tensor(math.nan, device=pixels.device)
        scores: list[torch.Tensor] = []
        per_image: list[list[tuple[str, str, torch.Tensor]]] = []
        for i, c in enumerate(parsed):
            if c is None:
                scores.append(nan)
                per_image.append([])
                continue
            terms = self._terms(c, mass[i], cx[i], cy[i], None if shapes is None else shapes[i])
            scores.append(torch.stack([t for _, _, t in terms]).mean())
            per_image.append(terms)
        # Straight-through adds soft - soft.detach(), which can leave rounding dust below 0.
        score = torch.stack(scores).to(torch.float32).clamp(0, 1)

        flat = [t for terms in per_image for _, _, t in terms]
        values = torch.stack(flat).detach().clamp(0, 1).cpu().tolist() if flat else []
        details: list[list[dict[str, Any]]] = []
        summary: dict[str, list[float | None]] = {k: [] for k in TERM_KINDS}
        k = 0
        for terms in per_image:
            rows = []
            for kind, description, _ in terms:
                rows.append({"term": kind, "description": description, "value": values[k]})
                k += 1
            details.append(rows)
            for kind in TERM_KINDS:
                vals = [r["value"] for r in rows if r["term"] == kind]
                summary[kind].append(sum(vals) / len(vals) if vals else None)
        unnamed = [
            None if c is None else round(float(_unnamed_mass(c, mass[i].detach())), 6)
            for i, c in enumerate(parsed)
        ]
        info: dict[str, Any] = {"terms": summary, "details": details, "unnamed_mass": unnamed}
        if any(e is not None for e in errors):
            info["errors"] = errors
        return score, info

    def _terms(
        self,
        c: Constraints,
        mass: torch.Tensor,
        cx: torch.Tensor,
        cy: torch.Tensor,
        shapes: torch.Tensor | None,
    ) -> list[tuple[str, str, torch.Tensor]]:
        """``(kind, description, value)`` of every term of one image for prompt ``c``."""
        terms: list[tuple[str, str, torch.Tensor]] = []
        named = sorted({g.colour for g in c.groups}, key=COLOURS.index)
        areas = {colour: _areas(c, colour) for colour in named}
        presence: list[torch.Tensor] = []  # per group: presence, times shape where observable
        groups_of = {col: sum(g.colour == col for g in c.groups) for col in named}
        for g in c.groups:
            k = 1 + COLOURS.index(g.colour)
            m = mass[k]
            need, expected, _ = areas[g.colour]
            value = 1 - torch.relu(1 - m / need)
            terms.append(("presence", f"at least one {g.colour} {g.shape}", value))
            if shapes is not None and g.n_objects == 1 and groups_of[g.colour] == 1:
                # The moments describe this colour's one object, which must also be no
                # bigger than the world's largest of its shape.
                one = EXCESS_SLACK * MAX_SIDE**2 * FILL[g.shape]
                size = torch.relu(1 - torch.relu(m / one - 1))
                value = _saturate(shapes[k, SHAPES.index(g.shape)]) * value * size
                terms.append(("shape", f"the {g.colour} object is a {g.shape}", value))
            presence.append(value)
            if g.count is not None:
                ratio = torch.log((m + 1e-6) / expected)
                value = torch.exp(-(ratio**2) / (2 * COUNT_LOG_SIGMA**2))
                terms.append(("count", f"exactly {g.count} x {g.colour} {g.shape}", value))
        for r in c.relations:
            a, b = c.groups[r.left], c.groups[r.right]
            gate = torch.minimum(presence[r.left], presence[r.right])
            desc = f"{a.colour} {a.shape} {RELATION_WORDS[r.kind]} {b.colour} {b.shape}"
            if a.colour == b.colour:
                terms.append(("relation", desc + " (same colour: not observable)", 0.5 * gate))
                continue
            ia, ib = 1 + COLOURS.index(a.colour), 1 + COLOURS.index(b.colour)
            main, other = axis_offsets(r.kind, cx[ib] - cx[ia], cy[ib] - cy[ia])
            need = torch.clamp(other.abs(), min=RELATION_MARGIN)
            value = _saturate(torch.sigmoid((main - need) / self.relation_scale)) * gate
            terms.append(("relation", desc, value))
        for colour in named:
            _, _, upper = areas[colour]
            m = mass[1 + COLOURS.index(colour)]
            value = torch.relu(1 - torch.relu(m / upper - 1))
            terms.append(("excess", f"no more {colour} than {upper:.3f} of the image", value))
        if self.penalize_unnamed:
            value = torch.relu(1 - _unnamed_mass(c, mass) / _TYPICAL_OBJECT)
            terms.append(("unnamed", "no colours the prompt does not name", value))
        return terms


def build_shapes_soft_reward(
    *,
    tau: float = 0.05,
    relation_scale: float = 0.05,
    penalize_unnamed: bool = False,
    straight_through: bool = True,
    judge_shapes: bool = True,
    on_error: Literal["raise", "missing"] = "raise",
) -> SoftShapesReward:
    """Build the differentiable shapes surrogate. ``tau``: temperature of the soft colour
    classes (larger = softer, more gradient far from the palette); ``relation_scale``: width of
    the relation sigmoids in image fractions; ``penalize_unnamed``: also score down palette
    colours the prompt does not name (the exact reward ignores them); ``straight_through``:
    score the verifier's hard colour classes, with the soft classes' gradients (False: score
    the soft classes themselves); ``judge_shapes``: score the shape of single-object groups
    from moments (False: colour, amount and position only); ``on_error``: "missing" scores a
    prompt outside the grammar NaN instead of raising."""
    return SoftShapesReward(
        tau=tau,
        relation_scale=relation_scale,
        penalize_unnamed=penalize_unnamed,
        straight_through=straight_through,
        judge_shapes=judge_shapes,
        on_error=on_error,
    )
