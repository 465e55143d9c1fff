"""Outputs written as a set of files (compare's md/csv/png, a study's table or figure) are
never left half old, half new: a full disk while one is written leaves all of them as they
were, in one line naming the file and what is still the previous version."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp import compare_plot
from dsharp.cli import app
from dsharp.file_records import RECORD_NAME
from dsharp.io import naming
from study_files import write_study


def _evaluation(overall: float) -> dict:
    """An evaluation as `dsharp eval` records it, cut to what compare reads."""
    return {
        "rewards": ["shapes"],
        "overall": overall,
        "n_images": 1,
        "n_scored": 1,
        "n_prompts": 1,
        "seeds": [0],
        "metrics": {"shapes": {"mean": overall, "std": 0.0, "ci95": 0.0, "n": 1}},
        "nfe_per_image": 5.0,
        "sample": {"method": "default", "steps": 5, "guidance": 5.0, "eta": 0.0},
        "images": [{"prompt": "a red square", "seed": 0, "score": overall}],
    }


def _compare(tmp_path: Path, overall: float, *flags: str):
    sources = []
    for name, value in (("base", 0.25), ("tuned", overall)):
        sources.append(tmp_path / f"{name}.json")
        sources[-1].write_text(json.dumps(_evaluation(value)))
    args = ["compare", *map(str, sources), "--out", str(tmp_path / "cmp"), *flags]
    return CliRunner().invoke(app, args)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _failing_png(monkeypatch: pytest.MonkeyPatch, module, error: BaseException | None = None):
    """The PNG writer of ``module`` fails as on a full disk (or raises ``error``)."""

    def save(fig, path, dpi=120):
        if error is not None:
            raise error
        raise naming(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), Path(path))

    monkeypatch.setattr(module, "atomic_save_png", save)


def test_compare_that_cannot_write_its_plot_keeps_the_previous_table_too(tmp_path, monkeypatch):
    assert _compare(tmp_path, 0.5).exit_code == 0
    before = _files(tmp_path / "cmp")
    assert sorted(before) == ["compare.csv", "compare.md", "compare.png"]

    _failing_png(monkeypatch, compare_plot)
    result = _compare(tmp_path, 0.75)
    assert result.exit_code == 1
    out = tmp_path / "cmp"
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: [Errno 28] No space left on device: '{out / 'compare.png'}'; compare.png, "
        "compare.csv and compare.md are still the previous versions"
    )
    assert _files(out) == before  # no new table beside the old plot, no temp file


def test_compare_stopped_by_ctrl_c_while_drawing_leaves_no_temp_file(tmp_path, monkeypatch):
    assert _compare(tmp_path, 0.5).exit_code == 0
    before = _files(tmp_path / "cmp")
    _failing_png(monkeypatch, compare_plot, KeyboardInterrupt())
    assert _compare(tmp_path, 0.75).exit_code != 0
    assert _files(tmp_path / "cmp") == before


def test_compare_without_a_plot_removes_the_previous_one(tmp_path):
    """An older compare.png beside the new table would pass for its plot."""
    assert _compare(tmp_path, 0.5).exit_code == 0
    result = _compare(tmp_path, 0.75, "--no-plot")
    assert result.exit_code == 0, result.output
    assert sorted(_files(tmp_path / "cmp")) == ["compare.csv", "compare.md"]


def _table_study(tmp_path: Path) -> Path:
    rows = [{"label": "base", "train": False}, {"label": "tuned"}]
    return write_study(
        tmp_path, rows, name="mine", evaluate={"bench": "shapes", "limit": 1, "seeds": 1}
    )


def _failing_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text writer fails as on a full disk for a CSV file."""
    from dsharp import io

    real = io.atomic_write_text

    def write(path, text):
        if ".csv." in Path(path).name or Path(path).suffix == ".csv":
            raise naming(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), Path(path))
        real(path, text)

    monkeypatch.setattr(io, "atomic_write_text", write)


