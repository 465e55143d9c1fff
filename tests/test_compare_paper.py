"""The paper's numbers as package data, and ours beside them with deltas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dsharp.bench.paper import (
    MISSING,
    PAPER_FILE,
    compare_with_paper,
    merge_results,
    paper_table,
)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def test_package_data_is_the_reference_copy():
    if not (REFERENCE / "paper_tables.yaml").is_file():
        pytest.skip(f"no reference copy at {REFERENCE}")
    assert PAPER_FILE.read_bytes() == (REFERENCE / "paper_tables.yaml").read_bytes()


def test_paper_tables():
    columns, rows = paper_table("table1")
    assert columns[0] == "method" and columns[1:4] == ["clip_score", "t2i_color", "t2i_shape"]
    assert len(rows) == 11 and all(len(r) == len(columns) for r in rows)
    rlhf = next(r for r in rows if r[0] == "rlhf_sharpening")
    assert rlhf[1:3] == [0.338, 0.6841] and rlhf[-1] == 0.921
    columns, rows = paper_table("table3")
    assert columns == ["m", "clip_score", "image_reward", "mllm"]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "8"]
    data = yaml.safe_load(PAPER_FILE.read_text())
    assert rows[2][1:] == data["table3"]["rows"][3]
    with pytest.raises(ValueError, match="table4.*table1, table2, table3"):
        paper_table("table4")


def _result(**means) -> dict:
    return {"metrics": {k: {"mean": v, "std": 0.0, "ci95": 0.0, "n": 4} for k, v in means.items()}}


def test_compare_maps_metrics_and_computes_deltas():
    ours = _result(clip=0.340, t2i_color=0.70, imagereward=1.5, aesthetic=6.0)
    columns, rows = compare_with_paper({"rlhf-sharpening": ours}, "table1")
    assert columns[0] == "row" and "image_reward" in columns
    paper, mine, delta = rows
    assert paper[0] == "paper:rlhf_sharpening" and mine[0] == "ours:rlhf-sharpening"
    col = {name: i for i, name in enumerate(columns)}
    assert mine[col["clip_score"]] == 0.340 and mine[col["image_reward"]] == 1.5
    assert delta[col["clip_score"]] == pytest.approx(0.340 - 0.338)
    assert delta[col["t2i_color"]] == pytest.approx(0.70 - 0.6841)
    assert delta[col["aesthetic"]] == pytest.approx(6.0 - 5.956)
    for name in ("t2i_shape", "t2i_spatial", "mllm"):
        assert mine[col[name]] == MISSING and delta[col[name]] == MISSING


def test_reference_row_choice():
    ours = _result(clip=0.33, mllm=0.9)
    _, rows = compare_with_paper({"my run": ours}, "table1")
    assert rows[0][0] == "paper:sdxl"  # no matching name: the base model
    _, rows = compare_with_paper({"my run": ours}, "table1", match={"my run": "iterpo"})
    assert rows[0][0] == "paper:iterpo"
    _, rows = compare_with_paper({"x": {**ours, "paper_row": "ddpo"}}, "table1")
    assert rows[0][0] == "paper:ddpo"
    _, rows = compare_with_paper({"n=2": ours, "m8": ours}, "table2")
    assert [r[0] for r in rows[::3]] == ["paper:2", "paper:3"]  # "m8" is no n: default 3
    _, rows = compare_with_paper({"m8": ours}, "table3")
    assert rows[0][0] == "paper:8" and rows[2][1] == pytest.approx(0.33 - 0.321)
    with pytest.raises(ValueError, match="paper row 'dpo' not in table1"):
        compare_with_paper({"x": ours}, "table1", match={"x": "dpo"})
    with pytest.raises(ValueError, match="no result labelled y"):
        compare_with_paper({"x": ours}, "table1", match={"y": "sdxl"})


def test_untrained_rows_and_our_own_metrics():
    ours = {"metrics": {"shapes": {"mean": 0.29}, "clip": {"mean": 0.3}}}
    base = {"metrics": {"shapes": {"mean": 0.25}}, "untrained": True}
    columns, rows = compare_with_paper({"base": base, "n=2": ours}, "table2")
    assert columns == ["row", "clip_score", "image_reward", "mllm", "shapes"]
    assert rows[0] == ["paper:untrained", "-", "-", "-", "-"]  # no n for an untrained model
    assert rows[1] == ["ours:base", "-", "-", "-", 0.25]
    assert rows[3][0] == "paper:2" and rows[3][-1] == "-"
    assert rows[4][1] == 0.3 and rows[4][-1] == 0.29
    assert rows[5][1] == pytest.approx(0.3 - 0.336) and rows[5][-1] == "-"
    _, rows = compare_with_paper({"sdxl": base}, "table1")  # Table 1 has a base-model row
    assert rows[0][0] == "paper:sdxl"


def test_an_untrained_row_that_names_its_paper_row_is_compared_with_it():
    """A study's `train: false` row with `paper_row: 1` (documented, and validated when the
    study loads) is compared with the paper's n=1 row, not shown as untrained."""
    base = {"metrics": {"clip": {"mean": 0.31}}, "untrained": True, "paper_row": 1}
    _, rows = compare_with_paper({"base": base}, "table2")
    assert rows[0][0] == "paper:1" and rows[0][1] == pytest.approx(0.334)
    assert rows[2][1] == pytest.approx(0.31 - 0.334)
    _, rows = compare_with_paper(
        {"base": {**base, "paper_row": None}}, "table2", match={"base": "2"}
    )
    assert rows[0][0] == "paper:2"


