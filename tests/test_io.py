"""Atomic writes leave a whole file with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dsharp import io


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_atomic_write_gives_the_umask_mode_not_mkstemps_owner_only(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_UMASK", 0o022)
    path = tmp_path / "eval.json"
    io.atomic_write_json(path, {"overall": 0.5})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    monkeypatch.setattr(io, "_UMASK", 0o077)
    io.atomic_write_text(path, "again\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "again\n"
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temp file left


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_saved_images_get_the_umask_mode_too(tmp_path, monkeypatch):
    import torch

    from dsharp.sampling import save_images

    monkeypatch.setattr(io, "_UMASK", 0o022)
    (path,) = save_images(torch.rand(1, 3, 4, 4), tmp_path, ["a"])
    assert path.name == "a.png" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_replace_directory_swaps_in_the_new_folder_and_leaves_nothing_beside(tmp_path):
    final, tmp = tmp_path / "step-000010", tmp_path / ".step-000010.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    io.replace_directory(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-000010"]


def test_a_figure_that_fails_to_draw_is_closed(tmp_path, monkeypatch):
    plt = io.pyplot()
    fig, _ = plt.subplots()
    before = len(plt.get_fignums())

    def broken(*args, **kwargs):
        raise RuntimeError("no font")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="no font"):
        io.atomic_save_png(fig, tmp_path / "curves.png")
    assert len(plt.get_fignums()) == before - 1
    assert not (tmp_path / "curves.png").exists()


def test_a_folder_lock_refuses_a_second_holder_until_the_first_lets_go(tmp_path):
    first = io.hold_folder_lock(tmp_path, "output_dir")
    with pytest.raises(RuntimeError) as err:
        io.hold_folder_lock(tmp_path, "output_dir")
    assert str(err.value) == (
        f"output_dir {tmp_path}: another dsharp process is writing to it; wait for it to "
        "finish, or choose another folder"
    )
    first.close()
    io.hold_folder_lock(tmp_path, "output_dir").close()


def test_train_refuses_a_run_folder_another_process_is_writing(tmp_path, tiny_sd_dir):
    from typer.testing import CliRunner

    from dsharp.cli import app

    run = tmp_path / "run"
    run.mkdir()
    held = io.hold_folder_lock(run, "output_dir")  # as a training process would
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    args = ["train", str(recipe), f"model.pretrained={tiny_sd_dir}", f"output_dir={run}"]
    result = CliRunner().invoke(app, [*args, "train.max_steps=1", "eval.bench=null"])
    held.close()
    assert result.exit_code == 1, result.output
    assert "another dsharp process is writing to it" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == [io.LOCK_FILE]  # nothing else written
