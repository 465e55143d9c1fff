"""After training, a recipe with an eval section leaves a report, a grid and both evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.posttrain import limit_prompts

REPO = Path(__file__).resolve().parents[1]


def test_limit_prompts_spreads_over_each_category():
    prompts = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(4)]
    picked = limit_prompts(prompts, 3, lambda p: p[0])
    assert picked == ["a0", "a3", "a6", "b0", "b1", "b2"]
    assert limit_prompts(prompts, 2, None) == ["a0", "a7"]


def test_train_with_eval_section_writes_report_grid_and_evals(tmp_path, tiny_sd_dir, monkeypatch):
    from dsharp import posttrain

    headings = []  # each figure's heading, then written as it would be

    def save(fig, path):
        # written as one of the report's set: to a temp file beside samples_grid.png
        name = Path(path).name.removeprefix(".").partition(".png.")[0] + ".png"
        headings.append((name, fig._suptitle and fig._suptitle.get_text()))
        real_save(fig, path)

    real_save = posttrain.atomic_save_png
    monkeypatch.setattr(posttrain, "atomic_save_png", save)
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(REPO / "recipes" / "tiny" / "rlhf_sharpening.yaml"),
            f"model.pretrained={tiny_sd_dir}",
            "train.max_steps=1",
            f"output_dir={run}",
            "eval.prompts=[a red circle, two blue squares]",
            "eval.seeds=1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    base = json.loads((run / "eval-base.json").read_text())
    final = json.loads((run / "eval-final.json").read_text())
    assert base["n_images"] == final["n_images"] == 2
    assert final["step"] == 1 and "step" not in base  # the checkpoint it scored
    assert base["seeds"] == final["seeds"] == [0]
    report = (run / "report.md").read_text()
    assert f"(2 images per model), sampling: {base['sample']['steps']} DDIM steps" in report
    assert f"| overall | {base['overall']:.4f} | {final['overall']:.4f} |" in report
    # "two blue squares" has a count constraint besides the two presence ones
    assert set(base["constraints"]) == set(final["constraints"]) == {"count", "presence"}
    met = f"{base['constraints']['count']:.4f} | {final['constraints']['count']:.4f}"
    assert f"| constraints met: count | {met} |" in report
    delta = final["overall"] - base["overall"]
    assert f"Paired on the same 2 images: delta {delta:+.4f}" in report
    grid = (run / "samples_grid.png").read_bytes()
    assert grid.startswith(b"\x89PNG")
    assert headings == [("samples_grid.png", "score: shapes")]  # what each number scores
    assert (run / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "![training curves](training_curves.png)" in report
    # the terminal: what runs, first; the result in one line, last
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"training: rlhf_sharpening of {tiny_sd_dir} (full fine-tuning; rewards: shapes), "
        f"1 step, batch "
        f"{base_batch(run)} -> {run}"
    )
    headline = (
        f"eval on 2 prompts x 1 seed: base {base['overall']:.4f} -> fine-tuned "
        f"{final['overall']:.4f} ({delta:+.4f}, paired 95% interval +-"
    )
    assert any(line.startswith(headline) for line in lines), lines
    assert lines[-2:] == [f"report: {run / 'report.md'}", f"run folder: {run}"]


def base_batch(run: Path) -> int:
    import yaml

    return yaml.safe_load((run / "recipe.yaml").read_text())["train"]["batch_size"]


def test_headline_without_per_image_scores_gives_the_mean_delta_alone():
    from dsharp.posttrain import headline

    base = {"overall": 0.25, "n_prompts": 3, "seeds": [0, 1]}
    tuned = {**base, "overall": 0.5, "bench": "shapes"}
    assert headline(base, tuned) == (
        "shapes on 3 prompts x 2 seeds: base 0.2500 -> fine-tuned 0.5000 (+0.2500)"
    )
    one = {"overall": 0.25, "n_prompts": 1, "seeds": [0]}
    assert headline(one, {**one, "bench": "shapes"}).startswith("shapes on 1 prompt x 1 seed:")


def test_report_says_why_it_has_no_paired_delta_instead_of_failing():
    from dsharp.posttrain import _paired_sentence

    base = {"images": [{"prompt": "a red circle", "seed": 0, "score": None}]}
    tuned = {"images": [{"prompt": "a red circle", "seed": 0, "score": 1.0}]}
    assert _paired_sentence(base, tuned).startswith(
        "No paired delta: base and fine-tuned: no image in common"
    )


def test_report_paired_line_on_one_prompt_gives_no_interval_rather_than_nan():
    from dsharp.posttrain import _paired_sentence

    base = {
        "images": [
            {"prompt": "a red circle", "seed": s, "score": v, "category": "single"}
            for s, v in ((0, 0.0), (1, 1.0))
        ]
    }
    tuned = {
        "images": [
            {"prompt": "a red circle", "seed": s, "score": 1.0, "category": "single"}
            for s in (0, 1)
        ]
    }
    sentence = _paired_sentence(base, tuned)
    assert "delta +0.5000 (no interval with 1 prompt)" in sentence
    assert "nan" not in sentence
    assert "The interval covers" not in sentence


def test_report_states_the_sampling_in_words_not_as_a_dict():
    from dsharp.score_words import sampling_words as _sampling_words

    plain = {"method": "default", "steps": 25, "guidance": 5.0, "eta": 0.0}
    plain |= {"height": None, "width": None, "options": {}, "reward": None}
    assert _sampling_words(plain) == "25 DDIM steps, guidance 5.0, eta 0.0"
    search = plain | {"method": "demon", "options": {"K": 4}, "height": 32, "width": 32}
    search["reward"] = [{"name": "shapes", "weight": 1.0}]
    assert _sampling_words(search) == (
        "25 DDIM steps, guidance 5.0, eta 0.0, 32x32, method `demon` K=4 (verifier: shapes)"
    )


def test_grid_shows_each_prompts_first_evaluated_image_with_its_score(tmp_path, monkeypatch):
    import torch

    from dsharp import posttrain

    images = [
        {"prompt": p, "seed": s, "score": v}
        for p, s, v in (("a", 0, 1.0), ("a", 1, 0.0), ("b", 0, None), ("b", 1, 0.5))
    ]
    assert posttrain._first_seed_rows(images, ["b", "a"]) == [2, 0]
    drawn = []
    monkeypatch.setattr(posttrain, "atomic_save_png", lambda fig, path: drawn.append(fig))
    pixels = torch.zeros(2, 3, 4, 4)
    rows = [("base", pixels, [1.0, None]), ("fine-tuned", pixels, [0.25, 0.5])]
    posttrain.sample_grid(rows, ["a", "b"], [0, 0], tmp_path / "g.png")
    labels = [ax.get_xlabel() for ax in drawn[0].axes]
    assert labels == ["score 1.00", "unscored", "score 0.25", "score 0.50"]
    assert [ax.get_ylabel() for ax in drawn[0].axes][::2] == ["base", "fine-tuned"]


def test_grid_wraps_each_prompt_to_its_column(tmp_path, monkeypatch):
    """matplotlib's wrap=True wraps to the figure: a long prompt ran into its neighbours'."""
    import torch

    from dsharp import posttrain

    drawn = []
    monkeypatch.setattr(posttrain, "atomic_save_png", lambda fig, path: drawn.append(fig))
    prompt = "a big purple circle below a small yellow triangle and a green star"
    rows = [("base", torch.zeros(2, 3, 4, 4), [1.0, 0.5])]
    posttrain.sample_grid(rows, [prompt, "a red circle"], [0, 3], tmp_path / "g.png")
    title = drawn[0].axes[0].get_title().split("\n")
    assert " ".join(title[:-1]) == prompt and title[-1] == "(seed 0)"
    assert max(len(line) for line in title) <= 30  # about a column at fontsize 7


def test_plan_line_names_lora_precision_and_resume(tiny_sd_dir, tmp_path):
    from dsharp.commands.train import _plan_line
    from dsharp.config import load_recipe

    recipe = load_recipe(
        REPO / "recipes" / "tiny" / "rlhf_sharpening.yaml",
        [
            f"model.pretrained={tiny_sd_dir}",
            "model.lora_rank=8",
            "train.mixed_precision=bf16",
            "train.resume=latest",
            f"output_dir={tmp_path}",
        ],
    )
    line = _plan_line(recipe)
    assert f"of {tiny_sd_dir} (LoRA rank 8, bf16 autocast; rewards: shapes)" in line
    assert line.endswith(f"-> {tmp_path}, no checkpoint to resume yet")
    for step in ("step-000002", "step-000010"):
        (tmp_path / "checkpoints" / step).mkdir(parents=True)
        (tmp_path / "checkpoints" / step / "trainer_state.json").write_text("{}")
    assert _plan_line(recipe).endswith(f"-> {tmp_path}, resuming from step-000010")
    named = recipe.model_copy(deep=True)
    named.train.resume = str(tmp_path / "checkpoints" / "step-000002")
    assert _plan_line(named).endswith(f", resuming ({named.train.resume})")


def test_plan_line_under_a_launcher_gives_the_batch_of_every_process(tmp_path, monkeypatch):
    """train.batch_size is per process: a step of a two-process launch trains on twice it."""
    from dsharp.commands.train import _plan_line
    from dsharp.config import load_recipe

    recipe = load_recipe(
        REPO / "recipes" / "tiny" / "rlhf_sharpening.yaml", [f"output_dir={tmp_path}"]
    )
    assert ", 2 steps, batch 2 -> " in _plan_line(recipe)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # an MPI launch sets no WORLD_SIZE
    assert ", 2 steps, batch 2 x 2 processes -> " in _plan_line(recipe)


def test_report_curves_that_cannot_be_drawn_are_a_warning_and_the_report_goes_without(
    tmp_path, monkeypatch
):
    """As in training, a figure that fails to draw (not a full disk) must not cost the
    report; the report then links no curves."""
    import dsharp.curves
    from dsharp.posttrain import _draw_curves

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(dsharp.curves, "plot_training_curves", broken)
    with pytest.warns(UserWarning, match="^training curves not drawn: no display$"):
        assert _draw_curves(tmp_path, tmp_path / "c.png") is False
    assert not (tmp_path / "c.png").exists()
