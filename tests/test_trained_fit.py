"""A checkpoint whose trained UNet does not fit the base its run's recipe names (a recipe.yaml
edited after training, a UNet of another shape): one line naming the folder and the first
difference, before the base model loads where config files tell, never torch's list of
every differing tensor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.config import load_recipe, save_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def _run(folder: Path, base: Path, lora_rank: int = 0, cross_attention_dim: int = 0) -> Path:
    """A run folder as `dsharp train` leaves it (recipe.yaml, one checkpoint of the base's
    weights); ``cross_attention_dim`` swaps in a UNet of another shape but the same tensor
    names."""
    from diffusers import UNet2DConditionModel

    from dsharp.checkpoints import checkpoint_dir
    from dsharp.io import atomic_write_json
    from dsharp.models import load_model

    overrides = [f"model.pretrained={base}", f"model.lora_rank={lora_rank}"]
    recipe = load_recipe(RECIPE, overrides=overrides)
    folder.mkdir(parents=True)
    save_recipe(recipe, folder / "recipe.yaml")
    ckpt = checkpoint_dir(folder, 1)
    load_model(str(base), lora_rank=lora_rank).save_trained(ckpt / "model")
    if cross_attention_dim:
        unet = ckpt / "model" / "unet"
        config = dict(UNet2DConditionModel.load_config(unet))
        config["cross_attention_dim"] = cross_attention_dim
        UNet2DConditionModel.from_config(config).save_pretrained(unet)
    atomic_write_json(ckpt / "trainer_state.json", {"step": 1})
    return folder


def _say_base(run: Path, **model: object) -> None:
    """Edit the run's recipe.yaml as a user might: another base model or LoRA rank."""
    overrides = [f"model.{key}={value}" for key, value in model.items()]
    save_recipe(load_recipe(run / "recipe.yaml", overrides=overrides), run / "recipe.yaml")


def _error_line(result) -> str:
    lines = [x for x in result.stderr.strip().splitlines() if x.strip() and "Loading" not in x]
    assert len(lines) == 1, result.stderr[:2000]
    return lines[0]


@pytest.fixture()
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsharp.builders

    def refuse(*args, **kwargs):
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr(dsharp.builders, "build_model", refuse)


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_eval_and_sample_refuse_a_run_whose_recipe_names_another_base_before_loading(
    command: str, tiny_sd_dir: Path, tiny_sdxl_dir: Path, tmp_path: Path, no_model_load
) -> None:
    cases = {
        "dsharp-mini": "(in_channels: 4 in the checkpoint, 3 in the base;",
        str(tiny_sdxl_dir): "(cross_attention_dim: 32 in the checkpoint, 64 in the base;",
    }
    args = {
        "eval": ["--prompts", str(tmp_path / "p.txt"), "--reward", "shapes", "--steps", "2"],
        "sample": ["-p", "a red circle", "--steps", "2", "--out", str(tmp_path / "png")],
    }[command]
    (tmp_path / "p.txt").write_text("a red circle\n")
    for n, (base, difference) in enumerate(cases.items()):
        run = _run(tmp_path / f"run{n}", tiny_sd_dir)
        _say_base(run, pretrained=base)
        result = CliRunner().invoke(app, [command, "--checkpoint", str(run), *args])
        assert result.exit_code == 1, result.output
        unet = run / "checkpoints" / "step-000001" / "model" / "unet"
        assert _error_line(result) == (
            f"error: {unet}: not a fine-tuning of {base}, the base model that "
            f"{run / 'recipe.yaml'} names {difference} the run was trained from another base "
            "model, or its recipe.yaml was changed)"
        )
    assert not (tmp_path / "png").exists()


def test_a_full_fine_tuning_under_a_recipe_that_says_lora_is_refused_before_loading(
    tiny_sd_dir: Path, tmp_path: Path, no_model_load
) -> None:
    run = _run(tmp_path / "run", tiny_sd_dir)
    _say_base(run, lora_rank=4)
    result = CliRunner().invoke(app, ["sample", "--checkpoint", str(run), "-p", "a red circle"])
    assert result.exit_code == 1, result.output
    unet = run / "checkpoints" / "step-000001" / "model" / "unet"
    assert _error_line(result) == (
        f"error: {unet}: a fully fine-tuned UNet, but {run / 'recipe.yaml'} says "
        "model.lora_rank: 4 (its recipe.yaml was changed after training)"
    )


