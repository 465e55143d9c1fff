"""`dsharp eval`: score a model, a run or a recipe's sampler on prompts x fixed seeds; JSON out."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from dsharp.bench import T2I_BENCH
from dsharp.bench.t2i_data import CATEGORIES as T2I_CATEGORIES
from dsharp.commands.errors import (
    VERIFIER_FLAG_HINT,
    VERIFIER_ON_ERROR_HINT,
    model_section_of,
    one_line,
    refuse_a_launch,
    require_counts,
    require_image_sides,
    require_model,
    require_output_paths,
    settings_errors,
    usage_error,
    user_errors,
)
from dsharp.commands.help_format import DEVICE_HELP
from dsharp.eval_inputs import InputNames

T2I_COMPBENCH = T2I_BENCH  # dsharp.bench is cheap to import: no torch
#: Defaults of --split and --images-per-prompt, applied where --bench t2i-compbench runs:
#: the flags default to None so that giving them to another bench can be refused.
T2I_SPLIT = "val"
T2I_IMAGES_PER_PROMPT = 10


#: How `dsharp eval` names its inputs in the errors of :mod:`dsharp.eval_inputs`.
EVAL_FLAGS = InputNames(
    prompts="--prompts FILE",
    bench="--bench NAME",
    rewards="--reward NAME",
    bench_field="--bench",
    options_field="--set",
)


def _prompts_and_bench(
    recipe: Any, prompts: Path | None, bench: str | None, limit: int | None = None
):
    """(prompt list, bench or None): flags first, then the recipe's eval section
    (:func:`dsharp.eval_inputs.choose_prompts`, as ``dsharp.evaluate_model`` chooses)."""
    from dsharp.data import read_prompt_file
    from dsharp.eval_inputs import choose_prompts

    prompt_list = read_prompt_file(prompts) if prompts is not None else None
    return choose_prompts(prompt_list, bench, recipe=recipe, limit=limit, names=EVAL_FLAGS)


def _default_json_name(bench: str | None, prompts: Path | None, rewards: Sequence[str] = ()) -> str:
    """``eval-shapes.json``, or ``eval-shapes-heldout.json`` for ``--prompts heldout.txt``:
    an evaluation on another prompt file must not overwrite the run's evaluation on the
    bench's own prompts (or on a third file). Letters of any script and digits are kept;
    where the file's stem had to change (spaces, punctuation), a short hash of the stem is
    added, so that ``held out.txt`` and ``held-out.txt`` are not written to one file.
    ``rewards``: the ``--reward`` names that score a bench's images instead of its own
    rewards (``eval-shapes-reward-brightness.json``), so that such a score neither
    overwrites the bench's own evaluation nor is read as one."""
    name = f"eval-{bench or 'rewards'}"
    if prompts is not None:
        name += "-" + _file_safe(prompts.stem)
    if bench is not None and rewards:
        name += "-reward-" + _file_safe("+".join(rewards), keep="+")
    return f"{name}.json"


def _file_safe(text: str, keep: str = "") -> str:
    """``text`` with what a file name should not hold (but ``keep``) replaced by ``-``, plus
    a short hash of ``text`` where anything was replaced, so that two texts never share a
    name."""
    kept = re.sub(rf"[^\w.{re.escape(keep)}-]+", "-", text).strip("-.")
    if kept != text:
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        kept = f"{kept or 'prompts'}-{digest}"
    return kept


def _other_rewards(reward: list[str] | None, spec_bench: Any) -> list[str]:
    """The ``--reward`` names when they are not the bench's own rewards (an empty list
    otherwise): the evaluation is then of the bench's prompts under other scores."""
    if not reward or spec_bench is None:
        return []
    own = [r["name"] for r in spec_bench.rewards]
    return [] if list(reward) == own else list(reward)


