"""After training: evaluate the base and the fine-tuned model on the same prompts and seeds,
and leave a before/after sample grid and a short markdown report in the run folder.

Runs when a recipe's ``eval`` section names a bench or prompts. The base model is evaluated
with exactly the seeds and sampling settings of the fine-tuned one, so the difference is the
training's doing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsharp.curves import CURVES_PNG
from dsharp.generate import SampleSettings
from dsharp.io import atomic_save_png, atomic_write_json, atomic_write_text, pyplot
from dsharp.report_files import FINAL_JSON, wants_report  # noqa: F401 (callers import it here)
from dsharp.score_words import reward_words, sampling_words, wrapped


def eval_plan(recipe: Any) -> tuple[list[str], list[Any], Any]:
    """Prompts, reward specs and bench (None without one) of the recipe's eval section: the
    prompts as ``dsharp eval --recipe`` chooses them (:func:`dsharp.eval_inputs.choose_prompts`)."""
    from dsharp.eval_inputs import choose_prompts

    prompts, bench = choose_prompts(None, None, recipe=recipe)
    return prompts, eval_specs(recipe, bench), bench


def eval_specs(recipe: Any, bench: Any) -> list[Any]:
    """The rewards that score the recipe's evaluation: its eval rewards, else its bench's,
    else its training rewards."""
    from dsharp.config import RewardSpec

    if recipe.eval.rewards is not None:
        return list(recipe.eval.rewards)
    if bench is not None:
        return [RewardSpec(**r) for r in bench.rewards]
    return list(recipe.rewards)


def limit_prompts(prompts: list[str], limit: int, category_of: Any) -> list[str]:
    """``limit`` prompts per category (or of the whole list without categories), evenly
    spaced through each, so that a short evaluation still spans the set."""

    def spread(group: list[str]) -> list[str]:
        if len(group) <= limit:
            return group
        return [group[(i * len(group)) // limit] for i in range(limit)]

    if category_of is None:
        return spread(prompts)
    groups: dict[str, list[str]] = {}
    for prompt in prompts:
        groups.setdefault(category_of(prompt), []).append(prompt)
    return [p for group in groups.values() for p in spread(group)]


#: The report's files in a run folder.
BASE_JSON, GRID_PNG = "eval-base.json", "samples_grid.png"

GRID_CAPTION_WIDTH = 28  # characters per line of a prompt above its column


def sample_grid(
    rows: list[tuple[str, torch.Tensor, list[float | None]]],
    prompts: list[str],
    seeds: list[int],
    path: Path,
    score_name: str | None = None,
) -> None:
    """A PNG with one row per model (label, images ``(K, 3, H, W)``, their scores) and
    prompts as titles; each image shows its score (an unscored one says so), and
    ``score_name`` (the rewards that gave it) heads the figure."""
    import textwrap

    plt = pyplot()

    cols = len(prompts)
    # wrapped to the column: matplotlib's wrap=True wraps to the figure, so long prompts ran
    # into their neighbours' titles
    captions = [textwrap.wrap(p, GRID_CAPTION_WIDTH) for p in prompts]
    extra = 0.13 * max(len(lines) for lines in captions)  # the first row's titles
    extra += 0.3 if score_name else 0.0  # its heading: else the rows' labels ran into images
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.9 * cols, 2.1 * len(rows) + extra), squeeze=False
    )
    if score_name:
        fig.suptitle(wrapped(f"score: {score_name}", 1.9 * cols, 8), fontsize=8)
    for r, (label, images, scores) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            score = scores[c]
            ax.set_xlabel("unscored" if score is None else f"score {score:.2f}", fontsize=7)
            if r == 0:
                ax.set_title("\n".join([*captions[c], f"(seed {seeds[c]})"]), fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    atomic_save_png(fig, path)


def _first_seed_rows(images: list[dict], prompts: list[str]) -> list[int]:
    """For each prompt, the index of its first image in an evaluation's ``images``."""
    first: dict[str, int] = {}
    for i, entry in enumerate(images):
        first.setdefault(entry["prompt"], i)
    return [first[p] for p in prompts]


