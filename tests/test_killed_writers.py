"""A writer killed with SIGKILL (an OOM kill, a scheduler's) skips every cleanup and leaves
its temp files: the next write to that folder removes them once their writer is known
dead (dsharp.temp_names), and never those of a writer still running (a second process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dsharp
from dsharp.file_sets import replaced_together
from dsharp.io import atomic_directory, atomic_write_text
from dsharp.temp_names import _boot_id

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pids")

# where there is no boot id (macOS) no temp file is taken for a dead writer's: nothing to test
removes_dead = pytest.mark.skipif(_boot_id() is None, reason="no boot id: dead writers not told")

SRC = str(Path(dsharp.__file__).resolve().parents[1])

# a writer that stages its part, says so, then waits for a line on stdin (or a SIGKILL)
SET_WRITER = """
    with replaced_together(out / "a.png") as staged:
        atomic_write_text(staged(out / "a.png"), "child")
        print("written", flush=True)
        sys.stdin.readline()
"""
FOLDER_WRITER = """
    with atomic_directory(out / "model") as tmp:
        (tmp / "weights.bin").write_text("child")
        print("written", flush=True)
        sys.stdin.readline()
"""


def _start(body: str, out: Path) -> subprocess.Popen[str]:
    """A Python process running ``body`` (with ``out``), once it printed ``written``."""
    code = "import sys\nfrom pathlib import Path\n"
    code += "from dsharp.file_sets import replaced_together\n"
    code += "from dsharp.io import atomic_directory, atomic_write_text\n"
    code += f"out = Path({str(out)!r})\nif True:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    env = {**os.environ, "PYTHONPATH": SRC}
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline() == "written\n"
    return child


def _killed(body: str, out: Path) -> None:
    child = _start(body, out)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def _finish(child: subprocess.Popen[str]) -> None:
    child.communicate("go\n", timeout=120)
    assert child.returncode == 0


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@removes_dead
def test_a_killed_sets_staged_file_is_removed_by_the_next_set(tmp_path):
    """eval --images and sample --out left `.00016-seed0.png.789467ba.tmp` forever."""
    _killed(SET_WRITER, tmp_path)
    assert len(_hidden(tmp_path)) == 1  # the killed writer's staged a.png
    with replaced_together(tmp_path / "a.png") as staged:
        atomic_write_text(staged(tmp_path / "a.png"), "rerun")
    assert _hidden(tmp_path) == [] and (tmp_path / "a.png").read_text() == "rerun"


def test_a_set_keeps_the_staged_files_of_a_writer_still_running(tmp_path):
    child = _start(SET_WRITER, tmp_path)
    try:
        live = _hidden(tmp_path)
        with replaced_together(tmp_path / "b.png") as staged:  # the same folder, meanwhile
            atomic_write_text(staged(tmp_path / "b.png"), "parent")
        assert _hidden(tmp_path) == live
    finally:
        _finish(child)
    assert (tmp_path / "a.png").read_text() == "child" and _hidden(tmp_path) == []


@removes_dead
def test_a_killed_folder_writers_temp_folder_is_removed_by_the_next(tmp_path):
    """A merge killed before its rename left `.merged.tmp` unless that --out was written."""
    _killed(FOLDER_WRITER, tmp_path)
    assert len(_hidden(tmp_path)) == 1
    with atomic_directory(tmp_path / "other") as tmp:
        (tmp / "weights.bin").write_text("parent")
    assert _hidden(tmp_path) == []


def test_two_writers_of_one_folder_do_not_delete_each_others_temp_folder(tmp_path):
    """Both used `.model.tmp`: the second deleted the first's, whose rename then failed
    (two processes filling one model cache at once)."""
    child = _start(FOLDER_WRITER, tmp_path)
    try:
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "weights.bin").write_text("parent")
        assert (tmp_path / "model" / "weights.bin").read_text() == "parent"
    finally:
        _finish(child)
    assert (tmp_path / "model" / "weights.bin").read_text() == "child"
    assert _hidden(tmp_path) == []


@removes_dead
def test_only_a_dead_writers_temp_files_are_removed(tmp_path):
    from dsharp.temp_names import remove_dead_temps, temp_token

    env = {**os.environ, "PYTHONPATH": SRC}
    code = "from dsharp.temp_names import temp_token; print(temp_token())"
    dead = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()  # the process has exited: its pid runs nothing, or something else
    ours = temp_token()
    machine, pid, start, rand = ours.split("-")
    elsewhere = "0" * 8 if machine != "0" * 8 else "1" * 8
    names = {
        f".a.png.{dead}.tmp": False,  # a killed set's staged file
        f".a.json.x1y2z3w4.{dead}.tmp": False,  # atomic_write_bytes' temp file
        f"..a.png.{dead}.tmp.x1y2z3w4.{dead}.tmp": False,  # the temp file of a staged one
        f".b.png.{machine}-{pid}-{int(start) + 1}-{rand}.tmp": False,  # our pid, reused
        f".c.png.{ours}.tmp": True,  # this process's own
        f".d.png.{elsewhere}-1-1-{rand}.tmp": True,  # another machine's
        ".e.png.789467ba.tmp": True,  # an older dsharp's: its writer cannot be told
        f"f.png.{dead}.tmp": True,  # not hidden: not a dsharp temp file
    }
    for name in names:
        (tmp_path / name).write_text("x")
    remove_dead_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for n, kept in names.items() if kept
    )


def test_without_a_boot_id_no_temp_file_is_taken_for_a_dead_writers(tmp_path, monkeypatch):
    """Off Linux the machine is known by its host name alone, which two computers sharing a
    folder can both have: a pid not running here may be a live writer there, so nothing is
    removed."""
    from dsharp import temp_names

    env = {**os.environ, "PYTHONPATH": SRC}
    code = "from dsharp.temp_names import temp_token; print(temp_token())"
    dead = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    (tmp_path / f".a.png.{dead}.tmp").write_text("x")
    monkeypatch.setattr(temp_names, "_boot_id", lambda: None, raising=False)
    temp_names.remove_dead_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".a.png.{dead}.tmp"]


def _in_another_time_namespace() -> list[str] | None:
    """A command prefix running a process in a new time namespace (its boot clock shifted),
    on this machine and pid namespace; None where this system does not allow one."""
    import shutil

    prefix = ["unshare", "--user", "--map-root-user", "--time", "--boottime", "1000", "--fork"]
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_a_set_written_from_another_time_namespace_keeps_a_live_writers_files(tmp_path):
    """/proc/PID/stat shifts a start time by the reader's time namespace: a process in
    another one took a live writer for a dead one, deleted its staged file, and the writer's
    set then went through without it (a.png missing, or an older one removed)."""
    prefix = _in_another_time_namespace()
    if prefix is None:
        pytest.skip("no user and time namespaces here (unshare)")
    child = _start(SET_WRITER, tmp_path)
    try:
        live = _hidden(tmp_path)
        code = (
            "import sys\nfrom pathlib import Path\n"
            "from dsharp.file_sets import replaced_together\n"
            "from dsharp.io import atomic_write_text\n"
            "out = Path(sys.argv[1])\n"
            "with replaced_together(out / 'b.png') as staged:\n"
            "    atomic_write_text(staged(out / 'b.png'), 'other')\n"
        )
        env = {**os.environ, "PYTHONPATH": SRC}
        cmd = [*prefix, sys.executable, "-c", code, str(tmp_path)]
        subprocess.run(cmd, env=env, check=True, timeout=120)
        assert (tmp_path / "b.png").read_text() == "other"
        assert _hidden(tmp_path) == live
    finally:
        _finish(child)
    assert (tmp_path / "a.png").read_text() == "child"