def _scoring_specs(
    reward: list[str] | None,
    options: dict[str, Any],
    bench: str | None,
    spec_bench: Any,
    recipe: Any,
    run_recipe: Any,
) -> list[Any]:
    """The rewards that score the images: --reward, the --bench's, the recipe's eval
    rewards, the bench's, the recipe's rewards, or a run's (in that order:
    :func:`dsharp.eval_inputs.choose_rewards`)."""
    from dsharp.config import parse_reward_spec
    from dsharp.eval_inputs import choose_rewards

    # names already checked (_check_names), in one line before anything loads
    given = [parse_reward_spec({"name": n, "options": options}, "--reward") for n in reward or []]
    return choose_rewards(
        given,
        spec_bench,
        bench=bench,
        options=options,
        recipe=recipe,
        run_recipe=run_recipe,
        names=EVAL_FLAGS,
    )


def _what_to_evaluate_on(checkpoint: Path) -> str:
    """The error for ``--checkpoint`` with neither ``--bench`` nor ``--prompts``, naming
    the bench the run's own report used, where it had one."""
    from dsharp.checkpoints import read_run_recipe

    message = "give --prompts FILE or --bench NAME"
    try:
        bench = read_run_recipe(checkpoint).eval.bench
    except (OSError, ValueError):
        return message
    return f"{message} (the run's report used --bench {bench})" if bench else message


def _check_names(bench: str | None, rewards: list[str] | None) -> None:
    """An unknown ``--bench`` or ``--reward`` name is a bad setting (exit 2), as it is in a
    recipe, and is refused before anything loads."""
    from dsharp.config import check_reward_name
    from dsharp.evaluate import get_bench

    with settings_errors():
        if bench is not None and bench != T2I_COMPBENCH:
            get_bench(bench, "--bench")
        for name in rewards or []:
            check_reward_name(name)


def _check_model_sources(
    model: str | None, checkpoint: Path | None, recipe: Path | None, bench: str | None
) -> None:
    """What to evaluate: one of --model or --checkpoint, or a recipe (with at most one of
    them); checked first, so that a command missing it says so at once."""
    with user_errors():
        if recipe is None and (model is None) == (checkpoint is None):
            either = "" if bench == T2I_COMPBENCH else " (or --recipe)"
            raise usage_error(f"give exactly one of --model or --checkpoint{either}")
        if recipe is not None and model is not None and checkpoint is not None:
            raise usage_error("give at most one of --model or --checkpoint with --recipe")


#: What an evaluation stopped by an image a reward could not score tells the user to do (a
#: candidate the verifier could not score: ``errors.VERIFIER_ON_ERROR_HINT``).
ON_ERROR_HINT = (
    "rerun with --on-error missing to leave such images unscored (counted in n_images, "
    "not in n_scored or the means)"
)


def _refuse_unused_flags(flags: dict[str, Any], why: str) -> None:
    """Flags given (not None or empty) that this evaluation would ignore without a word are
    a bad setting (exit 2): ``why`` says what takes their place."""
    from dsharp.recipe_errors import RecipeError

    given = [flag for flag, value in flags.items() if value not in (None, [], ())]
    if given:
        raise RecipeError(f"{', '.join(given)}: {why}")


