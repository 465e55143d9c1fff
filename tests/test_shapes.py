"""Shapes world: grammar, scenes, prompt sets, verifier and reward."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from dsharp.rewards.base import Reward, RewardError, RewardImages
from dsharp.shapes import (
    CATEGORIES,
    HELD_OUT_PAIRS,
    Scene,
    SceneObject,
    ShapesGrammarError,
    category_of,
    generate_pairs,
    grammar_prompt_sets,
    parse,
    prompt_sets,
    render,
    sample_scene,
    verify,
    verify_batch,
)
from dsharp.shapes.data import NOISE_MODES
from dsharp.shapes.prompts import uses_held_out
from dsharp.shapes.reward import build_shapes_reward
from dsharp.shapes.verifier import _components, colour_classes


def _batch(pairs):
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def _scene(*objects: tuple[str, str, float, float, float]) -> Scene:
    return Scene(tuple(SceneObject(*o) for o in objects))


# --- grammar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("a green triangle", "single"),
        ("a red circle and a blue square", "color"),
        ("a red circle to the left of a blue square", "spatial"),
        ("a red circle to the right of a blue square", "spatial"),
        ("a red circle above a blue square", "spatial"),
        ("a red circle below a blue square", "spatial"),
        ("two yellow squares", "counting"),
        ("three blue circles", "counting"),
        ("one red circle", "counting"),
        ("two red circles above a blue square", "complex"),
        ("a red circle and two blue squares", "complex"),
        ("a red circle above a blue square and a green triangle", "complex"),
    ],
)
def test_parse_examples_round_trip(prompt, category):
    c = parse(prompt)
    assert c.to_prompt() == prompt
    assert category_of(prompt) == category
    assert parse("  " + prompt.capitalize() + ". ") == c


def test_parse_structure():
    c = parse("two red circles above a blue square and a green triangle")
    assert [(g.colour, g.shape, g.count) for g in c.groups] == [
        ("red", "circle", 2),
        ("blue", "square", None),
        ("green", "triangle", None),
    ]
    assert [(r.left, r.right, r.kind) for r in c.relations] == [(0, 1, "above")]


def test_unknown_word_is_named():
    with pytest.raises(
        ShapesGrammarError, match=r"unknown word 'hexagon' in prompt 'a red hexagon'"
    ):
        parse("a red hexagon")
    assert issubclass(ShapesGrammarError, ValueError)
    with pytest.raises(ShapesGrammarError, match="'hexagon'"):
        verify(np.zeros((32, 32, 3), np.uint8), "a red hexagon")


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("red a circle", "word 1"),
        ("a circle", "a colour"),
        ("two red circle", "plural"),
        ("a red circles", "a shape"),
        ("a red circle a blue square", "'and'"),
        ("a red circle and", "the end of the prompt"),
        ("a red circle and a red circle", "appears in two groups"),
        ("", "empty prompt"),
    ],
)
def test_bad_prompts_fail_clearly(prompt, fragment):
    with pytest.raises(ShapesGrammarError, match=fragment):
        parse(prompt)


# --- prompt sets -----------------------------------------------------------------------------


def test_prompt_sets_hold_out_pairs_and_are_deterministic():
    train, val = prompt_sets("train"), prompt_sets("val")
    assert set(train) == set(val) == set(CATEGORIES)
    assert prompt_sets("train") == train
    for category in CATEGORIES:
        assert train[category] and val[category], category
        assert not set(train[category]) & set(val[category])
        for p in train[category]:
            assert category_of(p) == category and not uses_held_out(parse(p))
        for p in val[category]:
            assert category_of(p) == category and uses_held_out(parse(p))
    all_train = {p for ps in train.values() for p in ps}
    assert not all_train & {p for ps in val.values() for p in ps}
    held_out_words = {f"{c} {s}" for c, s in HELD_OUT_PAIRS}
    assert not any(w in p for p in all_train for w in held_out_words)
    with pytest.raises(ValueError, match="split"):
        prompt_sets("test")  # type: ignore[arg-type]


def test_every_prompt_in_the_sets_renders_a_verified_scene():
    rng = np.random.default_rng(0)
    prompts = [p for split in ("train", "val") for ps in prompt_sets(split).values() for p in ps]
    images = np.stack([render(sample_scene(p, rng), 32) for p in prompts])
    scores, infos = verify_batch(images, prompts)
    failed = [(p, i) for p, s, i in zip(prompts, scores, infos, strict=True) if s < 1]
    assert not failed, failed[:3]


# --- world -----------------------------------------------------------------------------------


def test_generate_pairs_is_deterministic_per_seed():
    a, b, c = generate_pairs(20, 3), generate_pairs(20, 3), generate_pairs(20, 4)
    assert all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b, strict=True))
    assert [x[1] for x in a] != [x[1] for x in c]
    image, caption, category = a[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert category == category_of(caption)
    assert generate_pairs(2, 0, size=48)[0][0].shape == (48, 48, 3)
    assert {p[2] for p in generate_pairs(10, 0, categories=["counting"])} == {"counting"}


def test_generated_scenes_have_separate_objects_of_allowed_size():
    rng = np.random.default_rng(1)
    for _ in range(50):
        scene = sample_scene("two red circles above a blue square", rng)
        assert len(scene.objects) == 3 and scene.group_of == (0, 0, 1)
        square_y = scene.objects[2].centroid[1]
        assert all(square_y - o.centroid[1] >= 0.15 for o in scene.objects[:2])
        for o in scene.objects:
            assert 7 <= o.side * 32 <= 12 and o.x >= 0 and o.x + o.side <= 1
        for i, p in enumerate(scene.objects):
            for q in scene.objects[i + 1 :]:
                assert (
                    p.x + p.side < q.x
                    or q.x + q.side < p.x
                    or p.y + p.side < q.y
                    or q.y + q.side < p.y
                )


def test_world_rejects_bad_sizes_and_crowded_prompts():
    with pytest.raises(ValueError, match="image size"):
        render(Scene(()), 16)
    with pytest.raises(ValueError, match="at most 3"):
        sample_scene("three red circles and a blue square", np.random.default_rng(0))
    with pytest.raises(ValueError, match="caption_noise"):
        generate_pairs(1, 0, caption_noise=2.0)


def test_caption_noise_stays_in_grammar_and_split():
    pairs = generate_pairs(200, 5, caption_noise=1.0)
    for _, caption, category in pairs:
        assert category == category_of(caption)
        assert not uses_held_out(parse(caption))
    scores, _ = verify_batch(*_batch(pairs))
    # Half the modes keep the caption true of the image, half make it false.
    assert 0.2 < (scores == 1).mean() < 0.9


# --- verifier --------------------------------------------------------------------------------


def test_clean_images_verify_at_99_percent():
    pairs = generate_pairs(400, 11, size=32) + generate_pairs(200, 12, size=64)
    pairs += generate_pairs(100, 13, split="val", size=32)
    scores = np.concatenate(
        [verify_batch(*_batch(pairs[:400]))[0], verify_batch(*_batch(pairs[400:600]))[0]]
        + [verify_batch(*_batch(pairs[600:]))[0]]
    )
    accuracy = float((scores == 1.0).mean())
    print(f"clean verify accuracy {accuracy:.4f} on {len(pairs)} images (32 and 64 px)")
    assert len({p[2] for p in pairs}) == len(CATEGORIES)
    assert accuracy >= 0.99


def test_float_and_soft_images_verify():
    pairs = generate_pairs(64, 21)
    images, prompts = _batch(pairs)
    floats = images.astype(np.float32) / 255
    assert (verify_batch(floats, prompts)[0] == 1).mean() >= 0.99
    # A 3x3 binomial blur softens every edge against the black background.
    k = np.array([0.25, 0.5, 0.25], np.float32)
    soft = floats
    for axis in (1, 2):
        soft = sum(w * np.roll(soft, s, axis) for w, s in zip(k, (1, 0, -1), strict=True))
    assert (verify_batch(soft, prompts)[0] == 1).mean() >= 0.9
    score, info = verify(floats[0], prompts[0])
    assert score == 1.0 and info["strict"] and info["constraints"]


@pytest.mark.parametrize(
    ("truth", "wrong"),
    [
        (
            "a red circle to the left of a blue square",
            "a green circle to the left of a blue square",
        ),
        ("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
        ("a red circle above a blue square", "a red circle below a blue square"),
        ("a red circle and a blue square", "a blue circle and a red square"),
        ("two yellow squares", "three yellow squares"),
        ("two yellow squares", "one yellow square"),
        ("two red circles above a blue square", "two red circles below a blue square"),
    ],
)
def test_perturbed_captions_score_below_one(truth, wrong):
    rng = np.random.default_rng(0)
    for _ in range(10):
        image = render(sample_scene(truth, rng), 32)
        assert verify(image, truth)[0] == 1.0
        score, info = verify(image, wrong)
        assert score < 1.0 and not info["strict"]


def test_wrong_noise_modes_always_score_below_one():
    rng = np.random.default_rng(2)
    pairs = generate_pairs(150, 7)
    checked = 0
    for image, caption, _ in pairs:
        for mode in ("wrong_colour", "wrong_count", "flip_relation"):
            try:
                wrong = NOISE_MODES[mode](parse(caption), rng)
            except ShapesGrammarError:
                continue
            if wrong is not None:
                checked += 1
                assert verify(image, wrong.to_prompt())[0] < 1.0, (caption, wrong.to_prompt())
    assert checked > 150


def test_count_and_relation_semantics():
    two_circles = render(
        _scene(("red", "circle", 0.1, 0.1, 0.3), ("red", "circle", 0.6, 0.1, 0.3)), 32
    )
    assert verify(two_circles, "a red circle")[0] == 1.0  # "a" = at least one
    assert verify(two_circles, "one red circle")[0] == 0.5  # numeral = exactly
    assert verify(two_circles, "two red circles")[0] == 1.0
    # One red circle above the blue square, one beside it: "two ... above" fails its relation.
    mixed = render(
        _scene(
            ("red", "circle", 0.1, 0.05, 0.25),
            ("red", "circle", 0.65, 0.6, 0.25),
            ("blue", "square", 0.1, 0.6, 0.25),
        ),
        32,
    )
    score, info = verify(mixed, "two red circles above a blue square")
    assert [c["ok"] for c in info["constraints"]] == [True, True, True, False]
    kinds = [c["kind"] for c in info["constraints"]]
    assert kinds == ["presence", "count", "presence", "relation"]
    assert score == pytest.approx(0.75)
    # Extra objects the prompt does not mention are ignored.
    assert verify(mixed, "a blue square")[0] == 1.0


def test_garbage_images_score_low_without_crashing():
    rng = np.random.default_rng(0)
    prompts = [p[1] for p in generate_pairs(64, 1)]
    noise = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    assert verify_batch(noise, prompts)[0].mean() < 0.1
    assert verify_batch(rng.random((64, 32, 32, 3)), prompts)[0].mean() < 0.1
    assert verify_batch(np.zeros((64, 32, 32, 3), np.uint8), prompts)[0].max() == 0.0
    assert verify_batch(np.ones((64, 32, 32, 3)), prompts)[0].max() == 0.0
    assert verify_batch(np.full((2, 32, 32, 3), np.nan), prompts[:2])[0].max() == 0.0
    assert verify_batch(np.zeros((0, 32, 32, 3), np.uint8), [])[0].shape == (0,)


def test_verifier_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        verify(np.zeros((3, 32, 32), np.uint8), "a red circle")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        verify_batch(np.zeros((2, 32, 32, 3), np.uint8), ["a red circle"])
    with pytest.raises(ValueError, match="dtype"):
        verify(np.zeros((32, 32, 3), np.int32), "a red circle")


def _bfs_components(cls: np.ndarray) -> list[int]:
    """Reference: sorted sizes of 4-connected same-class foreground components."""
    h, w = cls.shape
    seen = np.zeros_like(cls, dtype=bool)
    sizes = []
    for y in range(h):
        for x in range(w):
            if cls[y, x] == 0 or seen[y, x]:
                continue
            seen[y, x], size, todo = True, 0, deque([(y, x)])
            while todo:
                cy, cx = todo.popleft()
                size += 1
                for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                    inside = 0 <= ny < h and 0 <= nx < w
                    if inside and not seen[ny, nx] and cls[ny, nx] == cls[cy, cx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
            sizes.append(size)
    return sorted(sizes)


def test_union_find_matches_reference_bfs():
    rng = np.random.default_rng(0)
    cls = rng.choice(3, size=(6, 20, 20), p=[0.3, 0.5, 0.2]).astype(np.int8)  # long snakes
    roots = _components(cls).reshape(cls.shape)
    for b in range(cls.shape[0]):
        fg = cls[b] > 0
        ours = sorted(np.unique(roots[b][fg], return_counts=True)[1].tolist())
        assert ours == _bfs_components(cls[b])


def test_colour_classes_follow_rays_from_black():
    # red, half-bright red, too-dark red, cyan (off palette), grey (a dim white)
    pixels = np.array([[[[220, 30, 30], [110, 15, 15], [60, 8, 8], [0, 200, 200], [128] * 3]]])
    assert colour_classes(pixels.astype(np.uint8))[0, 0].tolist() == [1, 1, 0, 0, 6]


def test_a_relation_needs_the_offset_mostly_along_its_axis():
    # the circle is a little left of the square but far above it: "above", not "left of"
    image = render(
        _scene(("red", "circle", 0.05, 0.0, 0.3), ("blue", "square", 0.2, 0.65, 0.3)), 32
    )
    score, info = verify(image, "a red circle to the left of a blue square")
    assert [c["ok"] for c in info["constraints"]] == [True, True, False] and score < 1
    assert verify(image, "a red circle above a blue square")[0] == 1.0


# --- reward ----------------------------------------------------------------------------------


def test_reward_contract():
    pairs = generate_pairs(6, 4)
    images, prompts = _batch(pairs)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    reward = build_shapes_reward()
    assert isinstance(reward, Reward) and reward.differentiable is False
    scores, info = reward(RewardImages(tensor), prompts, [{}] * 6)
    assert scores.dtype == torch.float32 and scores.shape == (6,)
    assert scores.device == tensor.device
    assert torch.all(scores == 1.0)
    assert info["strict"] == [True] * 6 and all(isinstance(s, bool) for s in info["strict"])
    assert len(info["constraints"]) == 6 and info["constraints"][0][0]["ok"] is True
    black = RewardImages(torch.zeros(2, 3, 32, 32))
    assert build_shapes_reward(binary=True)(black, prompts[:2], [{}, {}])[0].tolist() == [0, 0]


def test_the_binary_reward_is_zero_unless_every_constraint_is_met():
    image = render(_scene(("red", "circle", 0.1, 0.1, 0.3)), 32)
    pixels = RewardImages(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    prompt = ["a red circle and a blue square"]  # the circle is there, the square is not
    assert build_shapes_reward()(pixels, prompt, [{}])[0].tolist() == [0.5]
    assert build_shapes_reward(binary=True)(pixels, prompt, [{}])[0].tolist() == [0.0]
    full = ["a red circle"]
    assert build_shapes_reward(binary=True)(pixels, full, [{}])[0].tolist() == [1.0]


def test_reward_errors():
    with pytest.raises(TypeError, match="'colour_space'"):
        build_shapes_reward(colour_space="hsv")  # type: ignore[call-arg]
    reward = build_shapes_reward()
    with pytest.raises(RewardError, match="'hexagon'"):
        reward(RewardImages(torch.zeros(1, 3, 32, 32)), ["a red hexagon"], [{}])
    with pytest.raises(ValueError, match="1 images but 2 prompts"):
        reward(RewardImages(torch.zeros(1, 3, 32, 32)), ["a red circle"] * 2, [{}])


def test_reward_marks_unparsable_prompts_missing():
    images, prompts = _batch(generate_pairs(2, 4))
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    reward = build_shapes_reward(on_error="missing")
    scores, info = reward(RewardImages(tensor), [prompts[0], "a red hexagon"], [{}, {}])
    assert scores[0] == 1.0 and torch.isnan(scores[1])
    assert info["strict"] == [True, None] and info["constraints"][1] == []  # None: unscored
    assert info["errors"][0] is None and "'hexagon'" in info["errors"][1]


def test_reward_builds_through_the_plugin_registry():
    from dsharp.config import RewardSpec
    from dsharp.rewards.plugins import build_reward
    from dsharp.shapes.reward import ShapesReward

    reward = build_reward(RewardSpec(name="shapes", options={"binary": True}))
    assert isinstance(reward, ShapesReward) and reward.binary is True


def test_grammar_prompt_sets_reach_held_out_pairs_but_never_val_prompts():
    grammar = grammar_prompt_sets()
    assert grammar == grammar_prompt_sets() and set(grammar) == set(CATEGORIES)
    val = {p for ps in prompt_sets("val").values() for p in ps}
    train = {p for ps in prompt_sets("train").values() for p in ps}
    every = [p for ps in grammar.values() for p in ps]
    assert not set(every) & val
    assert len(set(every)) == len(every)
    for category, prompts in grammar.items():
        assert all(category_of(p) == category for p in prompts)
    with_held_out = [p for p in every if uses_held_out(parse(p))]
    # Multi-object categories teach the held-out pairs; train prompts never hold them.
    assert len(with_held_out) > 100 and not set(with_held_out) & train
