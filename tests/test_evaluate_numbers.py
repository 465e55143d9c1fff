"""`evaluate()`'s reported numbers, with a fake sampler and fake rewards (no model)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import dsharp.evaluate as ev
import dsharp.rewards.plugins as plugins
from dsharp.config import RewardSpec
from dsharp.generate import Generated


class TableReward:
    """Scores looked up by (prompt, seed); NaN where the table says so."""

    differentiable = False

    def __init__(self, table, info=None):
        self.table, self.info = table, info

    def __call__(self, images, prompts, metadata):
        scores = torch.tensor(
            [self.table[p, m["seed"]] for p, m in zip(prompts, metadata, strict=True)]
        )
        return scores, dict(self.info or {})


def _patch(monkeypatch, rewards) -> list[tuple[list[str], list[int]]]:
    """Fake sampler and rewards; returns the (prompts, seeds) each sampling call was given."""
    sampled = []

    def fake_generate(model, prompts, seeds, settings, **kw):
        sampled.append((list(prompts), list(seeds)))
        return Generated(images=torch.zeros(len(prompts), 3, 4, 4), nfe_per_image=1.0)

    monkeypatch.setattr(ev, "generate", fake_generate)
    monkeypatch.setattr(plugins, "build_reward", lambda spec: rewards[spec.name])
    return sampled


def test_n_images_counts_every_generated_image_even_unscored(monkeypatch):
    """n_images is what was generated, metrics n what was scored; the report's 'N images per
    model' and the reward-eval budget use n_images."""
    nan = math.nan
    table = {("a", 0): 1.0, ("a", 1): nan, ("b", 0): 0.0, ("b", 1): 0.5}
    _patch(monkeypatch, {"r": TableReward(table)})
    out = ev.evaluate(None, ["a", "b"], [_spec("r")], num_seeds=2)
    assert out["n_images"] == 4
    assert out["metrics"]["r"]["n"] == 3
    assert out["overall"] == pytest.approx(0.5)


def test_weight_zero_reward_with_nan_does_not_unscore_images(monkeypatch):
    """A report-only reward (weight 0) that misses an image must not turn that image's total
    into NaN."""
    table_main = {("a", 0): 1.0, ("b", 0): 0.0}
    table_side = {("a", 0): math.nan, ("b", 0): 0.3}
    _patch(monkeypatch, {"main": TableReward(table_main), "side": TableReward(table_side)})
    out = ev.evaluate(None, ["a", "b"], [_spec("main"), _spec("side", weight=0.0)], num_seeds=1)
    assert out["overall"] == pytest.approx(0.5)
    assert [img["score"] for img in out["images"]] == [1.0, 0.0]
    assert out["metrics"]["side"]["n"] == 1
    assert out["reward_weights"] == {"main": 1.0, "side": 0.0}  # which rewards make the score


def test_seed_base_shifts_every_seed(monkeypatch):
    """A reward bench run on seeds [5, 6] must draw seeds 5
    and 6, not 0 and 1."""
    table = {(p, s): 0.0 for p in "ab" for s in (5, 6)}
    sampled = _patch(monkeypatch, {"r": TableReward(table)})
    out = ev.evaluate(None, ["a", "b"], [_spec("r")], num_seeds=2, seed_base=5)
    assert sampled == [(["a", "a", "b", "b"], [5, 6, 5, 6])]  # the images were drawn so
    assert out["seeds"] == [5, 6]
    assert [(i["prompt"], i["seed"]) for i in out["images"]] == [
        ("a", 5),
        ("a", 6),
        ("b", 5),
        ("b", 6),
    ]


def test_category_means_skip_unscored_images(monkeypatch):
    """One unscored image must not blank its category."""
    table = {("x1", 0): 1.0, ("x2", 0): math.nan, ("y1", 0): 0.25}
    _patch(monkeypatch, {"r": TableReward(table)})
    out = ev.evaluate(
        None, ["x1", "x2", "y1"], [_spec("r")], num_seeds=1, category_of=lambda p: p[0]
    )
    assert out["categories"] == {"x": 1.0, "y": 0.25}