def test_load_trained_refuses_weights_of_another_shape_in_one_line(
    tiny_sd_dir: Path, tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    """The adapter's own check, for callers that skip the run-folder one (a resume, the API):
    a full UNet and a LoRA trained on another base."""
    from dsharp.models import load_model

    full = _run(tmp_path / "full", tiny_sd_dir) / "checkpoints" / "step-000001" / "model"
    lora = _run(tmp_path / "lora", tiny_sd_dir, lora_rank=2) / "checkpoints" / "step-000001"
    for folder, rank, shown, words in (
        (full / "unet", 0, full, "cross_attention_dim: 32 in the checkpoint, 64 in the base"),
        (lora / "model", 2, lora / "model", "lora_A.weight: shape [2, 32] in the checkpoint"),
    ):
        model = load_model(str(tiny_sdxl_dir), lora_rank=rank)
        before = {k: v.clone() for k, v in model.unet.state_dict().items()}
        with pytest.raises(ValueError) as caught:
            model.load_trained(shown)
        message = str(caught.value)
        assert message.startswith(f"{folder}: trained weights that do not fit the base model")
        assert words in message and len(message) < 600 and "\n" not in message
        after = model.unet.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_merge_refuses_a_unet_of_another_shape_in_one_line(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _run(tmp_path / "good", tiny_sd_dir)
    wide = _run(tmp_path / "wide", tiny_sd_dir, cross_attention_dim=48)
    unet = wide / "checkpoints" / "step-000001" / "model" / "unet"
    result = CliRunner().invoke(app, ["merge", str(good), str(wide), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert _error_line(result) == (
        f"error: {unet}: not a fine-tuning of {tiny_sd_dir}, the base model that "
        f"{wide / 'recipe.yaml'} names (cross_attention_dim: 48 in the checkpoint, 32 in the "
        "base; the run was trained from another base model, or its recipe.yaml was changed)"
    )
    # where the configs agree but the weights do not (a hand-edited config.json): the shapes
    import dsharp.merge

    monkeypatch.setattr(dsharp.merge, "check_checkpoint_fits", lambda *args: None)
    result = CliRunner().invoke(app, ["merge", str(good), str(wide), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    line = _error_line(result)
    assert line.startswith(f"error: {wide}: its UNet does not match the base model's (")
    assert "shape [64, 48] in the checkpoint, [64, 32] in the base)" in line
    assert not (tmp_path / "o").exists()


def test_merge_refuses_a_lora_checkpoint_under_a_recipe_that_says_full(
    tiny_sd_dir: Path, tmp_path: Path
) -> None:
    run = _run(tmp_path / "lora", tiny_sd_dir, lora_rank=2)
    _say_base(run, lora_rank=0)
    result = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert _error_line(result) == (
        f"error: {run}: a LoRA run (its checkpoint holds LoRA weights); merge averages full "
        "fine-tuning runs (model.lora_rank: 0)"
    )


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_a_resume_onto_another_base_is_one_line_without_the_damaged_checkpoint_advice(
    lora_rank: int, tiny_sd_dir: Path, tiny_sdxl_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """A run folder whose recipe.yaml was edited to the recipe a resume is given: every
    checkpoint is misfit alike, so no "move it out" advice; a full fine-tuning's is said
    before the model loads."""
    import dsharp.engine

    run = _run(tmp_path / "run", tiny_sd_dir, lora_rank=lora_rank)
    ckpt = run / "checkpoints" / "step-000001"
    for name in ("optimizer.bin", "scheduler.bin"):
        torch.save({}, ckpt / name)
    _say_base(run, pretrained=str(tiny_sdxl_dir))
    if not lora_rank:
        monkeypatch.setattr(dsharp.engine, "build_model", lambda *a, **k: 1 / 0)
    args = [f"model.pretrained={tiny_sdxl_dir}", f"model.lora_rank={lora_rank}"]
    args += [f"output_dir={run}", "train.max_steps=2", "train.resume=latest", "--no-progress"]
    result = CliRunner().invoke(app, ["train", str(RECIPE), *args])
    assert result.exit_code == 1, result.output
    line = _error_line(result)
    if lora_rank:
        start = f"error: train.resume: {ckpt / 'model'}: trained weights that do not fit"
        assert line.startswith(start), line
        assert "lora_A.weight: shape [2, 32] in the checkpoint, [2, 64] in the base;" in line
    else:
        assert line.startswith(f"error: train.resume: {ckpt / 'model' / 'unet'}: not a fine"), line
        assert "(cross_attention_dim: 32 in the checkpoint, 64 in the base;" in line
    assert line.endswith("or its recipe.yaml was changed)") and "move" not in line


def _never(what: str):
    def called(*args, **kwargs):
        pytest.fail(f"{what} before the checkpoint was checked against its base")

    return called


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--reward", "clip", "--prompts", "PROMPTS"],
        ["eval", "--bench", "t2i-compbench"],
        ["sample", "--method", "inference_scaling", "--reward", "clip", "-p", "a red circle"],
    ],
    ids=["eval-reward", "eval-t2i-compbench", "sample-verifier"],
)
def test_a_misfit_is_said_before_rewards_verifiers_or_prompts_load(
    command: list[str], tiny_sd_dir: Path, tmp_path: Path, monkeypatch, no_model_load
) -> None:
    """It used to come at the model's load, after `eval` had built its rewards (their weights
    loaded first: a download, or seconds to minutes) and `sample` its verifier."""
    # modules that bind the patched names at import are imported first, so that none binds
    # a patch that later tests would then get
    import dsharp.bench.t2i_compbench  # noqa: F401
    import dsharp.bench.t2i_data
    import dsharp.commands.evaluate  # noqa: F401
    import dsharp.evaluate  # noqa: F401
    import dsharp.inference  # noqa: F401
    import dsharp.inference.base
    import dsharp.rewards.combine

    monkeypatch.setattr(dsharp.bench.t2i_data, "load_prompt_set", _never("prompts read"))
    monkeypatch.setattr(dsharp.rewards.combine, "CombinedReward", _never("rewards built"))
    monkeypatch.setattr(dsharp.inference.base, "Verifier", _never("verifier built"))
    (tmp_path / "p.txt").write_text("a red circle\n")
    run = _run(tmp_path / "run", tiny_sd_dir)
    _say_base(run, pretrained="dsharp-mini")
    args = [str(tmp_path / "p.txt") if a == "PROMPTS" else a for a in command]
    args += ["--checkpoint", str(run), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    unet = run / "checkpoints" / "step-000001" / "model" / "unet"
    line = _error_line(result)
    assert line.startswith(f"error: {unet}: not a fine-tuning of dsharp-mini, the base model")
    assert "(in_channels: 4 in the checkpoint, 3 in the base;" in line
