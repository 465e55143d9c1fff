"""A run folder's evaluations merged into the one result that stands beside the paper's
numbers: `dsharp compare --against paper` and a study's paper table read runs alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def results_for_paper(
    source: Path, table: str, notes: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """A run folder's evaluations merged into one result (its eval*.json), or one JSON.

    A folder's evaluations on a ``--prompts`` file, or of a bench's prompts by other rewards
    than its own (``--bench shapes --reward clip``), are left out where it has others: the
    paper's columns are benchmarks, and a one-prompt check must not stand for a bench's
    score, nor CLIP on the shapes prompts for CLIP's. Of the rest a later one wins a clash
    (a run evaluated again). ``notes`` gets a line for each folder where an evaluation was
    left out or a metric clashed, naming the files. For Tables 2 and 3 an RLHF sharpening
    run's recipe says which paper row it reproduces (method.n / .m), and a run of another
    method is marked with its method (no paper row); a folder with no training (a study's
    base row) is marked ``untrained``.
    """
    from dsharp.bench import merge_results
    from dsharp.report import (
        eval_files,
        load_result,
        no_evaluation_error,
        read_evaluation,
        scored_by_other_rewards,
    )

    if not source.is_dir():
        return load_result(source)
    found = eval_files(source)
    if not found:
        raise no_evaluation_error(source)
    evaluations = [(path, read_evaluation(path)) for path in found]
    bench_own = [(p, r) for p, r in evaluations if not scored_by_other_rewards(r)]
    # bench scores first; else the bench's own rewards on prompt files before other rewards
    used = [(p, r) for p, r in bench_own if not on_prompt_file(p, r)] or bench_own or evaluations
    merged = merge_results([result for _, result in used])
    if notes is not None:
        notes += _merge_notes(source, evaluations, used)
    recipe_path = source / "recipe.yaml"
    trained = (source / "metrics.jsonl").exists() or (source / "checkpoints").is_dir()
    if not trained:
        merged["untrained"] = True
    elif table in ("table2", "table3") and recipe_path.exists():
        import yaml

        from dsharp.bench.paper import RECIPE_METHOD, RECIPE_ROW, TABLE_METHOD

        method = (yaml.safe_load(recipe_path.read_text()) or {}).get("method", {})
        name = method.get("name", "rlhf_sharpening")  # the schema's default method
        implied = method.get("n" if table == "table2" else "m")
        if merged.get("paper_row") is not None:
            pass  # named by its evaluation
        elif name != TABLE_METHOD:
            merged[RECIPE_METHOD] = name  # its n or m is not the tables' (DDPO's n: samples)
        elif implied is not None:
            merged[RECIPE_ROW] = implied  # not named by anyone: may be no row of the table
    return source.name, merged


def on_prompt_file(path: Path, result: dict[str, Any]) -> bool:
    """Whether an evaluation scored a ``--prompts`` file rather than its bench's (or its
    recipe's) prompts: as it records (``prompts_file``), else, in a file written before it
    did, by the name `dsharp eval` gave it (``eval-BENCH-FILESTEM.json``)."""
    if "prompts_file" in result:
        return result["prompts_file"] is not None
    return path.name.startswith(f"eval-{result.get('bench') or 'rewards'}-")


def _merge_notes(
    source: Path,
    evaluations: list[tuple[Path, dict[str, Any]]],
    used: list[tuple[Path, dict[str, Any]]],
) -> list[str]:
    """What merging a folder's evaluations left out, and which file gave a metric that
    several hold."""
    from dsharp.report import scored_by_other_rewards

    notes = []
    used_paths = [p for p, _ in used]
    left_out = [(p, r) for p, r in evaluations if p not in used_paths]
    by_others = [p.name for p, r in left_out if scored_by_other_rewards(r)]
    on_files = [p.name for p, r in left_out if p.name not in by_others]
    if on_files:
        notes.append(
            f"{source}: left out {', '.join(on_files)}: evaluated on a --prompts file, not "
            "the bench's prompts (give the file to compare it)"
        )
    if by_others:
        notes.append(
            f"{source}: left out {', '.join(by_others)}: scored by other rewards than its "
            "bench's own (give the file to compare it)"
        )
    names = ", ".join(p.name for p, _ in used)
    if all(on_prompt_file(p, r) for p, r in used):
        notes.append(f"{source}: its evaluations ({names}) are all on --prompts files")
    elif all(scored_by_other_rewards(r) for _, r in used):
        notes.append(
            f"{source}: its evaluations ({names}) are all scored by other rewards than their "
            "bench's own"
        )
    clashes = []
    # eval_files lists the oldest first, and merge_results lets a later one win a clash
    for metric in dict.fromkeys(m for _, r in used for m in r.get("metrics") or {}):
        holders = [p.name for p, r in used if metric in (r.get("metrics") or {})]
        if len(holders) > 1:
            others = ", ".join(holders[:-1])
            clashes.append(f"{metric} from {holders[-1]}, the newest (also in {others})")
    if clashes:
        notes.append(f"{source}: {'; '.join(clashes)}")
    return notes
