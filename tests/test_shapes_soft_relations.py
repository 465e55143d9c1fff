"""The soft reward's relation term on hand-set colour masses and centroids, so each part of
its formula is pinned, not only its correlation."""

from __future__ import annotations

import pytest
import torch

from dsharp.shapes import parse
from dsharp.shapes.grammar import COLOURS
from dsharp.shapes.soft import SATURATION, SoftShapesReward, _areas


def _relation(prompt: str, masses: dict[str, float], centres: dict[str, tuple[float, float]]):
    """The relation term of ``prompt`` for the given colour masses and centroids (x, y)."""
    c = parse(prompt)
    mass = torch.zeros(1 + len(COLOURS))
    cx = torch.full((1 + len(COLOURS),), 0.5)
    cy = torch.full((1 + len(COLOURS),), 0.5)
    for colour, m in masses.items():
        mass[1 + COLOURS.index(colour)] = m
    for colour, (x, y) in centres.items():
        cx[1 + COLOURS.index(colour)], cy[1 + COLOURS.index(colour)] = x, y
    terms = SoftShapesReward(judge_shapes=False)._terms(c, mass, cx, cy, None)
    (value,) = [v for kind, _, v in terms if kind == "relation"]
    return float(value)


def _need(prompt: str, colour: str) -> float:
    return _areas(parse(prompt), colour)[0]


def test_a_relation_is_gated_by_the_less_present_of_its_two_groups():
    """A met relation between a fully present red circle
    and a half-present blue square scores that half, as the verifier fails a relation
    whose objects it does not find."""
    prompt = "a red circle to the left of a blue square"
    masses = {"red": 2 * _need(prompt, "red"), "blue": 0.5 * _need(prompt, "blue")}
    centres = {"red": (0.2, 0.5), "blue": (0.8, 0.5)}
    assert _relation(prompt, masses, centres) == pytest.approx(0.5)
    swapped = {"red": 0.5 * _need(prompt, "red"), "blue": 2 * _need(prompt, "blue")}
    assert _relation(prompt, swapped, centres) == pytest.approx(0.5)


def test_a_relation_between_two_groups_of_one_colour_scores_half_its_gate():
    """One colour has one centroid, so the relation is not observable and
    scores a constant 0.5 x gate, never a full pass."""
    prompt = "a red circle to the left of a red square"
    masses = {"red": 2 * _need(prompt, "red")}
    assert _relation(prompt, masses, {"red": (0.5, 0.5)}) == pytest.approx(0.5)
    half = {"red": 0.5 * _need(prompt, "red")}
    assert _relation(prompt, half, {"red": (0.5, 0.5)}) == pytest.approx(0.25)


@pytest.mark.parametrize("dy", [0.4, -0.4])
def test_the_off_axis_offset_counts_whichever_way_it_points(dy: float):
    """ "left of" needs the x offset to beat |y offset|; a
    blue square far above the red circle fails it just as one far below does."""
    prompt = "a red circle to the left of a blue square"
    masses = {"red": 2 * _need(prompt, "red"), "blue": 2 * _need(prompt, "blue")}
    beside = _relation(prompt, masses, {"red": (0.3, 0.5), "blue": (0.6, 0.5)})
    off_axis = _relation(prompt, masses, {"red": (0.3, 0.5), "blue": (0.6, 0.5 + dy)})
    assert beside == 1.0  # 0.3 to the right, level: a clear pass
    # sigmoid((0.3 - 0.4) / 0.05), saturated at 0.9
    expected = float(torch.sigmoid(torch.tensor(-0.1 / 0.05))) / SATURATION
    assert off_axis == pytest.approx(expected, rel=1e-4)
