"""Ship a finished dsharp-mini pretraining run as the embedded model ``dsharp-mini``.

    python scripts/ship_mini.py runs/mini-pretrain            # newest checkpoint of the run
    python scripts/ship_mini.py runs/mini-pretrain/checkpoints/step-002000

Copies the run's init folder (``dsharp-mini-init``: tokenizer, frozen text encoder,
scheduler) with the trained UNet into ``src/dsharp/assets/dsharp-mini`` (built beside it and
renamed into place), evaluates the result on the shapes val prompts, and writes
``MODEL_CARD.md`` (recipe, seed, steps, wall time, val scores, sampling settings, sha256 of
every weight file). Refuses to ship weights over the size limit.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsharp.commands.errors import require_counts, run_script
from dsharp.file_records import digest as file_sha256

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "dsharp" / "assets" / "dsharp-mini"
MAX_WEIGHT_BYTES = 20 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
CARD = "MODEL_CARD.md"


def weight_files(folder: Path) -> list[Path]:
    """Every weight file under ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def locate(path: Path) -> tuple[Path, Path, Any]:
    """(checkpoint folder, run folder, recipe) of a run or checkpoint folder."""
    from dsharp.checkpoints import find_model_checkpoint, run_dir_of
    from dsharp.config import load_recipe

    checkpoint = find_model_checkpoint(path, label="source")
    run_dir = run_dir_of(checkpoint)
    recipe = load_recipe(run_dir / "recipe.yaml", validate_files=False)
    if recipe.method.name != "finetune" or recipe.model.lora_rank != 0:
        raise ValueError(f"{run_dir}: not a full-UNet finetune run (method {recipe.method.name!r})")
    if not (checkpoint / "model" / "unet" / "config.json").is_file():
        raise ValueError(f"{checkpoint}/model/unet: holds no trained UNet")
    return checkpoint, run_dir, recipe


def training_stats(run_dir: Path, checkpoint: Path, step: int) -> dict[str, Any]:
    """Steps logged, summed step time and the last losses, from ``metrics.jsonl``; elapsed
    time from the run's ``recipe.yaml`` (written at the start) to the checkpoint."""
    from dsharp.io import read_jsonl

    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("step", 0) <= step]
    times = [float(r["step_time_s"]) for r in rows if "step_time_s" in r]
    last = [float(r["loss"]) for r in rows[-100:] if "loss" in r]
    return {
        "logged_steps": len(rows),
        "complete": len({r["step"] for r in rows}) == step,
        "wall_s": sum(times),
        "s_per_step": sum(times) / len(times) if times else float("nan"),
        "final_loss": sum(last) / len(last) if last else float("nan"),
        "elapsed_s": (checkpoint / "trainer_state.json").stat().st_mtime
        - (run_dir / "recipe.yaml").stat().st_mtime,
    }


def assemble(init: Path, checkpoint: Path, folder: Path) -> None:
    """The init folder with its UNet replaced by the checkpoint's, weights as safetensors."""
    shutil.copytree(init, folder, ignore=shutil.ignore_patterns(".*", CARD), dirs_exist_ok=True)
    shutil.rmtree(folder / "unet")
    shutil.copytree(checkpoint / "model" / "unet", folder / "unet")
    if not list((folder / "unet").glob("*.safetensors")):
        raise ValueError(f"{checkpoint}/model/unet: has no safetensors weights")


def evaluate_folder(folder: Path, recipe: Any, seeds: int) -> dict[str, Any]:
    """Shapes val scores of the assembled folder with the recipe's sampling settings."""
    from dsharp.config import RewardSpec
    from dsharp.evaluate import evaluate, get_bench
    from dsharp.generate import SampleSettings
    from dsharp.models import load_model

    model = load_model(str(folder), family="mini")
    bench = get_bench("shapes")
    settings = SampleSettings.from_config(recipe.sample)
    return evaluate(
        model,
        bench.default_prompts(),
        [RewardSpec(**r) for r in bench.rewards],
        num_seeds=seeds,
        settings=settings,
        batch_size=32,
        category_of=bench.category_of,
        progress=True,
    )


