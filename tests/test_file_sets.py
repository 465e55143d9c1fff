"""Files read together are replaced together (dsharp.file_sets): a full disk or a Ctrl-C
while they are written leaves every one as it was, says which file failed and what is
still the previous version, and leaves no temp file behind."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dsharp.file_sets import FileSetError, replaced_together
from dsharp.io import atomic_write_text, naming


def _full(path: Path) -> OSError:
    """What an atomic writer raises for a full disk: the error, naming the file."""
    return naming(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)


def _folder(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())}


def _old_set(tmp_path: Path) -> tuple[Path, Path, Path]:
    """a.csv, b.png and c.md in ``tmp_path``, each holding "old"."""
    files = tmp_path / "a.csv", tmp_path / "b.png", tmp_path / "c.md"
    for p in files:
        p.write_text("old")
    return files


def _rename_fails_at(
    monkeypatch: pytest.MonkeyPatch, target: Path, before: Callable[[], None] = lambda: None
) -> None:
    """``os.replace`` onto ``target`` fails with EIO (after ``before()``); others rename."""
    real = os.replace

    def replace(src, dst):
        if Path(dst) == target:
            before()
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_set_replaces_every_file_and_removes_a_member_not_written_this_time(tmp_path):
    a, b, c = _old_set(tmp_path)
    with replaced_together(a, b, c) as staged:
        atomic_write_text(staged(a), "new a")
        atomic_write_text(staged(c), "new c")
    assert _folder(tmp_path) == {"a.csv": b"new a", "c.md": b"new c"}  # old b.png: gone


def test_a_full_disk_leaves_the_set_as_it_was_and_says_so(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.png", tmp_path / "c.md"
    a.write_text("old a")
    c.write_text("old c")
    with pytest.raises(FileSetError) as caught, replaced_together(a, b, c) as staged:
        atomic_write_text(staged(a), "new a")
        raise _full(staged(b))
    assert str(caught.value) == (
        f"[Errno 28] No space left on device: '{b}'; a.csv and c.md are still the previous "
        "versions; b.png not written"
    )
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(b)
    assert _folder(tmp_path) == {"a.csv": b"old a", "c.md": b"old c"}


def test_a_ctrl_c_while_writing_leaves_no_temp_file(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.md"
    a.write_text("old a")
    with pytest.raises(KeyboardInterrupt), replaced_together(a, b) as staged:
        atomic_write_text(staged(a), "new a")
        raise KeyboardInterrupt
    assert _folder(tmp_path) == {"a.csv": b"old a"}


def test_a_rename_that_fails_midway_says_which_files_are_new(tmp_path, monkeypatch):
    a, b, c = _old_set(tmp_path)
    _rename_fails_at(monkeypatch, b)
    with pytest.raises(FileSetError) as caught, replaced_together(a, b, c) as staged:
        for p in (a, b, c):
            atomic_write_text(staged(p), "new")
    assert str(caught.value) == (
        f"[Errno 5] Input/output error: '{b}'; a.csv replaced; b.png and c.md are still the "
        "previous versions"
    )
    assert _folder(tmp_path) == {"a.csv": b"new", "b.png": b"old", "c.md": b"old"}


def test_a_path_outside_the_set_is_refused(tmp_path):
    with (
        pytest.raises(ValueError, match="not one of this set's files"),
        replaced_together(tmp_path / "a.md") as staged,
    ):
        staged(tmp_path / "b.md")


def test_a_full_disk_in_a_folder_written_whole_names_its_file_and_keeps_the_old_folder(tmp_path):
    """`dsharp merge`'s output folder: the temp folder's name meant nothing, and it is gone."""
    from dsharp.io import atomic_directory

    final = tmp_path / "merged"
    final.mkdir()
    (final / "recipe.yaml").write_text("old")
    with pytest.raises(FileSetError) as caught, atomic_directory(final) as tmp:
        atomic_write_text(tmp / "recipe.yaml", "new")
        (tmp / "unet").mkdir()
        raise _full(tmp / "unet" / "w.safetensors")
    assert str(caught.value) == (
        f"[Errno 28] No space left on device: '{final / 'unet' / 'w.safetensors'}'; merged is "
        "still the previous version"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temp folder
    assert (final / "recipe.yaml").read_text() == "old"


def test_a_ctrl_c_while_the_files_are_renamed_comes_after_the_last_one(tmp_path, monkeypatch):
    """With another thread running (torch's, tqdm's), a blocked signal mask did not hold
    Ctrl-C back: the kernel hands the signal to that thread, and Python raised it in the
    main thread between two renames, leaving a new file beside an old one."""
    import signal
    import threading
    import time

    a, b, c = _old_set(tmp_path)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if Path(dst) == a:  # Ctrl-C after the first rename, then time for it to arrive
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)

    monkeypatch.setattr(os, "replace", replace)
    try:
        with pytest.raises(KeyboardInterrupt), replaced_together(a, b, c) as staged:
            for p in (a, b, c):
                atomic_write_text(staged(p), "new")
    finally:
        stop.set()
    assert _folder(tmp_path) == {"a.csv": b"new", "b.png": b"new", "c.md": b"new"}


def test_a_file_named_twice_is_replaced_once(tmp_path):
    """A repeated path made the second rename fail on its moved staged file ("a.png and
    g.png replaced; a.png is still the previous version") after every file was replaced."""
    a, g = tmp_path / "a.png", tmp_path / "g.png"
    a.write_text("old")
    with replaced_together(a, g, Path(str(a))) as staged:
        atomic_write_text(staged(a), "new")
        atomic_write_text(staged(g), "g")
    assert _folder(tmp_path) == {"a.png": b"new", "g.png": b"g"}


def test_a_set_written_off_the_main_thread_is_replaced(tmp_path):
    """Python's signal handlers can be set from the main thread alone: off it the renames
    run without one (KeyboardInterrupt is raised in the main thread only)."""
    import threading

    a = tmp_path / "a.md"
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with replaced_together(a) as staged:
                atomic_write_text(staged(a), "new")
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    worker = threading.Thread(target=write)
    worker.start()
    worker.join()
    assert errors == []
    assert _folder(tmp_path) == {"a.md": b"new"}


def test_a_file_set_error_survives_pickling(tmp_path):
    """A process pool sends a worker's exception back pickled: the error failed to unpickle
    ("'int' object has no attribute 'errno'") and the caller got that instead."""
    import pickle

    a = tmp_path / "a.md"
    with pytest.raises(FileSetError) as caught, replaced_together(a) as staged:
        raise _full(staged(a))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is FileSetError
    assert (str(copy), copy.errno, copy.filename) == (
        str(caught.value),
        errno.ENOSPC,
        str(a),
    )


def test_a_ctrl_c_before_the_renames_are_held_leaves_no_temp_file(tmp_path, monkeypatch):
    """Between the block's end and the Ctrl-C hold (the staged files looked at, the handler
    read) a Ctrl-C bypassed the cleanup and left `.a.csv.TOKEN.tmp` behind."""
    import signal

    a = tmp_path / "a.csv"
    a.write_text("old a")

    def ctrl_c(signum):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), replaced_together(a) as staged:
        atomic_write_text(staged(a), "new a")
        monkeypatch.setattr(signal, "getsignal", ctrl_c)  # the hold's first step
    assert _folder(tmp_path) == {"a.csv": b"old a"}