def _pick_grid_prompts(prompts: list[str], category_of: Any, k: int) -> list[str]:
    """Up to ``k`` prompts, spread over categories when they are known."""
    if category_of is None:
        return prompts[:k]
    by_cat: dict[str, list[str]] = {}
    for p in prompts:
        by_cat.setdefault(category_of(p), []).append(p)
    picked: list[str] = []
    while len(picked) < k and any(by_cat.values()):
        for group in by_cat.values():
            if group and len(picked) < k:
                picked.append(group.pop(0))
    return picked


def report_markdown(
    recipe: Any, base: dict, tuned: dict, checkpoint: Path, curves: str | None = None
) -> str:
    """The run's report: settings, base vs fine-tuned table, paired delta, and the sample
    grid; ``curves`` (a file name in the run folder) adds the training curves."""
    lines = [
        f"# dsharp run report: {Path(recipe.output_dir).name}",
        "",
        f"- method: `{recipe.method.name}` (n={recipe.method.n}, m={recipe.method.m}, "
        f"beta={recipe.method.beta}), steps: {recipe.train.max_steps}, seed: {recipe.train.seed}",
        f"- base model: `{recipe.model.pretrained}`; fine-tuned: `{checkpoint}`",
        f"- evaluation: {tuned['n_prompts']} prompts x seeds {tuned['seeds']} "
        f"({tuned['n_images']} images per model{_scored_words(base, tuned)}), "
        f"sampling: {sampling_words(tuned['sample'])}",
        f"- rewards: {', '.join(tuned.get('rewards', []))}",
        "",
        "| metric | base | fine-tuned | delta |",
        "|---|---|---|---|",
    ]
    rows = [("overall", base["overall"], tuned["overall"])]
    if "strict" in base and "strict" in tuned:
        rows.append(("strict", base["strict"], tuned["strict"]))
    for cat in tuned.get("categories", {}):
        rows.append(
            (
                f"category: {cat}",
                base["categories"].get(cat, float("nan")),
                tuned["categories"][cat],
            )
        )
    for name, labels in tuned.get("groups", {}).items():
        if len(labels) < 2:
            continue  # one label: the same prompts as "overall"
        for label, value in labels.items():
            before = base.get("groups", {}).get(name, {}).get(label, float("nan"))
            rows.append((f"{name}: {label}", before, value))
    for kind, value in tuned.get("constraints", {}).items():
        before = base.get("constraints", {}).get(kind, float("nan"))
        rows.append((f"constraints met: {kind}", before, value))
    for name, b, t in rows:
        lines.append(f"| {name} | {_value(b)} | {_value(t)} | {_value(t - b, '+')} |")
    lines += ["", _metric_words(tuned, [name for name, _, _ in rows])]
    if base.get("images") and tuned.get("images"):
        lines += ["", _paired_sentence(base, tuned)]
    lines += [
        "",
        "Samples: each grid prompt's first seed, the same noise for both models, each image "
        "with its score.",
        "",
        "![before/after samples](samples_grid.png)",
        "",
    ]
    if curves:
        lines += [f"![training curves]({curves})", ""]
    return "\n".join(lines)


def _value(value: float, sign: str = "") -> str:
    """A table cell: NaN (nothing scored, a category the base lacks) is ``-``, as in
    ``dsharp compare``'s tables, not ``nan`` / ``+nan``."""
    from dsharp.report import MISSING_CELL

    return MISSING_CELL if math.isnan(value) else f"{value:{sign}.4f}"


def _scored_words(base: dict, tuned: dict) -> str:
    """How many images each model's means are over, where an image went unscored (a reward
    with ``on_error: missing``): its means are then over fewer images than were drawn."""
    from dsharp.comparability import scored_count

    counts = [
        (label, scored_count(r), r.get("n_images"))
        for label, r in (("base", base), ("fine-tuned", tuned))
    ]
    if all(scored is None or scored == total for _, scored, total in counts):
        return ""
    shown = ", ".join(f"{label} {'?' if scored is None else scored}" for label, scored, _ in counts)
    return f"; scored: {shown}"


