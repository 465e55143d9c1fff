"""The `dsharp train`, `sample`, `eval` and `compare` commands end to end, on tiny models."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli_results import invoke
from dsharp.cli import app
from dsharp.config import load_recipe
from dsharp.file_records import RECORD_NAME
from dsharp.io import read_jsonl
from fake_rewards import NAME, brightness_registered

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
FAMILIES = ["sd", "sdxl"]
METHODS = ["rlhf_sharpening", "sft_sharpening"]


@pytest.fixture(scope="module")
def model_dirs(tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> dict[str, Path]:
    return {"sd": tiny_sd_dir, "sdxl": tiny_sdxl_dir}


@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory, model_dirs: dict[str, Path]):
    """``dsharp train recipes/tiny/METHOD.yaml`` for 2 steps on a tiny model, once per
    (family, method) in this module; returns the run folder and the command's result."""
    done: dict[tuple[str, str], tuple[Path, object]] = {}

    def run(family: str, method: str):
        if (family, method) not in done:
            out = tmp_path_factory.mktemp("runs") / f"{family}-{method}"
            args = ["train", RECIPES / "tiny" / f"{method}.yaml", "--no-progress"]
            args += [f"model.pretrained={model_dirs[family]}", f"output_dir={out}"]
            done[family, method] = (out, invoke(args + ["train.max_steps=2"]))
        return done[family, method]

    return run


# --------------------------------------------------------------------------- train


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_train_two_steps_writes_a_complete_run_folder(train_run, model_dirs, family, method):
    run, result = train_run(family, method)
    assert result.exit_code == 0, result.output
    assert f"run folder: {run}" in result.stdout
    assert (run / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert f"training curves: {run / 'training_curves.png'}" in result.stdout

    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert isinstance(row["reward"], float) and isinstance(row["loss"], float)
        assert np.isfinite(row["loss"]) and row["lr"] == pytest.approx(1e-5)
        assert row["reward_missing"] == 0

    saved = load_recipe(run / "recipe.yaml", validate_files=False)
    assert saved.method.name == method
    assert saved.model.pretrained == str(model_dirs[family])
    assert saved.train.max_steps == 2 and saved.output_dir == str(run)

    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step-000001", "step-000002"]
    for step, name in enumerate(checkpoints, start=1):
        folder = run / "checkpoints" / name
        state = json.loads((folder / "trainer_state.json").read_text())
        evals = rows[step - 1]["reward_evals"]  # the budget spent so far, kept for resume
        # a sample of the base's weights: a load onto other base weights is refused
        assert state.pop("base_fingerprint")["scheme"] == "base-sample-v2"
        assert state == {
            "step": step,
            "seed": 0,
            "method": method,
            "reward_evals": evals,
            "max_steps": 2,  # the length the LR schedule is laid out over
            "processes": 1,  # how many drew batches (a resume on another count differs)
        }
        assert (folder / "model" / "unet" / "config.json").is_file()
        assert (folder / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert (folder / "optimizer.bin").is_file() and (folder / "scheduler.bin").is_file()


# --------------------------------------------------------------------------- recipe errors

_CHECK_IMPORTS = """
import sys
try:
    from dsharp.cli import main
    sys.argv = ["dsharp", *sys.argv[1:]]
    main()
finally:
    heavy = [m for m in ("diffusers", "transformers", "accelerate") if m in sys.modules]
    print("heavy modules:", ",".join(heavy) or "none")
"""


@pytest.mark.parametrize(
    ("edit", "override", "expected"),
    [
        (
            ("  max_steps: 2", "  max_stesp: 2"),
            None,
            "train.max_stesp: unknown key, did you mean 'max_steps'?",
        ),
        (None, "rewards.0.name=no_such_reward", "rewards.0.name: unknown reward 'no_such_reward'"),
        (None, "method.name=no_such_method", "method.name: unknown method 'no_such_method'"),
        (None, "data.prompts_file=/no/such/prompts.txt", "data.prompts_file: file not found"),
    ],
    ids=["misspelled-key", "unknown-reward", "unknown-method", "missing-prompts-file"],
)
def test_recipe_errors_fail_in_one_line_before_any_model_loads(
    tmp_path, tiny_sd_dir, edit, override, expected
):
    recipe = tmp_path / "recipe.yaml"
    text = (RECIPES / "tiny" / "rlhf_sharpening.yaml").read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1])
    recipe.write_text(text)
    out = tmp_path / "run"
    args = [str(recipe), f"model.pretrained={tiny_sd_dir}", f"output_dir={out}"]
    if override:
        args.append(override)
    done = subprocess.run(
        [sys.executable, "-c", _CHECK_IMPORTS, "train", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"recipe error: {recipe}: ")
    assert expected in lines[0]
    assert not out.exists()
    assert done.stdout.strip().splitlines()[-1] == "heavy modules: none"


# --------------------------------------------------------------------------- sample


def _pipeline_images(family: str, folder: Path, prompts, seeds) -> np.ndarray:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sdxl":
        pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompts,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=4,
        guidance_scale=5.0,
        height=64,
        width=64,
        output_type="np",
    ).images


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sample_command_pngs_equal_the_diffusers_pipeline(model_dirs, tmp_path, family):
    out = tmp_path / "png"
    args = ["sample", "--model", model_dirs[family], "--prompt", "a", "--prompt", "b"]
    args += ["--seed", "3", "--steps", "4", "--guidance", "5", "--height", "64", "--width", "64"]
    args += ["--out", out, "--device", "cpu", "--json"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    names = ["0000-seed3-a.png", "0001-seed4-b.png"]
    assert [Path(p).name for p in summary["images"]] == names
    assert summary["nfe_per_image"] == 8  # 4 steps x 2 (classifier-free guidance)
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, *names, "grid.png"]
    assert summary["grid"] == str(out / "grid.png") and summary["grid_images"] == 2

    ours = np.stack([np.asarray(Image.open(out / n).convert("RGB")) for n in names])
    theirs = _pipeline_images(family, model_dirs[family], ["a", "b"], [3, 4])
    assert ours.shape == theirs.shape == (2, 64, 64, 3)
    assert np.abs(ours / 255.0 - theirs).max() <= 2 / 255
    assert np.abs(ours[0].astype(int) - ours[1].astype(int)).max() > 10  # seeds differ


