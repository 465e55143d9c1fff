"""A persistent SQLite cache of MLLM grades, so re-scoring an image costs nothing.

A grade is keyed by the image's pixel hash, the prompt and everything else that shapes the
request or its answer: the grader model, the server (its URL without credentials), the rubric
text and template version, the image format, ``temperature``, ``max_tokens``, ``extra_body``
and the structured-output setting (:func:`grade_key`). The key is a SHA-256 of these, so
none of them is stored in clear; a key written by an older dsharp simply misses. Only
successful grades are stored, never a failure, and never the server's key. The file is
opened per batch from the calling thread, in WAL mode with a busy timeout, so that several
processes (one per GPU) can share it; the grader carries on without it when it cannot be
read or written (:class:`sqlite3.Error`, :class:`OSError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from dsharp.hub import user_path

CACHE_FILE = "mllm.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS grades (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    template TEXT NOT NULL,
    grade TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """``mllm.sqlite`` under dsharp's cache root (:func:`dsharp.cache.cache_root`)."""
    from dsharp.cache import cache_root

    return cache_root() / CACHE_FILE


KEY_VERSION = 2  # the form of the key; 1 (before temperature etc. were in it) never matches


def grade_key(image_hash: str, prompt: str, request: Mapping[str, Any]) -> str:
    """A stable hex key for one grade request: the image's pixel hash, the prompt, and
    ``request``, every other field that can change what the grader answers (JSON-able; dumped
    with sorted keys, so a mapping's order does not matter and no field can bleed into another).

    The server's URL belongs in ``request``: local servers often all call their model
    ``default``, and one server's grades must not answer for another's."""
    payload = json.dumps(
        {"key": KEY_VERSION, "image": image_hash, "prompt": prompt, "request": request},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class GradeCache:
    """Grades by key in one SQLite file; ``get_many`` / ``put_many`` batch the round trips."""

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 30.0):
        self.path = user_path(path)
        self.timeout_s = timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise OSError(f"cannot open the grade cache {self.path}: {e}") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout_s)
        with suppress(sqlite3.OperationalError):  # e.g. a file system without shared memory
            db.execute("PRAGMA journal_mode=WAL")
        return db

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored grades among ``keys`` (missing keys are simply absent)."""
        wanted = sorted(set(keys))
        found: dict[str, dict[str, Any]] = {}
        if not wanted:
            return found
        with closing(self._connect()) as db:
            for i in range(0, len(wanted), 500):  # stay under SQLite's variable limit
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, grade FROM grades WHERE key IN ({marks})", chunk)
                for key, grade in rows:
                    found[key] = json.loads(grade)
        return found

    def put_many(self, grades: Mapping[str, dict[str, Any]], model: str, template: str) -> None:
        """Store successful grades (JSON-able dicts) under their keys, replacing old ones."""
        if not grades:
            return
        now = time.time()
        rows = [
            (k, model, template, json.dumps(g, allow_nan=False), now) for k, g in grades.items()
        ]
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM grades").fetchone()[0])
