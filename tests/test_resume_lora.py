"""A LoRA run resumed from a checkpoint trains on exactly as an uninterrupted one: the
optimizer state of the adapters, the LR schedule and the draws continue, and the adapters'
weights load into the parameters the optimizer holds (a load that replaced them would leave
the resumed steps training orphans)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsharp.config import load_recipe
from dsharp.io import read_jsonl
from fake_rewards import brightness_registered

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "tiny"
LORA_FILE = Path("model") / "pytorch_lora_weights.safetensors"


def _train(method: str, model: Path, out: Path, *overrides: str) -> None:
    from dsharp.engine import Trainer

    common = [f"model.pretrained={model}", f"output_dir={out}", "model.lora_rank=4"]
    common += ["rewards.0.name=test_brightness", "train.batch_size=1", "method.n=2"]
    common += ["train.lr=1e-2", "train.warmup_steps=1", "train.checkpoint_every=1"]
    recipe = load_recipe(RECIPES / f"{method}.yaml", [*common, *overrides])
    Trainer(recipe, progress=False).run()


def _rows(run: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "step_time_s"}
        for row in read_jsonl(run / "metrics.jsonl")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rlhf_sharpening", "sft_sharpening"])
def test_a_lora_resume_trains_on_exactly_as_an_uninterrupted_run(method, tiny_sd_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    with brightness_registered():
        _train(method, tiny_sd_dir, straight, "train.max_steps=3")
        _train(method, tiny_sd_dir, resumed, "train.max_steps=2")
        # the RNG state is not needed: every draw is seeded by seed, step and process
        (resumed / "checkpoints" / "step-000002" / "random_states_0.pkl").unlink()
        _train(method, tiny_sd_dir, resumed, "train.max_steps=3", "train.resume=latest")

    ours = load_file(str(resumed / "checkpoints" / "step-000003" / LORA_FILE))
    theirs = load_file(str(straight / "checkpoints" / "step-000003" / LORA_FILE))
    before = load_file(str(resumed / "checkpoints" / "step-000002" / LORA_FILE))
    assert ours.keys() == theirs.keys() and ours
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(not torch.equal(ours[k], before[k]) for k in ours)  # step 3 trained
    assert _rows(resumed) == _rows(straight)
    assert [row["step"] for row in _rows(resumed)] == [1, 2, 3]
