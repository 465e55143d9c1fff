"""T2I-CompBench's 2D spatial score: which relation a prompt names, which two objects it
relates, and the benchmark's position rule on their detected boxes.

The rule is that of the benchmark's UniDet script (``UniDet_eval/2D_spatial_eval.py`` and
``determine_position_for_eval.py``, read, not copied), stated here in full:

* **Relation**: the first of ``on side of, next to, near, on the left of, on the right of,
  on the bottom of, on the top of, on top of`` found in the prompt, in that order (we match
  whole words, so "nearby" is not "near").
* **Objects**: the noun closest before the relation phrase (``obj1``) and the first noun after
  it (``obj2``); for "A on the left of B", obj1 = A, obj2 = B.
* **Boxes**: the highest-scoring detection of each object. Coordinates are taken in UniDet's
  frame (the image resized so that its short side is 479 px), so the pixel threshold below
  keeps its meaning at any image size.
* **Position score** with centres ``c1, c2``, ``dx = c2.x - c1.x``, ``dy = c2.y - c1.y`` (image
  y grows downwards) and ``iou`` of the two boxes:

  - ``next to`` / ``near`` / ``on side of``: 1 if ``|dx| < 150`` or ``|dy| < 150``, else
    ``150 / max(|dx|, |dy|)``;
  - ``on the left of``: if ``dx > 0`` and ``|dx| > |dy|``: 1 when ``iou < 0.1``, else
    ``0.1 / iou``; otherwise 0. ``on the right of``: the same with ``dx < 0``;
  - ``on the top of``: if ``dy > 0`` and ``|dy| > |dx|``: 1 when ``iou < 0.1``, else
    ``0.1 / iou``; otherwise 0. ``on the bottom of``: the same with ``dy < 0``;
  - any other relation: 0.

* **Image score**: both objects found: ``0.25 * conf1 + 0.25 * conf2 + position / 2``; only
  one found: ``0.25 * conf``; none: 0. A score below 0.5 becomes 0, so an image scores only
  when both objects are found and (mostly) placed as the prompt says.

Differences, all stated in the evaluation output: an open-vocabulary detector replaces UniDet
(queries are the object nouns, so UniDet's mapping of girl/boy/man/woman to "person" is not
needed); the upstream script lists "on top of" as a relation but has no branch for it, so such
prompts (33 of the complex val prompts) always score 0 there. We score "on top of" as
"on the top of" unless ``upstream_on_top_of=True`` reproduces the upstream behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dsharp.bench.words import ADJECTIVES, IRREGULAR_PAST
from dsharp.rewards.noun_phrases import noun_phrases, resolve_method

RELATIONS: tuple[tuple[str, str], ...] = (
    ("on side of", "near"),
    ("next to", "near"),
    ("near", "near"),
    ("on the left of", "left"),
    ("on the right of", "right"),
    ("on the bottom of", "bottom"),
    ("on the top of", "top"),
    ("on top of", "top"),
)
"""Relation phrases in the benchmark's search order, with the kind of test each gets."""

REFERENCE_SHORT_SIDE = 479.0
"""UniDet's input short side (``Resize(479, max_size=480)``): boxes are scaled to it."""
IOU_THRESHOLD = 0.1
DISTANCE_THRESHOLD = 150.0
SCORE_CUTOFF = 0.5

_PATTERNS = [
    (phrase, kind, re.compile(rf"\b{re.escape(phrase)}\b", re.IGNORECASE))
    for phrase, kind in RELATIONS
]


@dataclass(frozen=True)
class Relation:
    """A relation phrase found in a prompt: the phrase, its kind and where it is."""

    phrase: str
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Detection:
    """The best box of one object: ``(x0, y0, x1, y1)`` in image pixels, and its score."""

    box: tuple[float, float, float, float]
    score: float


def find_relation(prompt: str) -> Relation | None:
    """The first relation phrase of the benchmark's list that occurs in ``prompt``."""
    for phrase, kind, pattern in _PATTERNS:
        match = pattern.search(prompt)
        if match:
            return Relation(phrase, kind, match.start(), match.end())
    return None


# --------------------------------------------------------------------------- objects

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*")


def _is_verb(word: str) -> bool:
    lower = word.lower()
    return lower in IRREGULAR_PAST or (len(lower) > 4 and lower.endswith("ed"))


def _head(phrase: str) -> str | None:
    """The head noun of a rule-based noun phrase: its last word, skipping trailing verbs that
    the rules leave inside ("the river flowed" -> "river"); ``None`` for a phrase of
    adjectives only ("tall" in "stood tall")."""
    words = _WORD.findall(phrase)
    while len(words) > 1 and _is_verb(words[-1]):
        words.pop()
    if not words or all(w.lower() in ADJECTIVES or _is_verb(w) for w in words):
        return None
    return words[-1]