def test_reproduce_that_cannot_write_its_csv_keeps_the_previous_table_md(tmp_path, monkeypatch):
    from dsharp.study import load_study
    from study_rows import finish_rows

    study = _table_study(tmp_path)
    loaded = load_study(study)
    finish_rows(loaded, result=lambda i, plan: _evaluation(0.25 + i / 4))
    run = ["reproduce", str(study), "--no-progress"]
    assert CliRunner().invoke(app, run).exit_code == 0
    out = tmp_path / "out"
    before = {n: (out / n).read_bytes() for n in ("table.md", "table.csv")}

    for plan in loaded.rows:  # a row evaluated again since, with another score
        doc = json.loads((plan.run_dir / "eval.json").read_text())
        (plan.run_dir / "eval.json").write_text(json.dumps({**doc, "overall": 0.9}))
    _failing_csv(monkeypatch)
    result = CliRunner().invoke(app, run)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: [Errno 28] No space left on device: '{out / 'table.csv'}'; table.csv and "
        "table.md are still the previous versions"
    )
    assert {n: (out / n).read_bytes() for n in before} == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_figure_whose_csv_cannot_be_written_keeps_the_previous_png(tmp_path, monkeypatch):
    from dsharp.study import PlotSpec
    from dsharp.study_outputs import plot_nfe

    png, csv_path = tmp_path / "f.png", tmp_path / "f.csv"
    spec = PlotSpec(x="nfe", y="overall")
    plot_nfe([("DDIM", "DDIM", _evaluation(0.25))], spec, "Figure 5", png, csv_path)
    before = _files(tmp_path)
    _failing_csv(monkeypatch)
    with pytest.raises(OSError, match="; f.csv and f.png are still the previous versions$"):
        plot_nfe([("DDIM", "DDIM", _evaluation(0.75))], spec, "Figure 5", png, csv_path)
    assert _files(tmp_path) == before


@pytest.fixture
def stand_in_sampler(monkeypatch):
    """`dsharp sample` without a model: random images, as many as asked for."""
    import torch

    import dsharp.commands.common as common
    import dsharp.generate as generate_module

    def generate(model, prompts, seeds, settings, **kwargs):
        return generate_module.Generated(torch.rand(len(prompts), 3, 8, 8), 4.0, None)

    monkeypatch.setattr(common, "load_model_for_inference", lambda *args: None)
    monkeypatch.setattr(generate_module, "generate", generate)


def test_sample_that_cannot_write_its_grid_keeps_the_previous_images(
    tmp_path, monkeypatch, stand_in_sampler
):
    from dsharp import sheets

    out = tmp_path / "out"
    args = ["sample", "--model", "dsharp-mini", "-p", "a red circle", "-n", "2", "--out"]
    assert CliRunner().invoke(app, [*args, str(out)]).exit_code == 0
    before = _files(out)  # with the record of what dsharp wrote there
    assert len(before) == 4 and "grid.png" in before and RECORD_NAME in before

    _failing_png(monkeypatch, sheets)
    result = CliRunner().invoke(app, [*args, str(out)])
    assert result.exit_code == 1
    images = sorted(n for n in before if n not in ("grid.png", RECORD_NAME))
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: [Errno 28] No space left on device: '{out / 'grid.png'}'; {images[0]}, "
        f"{images[1]} and grid.png are still the previous versions"
    )
    assert _files(out) == before  # not new images beside the old grid


def test_sample_without_a_grid_removes_the_previous_one(tmp_path, stand_in_sampler):
    """An older grid.png beside new images would pass for their grid (as compare --no-plot
    removes an older compare.png)."""
    out = tmp_path / "out"
    args = ["sample", "--model", "dsharp-mini", "-p", "a red circle", "-n", "2", "--out"]
    assert CliRunner().invoke(app, [*args, str(out)]).exit_code == 0
    assert "grid.png" in _files(out)
    result = CliRunner().invoke(app, [*args, str(out), "--no-grid"])
    assert result.exit_code == 0, result.output
    assert sorted(_files(out)) == [
        RECORD_NAME,
        "0000-seed0-a-red-circle.png",
        "0001-seed1-a-red-circle.png",
    ]


def test_an_evaluation_that_cannot_write_its_sheet_keeps_the_previous_images(tmp_path, monkeypatch):
    """`dsharp eval --images`: the images and grid.png as one set."""
    import torch

    import dsharp.evaluate as evaluate_module
    from dsharp import sheets
    from dsharp.config import RewardSpec
    from dsharp.generate import Generated

    def stand_in(model, prompts, seeds, settings, **kwargs):
        return Generated(torch.rand(len(prompts), 3, 8, 8), 5.0)

    monkeypatch.setattr(evaluate_module, "generate", stand_in)
    kept, specs = tmp_path / "kept", [RewardSpec(name="shapes")]
    evaluate_module.evaluate(None, ["a red square"], specs, num_seeds=2, images_dir=kept)
    before = _files(kept)
    assert sorted(before) == [RECORD_NAME, "00000-seed0.png", "00001-seed1.png", "grid.png"]

    _failing_png(monkeypatch, sheets)
    with pytest.raises(OSError) as caught:
        evaluate_module.evaluate(None, ["a red square"], specs, num_seeds=2, images_dir=kept)
    assert str(caught.value) == (
        f"[Errno 28] No space left on device: '{kept / 'grid.png'}'; 00000-seed0.png, "
        "00001-seed1.png and grid.png are still the previous versions"
    )
    assert _files(kept) == before


