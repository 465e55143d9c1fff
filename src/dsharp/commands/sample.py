"""`dsharp sample (--model PATH | --checkpoint RUN_DIR) --prompt TEXT ...`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

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
from dsharp.commands.output_notes import others_note, prompt_notes


def _require_seeds_in_range(seed: int, num_images: int, prompts: int) -> None:
    """Refuse a ``--seed`` whose images' seeds (``seed + i``) run past :data:`SEED_MAX`,
    before any weights load: ``--seed`` alone is checked by its option."""
    from dsharp.config import SEED_MAX

    images = num_images * prompts
    last = seed + images - 1
    if last > SEED_MAX:
        raise usage_error(
            f"--seed {seed}: {images} images (-n {num_images} x {prompts} "
            f"prompt{'s' if prompts != 1 else ''}) use seeds up to {last} (image i: --seed + "
            f"i), past 2**32 - 1; give --seed {SEED_MAX - images + 1} or less"
        )


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "empty"


def sample(
    overrides: list[str] = typer.Argument(
        None,
        metavar="OVERRIDES",
        help="sample.* overrides, e.g. sample.method=demon sample.options.K=4.",
    ),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="Prompt (repeat for several)."),
    prompts_file: Path = typer.Option(
        None, "--prompts", help="Prompt file, one per line (with or instead of --prompt)."
    ),
    model: str = typer.Option(None, "--model", help="Diffusers folder, hub id, or dsharp-mini."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Run folder or checkpoint folder."),
    seed: int = typer.Option(
        0,
        "--seed",
        min=0,
        max=2**32 - 1,  # dsharp.config.SEED_MAX (the CLI starts without pydantic)
        help="The first seed, not a count (-n says how many images): image i, counted across "
        "prompts, uses seed + i (0 to 2**32 - 1, as train.seed).",
    ),
    num_images: int = typer.Option(1, "--num-images", "-n", help="Images per prompt."),
    steps: int = typer.Option(None, "--steps", help="DDIM steps (default 25)."),
    guidance: float = typer.Option(
        None, "--guidance", help="Classifier-free guidance scale (default 5)."
    ),
    eta: float = typer.Option(
        None, "--eta", help="DDIM eta in [0, 1] (default 0 = deterministic, 1 = DDPM)."
    ),
    height: int = typer.Option(None, "--height", help="Image height (default: the model's)."),
    width: int = typer.Option(None, "--width", help="Image width (default: the model's)."),
    method: str = typer.Option(
        None,
        "--method",
        help="Sampling method (sample.method): default, free2guide, demon or inference_scaling "
        "(default 'default').",
    ),
    option: list[str] = typer.Option(
        None,
        "--option",
        "--set-sample",
        metavar="KEY=VALUE",
        help="Method option KEY=VALUE (sample.options.KEY).",
    ),
    reward: list[str] = typer.Option(
        None,
        "--reward",
        "--verifier",
        metavar="NAME",
        help="Verifier reward of inference-time methods (repeatable; --verifier as in eval).",
    ),
    set_: list[str] = typer.Option(
        None, "--set", metavar="KEY=VALUE", help="Verifier option KEY=VALUE (every --reward)."
    ),
    on_error: str = typer.Option(
        None,
        "--on-error",
        metavar="raise|missing",
        help="What a candidate the verifier cannot score does: 'raise' stops sampling (exit "
        "1); 'missing' leaves it unscored, never chosen while another candidate of the image "
        "scored (demon: weight 0); an image none of whose candidates scored still stops "
        "sampling (exit 1, no image written). Default: raise.",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per UNet batch."),
    out: Path = typer.Option(
        Path("samples"),
        "--out",
        help="The folder the PNGs are written in, not a file (made if missing).",
    ),
    grid: bool = typer.Option(
        True,
        "--grid/--no-grid",
        help="Also write OUT/grid.png: one row per prompt, one column per image (up to 32 x "
        "16); --no-grid removes an older one.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print as JSON: images (paths), grid, grid_images (how many the sheet shows), "
        "method, nfe_per_image and, with a verifier, reward_evals_per_image.",
    ),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP),
) -> None:
    """Generate PNG images from a base model or a fine-tuned run.

    \b
    Example: dsharp sample --checkpoint runs/quickstart -p "a red circle" -n 4 --out samples
    """
    refuse_a_launch("sample")
    if (model is None) == (checkpoint is None):  # before torch is imported: at once
        with user_errors():
            raise usage_error("give exactly one of --model or --checkpoint")
    from dsharp.commands.common import (
        check_on_error_settings,
        check_reward_settings,
        load_model_for_inference,
        parse_reward_sets,
        pick_device,
    )
    from dsharp.generate import (
        VERIFIER_METHODS,
        SampleSettings,
        generate,
        given_flags,
        parse_sample_overrides,
        prompt_seeds,
    )
    from dsharp.rewards.base import UnscoredError
    from dsharp.sampling import save_images
    from dsharp.sheets import SHEET_PNG, save_contact_sheet

    with user_errors():
        prompt_list = list(prompt or [])
        if prompts_file is not None:
            from dsharp.data import read_prompt_file

            prompt_list += read_prompt_file(prompts_file)
        if not prompt_list:
            raise usage_error("give --prompt TEXT (repeatable) or --prompts FILE")
        require_counts({"--num-images": num_images, "--steps": steps, "--batch-size": batch_size})
        _require_seeds_in_range(seed, num_images, len(prompt_list))
        require_output_paths({"--out": out}, {})
        reward_options = parse_reward_sets(set_ or [])
        check_on_error_settings(on_error, reward_options)
        flags = {"method": method, "steps": steps, "guidance": guidance, "eta": eta}
        flags |= {"height": height, "width": width}
        section = parse_sample_overrides(flags, overrides or [], option or [], given_flags(flags))
        # --set applies to every --reward, as eval's does to every reward that scores
        verifiers = [{"name": name, "options": reward_options} for name in reward or []]
        settings = SampleSettings(**section, reward=verifiers or None)
        with settings_errors():  # unknown method, bad option or missing reward: before loading
            method_entry, parsed_options = settings.validate(VERIFIER_FLAG_HINT, "--reward")
        verifier = None
        uses_verifier = bool(settings.reward and method_entry.needs_reward)
        # what --on-error and --set are refused with when no verifier is in use
        verifier_only = (
            "used only by the verifier (--reward NAME) of an inference-time method "
            f"(--method {VERIFIER_METHODS})"
        )
        if on_error is not None and not uses_verifier:
            raise usage_error(f"--on-error: {verifier_only}")
        if set_ and not uses_verifier:
            raise usage_error(f"--set: {verifier_only}")
        if on_error is not None:
            settings.reward = [{**spec, "on_error": on_error} for spec in settings.reward]
        if uses_verifier:
            from dsharp.inference.base import Verifier, reward_specs
            from dsharp.rewards.plugins import check_prompts

            with settings_errors():  # a prompt or --set the verifier refuses: as in a recipe
                check_prompts(
                    reward_specs(settings.reward), prompt_list, prompts_file or "--prompt"
                )
                check_reward_settings(reward_specs(settings.reward))
        pick_device(device)  # a bad --device, then a missing model: before any weights load
        ckpt = require_model(model, checkpoint)
        # a size the VAE cannot draw: from the model's config files, before its weights load
        sides = {
            f"--{k}" if flags[k] is not None else f"sample.{k}": section.get(k)
            for k in ("height", "width")
        }
        require_image_sides(model_section_of(model, ckpt), sides)
        if uses_verifier:
            # before the model loads: a verifier that cannot be built (no API key) fails now
            verifier = Verifier(reward_specs(settings.reward))
        diffusion = load_model_for_inference(model, checkpoint, device)
        prompt_notes(diffusion, prompt_list)
        prompts, seeds = prompt_seeds(prompt_list, num_images, seed)
        try:
            result = generate(
                diffusion,
                prompts,
                seeds,
                settings,
                batch_size=batch_size,
                progress=True,
                verifier=verifier,
            )
        except UnscoredError as err:
            raise UnscoredError(f"{one_line(err)}; {VERIFIER_ON_ERROR_HINT}") from None
        names = [
            f"{i:04d}-seed{s}-{_slug(p)}.png"
            for i, (p, s) in enumerate(zip(prompts, seeds, strict=True))
        ]
        from dsharp.file_sets import replaced_together

        # one set, the grid last: a full disk must not leave a grid of other images; with
        # --no-grid an older grid.png is removed, as it would pass for these images' grid;
        # the images recorded, so that those of an earlier sample this one reruns (some of
        # its images rewritten) that it does not rewrite go; another sample's are kept
        files = [out / n for n in names] + [out / SHEET_PNG]
        with replaced_together(*files, recorded=files[:-1]) as staged:
            paths = save_images(result.images, out, names, staged=staged)
            if grid:
                from dsharp.score_words import sample_heading

                unused = getattr(parsed_options, "UNUSED_SAMPLE", ())
                heading = sample_heading(settings.as_dict(), parsed_options, unused)
                shown = save_contact_sheet(
                    result.images, prompts, seeds, staged(out / SHEET_PNG), heading=heading
                )
                note = "" if shown == len(prompts) else f" ({shown} of {len(prompts)} images)"
    summary = {
        "images": [str(p) for p in paths],
        "grid": str(out / SHEET_PNG) if grid else None,
        "grid_images": shown if grid else None,  # the sheet holds at most 32 x 16
        "nfe_per_image": result.nfe_per_image,
        "method": settings.method,
    }
    if result.reward_evals_per_image is not None:
        summary["reward_evals_per_image"] = result.reward_evals_per_image
    others_note(out, [p.name for p in files])
    if as_json:
        typer.echo(json.dumps(summary))
        return
    cost = f"{result.nfe_per_image:g} network evaluations"
    if result.reward_evals_per_image is not None:
        cost += f" and {result.reward_evals_per_image:g} reward evaluations"
    sampler = "DDIM" if settings.method == "default" else settings.method
    count = f"{len(paths)} image{'s' if len(paths) != 1 else ''}"
    typer.echo(f"{count} in {out} ({sampler}, {cost} per image)")
    if grid:
        typer.echo(f"grid: {out / SHEET_PNG}{note}")
