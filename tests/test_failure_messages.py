"""Failures that must say how to go on, or come before the model loads: a reward that cannot
score an image during `dsharp eval` (and the flag that lets the evaluation go on), a reward
that cannot be built, and the hub client's retry warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_results import invoke
from dsharp.rewards import plugins
from dsharp.rewards.base import RewardError, RewardInfo
from dsharp.rewards.hookspecs import hookimpl
from fake_rewards import NAME, brightness_registered

UNBUILDABLE = "test_unbuildable"
KEY_MESSAGE = "environment variable TEST_NO_KEY is not set"


def _one_line(text: str) -> str:
    """The one error line of ``text`` (stderr), its last; in-process runs skip main(), which
    quiets the libraries' progress bars, so other lines may come before it."""
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert [line.startswith("error:") for line in lines].count(True) == 1, text
    assert lines[-1].startswith("error:"), text
    return lines[-1]


def _unbuildable(**options):
    """A reward whose build fails as the MLLM grader's does without its API key."""
    raise RewardError(f"test: {KEY_MESSAGE}")


class _UnbuildablePlugin:
    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name=UNBUILDABLE, factory=_unbuildable, description="no key"))


@pytest.fixture
def unbuildable() -> Iterator[None]:
    plugins.load_plugins()
    plugins.pm.register(_UnbuildablePlugin(), name="test-unbuildable-plugin")
    try:
        yield
    finally:
        plugins.pm.unregister(name="test-unbuildable-plugin")


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model for inference, or a recipe's model for training, fails the test."""
    import dsharp.commands.common
    import dsharp.engine

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", no_loading)
    monkeypatch.setattr(dsharp.engine, "build_model", no_loading)


@pytest.fixture
def two_prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\na blue square\n", encoding="utf-8")
    return path


def _eval_brightness(prompts: Path, out: Path, *extra: object):
    """`dsharp eval` of dsharp-mini with the fake brightness reward, which scores NaN (could
    not score) for the prompt 'a red circle'."""
    args = ["eval", "--model", "dsharp-mini", "--prompts", prompts, "--reward", NAME]
    args += ["--set", "nan_prompt=a red circle", "--seeds", "1", "--steps", "1"]
    return invoke([*args, "--device", "cpu", "--out", out, "--json", *extra])


def test_eval_stopped_by_an_unscorable_image_says_which_flag_goes_on(two_prompts, tmp_path):
    out = tmp_path / "eval.json"
    with brightness_registered():
        result = _eval_brightness(two_prompts, out)
    assert result.exit_code == 1, result.output
    line = _one_line(result.stderr)
    assert line.startswith(f"error: reward {NAME!r} returned NaN for 1 sample(s)"), line
    assert line.endswith(
        "rerun with --on-error missing to leave such images unscored "
        "(counted in n_images, not in n_scored or the means)"
    ), line
    assert not out.exists()


def test_eval_on_error_missing_does_what_the_advice_says(two_prompts, tmp_path):
    out = tmp_path / "eval.json"
    with brightness_registered():
        result = _eval_brightness(two_prompts, out, "--on-error", "missing")
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert (saved["n_images"], saved["n_scored"]) == (2, 1)
    assert saved["reward_specs"][NAME]["on_error"] == "missing"
    unscored = [row for row in saved["images"] if row["prompt"] == "a red circle"]
    assert [row["score"] for row in unscored] == [None]