@pytest.mark.parametrize("sources", [[], ["--model", "m", "--checkpoint", "run"]])
def test_sample_needs_exactly_one_model_source(tmp_path, sources):
    result = invoke(["sample", *sources, "--prompt", "a", "--out", tmp_path])
    assert result.exit_code == 2  # a usage error, as the parser's own refusals
    assert result.stderr.strip() == "error: give exactly one of --model or --checkpoint"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--prompt", "a red circle"], "give exactly one of --model or --checkpoint"),
        (
            ["eval", "--bench", "shapes"],
            "give exactly one of --model or --checkpoint (or --recipe)",
        ),
        (["eval", "--bench", "t2i-compbench"], "give exactly one of --model or --checkpoint"),
    ],
)
def test_a_command_without_a_model_is_refused_before_torch_is_imported(tmp_path, args, message):
    script = _CHECK_IMPORTS.replace('("diffusers", "transformers", "accelerate")', '("torch",)')
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {message}"
    assert done.stdout.strip().splitlines()[-1] == "heavy modules: none"


def test_sample_reads_a_prompt_file_and_can_skip_the_grid(tiny_sd_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# two prompts\na red square\na blue circle\n")
    out = tmp_path / "png"
    args = ["sample", "--model", tiny_sd_dir, "--prompts", prompts, "-p", "x", "-n", "2"]
    args += ["--steps", "2", "--out", out, "--device", "cpu", "--no-grid", "--json"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["grid"] is None and not (out / "grid.png").exists()
    assert summary["grid_images"] is None
    assert [Path(p).name for p in summary["images"]] == [
        "0000-seed0-x.png",
        "0001-seed1-x.png",
        "0002-seed2-a-red-square.png",
        "0003-seed3-a-red-square.png",
        "0004-seed4-a-blue-circle.png",
        "0005-seed5-a-blue-circle.png",
    ]


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("eval", "--seeds"),
        ("eval", "--limit"),
        ("eval", "--steps"),
        ("eval", "--batch-size"),
        ("sample", "--num-images"),
        ("sample", "--steps"),
        ("sample", "--batch-size"),
    ],
)
def test_a_zero_count_is_refused_rather_than_read_as_the_default(tmp_path, command, flag):
    args = [command, "--model", tmp_path / "never-loaded", flag, "0", "--out", tmp_path]
    args += ["--bench", "shapes"] if command == "eval" else ["--prompt", "a red circle"]
    result = invoke(args)
    assert result.exit_code == 2  # a setting the user gave: as a bad recipe
    assert result.stderr.strip() == f"error: {flag} must be at least 1, got 0"


@pytest.mark.parametrize(
    ("command", "flag", "kind"),
    [("eval", "--images", "file"), ("eval", "--out", "folder"), ("sample", "--out", "file")],
)
def test_an_output_path_of_the_wrong_kind_is_refused_before_sampling(tmp_path, command, flag, kind):
    path = tmp_path / "taken"
    path.mkdir() if kind == "folder" else path.write_text("keep me\n")
    args = [command, "--model", tmp_path / "never-loaded", flag, path]
    args += ["--bench", "shapes"] if command == "eval" else ["--prompt", "a red circle"]
    result = invoke(args)
    assert result.exit_code == 1
    reason = "is a file, not a folder" if kind == "file" else "is a folder; give a file name"
    assert result.stderr.strip() == f"error: {flag} {path}: {reason}"
    if kind == "file":
        assert path.read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("command", "flag", "part"),
    [("eval", "--out", "x" * 300 + ".json"), ("eval", "--images", "d" * 260),
     ("sample", "--out", "d" * 260)],
)  # fmt: skip
def test_an_output_name_longer_than_the_file_system_takes_is_refused_before_sampling(
    tmp_path, command, flag, part
):
    """The write failed only when the results were saved ('File name too long'), after the
    images were drawn; a part of a folder still to be made too."""
    path = tmp_path / part if flag == "--out" and command == "eval" else tmp_path / part / "sub"
    args = [command, "--model", tmp_path / "never-loaded", flag, path]
    args += ["--bench", "shapes"] if command == "eval" else ["--prompt", "a red circle"]
    result = invoke(args)
    assert result.exit_code == 1
    size = len(part.encode())
    assert result.stderr.strip() == (
        f"error: {flag} {path}: its name {part[:24]}... is {size} bytes, more than the 255 allowed"
    )


