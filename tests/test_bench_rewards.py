"""Named reward benches: default prompt sets, seeds, and a run with tiny reward models."""

from __future__ import annotations

import json
import math

import pytest

from dsharp.bench import bench_names
from dsharp.bench.reward_benches import REWARD_BENCHES, get_reward_bench, run_reward_bench


@pytest.fixture(scope="module")
def tiny_model(tiny_sd_dir):
    from dsharp.models import load_model

    return load_model(str(tiny_sd_dir))


def _settings():
    from dsharp.generate import SampleSettings

    return SampleSettings(steps=2)


def test_every_bench_has_a_default_prompt_set_and_a_registered_reward():
    from dsharp.rewards.plugins import reward_registry

    registry = reward_registry()
    assert set(REWARD_BENCHES) == {
        "clip",
        "aesthetic",
        "imagereward",
        "pickscore",
        "hpsv2",
        "mllm",
        "shapes",
    }
    assert bench_names()[0] == "t2i-compbench"
    for bench in REWARD_BENCHES.values():
        assert bench.reward in registry
        prompts = bench.default_prompts()
        assert len(prompts) >= 20, bench.name
        assert len(set(prompts)) == len(prompts), bench.name
        assert all(p and not p.startswith("#") for p in prompts)
    assert len(get_reward_bench("clip").default_prompts()) == 47
    assert len(get_reward_bench("aesthetic").default_prompts()) == 32


def test_unknown_bench_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown reward bench 'clipp'.*clip, aesthetic"):
        get_reward_bench("clipp")


def test_clip_bench_mean_and_ci(tiny_model, tmp_path):
    from dsharp.testing.tiny_rewards import make_tiny_open_clip

    options = {**make_tiny_open_clip(tmp_path / "clip"), "device": "cpu"}
    prompts = ["a red cube", "a blue ball"]
    result = run_reward_bench(
        tiny_model,
        "clip",
        prompts=prompts,
        seeds=2,
        settings=_settings(),
        options=options,
    )
    stats = result["metrics"]["clip"]
    assert stats["n"] == 4 and -1.0 <= stats["mean"] <= 1.0
    # over the two prompts (t with 1 degree of freedom: 12.706), not four iid images
    means = [sum(i["score"] for i in result["images"] if i["prompt"] == p) / 2 for p in prompts]
    assert stats["ci95"] == pytest.approx(12.7062047 * abs(means[0] - means[1]) / 2)
    assert result["bench"] == "clip" and result["reward"] == "clip"
    assert result["prompt_set"] == "custom" and result["seeds"] == [0, 1]
    assert result["n_images"] == 4 and result["reward_options"] == options
    json.dumps(result)


def test_aesthetic_bench_on_its_default_prompts(tiny_model, tmp_path):
    from dsharp.testing.tiny_rewards import make_tiny_aesthetic

    options = {**make_tiny_aesthetic(tmp_path / "aesthetic"), "device": "cpu"}
    result = run_reward_bench(
        tiny_model, "aesthetic", seeds=[3], settings=_settings(), options=options
    )
    assert result["prompt_set"] == "aesthetic" and result["n_prompts"] == 32
    assert result["seeds"] == [3]
    assert result["metrics"]["aesthetic"]["n"] == 32
    assert math.isfinite(result["metrics"]["aesthetic"]["mean"])


def test_prompt_file_and_seed_checks(tiny_model, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# comment\r\na green apple\r\n", encoding="utf-8")
    with pytest.raises(ValueError, match="consecutive"):
        run_reward_bench(tiny_model, "clip", prompts=prompts, seeds=[0, 2])
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        run_reward_bench(tiny_model, "clip", prompts=prompts, seeds=0)
    with pytest.raises(ValueError, match="empty list"):
        run_reward_bench(tiny_model, "clip", prompts=[], seeds=1)
    from dsharp.testing.tiny_rewards import make_tiny_open_clip

    options = {**make_tiny_open_clip(tmp_path / "clip"), "device": "cpu"}
    result = run_reward_bench(
        tiny_model, "clip", prompts=prompts, seeds=1, settings=_settings(), options=options
    )
    assert result["prompt_set"] == str(prompts) and result["n_prompts"] == 1