def test_a_ctrl_c_held_while_a_rename_fails_does_not_hide_the_error(tmp_path, monkeypatch):
    """The held Ctrl-C was delivered after the failed rename, and its KeyboardInterrupt (the
    CLI's "SIGINT: stopped") replaced the message that says which files are still old."""
    import signal
    import time

    a, b, c = _old_set(tmp_path)

    def ctrl_c() -> None:  # a Ctrl-C during the rename that fails
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)

    _rename_fails_at(monkeypatch, b, before=ctrl_c)
    try:
        with pytest.raises(FileSetError) as caught, replaced_together(a, b, c) as staged:
            for p in (a, b, c):
                atomic_write_text(staged(p), "new")
    except KeyboardInterrupt:  # not pytest's own stop: this test's failure
        pytest.fail("the held Ctrl-C hid the FileSetError")
    assert str(caught.value) == (
        f"[Errno 5] Input/output error: '{b}'; a.csv replaced; b.png and c.md are still the "
        "previous versions"
    )
    assert sorted(_folder(tmp_path)) == ["a.csv", "b.png", "c.md"]  # no temp file


def test_a_file_set_error_keeps_the_errors_class(tmp_path):
    """`except PermissionError` did not match: the error became a plain OSError subclass."""
    a = tmp_path / "a.md"
    with pytest.raises(PermissionError) as caught, replaced_together(a) as staged:
        raise naming(OSError(errno.EACCES, os.strerror(errno.EACCES)), staged(a))
    assert isinstance(caught.value, FileSetError)
    assert str(caught.value) == f"[Errno 13] Permission denied: '{a}'; a.md not written"


def test_a_failed_rename_keeps_its_class_and_second_path_through_pickling(tmp_path):
    """A real rename onto a folder: IsADirectoryError with the rename's target in
    `filename2`, which was dropped; the class made for it pickles by FileSetError's name."""
    import pickle

    a, b = tmp_path / "a.csv", tmp_path / "b"
    a.write_text("old")
    b.mkdir()
    (b / "x").write_text("x")
    with pytest.raises(IsADirectoryError) as caught, replaced_together(a, b) as staged:
        atomic_write_text(staged(a), "new")
        atomic_write_text(staged(b), "new")
    for err in (caught.value, pickle.loads(pickle.dumps(caught.value))):
        assert isinstance(err, FileSetError) and isinstance(err, IsADirectoryError)
        assert (err.errno, err.filename, err.filename2) == (errno.EISDIR, str(b), str(b))
        assert str(err) == (
            f"[Errno 21] Is a directory: '{b}'; a.csv replaced; b is still the previous version"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b"]


def test_files_with_long_names_are_written_and_staged_apart(tmp_path):
    """Temp names repeat the file's name and add the writer's token (~40 bytes; the staged
    file's own temp file twice): eval --images --out NAME.json with a 180-byte NAME failed
    with 'File name too long' after the images were made. Two names cut alike must still
    be staged apart, as a set's files share one token."""
    stem = "r" * 150
    long_json = tmp_path / ("x" * 230 + ".json")  # 235 bytes: the limit is 255
    one, two = tmp_path / f"{stem}-1.png", tmp_path / f"{stem}-2.png"
    cjk = tmp_path / ("结果" * 30 + ".md")  # 183 bytes in UTF-8
    with replaced_together(one, two, cjk, long_json) as staged:
        for i, path in enumerate((one, two, cjk, long_json)):
            atomic_write_text(staged(path), str(i))
    assert [p.read_text() for p in (one, two, cjk, long_json)] == ["0", "1", "2", "3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (one, two, cjk, long_json)
    )