def evaluate_cmd(
    overrides: list[str] = typer.Argument(
        None,
        metavar="OVERRIDES",
        help="With --recipe: recipe overrides (a.b=value); else sample.* overrides "
        "(sample.method=demon sample.options.K=4).",
    ),
    recipe: Path = typer.Option(
        None,
        "--recipe",
        help="Recipe to evaluate: its model, sample section (method, options), rewards "
        "(the verifier) and eval section (bench or prompts, seeds, rewards).",
    ),
    model: str = typer.Option(None, "--model", help="Diffusers folder, hub id, or dsharp-mini."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Run folder or checkpoint folder."),
    bench: str = typer.Option(
        None,
        "--bench",
        help="Named benchmark: shapes, t2i-compbench, or a reward's own prompt set (clip, "
        "aesthetic, imagereward, pickscore, hpsv2, mllm).",
    ),
    prompts: Path = typer.Option(None, "--prompts", help="Prompt file, one per line."),
    seeds: int = typer.Option(
        None,
        "--seeds",
        help="How many images per prompt, a count, not a first seed: they use seeds 0..N-1 "
        "(default: the recipe's eval.seeds, else 2).",
    ),
    reward: list[str] = typer.Option(
        None,
        "--reward",
        metavar="NAME",
        help="Reward that scores the images (repeatable; default: the recipe's eval.rewards, "
        "else the bench's, else the recipe's or run's rewards).",
    ),
    set_: list[str] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="Reward option KEY=VALUE of every reward that scores (a bench's, recipe's or "
        "run's too) and of every --verifier (by default the verifier is the recipe's or "
        "run's rewards: those that also score get it); one that takes no KEY refuses it.",
    ),
    verifier: list[str] = typer.Option(
        None,
        "--verifier",
        metavar="NAME",
        help="Verifier reward of inference-time methods (repeatable; default: the recipe's "
        "or run's rewards, else the scoring rewards).",
    ),
    steps: int = typer.Option(
        None, "--steps", help="DDIM steps (default: the recipe's sample.steps, else 25)."
    ),
    guidance: float = typer.Option(
        None, "--guidance", help="Classifier-free guidance scale (default: the recipe's, else 5)."
    ),
    eta: float = typer.Option(
        None,
        "--eta",
        help="DDIM eta in [0, 1]: 0 = deterministic, 1 = DDPM (default: the recipe's, else 0).",
    ),
    method: str = typer.Option(
        None,
        "--method",
        help="Sampling method (sample.method): default, free2guide, demon or inference_scaling "
        "(default: the recipe's, else 'default').",
    ),
    option: list[str] = typer.Option(
        None,
        "--option",
        "--set-sample",
        metavar="KEY=VALUE",
        help="Method option KEY=VALUE (sample.options.KEY).",
    ),
    height: int = typer.Option(
        None, "--height", help="Image height (default: the recipe's, else the model's)."
    ),
    width: int = typer.Option(
        None, "--width", help="Image width (default: the recipe's, else the model's)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per UNet batch."),
    images: Path = typer.Option(
        None,
        "--images",
        # what each path writes: --bench t2i-compbench has its own runner, with no grid
        help="Also keep the generated images in this folder: 00000-seed0.png, ... and "
        "grid.png, a row per prompt (up to 32 x 16), each image titled with its seed and "
        "score; with --bench t2i-compbench, a folder per category in images/ (0000_0.png, "
        "...) beside its resumable state (partial.jsonl, run.json), and no grid.png.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        # no word wider than rich's help column on a narrow (60-column) terminal, which
        # cuts it with an ellipsis: a path such as RUN_DIR/eval-BENCH.json said in words
        help="The JSON file the result is written to, not a folder (default for a run or a "
        "recipe: eval-BENCH.json in RUN_DIR, or in the folder of a checkpoint older than the "
        "run's newest; BENCH is rewards where there is no bench; --prompts FILE adds FILE's "
        "stem after BENCH, and a --reward other than the bench's adds reward-NAME).",
    ),
    on_error: str = typer.Option(
        None,
        "--on-error",
        metavar="raise|missing",
        help="What an image a reward (or the verifier) cannot score does: 'raise' stops the "
        "evaluation (exit 1); 'missing' leaves it unscored (in n_images, not in n_scored or "
        "the means). Default: each reward's own on_error (a recipe's, else raise).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result to stdout."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP),
    limit: int = typer.Option(
        None,
        "--limit",
        help="At most N prompts per category of a bench, or N in all where there are no "
        "categories (--prompts), spread evenly: for quick looks.",
    ),
    categories: str = typer.Option(
        None,
        "--categories",
        # spaced: plain help wraps at 78 columns and cut the unspaced list inside a name
        help="t2i-compbench: comma-separated categories "
        f"(default: all of {', '.join(T2I_CATEGORIES)}).",
    ),
    split: str = typer.Option(
        None, "--split", help=f"t2i-compbench: prompt split (default {T2I_SPLIT})."
    ),
    images_per_prompt: int = typer.Option(
        None,
        "--images-per-prompt",
        help="t2i-compbench: images per prompt (fixed seeds 0..N-1; "
        f"default {T2I_IMAGES_PER_PROMPT}).",
    ),
    data: Path = typer.Option(
        None,
        "--data",
        help="t2i-compbench: folder with the benchmark's prompt files "
        "(default: a cache filled by download on first use).",
    ),
) -> None:
    """Evaluate a base model (--model), a fine-tuned run (--checkpoint) or a recipe (--recipe).

    \b
    Examples: dsharp eval --checkpoint runs/quickstart --bench shapes

    \b
    dsharp eval --model dsharp-mini --prompts prompts.txt --reward shapes --seeds 4
    """
    refuse_a_launch("eval")
    _check_model_sources(model, checkpoint, recipe, bench)  # at once, before torch loads
    from dsharp.checkpoints import checkpoint_step, read_run_recipe
    from dsharp.commands.common import (
        check_on_error_settings,
        check_reward_settings,
        parse_reward_sets,
        with_on_error,
    )
    from dsharp.eval_inputs import verifier_with_options
    from dsharp.evaluate import evaluate
    from dsharp.generate import (
        SampleSettings,
        given_flags,
        parse_sample_overrides,
        refuse_flag_and_override,
    )
    from dsharp.inference.base import Verifier, reward_specs
    from dsharp.io import atomic_write_json
    from dsharp.recipe_io import load_recipe
    from dsharp.rewards.base import RewardError, UnscoredCandidateError, UnscoredError
    from dsharp.rewards.combine import CombinedReward

    with user_errors():
        counts = {"--seeds": seeds, "--limit": limit, "--steps": steps}
        require_counts(
            counts | {"--batch-size": batch_size, "--images-per-prompt": images_per_prompt}
        )
        require_output_paths({"--images": images}, {"--out": out})
        _check_names(bench, reward)
        reward_options = parse_reward_sets(set_ or [])
        check_on_error_settings(on_error, reward_options)
        if bench == T2I_COMPBENCH:
            unused = {
                "--recipe": recipe,
                "--prompts": prompts,
                "--seeds": seeds,
                "--reward": reward,
                "--verifier": verifier,
                "--method": method,
                "--option": option,
                "--eta": eta,
                "--on-error": on_error,
                "OVERRIDES": overrides,
            }
            _refuse_unused_flags(
                unused,
                f"not used by --bench {T2I_COMPBENCH}, which samples with plain DDIM and "
                "scores with its own evaluators (see --images-per-prompt, --categories, "
                "--split)",
            )
            result, target = _t2i_compbench(
                model,
                checkpoint,
                device,
                reward_options,
                categories,
                split or T2I_SPLIT,
                images_per_prompt or T2I_IMAGES_PER_PROMPT,
                limit,
                data,
                out,
                steps,
                guidance,
                height,
                width,
                batch_size,
                images,
                progress=not as_json,
            )
            _show(result, target, as_json, T2I_COMPBENCH)
            return
        t2i_only = {"--categories": categories, "--split": split}
        t2i_only |= {"--images-per-prompt": images_per_prompt, "--data": data}
        _refuse_unused_flags(
            t2i_only,
            f"used only by --bench {T2I_COMPBENCH} (other benches and --prompts take --limit "
            "and --seeds)",
        )
        flags = {"method": method, "steps": steps, "guidance": guidance, "eta": eta}
        flags |= {"height": height, "width": width}
        # with a recipe the positional overrides are the recipe's: a flag must not beat one
        refuse_flag_and_override(overrides or [], given_flags(flags), option or [])
        rec = load_recipe(recipe, overrides or ()) if recipe is not None else None
        ckpt = require_model(None, checkpoint)
        if rec is None and prompts is None and bench is None and ckpt is not None:
            raise usage_error(_what_to_evaluate_on(ckpt))
        step = checkpoint_step(ckpt) if ckpt is not None else None  # a damaged file: now
        prompt_list, spec_bench = _prompts_and_bench(rec, prompts, bench, limit)
        bench_name = spec_bench.name if spec_bench else None
        default_name = _default_json_name(bench_name, prompts, _other_rewards(reward, spec_bench))
        target = out or _default_target(ckpt, rec, recipe, default_name)
        run_recipe = None
        if rec is None and ckpt is not None:
            run_recipe = read_run_recipe(ckpt)
        specs = with_on_error(
            _scoring_specs(reward, reward_options, bench, spec_bench, rec, run_recipe), on_error
        )

        base = rec.sample.model_dump() if rec is not None else {}
        if method is not None and method != base.get("method", method):
            base["options"] = {}  # the recipe's options belong to the recipe's method
        # where each side comes from, for messages: a flag, else sample.*, else train.*
        origin = {
            k: f"--{k}" if flags[k] is not None else f"sample.{k}" for k in ("height", "width")
        }
        if rec is not None:
            for k in ("height", "width"):
                if base[k] is None and flags[k] is None and getattr(rec.train, k) is not None:
                    origin[k] = f"train.{k}"
                base[k] = base[k] or getattr(rec.train, k)
        base |= {k: v for k, v in flags.items() if v is not None}
        sample_overrides = [] if rec is not None else (overrides or [])
        section = parse_sample_overrides(base, sample_overrides, option or [])
        # The verifier: --verifier, else the recipe's (or run's) rewards, else the scoring ones.
        owner = rec if rec is not None else run_recipe
        given = [{"name": name, "options": reward_options} for name in verifier or []]
        own = owner.rewards if owner and owner.rewards else []
        # --set reaches --verifier, and the recipe's or run's rewards where they score too
        own = verifier_with_options(own, specs, reward_options)
        verifier_specs = given or own or specs
        verifier_specs = with_on_error(reward_specs(verifier_specs) or [], on_error)
        settings = SampleSettings(**section, reward=list(verifier_specs))
        with settings_errors():
            method_entry, _ = settings.validate(
                VERIFIER_FLAG_HINT, "--verifier" if verifier else None
            )
        if not method_entry.needs_reward:
            settings.reward = None  # plain DDIM: no verifier, none recorded
        from dsharp.rewards.plugins import check_prompts

        # before sampling: the scoring rewards and the verifier must take every prompt
        verifier_used = reward_specs(settings.reward) or []
        source = prompts or recipe or f"--bench {bench}"
        with settings_errors():  # a prompt a reward cannot score is refused as in a recipe
            check_prompts([*specs, *verifier_used], prompt_list, source)
            check_reward_settings([*specs, *verifier_used])
        if spec_bench is not None and spec_bench.unlabelled:
            typer.echo(
                f"note: --bench {spec_bench.name} cannot label every prompt of {source}: "
                f"{spec_bench.unlabelled}",
                err=True,
            )

        from dsharp.commands.common import pick_device

        pick_device(device)  # a bad --device, then a missing model: before the rewards' weights
        require_model(model, None)
        # a size the VAE cannot draw: from the model's config files, before its weights load
        sides = {origin[k]: section.get(k) for k in ("height", "width")}
        # the model that loads below: --model or --checkpoint beats the recipe's own
        given_model = model is not None or ckpt is not None
        owner_model = model_section_of(model, ckpt) if given_model or rec is None else rec.model
        require_image_sides(owner_model, sides)
        # built before the model loads: a reward that cannot be built (no API key, no
        # weights) must not cost the model's load first
        scorer = CombinedReward(specs)
        built_verifier = Verifier(verifier_used) if verifier_used else None
        if model is not None or checkpoint is not None:
            from dsharp.commands.common import load_model_for_inference

            diffusion = load_model_for_inference(model, checkpoint, device)
        else:
            from dsharp.builders import build_model
            from dsharp.commands.common import pick_device

            diffusion = build_model(rec.model, pick_device(device))
            diffusion.unet.eval()
        from dsharp.commands.output_notes import prompt_notes

        prompt_notes(diffusion, prompt_list)
        kept: list = []  # the images, written with the result below (--images)
        try:
            result = evaluate(
                diffusion,
                prompt_list,
                specs,
                num_seeds=seeds or (rec.eval.seeds if rec is not None else 2),
                settings=settings,
                batch_size=batch_size,
                category_of=spec_bench.category_of if spec_bench else None,
                groupings=spec_bench.groupings if spec_bench else None,
                progress=not as_json,
                scorer=scorer,
                verifier=built_verifier,
                keep_images=kept if images is not None else None,
            )
        except UnscoredError as err:  # a candidate of the verifier's, or an image
            verifiers = isinstance(err, UnscoredCandidateError)
            hint = VERIFIER_ON_ERROR_HINT if verifiers else ON_ERROR_HINT
            raise UnscoredError(f"{one_line(err)}; {hint}") from None
        if not result["n_scored"]:  # on_error missing everywhere, and every call failed
            raise RewardError(
                f"no image of {result['n_images']} could be scored (each was left unscored: "
                "on_error missing); no result written"
            )
        source = checkpoint or model or (rec.model.pretrained if rec is not None else None)
        result = {
            "bench": bench_name,
            "model": str(source),
            **({"recipe": str(recipe)} if recipe is not None else {}),
            "rewards": [s.name for s in specs],
            **result,
            "sample": settings.as_dict(),
        }
        if ckpt is not None:
            result["step"] = step
        # a --prompts file, not the bench's prompts: `compare RUN --against paper` leaves
        # such an evaluation out of a run's bench columns
        result["prompts_file"] = str(prompts) if prompts is not None else None
        if images is not None:  # one set, the JSON last: not new images beside an old result
            from dsharp.evaluate import save_evaluated_images

            save_evaluated_images(images, kept[0], result, target)
        elif target is not None:
            atomic_write_json(target, result)
    _show(result, target, as_json, bench_name)
    if images is not None:
        from dsharp.commands.output_notes import others_note
        from dsharp.evaluate import evaluated_image_names
        from dsharp.sheets import SHEET_PNG

        others_note(images, [*evaluated_image_names(result), SHEET_PNG])
        if not as_json:
            typer.echo(f"images: {images} (contact sheet: {images / SHEET_PNG})")


