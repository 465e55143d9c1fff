"""`dsharp compare RUN --against paper`: which of a run folder's evaluations make its row,
and which paper row a run's recipe implies."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from dsharp.cli import app


def _invoke(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _run(tmp_path: Path, name: str = "run", n: int = 3) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "recipe.yaml").write_text(f"method:\n  name: rlhf_sharpening\n  n: {n}\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')  # it trained
    return run


def _write(run: Path, name: str, age: int, **result) -> None:
    (run / name).write_text(json.dumps(result))
    os.utime(run / name, (1_000_000 + age, 1_000_000 + age))  # eval_files: oldest first


def _ours(md: str, label: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| ours:{label} |"))


def test_a_run_folders_prompt_file_evaluation_does_not_replace_its_bench_score(tmp_path):
    """A one-prompt `dsharp eval --prompts` check, newer than the report's evaluation, is
    left out of the run's row, with a note naming it: files written before evaluations
    recorded their prompt file are known by the name dsharp eval gave them."""
    run = _run(tmp_path)
    _write(run, "eval-final.json", 0, bench="shapes", metrics={"shapes": {"mean": 0.3224}})
    _write(run, "eval-shapes-one.json", 1, bench="shapes", metrics={"shapes": {"mean": 0.0}})
    _write(
        run,
        "eval-mine.json",
        2,
        bench="clip",
        prompts_file="h.txt",
        metrics={"clip": {"mean": 0.2}},
    )
    result = _invoke(["compare", run, "--against", "paper", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    assert "| 0.3224 |" in _ours((tmp_path / "compare.md").read_text(), "run")
    assert (
        f"note: {run}: left out eval-shapes-one.json, eval-mine.json: evaluated on a --prompts "
        "file, not the bench's prompts (give the file to compare it)"
    ) in " ".join(result.stderr.split())


def test_a_metric_two_bench_evaluations_hold_comes_from_the_newest_with_a_note(tmp_path):
    run = _run(tmp_path)
    _write(run, "eval-final.json", 0, bench="shapes", metrics={"shapes": {"mean": 0.3224}})
    _write(
        run,
        "eval-shapes.json",
        1,
        bench="shapes",
        prompts_file=None,
        metrics={"shapes": {"mean": 0.25}},
    )
    result = _invoke(["compare", run, "--against", "paper", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    assert "| 0.2500 |" in _ours((tmp_path / "compare.md").read_text(), "run")
    assert (
        f"note: {run}: shapes from eval-shapes.json, the newest (also in eval-final.json)"
    ) in " ".join(result.stderr.split())


def test_dsharp_eval_records_whether_it_scored_a_prompt_file(tiny_sd_dir, tmp_path):
    prompts = tmp_path / "one.txt"
    prompts.write_text("a red circle\n")
    common = ["--model", tiny_sd_dir, "--seeds", "1", "--steps", "1"]
    on_file = _invoke(["eval", *common, "--bench", "shapes", "--prompts", prompts, "--json"])
    on_bench = _invoke(["eval", *common, "--bench", "shapes", "--limit", "1", "--json"])
    assert (on_file.exit_code, on_bench.exit_code) == (0, 0), on_file.output + on_bench.output
    assert json.loads(on_file.stdout)["prompts_file"] == str(prompts)
    assert json.loads(on_bench.stdout)["prompts_file"] is None


def test_a_runs_setting_the_paper_has_no_row_for_gets_none_and_the_others_theirs(tmp_path):
    """Table 2 has no n=6: that run's row (implied by its recipe) shows '-' with a note, and
    the n=3 run beside it keeps its paper row, instead of the whole table failing."""
    runs = [_run(tmp_path, "n3", n=3), _run(tmp_path, "n6", n=6)]
    for i, run in enumerate(runs):
        _write(run, "eval-clip.json", i, bench="clip", metrics={"clip": {"mean": 0.33}})
    result = _invoke(
        ["compare", *runs, "--against", "paper", "--table", "table2", "--out", tmp_path]
    )
    assert result.exit_code == 0, result.output
    md = (tmp_path / "compare.md").read_text()
    assert "| paper:3 | 0.3380 |" in md and "| paper:- | - | - | - |" in md
    assert "| delta:n6 | - | - | - |" in md
    assert (
        "note: n6: its recipe's method.n is 6, which table2 has no row for (rows: 1, 2, 3, 4, "
        "8), so it has no paper row"
    ) in " ".join(result.stderr.split())


def test_a_paper_row_named_in_an_evaluation_must_be_in_the_table(tmp_path):
    named = tmp_path / "n6.json"
    named.write_text(json.dumps({"metrics": {"clip": {"mean": 0.33}}, "paper_row": 6}))
    result = _invoke(["compare", named, "--against", "paper", "--table", "table2"])
    assert result.exit_code == 1
    assert "n6: paper row 6 not in table2 (rows: 1, 2, 3, 4, 8)" in result.stderr


def test_a_run_folders_clip_score_at_scale_100_is_compared_as_the_plain_cosine(tmp_path):
    """`dsharp eval --reward clip --set scale=100` (the paper's code's scale) in a run folder:
    its row shows 0.3380 beside the paper's 0.338, not 33.8."""
    run = _run(tmp_path, "rlhf_sharpening")
    spec = {"name": "clip", "weight": 1.0, "options": {"scale": 100.0}}
    _write(
        run,
        "eval-clip.json",
        0,
        bench="clip",
        metrics={"clip": {"mean": 33.8}},
        reward_specs={"clip": spec},
    )
    result = _invoke(["compare", run, "--against", "paper", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "compare.md").read_text()
    assert _ours(md, "rlhf_sharpening").startswith("| ours:rlhf_sharpening | 0.3380 |")


def test_a_run_of_another_method_has_no_row_of_tables_2_and_3(tmp_path):
    """Tables 2 and 3 vary RLHF Diffusion-Sharpening's n and m: a DDPO run's method.n (its
    samples per prompt, 4) was put beside the paper's n = 4 row, and its unused m (3)
    beside m = 3. It has none; a sharpening run beside it keeps its row."""
    ddpo = _run(tmp_path, "ddpo", n=4)
    (ddpo / "recipe.yaml").write_text("method:\n  name: ddpo\n  n: 4\n  m: 3\n")
    sharpening = _run(tmp_path, "n4", n=4)
    for i, run in enumerate((ddpo, sharpening)):
        _write(run, "eval-clip.json", i, bench="clip", metrics={"clip": {"mean": 0.33}})
    for table, row in (("table2", "| paper:4 | 0.3360 |"), ("table3", "| paper:3 | 0.3380 |")):
        result = _invoke(
            ["compare", ddpo, sharpening, "--against", "paper", "--table", table, "--out", tmp_path]
        )
        assert result.exit_code == 0, result.output
        lines = (tmp_path / "compare.md").read_text().splitlines()
        rows = lines[lines.index("| row | clip_score | image_reward | mllm |") + 2 :]
        assert rows[0].startswith("| paper:- | - | - | - |")  # the ddpo run's paper row
        assert rows[3].startswith(row)  # the sharpening run's
        field = "n" if table == "table2" else "m"
        assert (
            f"note: ddpo: trained by ddpo, not by rlhf_sharpening, whose method.{field} "
            f"{table} varies, so it has no paper row"
        ) in " ".join(result.stderr.split())


def test_a_bench_scored_by_other_rewards_does_not_replace_that_rewards_bench_score(tmp_path):
    """`dsharp eval --bench shapes --reward clip` (CLIP on the shapes prompts), newer than the
    run's CLIP bench evaluation, gave the clip column its number."""
    run = _run(tmp_path)
    _write(
        run, "eval-clip.json", 0, bench="clip", rewards=["clip"], metrics={"clip": {"mean": 0.31}}
    )
    name = "eval-shapes-reward-clip.json"
    _write(
        run,
        name,
        1,
        bench="shapes",
        rewards=["clip"],
        metrics={"clip": {"mean": 0.2}},
        prompts_file=None,
    )
    result = _invoke(["compare", run, "--against", "paper", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    assert "| 0.3100 |" in _ours((tmp_path / "compare.md").read_text(), "run")
    assert (
        f"note: {run}: left out {name}: scored by other rewards than its bench's own (give the "
        "file to compare it)"
    ) in " ".join(result.stderr.split())


def test_a_prompt_file_score_of_the_benchs_own_rewards_goes_before_other_rewards(tmp_path):
    """With no evaluation of the bench's prompts by its own rewards, a run's row merged every
    evaluation: CLIP on the shapes prompts (`--bench shapes --reward clip`) filled the clip
    column beside the held-out file's shapes score, and the note said that all of them were
    on --prompts files, though that one was not."""
    run = _run(tmp_path)
    held_out = "eval-shapes-heldout.json"
    _write(
        run,
        held_out,
        0,
        bench="shapes",
        rewards=["shapes"],
        metrics={"shapes": {"mean": 0.5}},
        prompts_file="heldout.txt",
    )
    other = "eval-shapes-reward-clip.json"
    _write(
        run,
        other,
        1,
        bench="shapes",
        rewards=["clip"],
        metrics={"clip": {"mean": 0.2}},
        prompts_file=None,
    )
    from dsharp.paper_results import results_for_paper

    notes: list[str] = []
    _, merged = results_for_paper(run, "table1", notes)
    assert set(merged["metrics"]) == {"shapes"}
    assert notes == [
        f"{run}: left out {other}: scored by other rewards than its bench's own (give the "
        "file to compare it)",
        f"{run}: its evaluations ({held_out}) are all on --prompts files",
    ]

    (run / held_out).unlink()  # other rewards alone: they stand, and the note says so
    notes = []
    _, merged = results_for_paper(run, "table1", notes)
    assert set(merged["metrics"]) == {"clip"}
    assert notes == [
        f"{run}: its evaluations ({other}) are all scored by other rewards than their bench's own"
    ]
