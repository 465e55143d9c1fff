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
from dsharp.io import naming


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