def _default_target(
    ckpt: Path | None, rec: Any, recipe: Path | None, file_name: str
) -> Path | None:
    """Where the result goes without ``--out`` (a run's folder or its checkpoint's, a
    recipe's output_dir; None for a base model), checked writable before any sampling:
    else the evaluation would fail only when its result is saved."""
    from dsharp.checkpoints import run_dir_of

    if ckpt is not None:
        target = checkpoint_json_target(ckpt, file_name)
        what = "run folder" if target.parent == run_dir_of(ckpt) else "checkpoint folder"
    elif rec is not None:
        target = rec.resolved_output_dir(Path(recipe).stem) / file_name
        what = "output_dir"
    else:
        return None
    _require_writable(target.parent, what)
    return target


def _require_writable(folder: Path, what: str) -> None:
    """The ``--out`` write probe for a folder ``--out`` was not given for, naming the way
    out."""
    from dsharp.preflight import check_output_folder

    try:
        check_output_folder(folder, what)
    except ValueError as err:
        raise ValueError(f"{err}; give --out FILE") from None


def checkpoint_json_target(ckpt: Path, file_name: str) -> Path:
    """Where an evaluation of checkpoint ``ckpt`` is written: beside recipe.yaml in its run
    folder (where `dsharp compare RUN` looks) when it is the run's newest checkpoint, else
    beside the checkpoint, where `dsharp compare` and `dsharp runs` do not take an earlier
    checkpoint's score for the run's."""
    from dsharp.checkpoints import latest_checkpoint, run_dir_of

    run_dir = run_dir_of(ckpt)
    newest = latest_checkpoint(run_dir)
    if newest is not None and newest.resolve() != ckpt.resolve():
        return ckpt / file_name
    return run_dir / file_name


