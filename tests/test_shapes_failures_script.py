"""scripts/shapes_failures.py: what became of each object group a prompt names."""

from __future__ import annotations

import pytest
from PIL import Image

from dsharp.shapes import Scene, SceneObject, parse, render, verify


@pytest.fixture(scope="module")
def failures(load_script):
    return load_script("shapes_failures")


def _image(*objects):
    return render(Scene(tuple(SceneObject(*o) for o in objects)), 32)


def test_swapped_colours_are_told_from_other_failures(failures):
    # "a red triangle and a blue square" drawn as a blue triangle and a red square
    swapped = _image(("blue", "triangle", 0.1, 0.1, 0.3), ("red", "square", 0.6, 0.6, 0.3))
    prompt = "a red triangle and a blue square"
    objects = verify(swapped, prompt)[1]["objects"]
    constraints = parse(prompt)
    assert [failures.group_outcome(constraints, i, objects) for i in (0, 1)] == [
        "other colour",
        "other colour",
    ]
    odd = _image(("green", "triangle", 0.1, 0.1, 0.3), ("blue", "circle", 0.6, 0.6, 0.3))
    objects = verify(odd, prompt)[1]["objects"]
    assert [failures.group_outcome(constraints, i, objects) for i in (0, 1)] == [
        "third colour",
        "no shape",
    ]


def test_summary_counts_groups_and_relations_per_kind_of_prompt(failures, tmp_path):
    prompts = ["a red triangle to the left of a blue square", "a red circle"]
    right = _image(("red", "triangle", 0.05, 0.35, 0.3), ("blue", "square", 0.65, 0.35, 0.3))
    wrong_side = _image(("red", "triangle", 0.65, 0.35, 0.3), ("blue", "square", 0.05, 0.35, 0.3))
    circle = _image(("red", "circle", 0.3, 0.3, 0.4))
    for i, image in enumerate([right, wrong_side, circle, circle]):
        Image.fromarray(image).save(tmp_path / f"{i:05d}-seed{i % 2}.png")
    Image.fromarray(circle).save(tmp_path / "grid.png")  # the eval's contact sheet: not an image
    stats = failures.summarise(tmp_path, prompts, seeds=2)
    spatial = stats[("spatial", "held-out")]  # red triangle is a held-out pair
    assert spatial["images"] == 2 and spatial["exact"] == spatial["groups"] == 4
    assert spatial["relations both"] == 2 and spatial["relations met"] == 1
    assert spatial["held exact"] == spatial["held groups"] == 2
    single = stats[("single", "seen")]
    assert single["images"] == 2 and single["score"] == 2.0
    with pytest.raises(ValueError, match="4 images, expected 3 prompts x 2 seeds"):
        failures.summarise(tmp_path, [*prompts, "a blue square"], seeds=2)
