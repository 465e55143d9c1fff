"""A set of files dsharp names for itself in a folder it shares with the user (sample's
images, eval --images) is recorded there: a new set removes the files of the earlier one it
does not rewrite, never a file dsharp did not write (or that was changed since), and a full
disk or a Ctrl-C leaves the whole earlier set."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from dsharp.file_records import RECORD_NAME
from dsharp.file_sets import FileSetError, replaced_together
from dsharp.io import atomic_write_text, naming


def _write(folder: Path, names: list[str], text: str = "run") -> None:
    files = [folder / n for n in names]
    with replaced_together(*files, recorded=files) as staged:
        for path in files:
            atomic_write_text(staged(path), f"{text} {path.name}")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_smaller_set_removes_the_earlier_sets_other_files_and_keeps_the_users(tmp_path):
    (tmp_path / "mine.png").write_text("the user's")
    _write(tmp_path, ["0.png", "1.png", "2.png", "grid.png"])
    _write(tmp_path, ["0.png", "grid.png"], "second")
    assert _names(tmp_path) == [RECORD_NAME, "0.png", "grid.png", "mine.png"]
    assert (tmp_path / "0.png").read_text() == "second 0.png"
    assert (tmp_path / "mine.png").read_text() == "the user's"


def test_a_file_changed_since_dsharp_wrote_it_is_kept(tmp_path):
    _write(tmp_path, ["0.png", "1.png"])
    (tmp_path / "1.png").write_text("edited by the user")
    _write(tmp_path, ["0.png"], "second")
    assert _names(tmp_path) == [RECORD_NAME, "0.png", "1.png"]
    assert (tmp_path / "1.png").read_text() == "edited by the user"


def test_a_record_naming_files_outside_its_folder_removes_nothing(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    outside = tmp_path / "keep.png"
    outside.write_text("x")
    from dsharp.file_records import digest

    record = {"files": {"../keep.png": digest(outside), str(outside): digest(outside)}}
    (folder / RECORD_NAME).write_text(json.dumps(record))
    _write(folder, ["0.png"])
    assert outside.read_text() == "x"
    (folder / RECORD_NAME).write_text("{damaged")  # unreadable: nothing known, none removed
    (folder / "1.png").write_text("old")
    _write(folder, ["0.png"])
    assert _names(folder) == [RECORD_NAME, "0.png", "1.png"]


@pytest.mark.parametrize("stop", ["full disk", "ctrl-c"])
def test_a_full_disk_or_ctrl_c_leaves_the_whole_earlier_set(tmp_path, stop):
    _write(tmp_path, ["0.png", "1.png", "2.png", "grid.png"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    files = [tmp_path / "0.png", tmp_path / "grid.png"]
    error = FileSetError if stop == "full disk" else KeyboardInterrupt
    with pytest.raises(error), replaced_together(*files, recorded=files) as staged:
        atomic_write_text(staged(files[0]), "new")
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        raise naming(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), staged(files[1]))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_record_that_cannot_be_written_leaves_the_earlier_set_and_is_named(tmp_path, monkeypatch):
    from dsharp import io

    _write(tmp_path, ["0.png", "1.png"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = io.atomic_write_text

    def write(path, text):
        if RECORD_NAME in Path(path).name:
            raise naming(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), Path(path))
        real(path, text)

    monkeypatch.setattr(io, "atomic_write_text", write)
    with pytest.raises(FileSetError) as caught:
        _write(tmp_path, ["0.png"], "second")
    assert str(caught.value) == (
        f"[Errno 28] No space left on device: '{tmp_path / RECORD_NAME}'; 0.png is still "
        "the previous version"
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_recorded_files_must_be_of_the_set_in_one_folder(tmp_path):
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a.png", tmp_path / "b" / "b.png"
    with pytest.raises(ValueError), replaced_together(a, b, recorded=[a, b]):
        pass
    with pytest.raises(ValueError), replaced_together(a, recorded=[b]):
        pass
    with pytest.raises(ValueError), replaced_together(a, recorded=[a]) as staged:
        staged(tmp_path / RECORD_NAME)  # the record is the set's own, not the caller's


def test_a_set_that_rewrites_none_of_the_earlier_ones_files_keeps_them(tmp_path):
    """Another run's set (other prompts or seeds), not a rerun: its files are not stale."""
    _write(tmp_path, ["0-cat.png", "1-cat.png"])
    _write(tmp_path, ["0-dog.png"], "second")
    assert _names(tmp_path) == [RECORD_NAME, "0-cat.png", "0-dog.png", "1-cat.png"]
    _write(tmp_path, ["0-dog.png", "1-dog.png"], "third")  # the cats: no longer recorded
    _write(tmp_path, ["0-dog.png"], "fourth")  # a rerun of the dogs: only its 1-dog.png goes
    assert _names(tmp_path) == [RECORD_NAME, "0-cat.png", "0-dog.png", "1-cat.png"]


def test_a_file_of_the_set_that_is_not_recorded_is_never_removed_as_stale(tmp_path):
    """A record naming the set's result or sheet (an older record, or one edited by hand)
    must not remove the new file just renamed into place."""
    from dsharp.file_records import digest

    (tmp_path / "eval.json").write_text("old")
    _write(tmp_path, ["0.png"])
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    record["files"]["eval.json"] = digest(tmp_path / "eval.json")
    (tmp_path / RECORD_NAME).write_text(json.dumps(record))
    image, result = tmp_path / "0.png", tmp_path / "eval.json"
    with replaced_together(image, result, recorded=[image]) as staged:
        atomic_write_text(staged(image), "new image")
        atomic_write_text(staged(result), "old")  # the same bytes as the recorded one
    assert result.read_text() == "old" and image.read_text() == "new image"