def _show(result: dict, target: Path | None, as_json: bool, bench_name: str | None) -> None:
    """Print the result as JSON (``--json``) or as a table, and say where it was written."""
    if as_json:
        from dsharp.io import json_safe

        typer.echo(json.dumps(json_safe(result)))
        return
    from rich.console import Console

    from dsharp.report import build_table, to_rich

    label = result["model"]
    sampler = (result.get("sample") or {}).get("method", "default")
    if sampler != "default":  # an inference-time method: the model alone is not what ran
        label = f"{label} ({sampler})"
    columns, rows = build_table([(label, result)])
    Console().print(to_rich(columns, rows, title=f"dsharp eval {bench_name or ''}".strip()))
    if target is not None:
        typer.echo(f"wrote {target}")


def _t2i_compbench(
    model: str | None,
    checkpoint: Path | None,
    device: str,
    evaluator_options: dict[str, Any],
    categories: str | None,
    split: str,
    images_per_prompt: int,
    limit: int | None,
    data: Path | None,
    out: Path | None,
    steps: int | None,
    guidance: float | None,
    height: int | None,
    width: int | None,
    batch_size: int,
    images: Path | None,
    progress: bool,
) -> tuple[dict, Path | None]:
    """`dsharp eval --bench t2i-compbench`: the benchmark's own runner (resumable)."""
    from dsharp.bench import run_t2i_compbench
    from dsharp.bench.t2i_compbench import check_settings, pending_categories, select_prompts
    from dsharp.bench.t2i_data import load_prompt_set
    from dsharp.bench.t2i_scoring import T2IScorer
    from dsharp.checkpoints import checkpoint_step
    from dsharp.commands.common import load_model_for_inference, pick_device
    from dsharp.commands.output_notes import prompt_notes
    from dsharp.generate import SampleSettings
    from dsharp.io import atomic_write_json

    with settings_errors():  # a bad category, split or --set: exit 2, at once
        cats, options = check_settings(categories, split, evaluator_options)
    pick_device(device)  # a bad --device, a missing model: before the prompts' download
    ckpt = require_model(model, checkpoint)
    # a size the VAE cannot draw: from the model's config files, before the prompts' download
    require_image_sides(model_section_of(model, ckpt), {"--height": height, "--width": width})
    step = checkpoint_step(ckpt) if ckpt is not None else None  # a damaged file: now
    json_name = f"eval-{T2I_COMPBENCH}.json"
    target = out or _default_target(ckpt, None, None, json_name)
    work_dir, instead = _t2i_work_dir(images, ckpt, target)
    # In its own folder the work is that checkpoint's by where it is (a moved run folder
    # resumes it); in a folder the user gives, the checkpoint's path says whose it is; a
    # --model folder is one however it is typed (./m, ./m/, its absolute path).
    if ckpt is None:
        from dsharp.model_names import resolved_model_source

        model_id = resolved_model_source(str(model))
    else:
        model_id = str(ckpt.resolve()) if images else ckpt.name
    if work_dir is not None and images is None:  # --images was checked with --out, at once
        from dsharp.preflight import check_output_folder

        # its rows are written from the first prompt on: check it now
        check_output_folder(work_dir, "t2i-compbench work folder")
    with settings_errors():  # read (or fetched) before the model loads; no prompt: exit 2
        prompt_set = load_prompt_set(cats, split, data)
    settings = SampleSettings(
        steps=steps or 25,
        guidance=guidance if guidance is not None else 5.0,
        height=height,
        width=width,
    )
    if work_dir is not None:  # rows of other settings: refused before the model loads
        from dsharp.bench.t2i_compbench import check_resumable, fingerprint_of
        from dsharp.rewards.noun_phrases import resolve_method

        seeds = range(images_per_prompt)
        method = resolve_method(options.noun_phrases)
        fingerprint = fingerprint_of(model_id, split, seeds, settings, options, method)
        check_resumable(work_dir, fingerprint, instead)
        _say_resumed(work_dir)
    # the evaluators still needed, built before the model loads: an evaluator that cannot be
    # built (no weights offline) must not cost the model's load first, as for other benches
    scorer = T2IScorer(options)
    scorer.prepare(pending_categories(prompt_set, cats, limit, work_dir))
    diffusion = load_model_for_inference(model, checkpoint, device)
    # notes on the prompts this evaluation scores (--limit's), as the other benches give
    prompt_notes(
        diffusion, [p for c in cats for _, p in select_prompts(prompt_set.prompts[c], limit)]
    )
    try:
        result = run_t2i_compbench(
            diffusion,
            categories=categories,
            split=split,
            images_per_prompt=images_per_prompt,
            limit=limit,
            data_dir=data,
            settings=settings,
            evaluator_options=evaluator_options,
            out_dir=work_dir,
            keep_images=images is not None,
            progress=progress,
            batch_size=batch_size,
            model_id=model_id,
            scorer=scorer,
        )
    except KeyboardInterrupt:
        if work_dir is not None:
            typer.echo(
                f"note: the prompts scored so far are kept in {work_dir}; the same "
                "command resumes there",
                err=True,
            )
        raise
    # the model as given, as other benches record it (the run's rows name the checkpoint
    # by its folder's name, which `dsharp runs` and the table would show instead)
    result = {**result, "bench": T2I_COMPBENCH, "model": str(checkpoint or model)}
    if ckpt is not None:
        result["step"] = step
    transient = work_dir is not None and images is None and ckpt is None
    if transient:
        result["out_dir"] = None  # removed below, once the result is written
    if target is not None:
        atomic_write_json(target, result)
    if transient:
        _remove_work(work_dir)
    return result, target