def test_an_evaluation_that_cannot_write_its_json_keeps_the_previous_images(
    tmp_path, monkeypatch, stand_in_sampler
):
    """`dsharp eval --out X --images D`: the result was written after the images and grid,
    alone, so a full disk then left new images beside the previous result."""
    import dsharp.evaluate as evaluate_module
    import dsharp.generate as generate_module
    from dsharp import io

    monkeypatch.setattr(evaluate_module, "generate", generate_module.generate)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n")
    result_json, kept = tmp_path / "eval.json", tmp_path / "kept"
    args = ["eval", "--model", "dsharp-mini", "--prompts", str(prompts), "--reward", "shapes"]
    args += ["--seeds", "2", "--out", str(result_json), "--images", str(kept)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    before = {**_files(kept), "eval.json": result_json.read_bytes()}
    assert sorted(before) == [
        RECORD_NAME,
        "00000-seed0.png",
        "00001-seed1.png",
        "eval.json",
        "grid.png",
    ]

    real = io.atomic_write_text

    def write(path, text):
        if Path(path).name == "eval.json" or ".eval.json." in Path(path).name:
            raise naming(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), Path(path))
        real(path, text)

    monkeypatch.setattr(io, "atomic_write_text", write)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: [Errno 28] No space left on device: '{result_json}'; "
        f"{kept / '00000-seed0.png'}, {kept / '00001-seed1.png'}, {kept / 'grid.png'} and "
        "eval.json are still the previous versions"
    )
    assert {**_files(kept), "eval.json": result_json.read_bytes()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sample_again_in_its_folder_leaves_only_the_new_images_and_the_users(
    tmp_path, stand_in_sampler
):
    """A rerun with fewer prompts (or seeds) used to leave the first one's other images
    beside the new ones, where they passed for this run's; a file dsharp did not write
    stays, and is named in a note."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.png").write_bytes(b"the user's")
    args = ["sample", "--model", "dsharp-mini", "-p", "a red circle"]
    more = ["-p", "a blue square", "-n", "2"]
    assert CliRunner().invoke(app, [*args, *more, "--out", str(out)]).exit_code == 0
    assert len(_files(out)) == 7  # 4 images, the grid, the record, the user's
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(_files(out)) == [
        RECORD_NAME,
        "0000-seed0-a-red-circle.png",
        "grid.png",
        "mine.png",
    ]
    assert (out / "mine.png").read_bytes() == b"the user's"
    assert result.stderr.strip().splitlines() == [
        f"note: {out} also holds 1 other PNG file this command did not write (kept): mine.png"
    ]


def test_another_sample_in_the_same_folder_keeps_the_earlier_ones_images(
    tmp_path, stand_in_sampler
):
    """Two samples of other prompts into one folder (the default ``samples``): the second
    rewrites none of the first's images, which are another run's, not stale ones of its
    own; they are kept (they were removed, unsaid) and named in the note."""
    out = tmp_path / "out"
    first = ["sample", "--model", "dsharp-mini", "-p", "a red circle", "-n", "2"]
    assert CliRunner().invoke(app, [*first, "--out", str(out)]).exit_code == 0
    earlier = {n: b for n, b in _files(out).items() if "red-circle" in n}
    assert len(earlier) == 2
    second = ["sample", "--model", "dsharp-mini", "-p", "a green star", "--out", str(out)]
    result = CliRunner().invoke(app, second)
    assert result.exit_code == 0, result.output
    assert {n: b for n, b in _files(out).items() if "red-circle" in n} == earlier
    assert "0000-seed0-a-green-star.png" in _files(out)
    assert result.stderr.strip().splitlines() == [
        f"note: {out} also holds 2 other PNG files this command did not write (kept): "
        "0000-seed0-a-red-circle.png, 0001-seed1-a-red-circle.png"
    ]


def test_eval_with_fewer_seeds_in_the_same_images_folder_leaves_only_its_images(
    tmp_path, monkeypatch, stand_in_sampler
):
    import dsharp.evaluate as evaluate_module
    import dsharp.generate as generate_module

    monkeypatch.setattr(evaluate_module, "generate", generate_module.generate)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n")
    kept = tmp_path / "kept"
    args = ["eval", "--model", "dsharp-mini", "--prompts", str(prompts), "--reward", "shapes"]
    args += ["--out", str(tmp_path / "eval.json"), "--images", str(kept), "--seeds"]
    assert CliRunner().invoke(app, [*args, "4"]).exit_code == 0
    assert len(_files(kept)) == 6
    result = CliRunner().invoke(app, [*args, "2"])
    assert result.exit_code == 0, result.output
    assert sorted(_files(kept)) == [RECORD_NAME, "00000-seed0.png", "00001-seed1.png", "grid.png"]
    assert "note:" not in result.stderr
