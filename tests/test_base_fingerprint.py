"""A checkpoint keeps a fingerprint of its base model's UNet weights; a load onto other base
weights of the same shapes (a run folder whose recipe.yaml was edited to another base, a
base folder replaced) is refused in one line, where it used to apply silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dsharp.base_fingerprint import STATE_KEY, base_fingerprint, fingerprint_difference
from dsharp.cli import app
from dsharp.config import load_recipe, save_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "rlhf_sharpening.yaml"
SMALL = ["train.batch_size=1", "method.n=2", "method.m=1", "method.infer_steps=2"]


@pytest.fixture(scope="module")
def other_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD of the same shapes as ``tiny_sd_dir``, other random weights."""
    from dsharp.testing import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("models") / "other-sd", seed=1)


def _train(base: Path, run: Path, *extra: str) -> Path:
    args = [f"model.pretrained={base}", f"output_dir={run}", "train.max_steps=1", *SMALL]
    result = CliRunner().invoke(app, ["train", str(RECIPE), *args, *extra, "--no-progress"])
    assert result.exit_code == 0, result.output
    return run


def _say_base(run: Path, base: Path) -> None:
    """Edit the run's recipe.yaml as a user might: another base model of the same shapes."""
    recipe = load_recipe(run / "recipe.yaml", overrides=[f"model.pretrained={base}"])
    save_recipe(recipe, run / "recipe.yaml")


def _lines(text: str) -> list[str]:
    return [x for x in text.strip().splitlines() if x.strip() and "Loading" not in x]