def _t2i_work_dir(
    images: Path | None, ckpt: Path | None, target: Path | None
) -> tuple[Path | None, str]:
    """Where ``--bench t2i-compbench`` keeps its resumable rows, and what a user may give
    instead of it: ``--images DIR``; for a checkpoint, a folder per checkpoint in its run
    folder (a run that trains on and is evaluated again does not reuse an earlier
    checkpoint's rows; not inside the checkpoint, which training may prune while the
    evaluation runs); for a ``--model`` with ``--out FILE``, ``FILE.partial`` beside it,
    removed once FILE is written, so that an interrupted evaluation resumes; else none."""
    if images is not None:
        return images, "another --images DIR"
    if ckpt is not None:
        from dsharp.checkpoints import run_dir_of

        return run_dir_of(ckpt) / "t2i-compbench" / ckpt.name, "--images DIR"
    if target is not None:
        return target.with_name(f"{target.name}.partial"), "another --out FILE"
    return None, ""


def _say_resumed(work_dir: Path) -> None:
    """Say on stderr that rows of an earlier, unfinished run are reused, and where."""
    from dsharp.bench.t2i_compbench import PARTIAL_FILE
    from dsharp.io import read_jsonl

    rows = read_jsonl(work_dir / PARTIAL_FILE)
    if rows:
        count = f"{len(rows)} prompt{'s' if len(rows) != 1 else ''}"
        typer.echo(f"note: reusing {count} scored before, kept in {work_dir}", err=True)


def _remove_work(work_dir: Path) -> None:
    """A ``--out FILE.partial`` work folder, once FILE holds its result: its own files,
    then the folder where nothing else is left in it."""
    from contextlib import suppress

    from dsharp.bench.t2i_compbench import PARTIAL_FILE, RUN_FILE

    with suppress(OSError):
        for name in (PARTIAL_FILE, RUN_FILE):
            (work_dir / name).unlink(missing_ok=True)
        work_dir.rmdir()