def parameter_counts(folder: Path) -> dict[str, int]:
    from safetensors import safe_open

    counts = {}
    for part in ("unet", "text_encoder"):
        total = 0
        for path in (folder / part).glob("*.safetensors"):
            with safe_open(str(path), "pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    total += _numel(fh, key)
        counts[part] = total
    return counts


def _numel(fh: Any, key: str) -> int:
    n = 1
    for d in fh.get_slice(key).get_shape():
        n *= int(d)
    return n


def _betas(sched: dict[str, Any]) -> str:
    """The beta schedule as the card names it (the cosine schedule has no beta range)."""
    if "linear" in sched["beta_schedule"]:
        return f"{sched['beta_schedule']} betas {sched['beta_start']}...{sched['beta_end']}"
    return f"{sched['beta_schedule']} betas"


def _text_layers(text: dict[str, Any], init_name: str) -> str:
    """The text encoder's layers in words. Which kind it is comes from the init the run
    started from (``model.pretrained``), not from its layer count: a one-layer encoder need
    not be the hand-set binding one."""
    from dsharp.models.loading import MINI_INITS

    kind = MINI_INITS.get(init_name)
    layers = text["num_hidden_layers"]
    if kind == "binding":
        return (
            "one hand-set layer (each word's output is its own embedding, the previous two "
            "words' and its position, layer-normed; see "
            "dsharp.models.mini.make_binding_text_encoder)"
        )
    if layers == 0:
        return "no transformer layers (token plus position embeddings, then the final layer norm)"
    plural = "" if layers == 1 else "s"
    return f"{layers} layer{plural}, {text['num_attention_heads']} heads"


def model_card(
    *,
    folder: Path,
    run_dir: Path,
    checkpoint: Path,
    recipe: Any,
    step: int,
    stats: dict[str, Any],
    result: dict[str, Any],
    files: list[tuple[str, int, str]],
) -> str:
    import diffusers
    import torch
    import transformers

    from dsharp.config import recipe_to_yaml

    unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    text = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    text_layers = _text_layers(text, recipe.model.pretrained)
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    counts = parameter_counts(folder)
    sample = result["sample"]
    cats = result.get("categories", {})
    total_bytes = sum(size for _, size, _ in files)
    wall = stats["wall_s"]
    lines = [
        "# dsharp-mini",
        "",
        "The small text-to-image model embedded in dsharp (`model.pretrained: dsharp-mini`):",
        "a pixel-space conditional diffusion model of the shapes world (32x32 scenes of",
        "coloured circles, squares and triangles), pretrained by the project. It is good but",
        "imperfect on purpose, so that reward fine-tuning has room to improve it.",
        "",
        "## Architecture",
        "",
        f"- UNet2DConditionModel on RGB pixels in [-1, 1], {unet['sample_size']}x"
        f"{unet['sample_size']}: block_out_channels {tuple(unet['block_out_channels'])}, "
        f"layers_per_block {unet['layers_per_block']}, blocks "
        f"{', '.join(unet['down_block_types'])} / {', '.join(unet['up_block_types'])}, "
        f"cross_attention_dim {unet['cross_attention_dim']}: {counts['unet']:,} parameters "
        "(trained).",
        f"- CLIPTextModel: hidden {text['hidden_size']}, {text_layers}, "
        f"{text['max_position_embeddings']} positions: "
        f"{counts['text_encoder']:,} parameters, frozen as built (seed 0).",
        "- CLIPTokenizer: byte-level base symbols plus every shapes-grammar word as one token.",
        f"- DDIMScheduler: {_betas(sched)}, {sched['num_train_timesteps']} steps, spacing "
        f"{sched['timestep_spacing']}, steps_offset {sched['steps_offset']}, set_alpha_to_one "
        f"{sched['set_alpha_to_one']}, {sched['prediction_type']} prediction, no clipping.",
        "- No VAE: dsharp loads it as the `mini` family.",
        "",
        "## Training",
        "",
        f"- Command: `dsharp train recipes/mini/pretrain.yaml` (run folder `{run_dir.name}`, "
        f"shipped checkpoint `{checkpoint.name}`).",
        f"- Steps: {step}; batch size {recipe.train.batch_size}; seed {recipe.train.seed}; "
        f"lr {recipe.train.lr:g} ({recipe.train.lr_scheduler}, "
        f"{recipe.train.warmup_steps} warmup steps); caption noise "
        f"{recipe.data.caption_noise:g}; empty-prompt rate {recipe.data.empty_prompt_prob:g}.",
        f"- Wall time: {wall:.0f} s ({wall / 60:.1f} min) of training steps, "
        f"{stats['s_per_step']:.2f} s/step on a shared 2-core CPU"
        + ("" if stats["complete"] else " (metrics.jsonl misses some steps: a lower bound)")
        + f"; {stats['elapsed_s'] / 60:.1f} min elapsed from start to the checkpoint "
        "(model loading and checkpoint writes included).",
        f"- Final training loss (mean of the last 100 steps): {stats['final_loss']:.4f}.",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}, transformers {transformers.__version__}.",
        "",
        "## Validation scores",
        "",
        f"Shapes bench (`dsharp eval --model dsharp-mini --bench shapes --seeds "
        f"{len(result['seeds'])} --steps {sample['steps']} --guidance {sample['guidance']:g}`):"
        f" {result['n_prompts']} val prompts x {len(result['seeds'])} seeds = "
        f"{result['n_images']} images. Every val prompt holds a colour-shape pair never seen "
        "in training.",
        "",
        "| metric | score |",
        "|---|---|",
        f"| overall (mean exact shapes score) | {result['overall']:.4f} |",
        f"| strict (all constraints met) | {result.get('strict', float('nan')):.4f} |",
        *(f"| {name} | {value:.4f} |" for name, value in cats.items()),
        "",
        f"Sampling: DDIM, {sample['steps']} steps, guidance {sample['guidance']:g}, eta "
        f"{sample['eta']:g}, {unet['sample_size']}x{unet['sample_size']}, seeds "
        f"{result['seeds'][0]}..{result['seeds'][-1]}.",
        "",
        "## Weights",
        "",
        f"Total {total_bytes:,} bytes ({total_bytes / 2**20:.2f} MiB; limit 20 MiB).",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
        *(f"| {name} | {size} | {digest} |" for name, size, digest in files),
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe_to_yaml(recipe).rstrip(),
        "```",
        "",
        f"Shipped {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by scripts/ship_mini.py.",
        "",
    ]
    return "\n".join(lines)


