"""The shapes world of dsharp-mini: procedural 32x32 scenes of coloured circles, squares and
triangles, captioned in a small grammar that mirrors T2I-CompBench categories, with an exact
compositional verifier used as a reward.

- ``grammar``: vocabulary, :class:`Constraints`, :func:`parse`, :func:`category_of`
- ``world``: palette, :class:`Scene`, :func:`render`, :func:`sample_scene`
- ``prompts``: random prompts, held-out pairs, :func:`prompt_sets`, :func:`grammar_prompt_sets`
- ``data``: :func:`generate_pairs` with caption noise
- ``verifier``: :func:`verify`, :func:`verify_batch`
- ``reward``: the ``shapes`` reward (imports torch; not imported here)
"""

from dsharp.shapes.data import generate_pairs
from dsharp.shapes.grammar import (
    CATEGORIES,
    Constraints,
    Group,
    Relation,
    ShapesGrammarError,
    category_of,
    parse,
)
from dsharp.shapes.prompts import HELD_OUT_PAIRS, grammar_prompt_sets, prompt_sets
from dsharp.shapes.verifier import verify, verify_batch
from dsharp.shapes.world import PALETTE, Scene, SceneObject, render, sample_scene

__all__ = [
    "CATEGORIES",
    "HELD_OUT_PAIRS",
    "PALETTE",
    "Constraints",
    "Group",
    "Relation",
    "Scene",
    "SceneObject",
    "ShapesGrammarError",
    "category_of",
    "generate_pairs",
    "grammar_prompt_sets",
    "parse",
    "prompt_sets",
    "render",
    "sample_scene",
    "verify",
    "verify_batch",
]
