"""`dsharp compare --against paper` says where a T2I-CompBench evaluation was measured
otherwise than the paper's columns (a --limit, fewer images per prompt, another split or
prompt files, dsharp's stand-in evaluators): its delta printed beside the paper's numbers
is then not the model's alone."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dsharp.bench.paper import merge_results, paper_table
from dsharp.bench.t2i_protocol import protocol_gaps, protocol_notes
from dsharp.cli import app

OWLV2 = "spatial: the benchmark's UniDet detector is replaced by the open-vocabulary detector"


def _t2i_result(**changes) -> dict:
    """A T2I-CompBench result as `dsharp eval --bench t2i-compbench` writes it (the fields
    the notes read): color and spatial, 2 of 300 prompts each, 1 image per prompt."""
    result = {
        "bench": "t2i-compbench",
        "split": "val",
        "overall": 0.4,
        "metrics": {
            "t2i_color": {"mean": 0.5, "std": 0.1, "ci95": 0.2, "n": 2},
            "t2i_spatial": {"mean": 0.3, "std": 0.1, "ci95": 0.2, "n": 2},
        },
        "t2i_compbench": {"color": {"n_prompts": 2}, "spatial": {"n_prompts": 2}},
        "images_per_prompt": 1,
        "limit": 2,
        "data": {
            "files": {
                "color_val.txt": {"matches_snapshot": True, "n": 300},
                "spatial_val.txt": {"matches_snapshot": True, "n": 300},
            }
        },
        "substitutions": [f"{OWLV2} OWLv2 (x)"],
        "n_images": 4,
    }
    return {**result, **changes}


def test_gaps_name_each_departure_from_the_protocol():
    assert protocol_gaps(_t2i_result()) == [
        "prompts per category color 2 of 300, spatial 2 of 300 (--limit 2)",
        "1 image per prompt, not 10",
    ]
    full = _t2i_result(
        t2i_compbench={"color": {"n_prompts": 300}, "spatial": {"n_prompts": 300}},
        images_per_prompt=10,
        limit=None,
    )
    assert protocol_gaps(full) == []
    data = {"files": {"color_train.txt": {"matches_snapshot": False, "n": 700}}}
    other = _t2i_result(
        split="train", t2i_compbench={"color": {"n_prompts": 700}}, images_per_prompt=10
    )
    other["data"] = data
    assert protocol_gaps(other) == [
        "the train split, not val",
        "prompt files other than the pinned snapshot's (color_train.txt)",
    ]


def test_notes_survive_a_run_folders_merge_and_only_for_t2i_columns():
    columns = paper_table("table1")[0]
    clip_eval = {"bench": "clip", "overall": 0.3, "metrics": {"clip": {"mean": 0.3}}}
    merged = merge_results([clip_eval, _t2i_result()])
    notes = protocol_notes({"run": merged, "file": _t2i_result()}, columns)
    assert len(notes) == 3
    assert notes[0].startswith("run: its T2I-CompBench columns were measured with prompts ")
    assert notes[1].startswith("file: its T2I-CompBench columns were measured with prompts ")
    assert notes[2].startswith(f"run, file: T2I-CompBench scored otherwise than the paper: {OWLV2}")
    assert protocol_notes({"run": merged}, paper_table("table2")[0]) == []
    assert protocol_notes({"clip": merge_results([clip_eval])}, columns) == []


def test_compare_against_paper_says_a_quick_look_is_not_the_papers_protocol(tmp_path):
    source = tmp_path / "quick.json"
    source.write_text(json.dumps(_t2i_result()))
    result = CliRunner().invoke(
        app, ["compare", str(source), "--against", "paper", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any("color 2 of 300" in n and "1 image per prompt, not 10" in n for n in notes)
    assert any("UniDet" in n and "OWLv2" in n for n in notes)
    markdown = (tmp_path / "compare.md").read_text()
    assert "1 image per prompt, not 10" in markdown and "OWLv2" in markdown


def test_a_merge_keeps_the_gaps_of_every_t2i_evaluation_it_shows():
    """A run folder with a quick look at color and a full spatial evaluation: the row shows
    both, so the quick color's --limit and images per prompt are said though the full
    evaluation came later; an evaluation whose columns were all replaced says nothing."""
    columns = paper_table("table1")[0]
    quick = _t2i_result(
        metrics={"t2i_color": {"mean": 0.5, "n": 2}},
        t2i_compbench={"color": {"n_prompts": 2}},
    )
    full = _t2i_result(
        metrics={"t2i_spatial": {"mean": 0.3, "n": 3000}},
        t2i_compbench={"spatial": {"n_prompts": 300}},
        images_per_prompt=10,
        limit=None,
    )
    notes = protocol_notes({"run": merge_results([quick, full])}, columns)
    assert notes[0] == (
        "run: its T2I-CompBench columns were measured with prompts per category color 2 of "
        "300 (--limit 2); 1 image per prompt, not 10; the paper's follow the benchmark (val "
        "split, every prompt, 10 images per prompt), so its delta is not the model's alone"
    )
    assert len(notes) == 2 and notes[1].startswith("run: T2I-CompBench scored otherwise than")
    # a full evaluation of color again, later: the quick one's column is no longer shown
    full_color = {**full, "metrics": {"t2i_color": {"mean": 0.4, "n": 3000}}}
    full_color["t2i_compbench"] = {"color": {"n_prompts": 300}}
    merged = merge_results([quick, full, full_color])
    assert protocol_notes({"run": merged}, columns) == notes[1:]
