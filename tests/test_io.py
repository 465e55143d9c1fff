"""Atomic writes leave a whole file with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat

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


def _folder(path, text):
    path.mkdir()
    (path / "file.txt").write_text(text)
    return path


def test_a_replace_after_a_kill_between_its_renames_deletes_the_copy_aside(tmp_path):
    """Killed between the renames, the previous ``merged`` is aside and ``merged`` missing:
    the next write puts its new folder in place and leaves nothing beside it (the copy
    aside stayed for good before)."""
    final = tmp_path / "merged"
    _folder(tmp_path / ".merged.old", "old")
    io.replace_directory(_folder(tmp_path / ".merged.new", "new"), final)
    assert (final / "file.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_a_write_puts_a_folder_aside_back_before_it_can_fail(tmp_path):
    """The copy aside is the folder's only whole one: a write of it that fails (a full disk)
    must leave it as the previous version, not delete it nor leave nothing under its name."""
    final = tmp_path / "merged"
    _folder(io.aside_name(final), "old")
    with pytest.raises(OSError), io.atomic_directory(final) as tmp:
        (tmp / "file.txt").write_text("new")
        raise OSError(28, "No space left on device")
    assert (final / "file.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_restore_replaced_leaves_a_folder_aside_beside_its_final_alone(tmp_path):
    """With ``final`` in place the copy aside is the older one: never put back over it."""
    final = _folder(tmp_path / "merged", "new")
    _folder(io.aside_name(final), "old")
    assert io.restore_replaced(final) is False
    assert (final / "file.txt").read_text() == "new"


def test_a_discard_killed_part_way_leaves_nothing_under_the_folders_name(tmp_path, monkeypatch):
    """The copy aside is renamed away before its delete: killed during that delete, no
    half-deleted ``.NAME.old`` is left to be put back as whole; the next replace of the
    same folder deletes the rest."""
    final = _folder(tmp_path / "merged", "old")
    real_rmtree = io.shutil.rmtree

    def killed(path, ignore_errors=False):
        if path.name.endswith(".deleting") and path.exists():
            (path / "file.txt").unlink()
            raise KeyboardInterrupt  # stands for the kill: nothing after it runs
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(io.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        io.replace_directory(_folder(tmp_path / ".merged.new", "new"), final)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".merged.old.deleting", "merged"]
    io.replace_directory(_folder(tmp_path / ".merged.new", "newer"), final)
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]
    assert (final / "file.txt").read_text() == "newer"


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


def test_sync_file_fsyncs_what_append_jsonl_wrote_and_skips_a_missing_file(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(io.os, "fsync", synced.append)
    io.append_jsonl(tmp_path / "metrics.jsonl", {"step": 1})
    io.append_jsonl(tmp_path / "metrics.jsonl", {"step": 2, "loss": float("nan")})
    assert synced == []  # appending alone does not sync
    io.sync_file(tmp_path / "metrics.jsonl")
    assert len(synced) == 1
    io.sync_file(tmp_path / "absent.jsonl")
    assert len(synced) == 1
    assert io.read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1}, {"step": 2, "loss": None}]


def test_a_checkpoint_is_on_disk_before_the_file_that_marks_it_whole(tmp_path, monkeypatch):
    """Libraries write the weights and optimizer state without fsync; after a power cut,
    resume must not trust a checkpoint whose trainer_state.json outlived its weights."""
    from dsharp import checkpoints

    synced = []

    def fsync(fd):
        synced.append(os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), tmp_path))

    tmp = checkpoints.temp_checkpoint_dir(tmp_path, 3)
    (tmp / "model").mkdir(parents=True)
    (tmp / "model" / "weights.safetensors").write_bytes(b"w")
    (tmp / "optimizer.bin").write_bytes(b"o")
    monkeypatch.setattr(io.os, "fsync", fsync)
    final = checkpoints.finalize_checkpoint(tmp_path, 3, {"step": 3}, keep=None)
    assert final == tmp_path / "checkpoints" / "step-000003"
    marker = synced.index(next(p for p in synced if "trainer_state.json" in p))  # its temp file
    before = set(synced[:marker])
    tmp_name = "checkpoints/.step-000003.tmp"
    assert {f"{tmp_name}/model/weights.safetensors", f"{tmp_name}/optimizer.bin"} <= before
    assert {tmp_name, f"{tmp_name}/model"} <= before  # the folders' entries too
    assert synced[-1] == "checkpoints"  # the rename itself, before the step is reported


def test_read_jsonl_drops_a_torn_last_line_and_names_damage_a_crash_cannot_leave(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"st')
    assert io.read_jsonl(path) == [{"step": 1}, {"step": 2}]  # a crash mid-append
    for text, problem in [
        ('{"step": 1}\n{"st\n{"step": 3}\n', "line 2 is not JSON"),
        ('{"step": 1}\n42\n', "line 2 is not a JSON object"),
        ("[]\n", "line 1 is not a JSON object"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=f"^{path}: {problem}$"):
            io.read_jsonl(path)
    path.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match=f"^{path}: not UTF-8 text$"):
        io.read_jsonl(path)


def test_a_folder_that_cannot_be_synced_does_not_stop_a_checkpoint(tmp_path, monkeypatch):
    """Windows cannot open a folder and some network file systems refuse its fsync; the
    files are synced all the same."""
    from dsharp import checkpoints

    synced = []

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            raise OSError(22, "Invalid argument")
        synced.append(os.path.basename(path))

    tmp = checkpoints.temp_checkpoint_dir(tmp_path, 1)
    tmp.mkdir(parents=True)
    (tmp / "optimizer.bin").write_bytes(b"o")
    monkeypatch.setattr(io.os, "fsync", fsync)
    final = checkpoints.finalize_checkpoint(tmp_path, 1, {"step": 1}, keep=None)
    assert (final / "trainer_state.json").is_file() and "optimizer.bin" in synced


def test_atomic_directory_syncs_what_libraries_wrote_before_the_rename(tmp_path, monkeypatch):
    """save_pretrained and save_file write without fsync: a power cut after the rename must
    not leave a merged model folder whose weights were still in the page cache."""
    events: list[str] = []
    monkeypatch.setattr(io, "sync_file", lambda path: events.append(f"sync {path.name}"))
    real_replace = os.replace
    monkeypatch.setattr(
        io.os, "replace", lambda a, b: (events.append(f"rename {a.name}"), real_replace(a, b))
    )
    with io.atomic_directory(tmp_path / "merged") as tmp:
        (tmp / "model").mkdir()
        (tmp / "model" / "weights.safetensors").write_bytes(b"w")  # as a library writes
    renamed = next(i for i, e in enumerate(events) if e.startswith("rename .merged."))
    assert events.index("sync weights.safetensors") < renamed
    assert (tmp_path / "merged" / "model" / "weights.safetensors").read_bytes() == b"w"


def test_an_imagereward_save_that_fails_half_way_leaves_no_model_folder(tmp_path, monkeypatch):
    """A folder with the config but cut-off weights looked like a saved model."""
    import safetensors.torch

    from dsharp.rewards.imagereward import save_imagereward
    from dsharp.testing.tiny_rewards import make_tiny_imagereward

    # saved whole (which imports the libraries that keep their own save_file), and again
    assert make_tiny_imagereward(tmp_path / "whole") == make_tiny_imagereward(tmp_path / "whole")
    assert (tmp_path / "whole" / "model" / "imagereward.json").is_file()
    real = safetensors.torch.save_file

    def cut_off(state, path, *args, **kwargs):
        if not str(path).startswith(str(tmp_path / "cut")):
            return real(state, path, *args, **kwargs)
        with open(path, "wb") as fh:
            fh.write(b"\0" * 100)
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", cut_off)
    with pytest.raises(OSError, match="No space left"):
        make_tiny_imagereward(tmp_path / "cut")
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["tokenizer"]  # no model
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):  # replaced whole: refused
        save_imagereward(None, None, tmp_path / "other")  # type: ignore[arg-type]


def test_a_file_or_folder_with_a_long_name_is_written(tmp_path):
    """Their temp files' names add the writer's token (~40 bytes) to the name: a file or
    merged model folder with a 240-byte name (the limit is 255) failed as 'too long'."""
    name = "m" * 240
    io.atomic_write_text(tmp_path / f"{name}.txt", "text")
    with io.atomic_directory(tmp_path / name) as tmp:
        (tmp / "weights.bin").write_bytes(b"w")
    assert (tmp_path / f"{name}.txt").read_text() == "text"
    assert (tmp_path / name / "weights.bin").read_bytes() == b"w"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name}.txt"])


def test_a_folder_with_a_name_near_the_limit_is_written(tmp_path):
    """A name of 251-255 bytes has no room for an older dsharp's ``.NAME.tmp`` beside it:
    looking for one said 'File name too long' before the folder was written."""
    name = "m" * 253
    with io.atomic_directory(tmp_path / name) as tmp:
        (tmp / "weights.bin").write_bytes(b"w")
    assert (tmp_path / name / "weights.bin").read_bytes() == b"w"
    assert [p.name for p in tmp_path.iterdir()] == [name]
