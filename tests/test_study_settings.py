"""The shipped studies reproduce the paper's tables and figures with the settings the paper and
its reference (algorithms.md, docs/methods.md) give, and score their rows alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsharp.posttrain import eval_settings
from dsharp.study import is_study_file, load_study, paper_row_of
from study_rows import stand_in_overrides

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if is_study_file(p))


def _samples_rows(path: Path) -> bool:
    """Whether a study scores samples of its rows (a table, or an NFE figure), read from
    its file: a training-curve figure has no sampled row to compare."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data.get("kind") == "table" or (data.get("plot") or {}).get("x") == "nfe"


SAMPLED_STUDIES = [p for p in STUDIES if _samples_rows(p)]


def test_the_sampled_studies_are_the_tables_and_the_nfe_figure():
    names = {p.relative_to(ROOT).as_posix() for p in SAMPLED_STUDIES}
    assert {"recipes/paper/table1.yaml", "recipes/mini/fig5_nfe.yaml"} <= names
    assert not names & {"recipes/paper/fig4_loss.yaml", "recipes/mini/fig6_reward.yaml"}


@pytest.mark.parametrize("path", SAMPLED_STUDIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_row_of_a_study_is_sampled_at_one_resolution(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """A table or NFE figure puts its rows side by side: an inference-time row sampled at
    1024 px beside fine-tuned rows evaluated at their 512 px training resolution would
    compare resolutions, not methods."""
    monkeypatch.chdir(ROOT)
    loaded = load_study(path.relative_to(ROOT), stand_in_overrides(path, ROOT, tmp_path))
    assert loaded.study.needs_eval
    sizes = {}
    for plan in loaded.rows:
        settings = eval_settings(plan.recipe)
        sizes[plan.label] = (settings.height, settings.width, settings.guidance)
    assert len(set(sizes.values())) == 1, sizes


def _paper_study(name: str, monkeypatch: pytest.MonkeyPatch, folder: Path):
    monkeypatch.chdir(ROOT)
    return load_study(
        Path("recipes/paper") / name,
        stand_in_overrides(ROOT / "recipes/paper" / name, ROOT, folder),
    )


def test_paper_sharpening_rows_use_the_papers_hyperparameters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """algorithms.md: n = m = 3, stride 1000 // 25 = 40, RLHF beta 2500; launch settings
    lr 1e-6 constant, 512 px, batch 1 x grad-accum 4, 10k steps, full UNet, SDXL."""
    loaded = _paper_study("table1.yaml", monkeypatch, tmp_path)
    rows = {plan.label: plan.recipe for plan in loaded.rows}
    for label in ("sft_sharpening", "rlhf_sharpening"):
        recipe = rows[label]
        method, train = recipe.method, recipe.train
        assert recipe.model.pretrained == "stabilityai/stable-diffusion-xl-base-1.0"
        assert method.name == label and recipe.model.lora_rank == 0
        assert (method.n, method.m, method.infer_steps, method.stride) == (3, 3, 25, None)
        assert (train.lr, train.lr_scheduler, train.batch_size, train.grad_accum) == (
            1e-6,
            "constant",
            1,
            4,
        )
        assert (train.max_steps, train.height, train.width) == (10000, 512, 512)
    assert rows["rlhf_sharpening"].method.beta == 2500.0
    assert rows["sft_sharpening"].data.empty_prompt_prob == 0.2


@pytest.mark.parametrize(
    ("name", "field"), [("table2_samples.yaml", "n"), ("table3_steps.yaml", "m")]
)
def test_tables_2_and_3_vary_only_their_setting_and_map_to_its_paper_row(
    name: str, field: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Each row is RLHF sharpening (the paper's n = 3 and m = 3 rows are its Table 1 RLHF row)
    with one n or m, compared with the paper row of that value; the other setting stays 3."""
    loaded = _paper_study(name, monkeypatch, tmp_path)
    other = "m" if field == "n" else "n"
    for plan in loaded.rows:
        method = plan.recipe.method
        assert method.name == "rlhf_sharpening" and getattr(method, other) == 3
        assert str(paper_row_of(loaded.study.paper_table, plan)) == plan.label.split("=")[1]
        assert plan.label == f"{field}={getattr(method, field)}"


def test_table1_scores_the_papers_reward_columns_on_their_scales(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """clip_score is the plain cosine of CLIP ViT-L/14 (scale 1: the paper prints ~0.32);
    aesthetic, ImageReward and the MLLM grader fill the other reward columns."""
    loaded = _paper_study("table1.yaml", monkeypatch, tmp_path)
    for plan in loaded.rows:
        rewards = {spec.name: spec for spec in plan.recipe.eval.rewards}
        assert set(rewards) == {"clip", "aesthetic", "imagereward", "mllm"}
        clip = rewards["clip"].options
        assert (clip["model"], clip["pretrained"], clip.get("scale", 1.0)) == (
            "ViT-L-14",
            "openai",
            1.0,
        )
        assert paper_row_of("table1", plan) == plan.label


#: The reward evaluations every training row of recipes/mini/table1.yaml is sized to spend.
MINI_TABLE1_BUDGET = 960


@pytest.mark.parametrize("label", ["rlhf_sharpening", "sft_sharpening"])
def test_mini_table1_sharpening_rows_spend_the_shared_reward_budget(
    label: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """mini/table1.yaml compares methods at one budget of reward evaluations: a sharpening
    row's steps are the budget over what one of its steps spends, which its base recipe
    decides (n, m, the timesteps trajectories start from, the online samples' own reward).
    One step is measured here, as training logs it, so a change to the base recipe that
    moves the cost must move the row's steps too."""
    import json

    import dsharp

    monkeypatch.chdir(ROOT)
    loaded = load_study(Path("recipes/mini/table1.yaml"), [f"output_dir={tmp_path}"])
    plan = next(p for p in loaded.rows if p.label == label)
    train = plan.recipe.train.model_copy(update={"max_steps": 1, "checkpoint_every": 0})
    one_step = plan.recipe.model_copy(update={"train": train, "output_dir": str(plan.run_dir)})
    run = dsharp.train(one_step, progress=False, report=False)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    spent = first["reward_evals"] * plan.recipe.train.max_steps
    assert 0.9 * MINI_TABLE1_BUDGET <= spent <= 1.1 * MINI_TABLE1_BUDGET, (label, spent)


def _plots_loss(path: Path) -> bool:
    """Whether a study is a figure of the training loss (Figure 4), read from its file."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return (data.get("plot") or {}).get("y") == "loss"


LOSS_FIGURES = [p for p in STUDIES if _plots_loss(p)]


@pytest.mark.parametrize("path", LOSS_FIGURES, ids=lambda p: str(p.relative_to(ROOT)))
def test_loss_figures_measure_every_row_s_loss_in_one_space(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Figure 4 draws standard fine-tuning's loss beside SFT sharpening's. Fine-tuning
    regresses the UNet's native target (v on dsharp-mini); SFT sharpening's default error
    space is epsilon, whose squared error is abar_t times v's, so its curve would sit lower
    for the units alone. Every sharpening row must measure the native error too (on SDXL,
    an epsilon model, native is epsilon)."""
    monkeypatch.chdir(ROOT)
    loaded = load_study(path.relative_to(ROOT), stand_in_overrides(path, ROOT, tmp_path))
    methods = {plan.recipe.method.name for plan in loaded.rows}
    assert methods == {"finetune", "sft_sharpening"}, methods
    for plan in loaded.rows:
        if plan.recipe.method.name == "sft_sharpening":
            assert plan.recipe.method.options.get("error_space") == "native", plan.label