def test_merge_and_missing_values_render_as_dash():
    from dsharp.report import to_csv, to_markdown

    t2i = {"metrics": {"t2i_color": {"mean": 0.6}, "t2i_complex": {"mean": None}}}
    rewards = _result(clip=0.32)
    columns, rows = compare_with_paper({"sdxl": merge_results([t2i, rewards])})
    col = {name: i for i, name in enumerate(columns)}
    assert rows[1][col["t2i_color"]] == 0.6 and rows[1][col["clip_score"]] == 0.32
    assert rows[1][col["t2i_complex"]] == MISSING  # null (NaN in JSON) is missing
    markdown = to_markdown(columns, rows)
    assert "| ours:sdxl | 0.3200 | 0.6000 | - |" in markdown
    assert "delta:sdxl,-0.002," in to_csv(columns, rows)


def test_a_result_compared_with_the_default_row_only_for_want_of_a_name_is_noted():
    from dsharp.bench.paper import default_reference_notes

    ours = {"metrics": {"clip": {"mean": 0.3}}}
    results = {"quickstart": ours, "ddpo": ours, "mine": {**ours, "paper_row": "d3po"}}
    assert default_reference_notes(results, "table1") == [
        "quickstart: no paper row of table1 is named 'quickstart', so it is compared with "
        "sdxl, the table's default row"
    ]
    table2 = {"n=2": ours, "run": ours, "base": {**ours, "untrained": True}}
    assert [n.split(":")[0] for n in default_reference_notes(table2, "table2")] == ["run"]
    assert default_reference_notes(table2, "table2", match={"run": "4"}) == []  # matched


def _clip_spec(scale: float | None) -> dict:
    options = {"model": "ViT-L-14", "pretrained": "openai"}
    if scale is not None:
        options["scale"] = scale
    return {"name": "clip", "weight": 1.0, "normalize": "none", "options": options}


def test_a_clip_score_recorded_with_scale_100_is_put_on_the_papers_plain_cosine():
    """The paper's reward code multiplied the cosine by 100 (the clip reward's scale: 100)
    while its Table 1 prints the plain cosine (0.338): the recorded scale is divided out
    rather than showing 33.8 beside 0.338 with a delta of 33.46."""
    scaled = {**_result(clip=33.8, imagereward=1.4), "reward_specs": {"clip": _clip_spec(100.0)}}
    plain = {**_result(clip=0.33), "reward_specs": {"clip": _clip_spec(None)}}
    columns, rows = compare_with_paper({"rlhf_sharpening": scaled, "sdxl": plain}, "table1")
    col = {name: i for i, name in enumerate(columns)}
    assert rows[1][col["clip_score"]] == pytest.approx(0.338)
    assert rows[2][col["clip_score"]] == pytest.approx(0.0)
    assert rows[1][col["image_reward"]] == 1.4  # other metrics unchanged
    assert rows[4][col["clip_score"]] == 0.33  # the default scale 1: as recorded


def test_merged_results_keep_each_metrics_own_reward_settings():
    """A folder's evaluations merged into one row: the clip score's scale is that of the
    file the score came from (the newest), not of an older file's."""
    old = {**_result(clip=33.0), "reward_specs": {"clip": _clip_spec(100.0)}}
    new = {**_result(clip=0.33), "reward_specs": {"clip": _clip_spec(1.0)}}
    t2i = {"metrics": {"t2i_color": {"mean": 0.6}}}
    assert merge_results([old, new, t2i])["reward_specs"] == {"clip": _clip_spec(1.0)}
    columns, rows = compare_with_paper({"sdxl": merge_results([new, old])})
    assert rows[1][columns.index("clip_score")] == pytest.approx(0.33)
    unrecorded = merge_results([old, _result(clip=0.31)])  # newest file records no settings
    assert unrecorded["reward_specs"] == {}