def _rule_objects(prompt: str, relation: Relation) -> tuple[str, str] | None:
    before = [_head(p) for p in noun_phrases(prompt[: relation.start], "rules")]
    after = [_head(p) for p in noun_phrases(prompt[relation.end :], "rules")]
    first = next((h for h in reversed(before) if h), None)
    second = next((h for h in after if h), None)
    return (first, second) if first and second else None


def _spacy_objects(prompt: str, relation: Relation) -> tuple[str, str] | None:
    from dsharp.rewards.noun_phrases import _spacy_pipeline

    doc = _spacy_pipeline()(prompt)
    before = [t for t in doc if t.idx + len(t.text) <= relation.start]
    after = [t for t in doc if t.idx >= relation.end]
    first = next((t.text for t in reversed(before) if t.pos_ in ("NOUN", "PROPN")), None)
    second = next((t.text for t in after if t.pos_ == "NOUN"), None)
    if second is None:
        second = next((t.text for t in after if t.pos_ == "PROPN"), None)
    return (first, second) if first and second else None


def relation_objects(
    prompt: str, relation: Relation, method: str = "auto"
) -> tuple[str, str] | None:
    """``(obj1, obj2)``: the noun before and the noun after the relation phrase.

    ``method``: ``"spacy"`` uses part-of-speech tags as the benchmark does (nearest NOUN or
    PROPN before, first NOUN, else PROPN, after); ``"rules"`` takes the head word of the
    nearest rule-based noun phrase on each side; ``"auto"`` picks spaCy when installed.
    """
    if resolve_method(method) == "spacy":
        return _spacy_objects(prompt, relation)
    return _rule_objects(prompt, relation)


# --------------------------------------------------------------------------- the rule


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    x_overlap = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    y_overlap = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = x_overlap * y_overlap
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _directional(along: float, across: float, sign: int, iou: float) -> float:
    if sign * along > 0 and abs(along) > abs(across):
        return 1.0 if iou < IOU_THRESHOLD else IOU_THRESHOLD / iou
    return 0.0


def position_score(kind: str, box1: Sequence[float], box2: Sequence[float]) -> float:
    """The benchmark's position score of ``obj1`` at ``box1`` relative to ``obj2`` at ``box2``
    (boxes ``(x0, y0, x1, y1)`` in the 479-px reference frame); see the module docstring."""
    c1 = ((box1[0] + box1[2]) / 2, (box1[1] + box1[3]) / 2)
    c2 = ((box2[0] + box2[2]) / 2, (box2[1] + box2[3]) / 2)
    dx, dy = c2[0] - c1[0], c2[1] - c1[1]
    iou = _iou(box1, box2)
    if kind == "near":
        if abs(dx) < DISTANCE_THRESHOLD or abs(dy) < DISTANCE_THRESHOLD:
            return 1.0
        return DISTANCE_THRESHOLD / max(abs(dx), abs(dy))
    if kind == "left":
        return _directional(dx, dy, +1, iou)
    if kind == "right":
        return _directional(dx, dy, -1, iou)
    if kind == "top":
        return _directional(dy, dx, +1, iou)
    if kind == "bottom":
        return _directional(dy, dx, -1, iou)
    return 0.0


def to_reference_frame(
    box: Sequence[float], width: int, height: int
) -> tuple[float, float, float, float]:
    """``box`` in pixels of a ``width x height`` image -> the frame whose short side is 479."""
    scale = REFERENCE_SHORT_SIDE / min(width, height)
    return tuple(float(v) * scale for v in box)  # type: ignore[return-value]


def image_score(
    relation: Relation | None,
    first: Detection | None,
    second: Detection | None,
    width: int,
    height: int,
    *,
    upstream_on_top_of: bool = False,
) -> tuple[float, float | None]:
    """``(score, position)`` of one image by the benchmark's rule; ``position`` is ``None``
    when it was not computed (an object missing)."""
    if first is not None and second is not None:
        position = 0.0
        if relation is not None and not (upstream_on_top_of and relation.phrase == "on top of"):
            position = position_score(
                relation.kind,
                to_reference_frame(first.box, width, height),
                to_reference_frame(second.box, width, height),
            )
        score = 0.25 * first.score + 0.25 * second.score + position / 2
    elif first is not None or second is not None:
        position = None
        score = 0.25 * (first or second).score  # type: ignore[union-attr]
    else:
        position, score = None, 0.0
    return (0.0 if score < SCORE_CUTOFF else score), position