def _metric_words(tuned: dict, names: list[str]) -> str:
    """What the table's rows measure: a reader cannot tell "strict" or "constraints met"
    from the numbers alone."""
    rewards = ", ".join(tuned.get("rewards", [])) or "the rewards"
    words = [f"overall: mean score of the scored images ({rewards}, higher is better)"]
    if "strict" in names:
        words.append("strict: share of images that meet every constraint of their prompt")
    if any(n.startswith("category: ") for n in names):
        words.append("category: the mean over that category's prompts")
    if any(n.startswith("constraints met: ") for n in names):
        words.append("constraints met: share of the constraints of that kind that are met")
    words.append("delta: fine-tuned minus base")
    return "; ".join(words) + "."


def _paired_sentence(base: dict, tuned: dict) -> str:
    """The overall delta with its 95% interval from image-by-image differences (same
    prompts, same seeds): how much of the gain the evaluation's draw can explain."""
    from dsharp.paired import paired_difference

    try:
        p = paired_difference(base, tuned, ("base", "fine-tuned"))
    except ValueError as exc:  # e.g. no image scored by both: say so, keep the report
        return f"No paired delta: {exc}."
    if math.isnan(p["ci95"]):  # one prompt: no spread over prompts to give an interval
        interval = f"no interval with {p['n_prompts']} prompt"
        caveat = ""
    else:
        interval = f"95% interval +-{p['ci95']:.4f} over {p['n_prompts']} prompts"
        caveat = (
            " The interval covers the draw of prompts and seeds, not the variation between "
            "training runs."
        )
    return (
        f"Paired on the same {p['n_images']} images: delta {p['delta']:+.4f} "
        f"({interval}); the fine-tuned model scored higher on {p['better']:.0%} of the "
        f"images and lower on {p['worse']:.0%}.{caveat}"
    )


def eval_settings(recipe: Any) -> SampleSettings:
    """How a recipe's models are sampled for evaluation: its ``sample`` section at the
    training resolution, with its rewards as the verifier of inference-time methods."""
    settings = SampleSettings.from_config(recipe.sample, reward=list(recipe.rewards) or None)
    settings.height = settings.height or recipe.train.height
    settings.width = settings.width or recipe.train.width
    return settings