def ship(source: Path, out: Path, seeds: int) -> Path:
    from dsharp.io import atomic_directory, atomic_write_json, atomic_write_text
    from dsharp.models.loading import resolve_pretrained

    checkpoint, run_dir, recipe = locate(source)
    step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
    init = Path(resolve_pretrained(recipe.model.pretrained))
    out = Path(out)
    # Built in a temp folder that replaces `out` in one rename: a failed or interrupted
    # ship leaves the shipped model as it was.
    with atomic_directory(out) as tmp:
        assemble(init, checkpoint, tmp)
        files = [
            (p.relative_to(tmp).as_posix(), p.stat().st_size, file_sha256(p))
            for p in weight_files(tmp)
        ]
        total = sum(size for _, size, _ in files)
        if total > MAX_WEIGHT_BYTES:
            raise ValueError(
                f"{checkpoint}: weights take {total:,} bytes, "
                f"over the {MAX_WEIGHT_BYTES:,}-byte limit"
            )
        result = evaluate_folder(tmp, recipe, seeds)
        card = model_card(
            folder=tmp,
            run_dir=run_dir,
            checkpoint=checkpoint,
            recipe=recipe,
            step=step,
            stats=training_stats(run_dir, checkpoint, step),
            result=result,
            files=files,
        )
        atomic_write_text(tmp / CARD, card)
        atomic_write_json(tmp / "eval-shapes.json", result)
    print(f"shipped {out}: overall {result['overall']:.4f}, strict {result.get('strict'):.4f}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="run folder or checkpoint folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="shipped model folder")
    parser.add_argument("--seeds", type=int, default=2, help="val images per prompt")
    args = parser.parse_args(argv)
    require_counts({"--seeds": args.seeds})
    ship(args.source, args.out, args.seeds)


if __name__ == "__main__":
    run_script(main)