def test_eval_that_could_score_no_image_fails_and_keeps_the_earlier_result(tmp_path):
    """With --on-error missing and every image unscored it wrote overall: null over the
    earlier result and exited 0, as if the evaluation had gone well."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    out.write_text('{"overall": 0.5}', encoding="utf-8")  # an earlier evaluation
    with brightness_registered():
        result = _eval_brightness(prompts, out, "--on-error", "missing")
    assert result.exit_code == 1, result.output
    assert _one_line(result.stderr) == (
        "error: no image of 1 could be scored (each was left unscored: on_error missing); "
        "no result written"
    )
    assert out.read_text(encoding="utf-8") == '{"overall": 0.5}'


def test_eval_refuses_on_error_as_a_reward_option_naming_the_flag(two_prompts, tmp_path):
    with brightness_registered():
        result = _eval_brightness(two_prompts, tmp_path / "e.json", "--set", "on_error=missing")
    assert result.exit_code == 2, result.output
    assert _one_line(result.stderr) == (
        "error: --set on_error=missing: on_error is not a reward option; use --on-error missing"
    )


def test_eval_refuses_an_unknown_on_error(two_prompts, tmp_path):
    with brightness_registered():
        result = _eval_brightness(two_prompts, tmp_path / "e.json", "--on-error", "skip")
    assert result.exit_code == 2, result.output
    assert "--on-error: expected 'raise' or 'missing', got 'skip'" in _one_line(result.stderr)


def test_eval_of_a_bench_with_on_error_in_set_is_one_line_not_a_validation_dump(tmp_path):
    result = invoke(["eval", "--model", "dsharp-mini", "--bench", "shapes", "--set", "on_error=x"])
    assert result.exit_code == 2, result.output
    line = _one_line(result.stderr)
    assert "use --on-error x" in line and "pydantic" not in line


@pytest.mark.parametrize("as_verifier", [False, True])
def test_eval_fails_on_an_unbuildable_reward_before_the_model_loads(
    unbuildable, no_model_loads, two_prompts, tmp_path, as_verifier
):
    flags = ["--reward", "shapes", "--method", "demon", "--verifier", UNBUILDABLE]
    flags = flags if as_verifier else ["--reward", UNBUILDABLE]
    args = ["eval", "--model", "dsharp-mini", "--prompts", two_prompts, *flags]
    result = invoke([*args, "--out", tmp_path / "e.json"])
    assert result.exit_code == 1, result.output
    assert KEY_MESSAGE in _one_line(result.stderr)


def test_sample_fails_on_an_unbuildable_verifier_before_the_model_loads(
    unbuildable, no_model_loads, tmp_path
):
    args = ["sample", "--model", "dsharp-mini", "--prompt", "a red circle", "--method", "demon"]
    result = invoke([*args, "--reward", UNBUILDABLE, "--out", tmp_path / "out"])
    assert result.exit_code == 1, result.output
    assert KEY_MESSAGE in _one_line(result.stderr)


def test_train_fails_on_an_unbuildable_reward_before_the_model_loads(
    unbuildable, no_model_loads, tmp_path
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(f"""\
            model: {{pretrained: dsharp-mini}}
            method: {{name: rlhf_sharpening, n: 2, m: 1, infer_steps: 2}}
            rewards: [{{name: {UNBUILDABLE}}}]
            data: {{generator: shapes}}
            train: {{max_steps: 1, batch_size: 1}}
            output_dir: {tmp_path / "run"}
            """),
        encoding="utf-8",
    )
    result = invoke(["train", recipe, "--no-progress"])
    assert result.exit_code == 1, result.output
    assert KEY_MESSAGE in _one_line(result.stderr)


def test_the_hub_clients_retry_warnings_are_quiet_unless_verbose() -> None:
    """Each retry of an unreachable hub logs two warnings before dsharp's one line."""
    code = textwrap.dedent("""\
        from dsharp.cli import quiet_libraries
        quiet_libraries()
        from huggingface_hub.utils import logging
        logging.get_logger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        """)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_VERBOSITY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    for verbose, expected in (("", ""), ("1", "Retrying in 1s [Retry 1/5].")):
        env["DSHARP_VERBOSE"] = verbose
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert done.stderr.strip() == expected


def _run_with_truncated_weights(tmp_path: Path, lora: bool) -> Path:
    """A dsharp-mini run folder whose step-1 weights were cut short (a full disk)."""
    import shutil

    from dsharp.models.loading import assets_dir
    from dsharp.models.sd import LORA_CONFIG, LORA_TARGETS, LORA_WEIGHTS
    from run_folders import run_folder_with_checkpoint

    recipe = "model: {pretrained: dsharp-mini}\nrewards: [{name: shapes}]\n"
    run = run_folder_with_checkpoint(tmp_path / "run", recipe + "data: {generator: shapes}\n")
    model = run / "checkpoints" / "step-000001" / "model"
    if lora:
        config = {"rank": 4, "alpha": 4.0, "targets": list(LORA_TARGETS)}
        (model / LORA_CONFIG).write_text(json.dumps(config), encoding="utf-8")
        weights = model / LORA_WEIGHTS
    else:
        unet = assets_dir() / "dsharp-mini" / "unet"
        shutil.copytree(unet, model / "unet")
        weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\x10" * 1000)
    return run