def evaluate_recipe(
    recipe: Any,
    model: Any,
    progress: bool = True,
    progress_label: str = "sample",
    keep_images: list[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` as the recipe's ``eval`` section says (prompts or bench, seeds,
    rewards) with its sampling settings: the same scoring for the post-training report and
    for ``dsharp reproduce`` rows, so their numbers agree."""
    from dsharp.evaluate import evaluate

    prompts, specs, bench = eval_plan(recipe)
    result = evaluate(
        model,
        prompts,
        specs,
        num_seeds=recipe.eval.seeds,
        settings=eval_settings(recipe),
        category_of=bench.category_of if bench else None,
        groupings=bench.groupings if bench else None,
        progress=progress,
        progress_label=progress_label,
        keep_images=keep_images,
    )
    result["rewards"] = [s.name for s in specs]
    result["bench"] = bench.name if bench else None
    return result


@dataclass(frozen=True)
class PostTrainReport:
    """Where the report went, and its result in one line for the terminal."""

    path: Path
    headline: str


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def headline(base: dict, tuned: dict) -> str:
    """Base vs fine-tuned overall score, with the paired 95% interval where there is one."""
    delta = tuned["overall"] - base["overall"]
    line = (
        f"{tuned.get('bench') or 'eval'} on {_count(tuned['n_prompts'], 'prompt')} x "
        f"{_count(len(tuned['seeds']), 'seed')}: base {base['overall']:.4f} -> fine-tuned "
        f"{tuned['overall']:.4f} ({delta:+.4f}"
    )
    try:
        from dsharp.paired import paired_difference

        ci95 = paired_difference(base, tuned, ("base", "fine-tuned"))["ci95"]
    except ValueError:  # no per-image scores in common: the mean delta alone
        ci95 = float("nan")
    return line + (")" if math.isnan(ci95) else f", paired 95% interval +-{ci95:.4f})")


def _draw_curves(run_dir: Path, out: Path) -> bool:
    """The run's training curves into ``out`` for the report; whether they were drawn. A
    drawing that fails (not a full disk, which fails the report's set) is a warning, as in
    training, and the report goes without them."""
    import warnings

    from dsharp.curves import plot_training_curves

    try:
        return plot_training_curves(run_dir / "metrics.jsonl", out) is not None
    except OSError:
        raise
    except Exception as exc:
        warnings.warn(f"training curves not drawn: {exc}", stacklevel=2)
        return False


def post_train_report(recipe: Any, run_dir: Path, progress: bool = True) -> PostTrainReport:
    """Evaluate base and fine-tuned models, write eval-base.json, samples_grid.png,
    training_curves.png, report.md and eval-final.json into ``run_dir`` as one set;
    returns the report's path and headline."""
    from dsharp.builders import build_model, load_run_model
    from dsharp.checkpoints import checkpoint_step, find_model_checkpoint
    from dsharp.devices import pick_device

    device = pick_device("auto")
    prompts, _, bench = eval_plan(recipe)
    category_of = bench.category_of if bench else None
    checkpoint = find_model_checkpoint(run_dir)
    grid_prompts = _pick_grid_prompts(list(prompts), category_of, 8)
    results, grids = {}, []
    for label, loader in (
        ("base", lambda: build_model(recipe.model, device)),
        ("fine-tuned", lambda: load_run_model(checkpoint, device)[0]),
    ):
        model = loader()
        model.unet.eval()
        kept: list[torch.Tensor] = []
        results[label] = evaluate_recipe(
            recipe, model, progress=progress, progress_label=f"eval {label}", keep_images=kept
        )
        del model
        # the grid shows evaluated images (each prompt's first seed) with their scores
        rows = _first_seed_rows(results[label]["images"], grid_prompts)
        grid_seeds = [results[label]["images"][i]["seed"] for i in rows]
        scores = [results[label]["images"][i]["score"] for i in rows]
        grids.append((label, kept[0][rows], scores))
    from dsharp.file_sets import replaced_together

    score_name = reward_words(results["fine-tuned"])  # base and fine-tuned: one recipe's rewards
    report = run_dir / "report.md"
    base_json, grid, final_json = (run_dir / n for n in (BASE_JSON, GRID_PNG, FINAL_JSON))
    curves = run_dir / CURVES_PNG
    final = {"label": "fine-tuned", "step": checkpoint_step(checkpoint), **results["fine-tuned"]}
    # one set, eval-final.json (with the checkpoint's step) replaced last: a write that fails
    # (a full disk) leaves the previous report, grid, curves and scores, whose older step
    # `dsharp runs` shows ("final @ step N"), rather than a new grid, curves or score beside
    # an old report; the final curves are drawn here, not by training (report_follows)
    with replaced_together(base_json, grid, curves, report, final_json) as staged:
        atomic_write_json(staged(base_json), {"label": "base", **results["base"]})
        sample_grid(grids, grid_prompts, grid_seeds, staged(grid), score_name)
        drawn = _draw_curves(run_dir, staged(curves))
        markdown = report_markdown(
            recipe,
            results["base"],
            results["fine-tuned"],
            checkpoint,
            curves=CURVES_PNG if drawn else None,
        )
        atomic_write_text(staged(report), markdown)
        atomic_write_json(staged(final_json), final)
    return PostTrainReport(report, headline(results["base"], results["fine-tuned"]))