def test_metric_interval_is_over_prompts_with_student_t(monkeypatch):
    """The seeds of one prompt are not independent draws: ci95 is the interval over the
    prompts' means (t with 2 degrees of freedom for 3 prompts), not over 6 iid images."""
    table = {("a", 0): 0.0, ("a", 1): 0.2, ("b", 0): 1.0, ("b", 1): 0.8}
    table |= {("c", 0): 0.4, ("c", 1): 0.6}
    _patch(monkeypatch, {"r": TableReward(table)})
    stats = ev.evaluate(None, ["a", "b", "c"], [_spec("r")], num_seeds=2)["metrics"]["r"]
    prompt_means = [0.1, 0.9, 0.5]
    spread = math.sqrt(sum((m - 0.5) ** 2 for m in prompt_means) / 2)
    assert stats["ci95"] == pytest.approx(4.3026527 * spread / math.sqrt(3))
    assert stats["mean"] == pytest.approx(0.5) and stats["n"] == 6
    assert stats["std"] == pytest.approx(math.sqrt(sum((v - 0.5) ** 2 for v in table.values()) / 5))


def test_one_scored_image_has_no_interval_not_a_zero_one(monkeypatch):
    table = {("a", 0): 0.25, ("b", 0): math.nan}
    _patch(monkeypatch, {"r": TableReward(table)})
    stats = ev.evaluate(None, ["a", "b"], [_spec("r")], num_seeds=1)["metrics"]["r"]
    assert stats["mean"] == 0.25 and stats["n"] == 1
    assert math.isnan(stats["ci95"]) and math.isnan(stats["std"])
    assert ev.mean_ci([0.5])["ci95"] != 0.0 and math.isnan(ev.mean_ci([0.5])["ci95"])
    one_prompt = ev.mean_ci([0.1, 0.9], ["a", "a"])  # two seeds of one prompt
    assert math.isnan(one_prompt["ci95"]) and one_prompt["std"] == pytest.approx(0.5657, abs=1e-4)


def test_n_scored_counts_the_images_the_means_are_over(monkeypatch):
    table = {("a", 0): 1.0, ("a", 1): math.nan, ("b", 0): math.nan, ("b", 1): 0.5}
    _patch(monkeypatch, {"r": TableReward(table)})
    out = ev.evaluate(None, ["a", "b"], [_spec("r")], num_seeds=2)
    assert (out["n_images"], out["n_scored"]) == (4, 2)
    assert out["overall"] == pytest.approx(0.75)


def test_each_rewards_settings_are_recorded_with_secrets_redacted(monkeypatch):
    """One reward name with other options is another scorer: the evaluation says which
    (options, weight, normalisation), never a key."""
    table = {("a", 0): 1.0}
    _patch(monkeypatch, {"r": TableReward(table), "s": TableReward(table)})
    options = {"binary": True, "api_key": "sk-secret-123", "base_url": "https://u:pw@host/v1"}
    specs = [_spec("r", options=options), _spec("s", weight=0.0)]
    out = ev.evaluate(None, ["a"], specs, num_seeds=1)
    recorded = out["reward_specs"]
    assert list(recorded) == ["r", "s"]
    assert recorded["r"]["name"] == "r" and recorded["r"]["weight"] == 1.0
    assert recorded["r"]["normalize"] == "none"
    assert recorded["r"]["options"] == {
        "binary": True,
        "api_key": "<redacted>",
        "base_url": "https://<redacted>@host/v1",
    }
    assert recorded["s"]["weight"] == 0.0 and recorded["s"]["options"] == {}
    written = json.dumps(out)
    assert "sk-secret-123" not in written and "pw@" not in written
    assert options["api_key"] == "sk-secret-123"  # the spec itself is left as it was


def _spec(name, weight=1.0, options=None):
    # RewardSpec validates names against the registry: build it without validation
    return RewardSpec.model_construct(
        name=name, weight=weight, normalize="none", on_error="missing", options=options or {}
    )


def test_scoring_has_its_own_progress_after_sampling(monkeypatch, capsys):
    """A slow reward (a remote grader) scores after the sampling bar has ended: without a
    bar of its own, minutes pass with nothing shown. Off a terminal, the bar's last line
    counts every image of every reward."""
    table = {("a", 0): 1.0, ("a", 1): 0.5, ("b", 0): 0.0, ("b", 1): 0.5}
    _patch(monkeypatch, {"r": TableReward(table), "s": TableReward(table)})
    ev.evaluate(None, ["a", "b"], [_spec("r"), _spec("s")], num_seeds=2, progress=True)
    ev.evaluate(None, ["a"], [_spec("r")], progress=True, progress_label="eval base")
    lines = [line.split(",")[0] for line in capsys.readouterr().err.splitlines()]
    assert "score: 8/8" in lines  # 4 images x 2 rewards
    assert "eval base (score): 2/2" in lines