@pytest.mark.parametrize("lora", [False, True])
def test_a_truncated_checkpoint_says_its_weights_cannot_be_read(tmp_path, lora):
    run = _run_with_truncated_weights(tmp_path, lora)
    args = ["sample", "--checkpoint", run, "--prompt", "a red circle", "--steps", "1"]
    result = invoke([*args, "--device", "cpu", "--out", tmp_path / "out"])
    assert result.exit_code == 1, result.output
    line = _one_line(result.stderr)
    assert "cannot read the trained weights (" in line, line
    assert line.endswith(
        "the checkpoint is damaged or truncated; use another checkpoint folder of the run"
    ), line
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_missing_its_lora_file_says_so_not_damaged(tmp_path):
    from dsharp.models.sd import LORA_WEIGHTS

    run = _run_with_truncated_weights(tmp_path, lora=True)
    model = run / "checkpoints" / "step-000001" / "model"
    (model / LORA_WEIGHTS).unlink()
    args = ["sample", "--checkpoint", run, "--prompt", "a red circle", "--steps", "1"]
    result = invoke([*args, "--device", "cpu", "--out", tmp_path / "out"])
    assert result.exit_code == 1, result.output
    assert _one_line(result.stderr) == f"error: {model}: no {LORA_WEIGHTS} (the LoRA's weights)"


def test_compare_of_a_cut_short_json_says_where_it_breaks(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text('{"bench": "shapes", "over\n', encoding="utf-8")
    result = invoke(["compare", path, "--out", tmp_path / "cmp"])
    assert result.exit_code == 1, result.output
    assert _one_line(result.stderr) == (
        f"error: {path}: not JSON (Invalid control character at, line 1 column 26)"
    )


def _brightness_recipe(tmp_path: Path) -> Path:
    """A one-step dsharp-mini recipe whose second reward, the fake brightness one, cannot
    score trajectory 0 of any prompt (it scores NaN there)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(f"""\
            model: {{pretrained: dsharp-mini}}
            method: {{name: rlhf_sharpening, n: 2, m: 1, infer_steps: 2}}
            rewards:
              - {{name: {NAME}, weight: 0.5}}
              - {{name: {NAME}, options: {{nan_trajectory: 0}}}}
            data: {{generator: shapes}}
            train: {{max_steps: 1, batch_size: 1, checkpoint_every: 1}}
            output_dir: {tmp_path / "run"}
            """),
        encoding="utf-8",
    )
    return recipe


def test_train_stopped_by_an_unscorable_sample_names_the_setting_that_skips_it(tmp_path):
    recipe = _brightness_recipe(tmp_path)
    with brightness_registered():
        result = invoke(["train", recipe, "--no-progress"])
    assert result.exit_code == 1, result.output
    line = _one_line(result.stderr)
    assert line.startswith(f"error: reward '{NAME}#1' returned NaN for "), line
    assert line.endswith(
        "to skip such samples instead (never scored, counted in reward_missing), set "
        "rewards.1.on_error: missing in the recipe or add the override "
        "rewards.1.on_error=missing"
    ), line
    with brightness_registered():  # the advice, as written, lets the run go on
        result = invoke(["train", recipe, "rewards.1.on_error=missing", "--no-progress"])
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert logged[-1]["reward_missing"] > 0


def test_a_report_stopped_by_an_unscorable_image_keeps_training_and_names_the_setting(
    tmp_path,
):
    """The post-training evaluation's NaN ended `dsharp train` with one bare line: no word
    that training was complete, nor of eval.rewards.N.on_error; the advice, as written, then
    writes the report."""
    recipe = _brightness_recipe(tmp_path)
    text = recipe.read_text(encoding="utf-8").replace(
        "  - {name: test_brightness, options: {nan_trajectory: 0}}\n", ""
    )
    text += (
        "eval: {prompts: [a red circle, a blue square], seeds: 1, rewards: "
        "[{name: test_brightness, options: {nan_prompt: a red circle}}]}\n"
        "sample: {steps: 1}\n"
    )
    recipe.write_text(text, encoding="utf-8")
    with brightness_registered():
        result = invoke(["train", recipe, "--no-progress"])
    assert result.exit_code == 1, result.output
    line = _one_line(result.stderr)
    run = tmp_path / "run"
    assert line.startswith(f"error: training is complete in {run}, but its report was not "), line
    assert "set eval.rewards.0.on_error: missing in the recipe (override " in line, line
    assert (run / "checkpoints" / "step-000001").is_dir() and not (run / "report.md").exists()
    again = line.rsplit("then write it with: ", 1)[1].split()
    assert again[:3] == ["dsharp", "train", str(recipe)]
    with brightness_registered():
        result = invoke([*again[1:], "eval.rewards.0.on_error=missing", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (run / "report.md").exists()
