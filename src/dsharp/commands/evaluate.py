"""`dsharp eval`: score a model or a run on prompts x fixed seeds; JSON out."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dsharp.commands.errors import user_errors


def _parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected key=value, got '{item}'")
        out[key] = yaml.safe_load(value)
    return out


def evaluate_cmd(
    model: str = typer.Option(None, "--model", help="Diffusers folder, hub id, or dsharp-mini."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Run folder or checkpoint folder."),
    bench: str = typer.Option(None, "--bench", help="Named benchmark (e.g. shapes)."),
    prompts: Path = typer.Option(None, "--prompts", help="Prompt file, one per line."),
    seeds: int = typer.Option(2, "--seeds", help="Images per prompt (seeds 0..N-1)."),
    reward: list[str] = typer.Option(None, "--reward", help="Reward name (repeatable)."),
    set_: list[str] = typer.Option(None, "--set", help="Reward option key=value (all rewards)."),
    steps: int = typer.Option(25, "--steps", help="DDIM steps."),
    guidance: float = typer.Option(5.0, "--guidance", help="Classifier-free guidance scale."),
    method: str = typer.Option("default", "--method", help="Sampling method."),
    height: int = typer.Option(None, "--height"),
    width: int = typer.Option(None, "--width"),
    batch_size: int = typer.Option(16, "--batch-size"),
    images: Path = typer.Option(None, "--images", help="Also keep the generated images here."),
    out: Path = typer.Option(
        None, "--out", help="Write the JSON here (default: RUN_DIR/eval-*.json for a run)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result to stdout."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Evaluate a base model (--model) or a fine-tuned run (--checkpoint)."""
    from dsharp.checkpoints import find_model_checkpoint, run_dir_of
    from dsharp.commands.common import load_model_for_inference
    from dsharp.config import RewardSpec
    from dsharp.data import read_prompt_file
    from dsharp.evaluate import evaluate, get_bench
    from dsharp.generate import SampleSettings
    from dsharp.io import atomic_write_json
    from dsharp.report import build_table, to_rich

    with user_errors():
        if (model is None) == (checkpoint is None):
            raise ValueError("give exactly one of --model or --checkpoint")
        spec_bench = get_bench(bench) if bench else None
        options = _parse_sets(set_ or [])
        if reward:
            specs = [RewardSpec(name=name, options=options) for name in reward]
        elif spec_bench:
            specs = [
                RewardSpec(**{**r, "options": {**r.get("options", {}), **options}})
                for r in spec_bench.rewards
            ]
        else:
            specs = None
        if prompts is not None:
            prompt_list = read_prompt_file(prompts)
        elif spec_bench:
            prompt_list = spec_bench.default_prompts()
        else:
            raise ValueError("give --prompts FILE or --bench NAME")
        if specs is None and checkpoint is None:
            raise ValueError("give --reward NAME (or --bench NAME) to say how to score")
        diffusion = load_model_for_inference(model, checkpoint, device)
        if specs is None:
            from dsharp.config import load_recipe

            recipe = load_recipe(
                run_dir_of(find_model_checkpoint(checkpoint)) / "recipe.yaml", validate_files=False
            )
            specs = list(recipe.eval.rewards or recipe.rewards)
        settings = SampleSettings(method, steps, guidance, 0.0, height, width)
        result = evaluate(
            diffusion,
            prompt_list,
            specs,
            num_seeds=seeds,
            settings=settings,
            batch_size=batch_size,
            category_of=spec_bench.category_of if spec_bench else None,
            images_dir=images,
            progress=not as_json,
        )
        result = {
            "bench": bench,
            "model": str(checkpoint or model),
            "rewards": [s.name for s in specs],
            **result,
        }
        target = out
        if target is None and checkpoint is not None:
            # Beside recipe.yaml in the run folder, where `dsharp compare RUN` looks.
            run_dir = run_dir_of(find_model_checkpoint(checkpoint))
            target = run_dir / f"eval-{bench or 'rewards'}.json"
        if target is not None:
            atomic_write_json(target, result)
    if as_json:
        from dsharp.io import json_safe

        typer.echo(json.dumps(json_safe(result)))
    else:
        from rich.console import Console

        columns, rows = build_table([(result["model"], result)])
        Console().print(to_rich(columns, rows, title=f"dsharp eval {bench or ''}".strip()))
        if target is not None:
            typer.echo(f"wrote {target}")
