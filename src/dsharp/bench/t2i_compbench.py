"""``dsharp eval --bench t2i-compbench``: generate images for the benchmark's prompts with
fixed seeds, score every category as the benchmark defines it, and summarise.

Image ``j`` of every prompt uses seed ``seed_base + j`` (the same noises for every model).
With ``out_dir`` the evaluation is resumable: each finished prompt is appended as one JSON
line to ``out_dir/partial.jsonl`` and a rerun skips the prompts already there;
``out_dir/run.json`` records what the rows were computed with, and a rerun with other
settings (model, sampling, seeds, evaluators) is refused rather than mixed in. Generated
images are kept under ``out_dir/images/<category>/<index>_<seed>.png`` on request.

The result holds, per category, the mean score with its 95% confidence interval over images
(``metrics["t2i_<category>"]``, the names of the paper's Table 1 columns) and details
(``t2i_compbench[<category>]``), the unweighted mean over categories (``overall``), the
evaluator models, the substitutions made (the spatial detector), the prompt files used, and
each image's prompt, seed, score and category (``images``, for ``dsharp compare --paired``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsharp.bench.t2i_data import CATEGORIES, PromptSet, check_split, load_prompt_set
from dsharp.bench.t2i_scoring import EvaluatorOptions, T2IScorer, describe_evaluators
from dsharp.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_jsonl,
    json_safe,
    read_jsonl,
)

PARTIAL_FILE = "partial.jsonl"
RUN_FILE = "run.json"
IMAGES_DIR = "images"


def _check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def parse_categories(categories: str | Sequence[str] | None) -> list[str]:
    """``"color,shape"`` or a list -> validated, de-duplicated list (``None``: all six)."""
    if categories is None:
        return list(CATEGORIES)
    items = categories.split(",") if isinstance(categories, str) else list(categories)
    out: list[str] = []
    for item in (c.strip() for c in items):
        if not item:
            continue
        if item not in CATEGORIES:
            raise ValueError(
                f"--categories: unknown category {item!r} (available: {', '.join(CATEGORIES)})"
            )
        if item not in out:
            out.append(item)
    if not out:
        raise ValueError("--categories: no category given")
    return out


def check_settings(
    categories: str | Sequence[str] | None, split: str, evaluator_options: dict[str, Any] | None
) -> tuple[list[str], EvaluatorOptions]:
    """The categories and evaluator options :func:`run_t2i_compbench` takes, checked
    (``ValueError``: an unknown category, split or evaluator option), so that a caller can
    refuse them before it loads the model; so can :func:`load_prompt_set` the prompt files."""
    cats = parse_categories(categories)
    check_split(split)
    return cats, EvaluatorOptions.from_dict(evaluator_options)


def select_prompts(prompts: Sequence[str], limit: int | None) -> list[tuple[int, str]]:
    """``(index, prompt)`` of the prompts a category evaluates: all, or ``limit`` spread
    evenly through the list as ``dsharp eval --limit`` picks from other benches (the first
    prompts of a file are often alike: complex's first are all spatial). A row is resumed by
    its index and prompt, so another limit reuses the rows it shares and no others."""
    from dsharp.posttrain import limit_prompts

    indexed = list(enumerate(prompts))
    return limit_prompts(indexed, limit, None) if limit else indexed


def pending_categories(
    prompt_set: PromptSet,
    categories: Sequence[str],
    limit: int | None,
    out_dir: Path | str | None = None,
) -> list[str]:
    """The categories with a selected prompt that ``out_dir``'s rows do not hold yet: those
    whose evaluators must be built (a caller builds them before it loads the model, so that
    a missing evaluator does not cost the model's load first)."""
    done: set[tuple] = set()
    if out_dir is not None:
        rows = read_jsonl(Path(out_dir) / PARTIAL_FILE)
        done = {(r["category"], r["index"], r["prompt"]) for r in rows}
    return [
        c
        for c in categories
        if any((c, i, p) not in done for i, p in select_prompts(prompt_set.prompts[c], limit))
    ]


# --------------------------------------------------------------------------- resume state


def fingerprint_of(
    model_id: str,
    split: str,
    seeds: Sequence[int],
    settings: Any,
    options: EvaluatorOptions,
    noun_phrases: str,
) -> dict[str, Any]:
    """What a work folder's rows were computed with (``run.json``): a resume with other
    settings is refused rather than mixed in."""
    return {
        "bench": "t2i-compbench",
        "model": model_id,
        "split": split,
        "seeds": list(seeds),
        "sample": settings.as_dict(),
        # the device is left out: resuming a GPU run on CPU (or back) is allowed
        "evaluators": {
            **{k: v for k, v in options.as_dict().items() if k != "device"},
            "noun_phrases": noun_phrases,
        },
    }


def check_resumable(
    out_dir: Path, fingerprint: dict[str, Any], instead: str = "another output folder"
) -> None:
    """``ValueError`` where ``out_dir`` holds rows computed with other settings than
    ``fingerprint``'s (``instead``: what the user may give in its place), so that a caller
    can refuse them before it loads the model."""
    run_file = Path(out_dir) / RUN_FILE
    if not run_file.exists():
        return
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or "not JSON"
        raise ValueError(f"{run_file}: cannot be read ({reason}); delete {out_dir}") from None
    stored = json_safe(fingerprint)
    if previous != stored:
        changed = sorted(k for k in set(previous) | set(stored) if previous.get(k) != stored.get(k))
        raise ValueError(
            f"{out_dir}: holds a T2I-CompBench evaluation made with other settings "
            f"({', '.join(changed)} differ); give {instead} or delete it"
        )


def _load_done(out_dir: Path, fingerprint: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    """Rows already computed with the same settings, keyed by (category, index, prompt)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    check_resumable(out_dir, fingerprint)
    run_file = out_dir / RUN_FILE
    if not run_file.exists():
        atomic_write_json(run_file, fingerprint)
    partial = out_dir / PARTIAL_FILE
    rows = read_jsonl(partial)
    if partial.exists():
        text = partial.read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) != len(rows) or (text and not text.endswith("\n")):
            # A torn last line (crash mid-append) would swallow the next row: drop it now.
            atomic_write_jsonl(partial, rows)
    return {(r["category"], r["index"], r["prompt"]): r for r in rows}


# --------------------------------------------------------------------------- summary


def _mean_ci(rows: list[dict[str, Any]], per_row: Any) -> dict[str, float]:
    """:func:`dsharp.evaluate.mean_ci` of the scored values ``per_row(row)`` of every row,
    each row (one prompt, its seeds' images) a cluster: the seeds of one prompt are not
    independent draws."""
    from dsharp.evaluate import mean_ci

    kept = [
        (v, i)
        for i, r in enumerate(rows)
        for v in per_row(r)
        if v is not None and not math.isnan(v)
    ]
    return mean_ci([v for v, _ in kept], [i for _, i in kept])


def _summarise_category(category: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {**_mean_ci(rows, lambda r: r["scores"]), "n_prompts": len(rows)}
    if category == "complex":
        summary["parts"] = {
            part: _mean_ci(rows, lambda r, part=part: r["parts"].get(part, []))
            for part in ("blip", "spatial", "clip")
        }
        counts: dict[str, int] = {}
        for r in rows:
            key = "+".join(r["detail"][0]["parts"]) if r["detail"] else "?"
            counts[key] = counts.get(key, 0) + 1
        summary["prompts_by_parts"] = counts
    return summary


def _generate_rows(
    model: Any,
    category: str,
    pending: list[tuple[int, str]],
    seeds: list[int],
    settings: Any,
    scorer: T2IScorer,
    prompt_set: PromptSet,
    batch_size: int,
    images_dir: Path | None,
):
    """Generate and score ``pending`` prompts chunk by chunk; yield one row per prompt."""
    from dsharp.generate import generate
    from dsharp.rewards.base import RewardImages

    per_chunk = max(1, batch_size // len(seeds))
    for start in range(0, len(pending), per_chunk):
        chunk = pending[start : start + per_chunk]
        prompts = [p for _, p in chunk for _ in seeds]
        all_seeds = [s for _ in chunk for s in seeds]
        generated = generate(
            model, prompts, all_seeds, settings, batch_size=batch_size, progress=False
        )
        if images_dir is not None:
            from dsharp.sampling import save_images

            names = [f"{i:04d}_{s}.png" for i, _ in chunk for s in seeds]
            save_images(generated.images, images_dir / category, names)
        images = RewardImages(generated.images)
        scores, parts, details = scorer.score(category, images, prompts, prompt_set.complex_subsets)
        k = len(seeds)
        for j, (index, prompt) in enumerate(chunk):
            window = slice(j * k, (j + 1) * k)
            yield {
                "category": category,
                "index": index,
                "prompt": prompt,
                "seeds": seeds,
                "scores": scores[window],
                "parts": {name: values[window] for name, values in parts.items()},
                "detail": details[window],
                "nfe_per_image": generated.nfe_per_image,
            }


def overall_of(means: dict[str, float]) -> tuple[float, list[str]]:
    """The mean over categories, and the categories that have no score. With any category
    unscored, ``overall`` is NaN: a mean over fewer categories is not the benchmark's."""
    unscored = [c for c, mean in means.items() if math.isnan(mean)]
    if unscored or not means:
        return float("nan"), unscored
    return sum(means.values()) / len(means), unscored


def run_t2i_compbench(
    model: Any,
    *,
    categories: str | Sequence[str] | None = None,
    split: str = "val",
    images_per_prompt: int = 10,
    limit: int | None = None,
    data_dir: Path | str | None = None,
    settings: Any = None,
    evaluator_options: dict[str, Any] | None = None,
    out_dir: Path | str | None = None,
    keep_images: bool = False,
    progress: bool = False,
    seed_base: int = 0,
    batch_size: int = 8,
    model_id: str | None = None,
    scorer: T2IScorer | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (a :class:`~dsharp.models.base.DiffusionModel`) on T2I-CompBench.

    ``categories``: list or comma-separated string (default all six); ``split``: ``val``
    (the benchmark's test set) or ``train``; ``images_per_prompt``: seeds per prompt
    (benchmark: 10); ``limit``: at most N prompts per category, spread evenly through its
    list (:func:`select_prompts`); ``data_dir``: folder with the
    prompt files (else the verified download cache); ``settings``: a
    :class:`~dsharp.generate.SampleSettings`; ``evaluator_options``: keys of
    :class:`~dsharp.bench.t2i_scoring.EvaluatorOptions`; ``out_dir``: resumable state
    (and kept images); ``model_id``: names the model in the output and the resume check
    (default: the model's ``source``); ``scorer``: a :class:`T2IScorer` built (and
    prepared) beforehand from the same ``evaluator_options``, else one is built here.
    """
    from dsharp.generate import SampleSettings
    from dsharp.progress import task_progress

    _check_positive("--images-per-prompt", images_per_prompt)
    _check_positive("--limit", limit, allow_none=True)
    _check_positive("batch_size", batch_size)
    if keep_images and out_dir is None:
        raise ValueError("keeping images needs an output folder (out_dir)")
    cats, options = check_settings(categories, split, evaluator_options)
    prompt_set = load_prompt_set(cats, split, data_dir)
    settings = settings or SampleSettings()
    if scorer is None:
        scorer = T2IScorer(options)
    elif scorer.options != options:
        raise ValueError("scorer: built from other evaluator options than evaluator_options")
    seeds = [seed_base + j for j in range(images_per_prompt)]
    model_id = model_id or str(getattr(model, "source", None) or type(model).__name__)

    selected = {c: select_prompts(prompt_set.prompts[c], limit) for c in cats}
    fingerprint = fingerprint_of(model_id, split, seeds, settings, options, scorer.method)
    out = Path(out_dir) if out_dir is not None else None
    done = _load_done(out, fingerprint) if out is not None else {}
    images_dir = out / IMAGES_DIR if (out is not None and keep_images) else None

    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in cats}
    pending = {c: [(i, p) for i, p in selected[c] if (c, i, p) not in done] for c in cats}
    scorer.prepare([c for c in cats if pending[c]])
    with task_progress("t2i-compbench", enabled=progress) as bar:
        task = bar.add_task("t2i-compbench", total=sum(len(v) for v in pending.values()))
        for c in cats:
            new = {}
            if pending[c]:
                stream = _generate_rows(
                    model,
                    c,
                    pending[c],
                    seeds,
                    settings,
                    scorer,
                    prompt_set,
                    batch_size,
                    images_dir,
                )
                for row in stream:
                    if out is not None:
                        append_jsonl(out / PARTIAL_FILE, row)
                    new[(c, row["index"], row["prompt"])] = row
                    bar.update(task, advance=1)
            for i, p in selected[c]:
                rows[c].append(new.get((c, i, p)) or done[(c, i, p)])

    per_category = {c: _summarise_category(c, rows[c]) for c in cats}
    evaluators, notes = describe_evaluators(options, cats, scorer.method)
    overall, unscored = overall_of({c: per_category[c]["mean"] for c in cats})
    nfe = [r["nfe_per_image"] for c in cats for r in rows[c] if r.get("nfe_per_image")]
    return {
        "bench": "t2i-compbench",
        "model": model_id,
        "split": split,
        "categories_evaluated": cats,
        "overall": overall,
        "categories_without_score": unscored,
        "metrics": {
            f"t2i_{c}": {k: per_category[c][k] for k in ("mean", "std", "ci95", "n")} for c in cats
        },
        "t2i_compbench": per_category,
        "n_images": sum(per_category[c]["n"] for c in cats),
        "n_prompts": sum(per_category[c]["n_prompts"] for c in cats),
        "images_per_prompt": images_per_prompt,
        "limit": limit,
        "seeds": seeds,
        "evaluators": evaluators,
        "substitutions": notes,
        "data": prompt_set.describe(),
        "nfe_per_image": nfe[-1] if nfe else None,
        "sample": settings.as_dict(),
        "out_dir": str(out) if out is not None else None,
        # each image's score, as dsharp eval's other benches keep them: two evaluations with
        # the same seeds can then be compared image for image (dsharp compare --paired)
        "images": [
            {"prompt": r["prompt"], "seed": seed, "score": _score_or_none(score), "category": c}
            for c in cats
            for r in rows[c]
            for seed, score in zip(r["seeds"], r["scores"], strict=True)
        ],
    }


def _score_or_none(score: Any) -> float | None:
    """An image's score; None (valid JSON) where it was not scored, as for other benches."""
    return None if score is None or math.isnan(score) else float(score)
