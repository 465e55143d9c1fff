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