def test_sample_without_prompts_is_one_line_error(tiny_sd_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    result = invoke(["sample", "--model", tiny_sd_dir, "--out", tmp_path])
    assert result.exit_code == 2  # a missing input: a usage error
    assert result.stderr.strip() == "error: give --prompt TEXT (repeatable) or --prompts FILE"
    result = invoke(["sample", "--model", tiny_sd_dir, "--prompts", empty, "--out", tmp_path])
    assert result.exit_code == 2 and "empty.txt: no prompts" in result.stderr  # as no prompt
    result = invoke(["eval", "--model", tiny_sd_dir, "--prompts", empty, "--reward", "shapes"])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {empty}: no prompts in file"


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--bench", "shapes"],
        ["eval", "--reward", "clip", "--method", "inference_scaling", "--verifier", "shapes"],
        ["sample", "--method", "inference_scaling", "--reward", "shapes"],
        ["sample", "--method", "inference_scaling", "--verifier", "shapes"],  # as eval names it
    ],
)
def test_a_prompt_the_reward_cannot_score_is_refused_before_the_model_loads(tmp_path, command):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na pink circle\n")
    # The model folder does not exist: loading it would fail with another error.
    args = [*command, "--model", tmp_path / "never-loaded", "--prompts", prompts]
    result = invoke([*args, "--out", tmp_path / "out"])
    assert result.exit_code == 2  # a bad setting, as the same prompt in a recipe
    assert result.stderr.strip() == (
        f"error: {prompts}: reward 'shapes' cannot score a prompt: "
        "unknown word 'pink' in prompt 'a pink circle'"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("section", ["data", "eval"])
def test_train_refuses_a_prompt_file_the_reward_cannot_score_before_training(tmp_path, section):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("two red circles\nthree pink squares\n")
    recipe = RECIPES / "quickstart.yaml"
    args = ["train", recipe, f"output_dir={tmp_path / 'run'}", f"{section}.prompts_file={prompts}"]
    if section == "data":
        args += ["data.generator=none", "data.balance=prompt"]
    result = invoke(args)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"recipe error: {recipe}: {section}.prompts_file: reward 'shapes' cannot score a "
        "prompt: unknown word 'pink' in prompt 'three pink squares'"
    )
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_sampler_recipe_it_would_train_the_default_method_for(
    tmp_path, monkeypatch
):
    """recipes/mini/demon.yaml is for `dsharp eval --recipe`; `train` started a 1000-step run
    of the default method from it."""
    recipe = RECIPES / "mini" / "demon.yaml"
    result = invoke(["train", recipe, f"output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"recipe error: {recipe}: a sampler recipe (sample.method: demon; no method or train "
        f"section): run it with dsharp eval --recipe {recipe} (to train with it anyway, set "
        "method.name)"
    )
    assert not (tmp_path / "run").exists()
    # a training recipe whose report samples with a search has a train section: it trains
    import dsharp.commands.train

    trained = []
    training = tmp_path / "training.yaml"
    training.write_text(recipe.read_text() + "train:\n  max_steps: 1\n")
    monkeypatch.setattr(dsharp.commands.train, "_train_and_report", lambda *a: trained.append(a))
    result = invoke(["train", training, f"output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    assert len(trained) == 1


# --------------------------------------------------------------------------- eval, compare


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("# shapes-world prompts\na red square\r\n\r\na blue circle\n")
    return path


def _eval(model: Path, prompts: Path, *extra) -> dict:
    args = ["eval", "--model", model, "--prompts", prompts, "--reward", "shapes"]
    args += ["--seeds", "2", "--steps", "2", "--device", "cpu", "--json", *extra]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_takes_eta_as_sample_does(tiny_sd_dir, prompt_file, tmp_path):
    result = _eval(tiny_sd_dir, prompt_file, "--eta", "0.5", "--out", tmp_path / "eta.json")
    assert result["sample"]["eta"] == 0.5
    clash = ["eval", "--model", tiny_sd_dir, "--prompts", prompt_file, "--reward", "shapes"]
    clash += ["--eta", "0.5", "sample.eta=0.2"]
    refused = invoke(clash)
    assert refused.exit_code == 2 and "--eta" in refused.stderr


def test_eval_json_and_compare_tables(tiny_sd_dir, prompt_file, tmp_path):
    first = _eval(tiny_sd_dir, prompt_file, "--out", tmp_path / "base.json")
    assert first["n_images"] == 4 and first["n_prompts"] == 2 and first["seeds"] == [0, 1]
    assert first["rewards"] == ["shapes"] and first["model"] == str(tiny_sd_dir)
    stats = first["metrics"]["shapes"]
    assert set(stats) == {"mean", "std", "ci95", "n"} and stats["n"] == 4
    assert 0.0 <= stats["mean"] <= 1.0 and first["overall"] == pytest.approx(stats["mean"])
    assert first["nfe_per_image"] == 4 and 0.0 <= first["strict"] <= 1.0
    assert first["n_scored"] == 4  # every image scored: the means are over all four
    spec = {"name": "shapes", "weight": 1.0, "normalize": "none", "on_error": "raise"}
    assert first["reward_specs"] == {"shapes": spec | {"options": {}}}
    # "a red square", "a blue circle": one presence constraint each, so its share met is
    # the mean score
    assert first["constraints"] == {"presence": pytest.approx(stats["mean"])}
    assert json.loads((tmp_path / "base.json").read_text()) == first
    # every image's score, by prompt and seed, for paired comparisons
    images = first["images"]
    assert [(i["prompt"], i["seed"]) for i in images] == [
        ("a red square", 0),
        ("a red square", 1),
        ("a blue circle", 0),
        ("a blue circle", 1),
    ]
    assert sum(i["score"] for i in images) / 4 == pytest.approx(first["overall"])

    # the same seeds give the same images, hence the same scores; --images keeps them and a
    # contact sheet
    kept = tmp_path / "kept"
    args = ["--guidance", "5", "--out", tmp_path / "again.json", "--images", kept]
    again = _eval(tiny_sd_dir, prompt_file, *args)
    assert again["metrics"] == first["metrics"]
    names = ["00000-seed0.png", "00001-seed1.png", "00002-seed0.png", "00003-seed1.png"]
    assert sorted(p.name for p in kept.iterdir()) == [RECORD_NAME, *names, "grid.png"]
    _eval(tiny_sd_dir, prompt_file, "--guidance", "1", "--out", tmp_path / "noguid.json")

    out = tmp_path / "cmp"
    result = invoke(["compare", tmp_path / "base.json", tmp_path / "noguid.json", "--out", out])
    assert result.exit_code == 0, result.output
    table = list(csv.reader((out / "compare.csv").read_text().splitlines()))
    columns = ["run", "overall", "strict", "shapes", "met:presence", "nfe/image", "images"]
    assert table[0] == [*columns, "images scored"]
    assert [row[0] for row in table[1:]] == ["base", "noguid"]
    assert float(table[1][1]) == pytest.approx(first["overall"])
    markdown = (out / "compare.md").read_text().splitlines()
    assert markdown[0] == f"| {' | '.join(columns)} | images scored |"
    assert markdown[4:6] == ["", "Notes:"]  # two rows, then the notes printed to stderr
    assert any(line.startswith("- sampling differs") for line in markdown[6:])
    assert markdown[2].startswith("| base | ")
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert result.stdout.strip().endswith(
        f"wrote {out / 'compare.md'}, {out / 'compare.csv'} and {out / 'compare.png'}"
    )
    bare = tmp_path / "bare"
    args = ["compare", tmp_path / "base.json", tmp_path / "noguid.json", "--out", bare]
    assert invoke([*args, "--no-plot"]).exit_code == 0
    assert sorted(p.name for p in bare.iterdir()) == ["compare.csv", "compare.md"]

    # paired: the same images of both evaluations, difference by difference
    noguid = json.loads((tmp_path / "noguid.json").read_text())
    result = invoke(
        ["compare", "--paired", tmp_path / "base.json", tmp_path / "noguid.json", "--out", out]
    )
    assert result.exit_code == 0, result.output
    table = list(csv.reader((out / "compare.csv").read_text().splitlines()))
    assert table[0][:7] == ["run", "baseline", "images", "baseline score", "score", "delta", "ci95"]
    assert table[1][:3] == ["noguid", "base", "4"]
    delta = noguid["overall"] - first["overall"]
    assert float(table[1][5]) == pytest.approx(delta, abs=1e-4)
    result = invoke(["compare", "--paired", tmp_path / "base.json", "--out", out])
    assert result.exit_code != 0 and "at least one evaluation" in result.output


def test_eval_weight_zero_reward_is_reported_but_never_poisons_overall(tiny_sd_dir):
    from dsharp.config import RewardSpec
    from dsharp.evaluate import evaluate
    from dsharp.generate import SampleSettings
    from dsharp.models import load_model

    with brightness_registered():
        specs = [
            RewardSpec(name=NAME, weight=2.0),
            RewardSpec(name=NAME, weight=0.0, on_error="missing", options={"nan_prompt": "b"}),
        ]
        result = evaluate(
            load_model(str(tiny_sd_dir)),
            ["a", "b"],
            specs,
            num_seeds=1,
            settings=SampleSettings(steps=1, guidance=1.0, height=64, width=64),
        )
    # one key per spec, as CombinedReward names them; the NaN is left out of its stats
    assert result["metrics"][NAME]["n"] == 2 and result["metrics"][f"{NAME}#1"]["n"] == 1
    assert result["metrics"][f"{NAME}#1"]["mean"] != result["metrics"][NAME]["mean"]
    # overall is the weighted mean: the weight-0 reward with its NaN does not enter it
    assert result["overall"] == pytest.approx(result["metrics"][NAME]["mean"])
    assert result["n_images"] == 2


def test_eval_groupings_average_the_scores_of_each_label(tiny_sd_dir):
    from dsharp.config import RewardSpec
    from dsharp.evaluate import evaluate
    from dsharp.generate import SampleSettings
    from dsharp.models import load_model

    settings = SampleSettings(steps=1, guidance=1.0, height=64, width=64)
    model = load_model(str(tiny_sd_dir))
    with brightness_registered():
        one = [
            evaluate(model, [p], [RewardSpec(name=NAME)], num_seeds=2, settings=settings)
            for p in ("a", "b", "c")
        ]
        both = evaluate(
            model,
            ["a", "b", "c"],
            [RewardSpec(name=NAME)],
            num_seeds=2,
            settings=settings,
            groupings={"vowel": lambda p: "yes" if p == "a" else "no"},
        )
    # seeds are per prompt, so each prompt's images are the ones it gets alone (up to the
    # float noise of batching them together)
    no = (one[1]["overall"] + one[2]["overall"]) / 2
    expected = {
        "no": pytest.approx(no, rel=1e-4),
        "yes": pytest.approx(one[0]["overall"], rel=1e-4),
    }
    assert both["groups"] == {"vowel": expected}
    assert "constraints" not in both  # the brightness reward reports none


def test_shapes_bench_splits_prompts_by_held_out_pairs():
    from dsharp.evaluate import get_bench

    pairs = get_bench("shapes").groupings["pairs"]
    assert pairs("a red triangle") == "held-out"  # a pair pretraining never showed
    assert pairs("a red circle to the left of a blue square") == "seen"
    assert pairs("two green squares above a red circle") == "held-out"


def test_compare_reports_a_missing_source_in_one_line(tmp_path):
    result = invoke(["compare", tmp_path / "nope.json", "--out", tmp_path])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.json'}: no such file or folder"


def test_compare_labels_run_files_by_their_run_and_keeps_repeated_labels_apart(tmp_path):
    files = []
    for run_name, score in (("seed0", 0.5), ("seed1", 0.75)):
        run = tmp_path / run_name
        run.mkdir()
        (run / "recipe.yaml").write_text("method:\n  name: rlhf_sharpening\n")
        files.append(run / "eval-shapes.json")
        files[-1].write_text(json.dumps({"metrics": {"shapes": {"mean": score}}}))
    loose = [tmp_path / "a" / "scores.json", tmp_path / "b" / "scores.json"]
    for path, score in zip(loose, (0.25, 1.0), strict=True):
        path.parent.mkdir()
        path.write_text(json.dumps({"metrics": {"shapes": {"mean": score}}}))
    result = invoke(["compare", *files, *loose, "--out", tmp_path])
    assert result.exit_code == 0, result.output
    header, *rows = csv.reader((tmp_path / "compare.csv").read_text().splitlines())
    column = header.index("shapes")
    assert {row[0]: float(row[column]) for row in rows} == {
        "seed0": 0.5,
        "seed1": 0.75,
        "a/scores.json": 0.25,
        "b/scores.json": 1.0,
    }


@pytest.mark.slow
def test_eval_checkpoint_uses_the_run_rewards_and_compare_reads_the_run(train_run, tmp_path):
    run, result = train_run("sd", "rlhf_sharpening")
    assert result.exit_code == 0, result.output
    environment = json.loads((run / "environment.json").read_text())
    assert environment["packages"]["torch"] == torch.__version__.split("+")[0]
    assert environment["rewards"]["shapes"]["distribution"] == "dsharp"
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")
    args = ["eval", "--checkpoint", run, "--prompts", prompts, "--seeds", "1", "--steps", "2"]
    result = invoke(args + ["--device", "cpu"])
    assert result.exit_code == 0, result.output
    written = json.loads((run / "eval-rewards-p.json").read_text())  # named by the prompt file
    assert written["rewards"] == ["shapes"] and written["n_images"] == 1
    result = invoke(["compare", run, "--out", tmp_path])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "compare.csv").read_text().splitlines()[1].startswith(f"{run.name},")

    # An earlier checkpoint's evaluation stays beside it: it is not the run's score.
    import shutil

    step = written["step"]
    older = run / "checkpoints" / f"step-{step:06d}"  # the newest: the run's own score above
    newer = run / "checkpoints" / f"step-{step + 1:06d}"
    shutil.copytree(older, newer)
    (newer / "trainer_state.json").write_text(json.dumps({"step": step + 1}))
    (run / "eval-rewards-p.json").unlink()
    result = invoke(["eval", "--checkpoint", older, *args[3:], "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads((older / "eval-rewards-p.json").read_text())["step"] == step
    assert not (run / "eval-rewards-p.json").exists()


def test_a_bench_scored_by_other_rewards_keeps_the_bench_s_own_evaluation(train_run):
    """``--bench shapes --reward shapes_soft`` wrote eval-shapes.json, replacing the run's
    shapes score with another reward's, which `dsharp runs` then showed as "from shapes"."""
    run, result = train_run("sd", "rlhf_sharpening")
    assert result.exit_code == 0, result.output
    args = ["eval", "--checkpoint", run, "--bench", "shapes", "--limit", "1", "--seeds", "1"]
    args += ["--steps", "2", "--device", "cpu"]
    assert invoke(args).exit_code == 0
    own = json.loads((run / "eval-shapes.json").read_text())
    result = invoke([*args, "--reward", "shapes_soft"])
    assert result.exit_code == 0, result.output
    other = json.loads((run / "eval-shapes-reward-shapes_soft.json").read_text())
    assert other["rewards"] == ["shapes_soft"]
    assert json.loads((run / "eval-shapes.json").read_text()) == own
    assert own["rewards"] == ["shapes"]
    # naming the bench's own reward is the bench's own evaluation
    result = invoke([*args, "--reward", "shapes"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.glob("eval-shapes*.json")) == [
        "eval-shapes-reward-shapes_soft.json",
        "eval-shapes.json",
    ]


def test_an_evaluation_by_several_rewards_is_named_by_all_of_them():
    from dsharp.commands.evaluate import _default_json_name

    name = _default_json_name("shapes", Path("heldout.txt"), ["clip", "my reward"])
    assert re.fullmatch(r"eval-shapes-heldout-reward-clip\+my-reward-[0-9a-f]{8}\.json", name)
    assert _default_json_name(None, None, ["clip"]) == "eval-rewards.json"


def test_version_flag_prints_the_installed_distribution_version():
    from importlib.metadata import version

    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"dsharp {version('dsharp')}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["sample", "--seeds", "3"],
            "dsharp sample: No such option: --seeds (Possible options: --seed, --set, --steps) "
            "(see 'dsharp sample --help')",
        ),
        (
            ["eval", "--seeds", "x"],
            "dsharp eval: Invalid value for '--seeds': Input should be a valid integer, "
            "unable to parse string as an integer (see 'dsharp eval --help')",
        ),
        (
            ["compare"],
            "dsharp compare: Missing argument 'RUN_OR_JSON'. (see 'dsharp compare --help')",
        ),
        (["trian"], "dsharp: No such command 'trian'. Did you mean 'train'? (see 'dsharp --help')"),
    ],
    ids=["unknown-option", "bad-value", "missing-argument", "unknown-command"],
)
def test_usage_errors_are_one_line_with_exit_2(monkeypatch, capsys, argv, expected):
    """The console script prints click's usage errors as one line, not a boxed panel."""
    from dsharp.cli import main

    monkeypatch.setattr(sys, "argv", ["dsharp", *argv])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == expected and captured.out == ""


def test_no_command_prints_the_help_with_exit_2(monkeypatch, capsys):
    from dsharp.cli import main

    monkeypatch.setattr(sys, "argv", ["dsharp"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "Commands" in capsys.readouterr().out


def test_an_evaluation_on_a_prompt_file_is_named_by_that_file():
    from dsharp.commands.evaluate import _default_json_name

    assert _default_json_name("shapes", None) == "eval-shapes.json"
    assert re.fullmatch(
        r"eval-shapes-v2-prompts-[0-9a-f]{8}\.json",
        _default_json_name("shapes", Path("held out/v2 prompts.txt")),
    )
    assert _default_json_name(None, Path("ok_1.txt")) == "eval-rewards-ok_1.json"
    assert _default_json_name("shapes", Path("held-out.v2.txt")) == "eval-shapes-held-out.v2.json"
    assert re.fullmatch(
        r"eval-clip-prompts-[0-9a-f]{8}\.json", _default_json_name("clip", Path("###.txt"))
    )


def test_prompt_files_named_alike_after_sanitising_get_their_own_json():
    """色.txt and 形.txt both became eval-shapes-prompts.json, held out.txt and
    held-out.txt both eval-shapes-held-out.json: the second evaluation replaced the first
    (audit F9). Letters of any script are kept; a changed stem gets a hash of the stem."""
    from dsharp.commands.evaluate import _default_json_name

    files = ["色.txt", "形.txt", "held out.txt", "held-out.txt", "held_out.txt", "held  out.txt"]
    files += ["###.txt", "!!!.txt", "-x.txt", "x.txt", "Ünïcode.txt", "Unicode.txt"]
    names = {f: _default_json_name("shapes", Path(f)) for f in files}
    assert len(set(names.values())) == len(files), names
    assert names["色.txt"] == "eval-shapes-色.json" and names["形.txt"] == "eval-shapes-形.json"
    assert names["Ünïcode.txt"] == "eval-shapes-Ünïcode.json"
    assert names["held-out.txt"] == "eval-shapes-held-out.json"
    assert re.fullmatch(r"eval-shapes-held-out-[0-9a-f]{8}\.json", names["held out.txt"])
    # the same file always gets the same name (a rerun replaces its own result)
    assert _default_json_name("shapes", Path("other/held out.txt")) == names["held out.txt"]


def test_compare_says_which_evaluation_a_run_folder_stands_for(tmp_path):
    import os

    run = tmp_path / "run1"
    run.mkdir()
    (run / "recipe.yaml").write_text("{}\n")
    for age, (name, score) in enumerate(
        [("eval-shapes-heldout.json", 0.6), ("eval-shapes.json", 0.5)]
    ):
        path = run / name
        path.write_text(json.dumps({"overall": score, "metrics": {"shapes": {"mean": score}}}))
        os.utime(path, (1_000_000 + age, 1_000_000 + age))  # eval-shapes.json is the newest
    result = invoke(["compare", run, "--out", tmp_path, "--no-plot"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        f"{run}: using eval-shapes.json, its newest evaluation (also there: "
        "eval-shapes-heldout.json; give a file to choose)"
    )
    assert (tmp_path / "compare.csv").read_text().splitlines()[1].startswith("run1,0.5")


def test_eval_of_a_checkpoint_without_its_run_recipe_is_one_line(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")
    result = invoke(["eval", "--checkpoint", checkpoint, "--prompts", prompts])
    assert result.exit_code != 0
    assert result.stderr.strip() == (
        f"error: --checkpoint: {tmp_path / 'run' / 'recipe.yaml'} is missing "
        "(not a dsharp run folder)"
    )


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["train"], ["RECIPE", "[OVERRIDES]"]),
        (["merge"], ["RUN"]),
        (["rewards", "score"], ["NAME", "[IMAGE]"]),
        (["compare"], ["RUN_OR_JSON"]),
    ],
)
def test_usage_lines_name_positional_arguments_as_the_help_text_does(command, words):
    result = invoke([*command, "--help"])
    assert result.exit_code == 0
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    for word in words:
        assert word in usage, usage
    assert "sources" not in usage and "recipe}" not in usage


def test_eval_strict_leaves_out_images_the_reward_could_not_score(tiny_sd_dir, monkeypatch):
    """`strict` and `overall` average over the same scored images: an image that a reward
    marked missing is not a strict failure."""
    import dsharp.shapes.reward
    from dsharp.config import RewardSpec

    def all_met(images, prompts):  # the tiny random model draws no shapes: call them perfect
        info = {"strict": True, "constraints": []}
        return torch.ones(len(prompts)), [info for _ in prompts]

    monkeypatch.setattr(dsharp.shapes.reward, "verify_batch", all_met)
    from dsharp.evaluate import evaluate
    from dsharp.generate import SampleSettings
    from dsharp.models import load_model

    spec = RewardSpec(name="shapes", on_error="missing")
    result = evaluate(
        load_model(str(tiny_sd_dir)),
        ["a red circle", "a red hexagon"],
        [spec],
        num_seeds=1,
        settings=SampleSettings(steps=1, guidance=1.0, height=64, width=64),
    )
    assert result["metrics"]["shapes"]["n"] == 1 and result["overall"] == 1.0
    assert result["strict"] == 1.0


def test_eval_overall_keeps_a_penalty_rewards_sign(tiny_sd_dir):
    """A lone reward of weight -2 is a penalty: overall is minus its mean (the trained
    objective), not plus it, as dividing by the signed weight sum would give."""
    from dsharp.config import RewardSpec
    from dsharp.evaluate import evaluate
    from dsharp.generate import SampleSettings
    from dsharp.models import load_model

    with brightness_registered():
        result = evaluate(
            load_model(str(tiny_sd_dir)),
            ["a"],
            [RewardSpec(name=NAME, weight=-2.0)],
            num_seeds=2,
            settings=SampleSettings(steps=1, guidance=1.0, height=64, width=64),
        )
    brightness = result["metrics"][NAME]["mean"]
    assert brightness > 0 and result["overall"] == pytest.approx(-brightness)


def test_tables_show_a_missing_value_as_a_dash_whether_nan_or_json_null():
    from dsharp.report import build_table, to_markdown

    columns, rows = build_table([("a", {"overall": None, "strict": 0.5}), ("b", {})])
    text = to_markdown(columns, rows)
    assert "None" not in text and "nan" not in text.lower()
    assert "| a | - | 0.5000 |" in text and "| b | - | - |" in text


def test_compare_csv_leaves_a_missing_value_empty(tmp_path):
    """compare.md shows '-' where a source lacks a column (or has null); compare.csv wrote
    'nan' there, which a spreadsheet or pandas reads as text rather than as missing."""
    sources = []
    for name, metrics in (("a", {"clip": {"mean": 0.5}}), ("b", {"clip": {"mean": None}})):
        sources.append(tmp_path / f"{name}.json")
        extra = {"aesthetic": {"mean": 5.0}} if name == "a" else {}
        sources[-1].write_text(json.dumps({"metrics": {**metrics, **extra}}))
    result = invoke(["compare", *sources, "--out", tmp_path / "out", "--no-plot"])
    assert result.exit_code == 0, result.output
    header, *rows = csv.reader((tmp_path / "out" / "compare.csv").read_text().splitlines())
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert table["a"]["clip"] == "0.5" and table["a"]["aesthetic"] == "5.0"
    assert table["b"]["clip"] == "" and table["b"]["aesthetic"] == ""
    assert "| b | - | - |" in (tmp_path / "out" / "compare.md").read_text()


def test_compare_refuses_json_that_is_no_evaluation(tmp_path):
    for name, text in (("list.json", "[1, 2]"), ("other.json", '{"a": 1}')):
        path = tmp_path / name
        path.write_text(text)
        result = invoke(["compare", path, "--out", tmp_path / "out"])
        assert result.exit_code == 1, result.output
        assert f"{path}: not a dsharp evaluation" in result.stderr
    assert not (tmp_path / "out" / "compare.md").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--against", "nope"], "error: --against: unknown 'nope' (expected: paper)"),
        (
            ["--against", "paper", "--table", "table9"],
            "error: --table: unknown 'table9' (available: table1, table2, table3)",
        ),
        (["--against", "paper", "--paired"], "error: --paired and --against: choose one"),
    ],
)
def test_compare_refuses_an_unknown_flag_value_as_a_bad_setting(tmp_path: Path, flags, message):
    """Exit 2, as a bad recipe value, before any source is read (this one is not there)."""
    missing = tmp_path / "missing.json"
    result = invoke(["compare", missing, missing, *flags, "--out", tmp_path])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == message


def test_eval_with_an_unknown_reward_or_bench_is_one_line_and_a_bad_setting(tmp_path, prompt_file):
    """Exit 2, as the same name in a recipe: a bad setting, not a failure of the run."""
    result = invoke(
        ["eval", "--model", "dsharp-mini", "--prompts", prompt_file, "--reward", "shapez"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown reward 'shapez', did you mean 'shapes'?")
    assert len(result.stderr.strip().splitlines()) == 1 and "pydantic" not in result.stderr
    result = invoke(["eval", "--model", "dsharp-mini", "--bench", "shape"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --bench: unknown bench 'shape' (available: ")


def test_a_checkpoint_folder_that_does_not_exist_is_named_as_such(tmp_path):
    missing = tmp_path / "no-run"
    result = invoke(["sample", "--checkpoint", missing, "-p", "a red circle", "--out", tmp_path])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: --checkpoint: {missing}: no such folder"


def test_eval_of_a_run_without_bench_or_prompts_names_the_bench_its_report_used(tmp_path):
    from run_folders import run_folder_with_checkpoint

    recipe = "model: {pretrained: dsharp-mini}\nrewards: [{name: shapes}]\n"
    recipe += "data: {generator: shapes}\neval: {bench: shapes}\n"
    run = run_folder_with_checkpoint(tmp_path / "run", recipe)
    result = invoke(["eval", "--checkpoint", run])
    assert result.exit_code == 2, result.output  # a missing input: a usage error
    assert result.stderr.strip() == (
        "error: give --prompts FILE or --bench NAME (the run's report used --bench shapes)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench", "shapes"], "give exactly one of --model or --checkpoint (or --recipe)"),
        (["--model", "dsharp-mini"], "give --prompts FILE or --bench NAME"),
        (["--bench", "t2i-compbench"], "give exactly one of --model or --checkpoint"),
    ],
)
def test_eval_without_a_model_or_prompts_is_a_usage_error(args, message):
    result = invoke(["eval", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(f"error: {message}")


def test_a_prompt_outside_the_verifiers_grammar_is_a_bad_setting(tmp_path):
    args = ["sample", "--model", tmp_path / "never-loaded", "--method", "inference_scaling"]
    result = invoke([*args, "--reward", "shapes", "-p", "a purple dragon", "--out", tmp_path])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: --prompt: reward 'shapes' cannot score a prompt: unknown word 'dragon' in "
        "prompt 'a purple dragon'"
    )


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_device_name_that_is_no_device_is_a_bad_value(tmp_path, command):
    args = [command, "--model", tmp_path / "never-loaded", "--device", "tpu"]
    if command == "eval":
        args += ["--bench", "shapes", "--out", tmp_path / "eval.json"]
    else:
        args += ["-p", "a red circle", "--out", tmp_path]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: --device: expected auto, cpu, cuda[:N], mps or xpu, got 'tpu'"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_not_a_bad_value(tmp_path):
    args = ["sample", "--model", tmp_path / "never-loaded", "--device", "cuda"]
    result = invoke([*args, "-p", "a red circle", "--out", tmp_path])
    assert result.exit_code == 1, result.output
    assert "--device cuda: CUDA is not available here" in result.stderr
    if not _has_xpu():  # an Intel GPU is a device too, not a bad value
        result = invoke([*args[:-2], "--device", "xpu", "-p", "a red circle", "--out", tmp_path])
        assert result.exit_code == 1, result.output
        assert "--device xpu: XPU is not available here" in result.stderr


def _has_xpu() -> bool:
    return bool(getattr(torch, "xpu", None) and torch.xpu.is_available())


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["rewards", "score", "nope"], "unknown reward 'nope'"),
        (["rewards", "score", "shapes", "--set", "foo=1"], "unexpected keyword argument 'foo'"),
        (["rewards", "score", "shapes", "--set", "binary=maybe"], "must be true or false"),
        (["rewards", "score", "shapes", "--set", "binary"], "--set 'binary': expected KEY="),
        (
            ["rewards", "score", "shapes", "--set", "on_error=ignore"],
            "on_error is not a reward option: use --on-error",
        ),
        (["eval", "--model", "m", "--bench", "shapes", "--set", "foo"], "--set 'foo': expected"),
        (["eval", "--model", "m", "--bench", "shapes", "--set", "a=[1"], "invalid YAML"),
    ],
)
def test_a_bad_reward_name_or_option_is_a_bad_setting(tmp_path, command, message):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    args = [*command, "--prompt", "a red circle", image] if command[0] == "rewards" else command
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_eval_of_a_recipe_names_its_sampler_beside_the_model(tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mini" / "demon.yaml"
    out = tmp_path / "runs" / "demon"
    args = ["eval", "--recipe", recipe, "eval.limit=1", "eval.seeds=1", "sample.steps=2"]
    args += ["sample.options.K=2", f"output_dir={out}"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "dsharp-mini (demon)" in result.stdout
    # only the result: a recipe.yaml would not hold the flags, and would make the folder
    # look like a training run of the default method to `dsharp runs`
    assert sorted(p.name for p in out.iterdir()) == ["eval-shapes.json"]


def _mini_run(tmp_path: Path) -> Path:
    from run_folders import run_folder_with_checkpoint

    recipe = "model: {pretrained: dsharp-mini}\nrewards: [{name: shapes}]\n"
    return run_folder_with_checkpoint(tmp_path / "run", recipe + "data: {generator: shapes}\n")


def _refuse_loading(monkeypatch) -> None:
    import dsharp.commands.common

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", no_loading)


def test_eval_of_a_checkpoint_with_a_damaged_state_fails_before_loading(tmp_path, monkeypatch):
    run = _mini_run(tmp_path)
    state = run / "checkpoints" / "step-000001" / "trainer_state.json"
    state.write_text('{"step": 1')
    _refuse_loading(monkeypatch)
    result = invoke(["eval", "--checkpoint", run, "--bench", "shapes", "--limit", "1"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {state}: not JSON (")
    assert len(result.stderr.strip().splitlines()) == 1


def _refuse_writes_in(monkeypatch, folder: Path) -> None:
    """The write check's probe fails in ``folder``, as in a read-only folder (chmod does not
    stop root, who runs the tests here)."""
    import tempfile

    make_folder = tempfile.mkdtemp

    def refuse(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == folder:
            raise PermissionError(13, "Permission denied")
        return make_folder(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)


@pytest.mark.parametrize("where", ["run folder", "checkpoint folder", "output_dir"])
def test_eval_checks_its_default_destination_can_be_written_before_sampling(
    tmp_path, monkeypatch, where
):

    run = _mini_run(tmp_path)
    args = ["eval", "--checkpoint", run, "--bench", "shapes", "--limit", "1"]
    read_only = run
    if where == "checkpoint folder":  # not the newest: its evaluation goes beside it
        read_only = run / "checkpoints" / "step-000001"
        (run / "checkpoints" / "step-000002").mkdir()
        (run / "checkpoints" / "step-000002" / "trainer_state.json").write_text('{"step": 2}')
        args[2] = read_only
    elif where == "output_dir":
        args = ["eval", "--recipe", RECIPES / "quickstart.yaml", f"output_dir={run}"]
    _refuse_writes_in(monkeypatch, read_only)
    _refuse_loading(monkeypatch)
    import dsharp.builders

    monkeypatch.setattr(dsharp.builders, "build_model", lambda *a, **k: 1 / 0)
    result = invoke(args)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {where} {read_only}: cannot be written in {read_only} (Permission denied); "
        "give --out FILE"
    )


@pytest.mark.parametrize("source", [["--bench", "shapes"], ["--prompts", "p.txt"]])
def test_eval_refuses_t2i_compbench_flags_for_another_bench(tmp_path, source, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.txt").write_text("a red circle\n")
    args = ["eval", "--model", tmp_path / "never-loaded", *source, "--categories", "bogus"]
    result = invoke([*args, "--split", "nope", "--images-per-prompt", "3"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: --categories, --split, --images-per-prompt: used only by --bench t2i-compbench "
        "(other benches and --prompts take --limit and --seeds)"
    )


def test_sample_refuses_a_seed_torch_would_not_take(tmp_path):
    """train.seed is checked against torch's range; --seed was taken as given (-1 too)."""
    for seed in ("-1", str(2**32)):
        args = ["sample", "--model", tmp_path / "never-loaded", "-p", "a red circle"]
        result = invoke([*args, "--seed", seed, "--out", tmp_path / "out"])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--seed'" in result.output
    assert not (tmp_path / "out").exists()


def test_sample_refuses_images_whose_seeds_run_past_the_seed_range(tmp_path):
    """Image i uses --seed + i: --seed 2**32 - 1 with two images gave the second image seed
    2**32, past the range the help promises, where --seed 2**32 itself is refused."""
    args = ["sample", "--model", tmp_path / "never-loaded", "-p", "a red circle", "-p", "a"]
    result = invoke([*args, "--seed", str(2**32 - 3), "-n", "2", "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: --seed {2**32 - 3}: 4 images (-n 2 x 2 prompts) use seeds up to {2**32} "
        f"(image i: --seed + i), past 2**32 - 1; give --seed {2**32 - 4} or less"
    )
    assert not (tmp_path / "out").exists()
    # the last seed of the range is taken: the model is looked for next
    result = invoke([*args, "--seed", str(2**32 - 4), "-n", "2", "--out", tmp_path / "out"])
    assert result.stderr.strip().startswith("error: model folder not found: "), result.output


def test_eval_t2i_compbench_checks_its_work_folder_before_loading(tmp_path, monkeypatch):
    """With --out elsewhere, the rows still go to the run's t2i-compbench/ from the first
    prompt on: a run folder nothing can be written in is refused before the model loads."""

    run = _mini_run(tmp_path)
    _refuse_writes_in(monkeypatch, run)
    _refuse_loading(monkeypatch)
    args = ["eval", "--checkpoint", run, "--bench", "t2i-compbench", "--out", tmp_path / "r.json"]
    result = invoke(args)
    assert result.exit_code == 1, result.output
    work = run / "t2i-compbench" / "step-000001"
    assert result.stderr.strip() == (
        f"error: t2i-compbench work folder {work}: cannot be written in {run} (Permission denied)"
    )


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_help_names_every_sampling_method_and_bench(command):
    """`sample --method` listed two methods and "...", `eval --method` none, `eval --bench`
    only "e.g. shapes": the help names each, and this keeps it in step with the registries."""
    from dsharp.bench import bench_names
    from dsharp.config import SAMPLE_METHOD_NAMES

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for name in SAMPLE_METHOD_NAMES:
        assert name in text, name
    if command == "eval":
        for name in bench_names():
            assert name in text, name


def test_the_cli_starts_without_pydantic():
    """``dsharp --help``, ``dsharp runs``: the commands' error handling folds messages with
    one_line, which must not bring pydantic in with dsharp.recipe_errors (+0.1-0.2 s)."""
    code = "import sys, dsharp.cli; print([m for m in ('pydantic', 'torch') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("said", [0, -1])
def test_a_file_system_that_reports_no_name_limit_refuses_no_name(tmp_path, monkeypatch, said):
    """pathconf's NAME_MAX is 0 on FUSE mounts that set none (borg, bindfs) and -1 where
    there is no limit: every output name, 'out.json' too, was refused as 'more than the 0
    allowed'."""
    from dsharp.preflight import name_too_long

    monkeypatch.setattr("os.pathconf", lambda path, name: said)
    assert name_too_long(tmp_path / "new" / "out.json") is None
    assert "more than the 255 allowed" in name_too_long(tmp_path / ("x" * 256))


def test_python_dash_m_dsharp_runs_the_command():
    """``python -m dsharp`` is the command where the venv's scripts folder is not on PATH;
    it was "No module named dsharp.__main__"."""
    version = subprocess.run(
        [sys.executable, "-m", "dsharp", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("dsharp ")
    unknown = subprocess.run(
        [sys.executable, "-m", "dsharp", "no-such-command"], capture_output=True, text=True
    )
    assert unknown.returncode == 2
    assert "No such command 'no-such-command'" in unknown.stderr