def test_the_fingerprint_ignores_dtype_casts_and_lora_but_not_other_weights(
    tiny_sd_dir: Path, other_sd_dir: Path
) -> None:
    from dsharp.models import load_model

    base = base_fingerprint(load_model(str(tiny_sd_dir)))
    assert base == base_fingerprint(load_model(str(tiny_sd_dir)))  # deterministic
    sizes = {name: len(values) for name, values in base["components"].items()}
    assert sizes == {"unet": 64, "text_encoder": 28}  # SD: no second encoder; no VAE
    assert json.loads(json.dumps(base)) == base
    for dtype in (torch.float16, torch.bfloat16):  # the recipe's weight_dtype under LoRA
        lora = load_model(str(tiny_sd_dir), lora_rank=2, weight_dtype=dtype)
        assert lora.unet.dtype == dtype
        cast = base_fingerprint(lora)
        for name, values in base["components"].items():  # LoRA names as the full model's
            assert cast["components"][name].keys() == values.keys()
        assert cast != base  # the casts do move values...
        assert fingerprint_difference(base, cast) is None  # ...within the tolerance
        assert fingerprint_difference(cast, base) is None
    other = base_fingerprint(load_model(str(other_sd_dir)))
    difference = fingerprint_difference(base, other)
    assert difference is not None and " of 64 sampled UNet weights, " in difference
    # none saved (a checkpoint from before), another scheme, a damaged entry: not compared
    unet = base["components"]["unet"]
    for saved in (None, {"scheme": "v0", "values": unet}, {"scheme": base["scheme"]}):
        assert fingerprint_difference(saved, other) is None


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_eval_sample_and_resume_refuse_a_run_whose_recipe_names_other_base_weights(
    lora_rank: int, tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    run = _train(tiny_sd_dir, tmp_path / "run", f"model.lora_rank={lora_rank}")
    ckpt = run / "checkpoints" / "step-000001"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    from dsharp.models import load_model

    assert state[STATE_KEY] == base_fingerprint(load_model(str(tiny_sd_dir)), str(tiny_sd_dir))
    _say_base(run, other_sd_dir)
    expected = (
        f"error: {run}: its checkpoint step-000001 was trained on other base weights than "
        f"{other_sd_dir}, the base model {run / 'recipe.yaml'} names ("
    )
    advice = f"set model.pretrained back to {tiny_sd_dir}, the base the run was trained from"
    (tmp_path / "p.txt").write_text("a red circle\n")
    png = tmp_path / "png"
    for args in (
        ["sample", "--checkpoint", run, "-p", "a red circle", "--steps", "2", "--out", png],
        ["eval", "--checkpoint", run, "--prompts", tmp_path / "p.txt", "--reward", "shapes"],
    ):
        result = CliRunner().invoke(app, [str(a) for a in [*args, "--device", "cpu"]])
        assert result.exit_code == 1, result.output
        (line,) = _lines(result.stderr)
        assert line.startswith(expected) and line.endswith(advice), line
        assert " of 64 sampled UNet weights, " in line and " differ, e.g. UNet " in line
    assert not png.exists()

    resume = [f"model.pretrained={other_sd_dir}", f"model.lora_rank={lora_rank}", *SMALL]
    resume += [f"output_dir={run}", "train.max_steps=2", "train.resume=latest", "--no-progress"]
    result = CliRunner().invoke(app, ["train", str(RECIPE), *resume])
    assert result.exit_code == 1, result.output
    (line,) = _lines(result.stderr)
    assert line.startswith("error: train.resume: " + expected[len("error: ") :]), line
    assert line.endswith(advice) and "move" not in line  # no "older checkpoint" advice
    assert not (run / "checkpoints" / "step-000002").exists()


def test_a_branch_onto_other_base_weights_is_refused(
    tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint kept without its run's recipe.yaml (what a branch may start from under
    another recipe): only the fingerprint can tell its base."""
    import shutil

    trained = _train(tiny_sd_dir, tmp_path / "run", "model.lora_rank=2")
    run = tmp_path / "kept"
    ckpt = run / "checkpoints" / "step-000001"
    shutil.copytree(trained / "checkpoints" / "step-000001", ckpt)
    args = [f"model.pretrained={other_sd_dir}", "model.lora_rank=2", *SMALL]
    args += [f"output_dir={tmp_path / 'branch'}", "train.max_steps=2", f"train.resume={ckpt}"]
    result = CliRunner().invoke(app, ["train", str(RECIPE), *args, "--no-progress"])
    assert result.exit_code == 1, result.output
    (line,) = _lines(result.stderr)
    assert line.startswith(
        f"error: train.resume: {ckpt}: trained on other base weights than {other_sd_dir}, the "
        "base model this recipe names ("
    ), line
    assert line.endswith(f"): set model.pretrained to {tiny_sd_dir}")


def test_merge_refuses_a_run_trained_on_other_base_weights_and_keeps_the_fingerprint(
    tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    good = _train(tiny_sd_dir, tmp_path / "good")
    moved = _train(other_sd_dir, tmp_path / "moved")
    _say_base(moved, tiny_sd_dir)  # now both name one base: the config checks pass
    result = CliRunner().invoke(app, ["merge", str(good), str(moved), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    (line,) = _lines(result.stderr)
    assert line.startswith(
        f"error: {moved}: its checkpoint step-000001 was trained on other base weights than "
        f"{tiny_sd_dir}, the base model {moved / 'recipe.yaml'} names ("
    ), line
    assert line.endswith(
        f"set model.pretrained back to {other_sd_dir}, the base the run was trained from"
    )
    assert not (tmp_path / "o").exists()

    result = CliRunner().invoke(app, ["merge", str(good), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    saved = json.loads((good / "checkpoints" / "step-000001" / "trainer_state.json").read_text())
    merged = json.loads(
        (tmp_path / "o" / "checkpoints" / "step-000001" / "trainer_state.json").read_text()
    )
    assert merged[STATE_KEY] == saved[STATE_KEY]  # a merged run is checked as a trained one
    _say_base(tmp_path / "o", other_sd_dir)
    args = ["sample", "--checkpoint", str(tmp_path / "o"), "-p", "a", "--steps", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "png")])
    assert result.exit_code == 1 and "trained on other base weights" in result.stderr


def test_a_checkpoint_saved_before_fingerprints_loads_quietly(
    tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    """Nothing to compare: it loads as it did (even onto an edited base), with no warning."""
    run = _train(tiny_sd_dir, tmp_path / "run", "model.lora_rank=2")
    state_file = run / "checkpoints" / "step-000001" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state[STATE_KEY]
    state_file.write_text(json.dumps(state))
    _say_base(run, other_sd_dir)
    args = ["sample", "--checkpoint", str(run), "-p", "a", "--steps", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    assert [x for x in _lines(result.stderr) if not x.startswith("sample")] == []


def test_a_base_folder_replaced_since_training_is_refused(
    tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    """The recipe unchanged, the folder it names holding other weights of the same shapes
    (a model saved over, a re-download of another revision)."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_sd_dir, base)
    run = _train(base, tmp_path / "run")
    shutil.rmtree(base)
    shutil.copytree(other_sd_dir, base)
    args = ["sample", "--checkpoint", str(run), "-p", "a", "--steps", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "png")])
    assert result.exit_code == 1, result.output
    (line,) = _lines(result.stderr)
    assert line.startswith(
        f"error: {run}: its checkpoint step-000001 was trained on other base weights than "
        f"{base} holds now, the base model {run / 'recipe.yaml'} names ("
    ), line
    assert line.endswith(
        "that model's files were replaced since the run trained; restore them, or set "
        "model.pretrained to a copy of them"
    )


def test_a_fingerprint_without_the_base_name_still_says_what_to_do(
    tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    from dsharp.base_fingerprint import BaseMismatch, check_base_fingerprint
    from dsharp.models import load_model

    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    saved = base_fingerprint(load_model(str(tiny_sd_dir)))  # no name given
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1, STATE_KEY: saved}))
    now = base_fingerprint(load_model(str(other_sd_dir)), str(other_sd_dir))
    with pytest.raises(BaseMismatch) as caught:
        check_base_fingerprint(ckpt, now, str(other_sd_dir), tmp_path / "run" / "recipe.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'run'}: its checkpoint")
    assert message.endswith(
        "; its recipe.yaml was changed, or that model's files were replaced): set "
        "model.pretrained back to the model the run was trained from"
    )
    check_base_fingerprint(ckpt, saved, str(tiny_sd_dir), "recipe.yaml")  # the same: passes
