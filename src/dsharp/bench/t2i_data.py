"""T2I-CompBench prompt lists: where they come from and how they are read.

The prompt files are the benchmark's own (``examples/dataset/*.txt`` of
``Karine-Huang/T2I-CompBench``, MIT licence); dsharp does not ship them. They come from:

1. ``data_dir`` (``--data DIR``): a folder holding the files, used as they are; their
   sha256 is reported beside whether it matches the pinned snapshot (an older
   ``color_val.txt``, for instance, is a legitimate choice to reproduce older papers);
2. otherwise the cache ``$DSHARP_CACHE/t2i-compbench`` (else
   ``$XDG_CACHE_HOME/dsharp/t2i-compbench``, else ``~/.cache/dsharp/t2i-compbench``), filled on
   first use by downloading each file from GitHub at the pinned commit. A download is
   verified against ``dsharp/assets/reference/t2i_compbench_sha256.json`` before it is
   written (atomically); a mismatch is an error naming the file, and any network failure
   is a one-line error that says to pass ``--data DIR``.

Files use CRLF line endings and some lack a final newline: lines are split with
``str.splitlines`` and stripped; blank lines are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from dsharp.hub import user_path
from dsharp.io import atomic_write_bytes

CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")
"""The six categories of T2I-CompBench (and of the Diffusion-Sharpening paper's Table 1)."""

SPLITS = ("val", "train")
"""``val`` is the benchmark's evaluation set (300 prompts per category); ``train`` its
training split."""

COMPLEX_SUBSETS = ("spatial", "action", "spatialaction")
"""Subsets of the complex prompts by which relations they hold (decides the 3-in-1 parts)."""

CHECKSUMS_FILE = (
    Path(__file__).resolve().parent.parent / "assets" / "reference" / "t2i_compbench_sha256.json"
)
DOWNLOAD_TIMEOUT_S = 30.0


class T2IDataError(RuntimeError):
    """The prompt files cannot be found, downloaded or verified (one-line message)."""


class NoPromptsError(T2IDataError, ValueError):
    """A prompt file holds no prompt: a missing input, a bad setting as ``--data`` gave it
    (``ValueError``: ``dsharp eval`` exits 2 on it, before the model loads)."""


@cache
def _snapshot() -> dict[str, Any]:
    return json.loads(CHECKSUMS_FILE.read_text(encoding="utf-8"))


def snapshot_commit() -> str:
    """The T2I-CompBench commit the checksums (and downloads) refer to."""
    return _snapshot()["commit"]


def expected_sha256(name: str) -> str | None:
    """The snapshot's sha256 of file ``name``, or ``None`` when it is not a known file."""
    entry = _snapshot()["files"].get(name)
    return entry["sha256"] if entry else None


def download_url(name: str) -> str:
    snap = _snapshot()
    return (
        f"https://raw.githubusercontent.com/{snap['repository']}/{snap['commit']}/"
        f"{snap['folder']}/{name}"
    )


def cache_dir() -> Path:
    """``t2i-compbench`` under dsharp's cache root (:func:`dsharp.cache.cache_root`)."""
    from dsharp.cache import cache_root

    return cache_root() / "t2i-compbench"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_prompts(data: bytes, name: str) -> list[str]:
    """Prompts of one file: UTF-8, any line ending, stripped, blank lines skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise T2IDataError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise NoPromptsError(f"{name}: no prompts in file")
    return prompts


def files_for(category: str, split: str) -> list[str]:
    """File names a category needs: its prompt list and, for complex, the subset lists."""
    check_category(category)
    check_split(split)
    names = [f"{category}_{split}.txt"]
    if category == "complex":
        names += [f"complex_{split}_{subset}.txt" for subset in COMPLEX_SUBSETS]
    return names


def check_category(category: str) -> str:
    if category not in CATEGORIES:
        raise ValueError(
            f"--categories: unknown category {category!r} (available: {', '.join(CATEGORIES)})"
        )
    return category


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"--split: unknown split {split!r} (available: {', '.join(SPLITS)})")
    return split


# --------------------------------------------------------------------------- fetching


def fetch(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The bytes at ``url`` (plain HTTPS GET). Tests replace this function."""
    from urllib.request import Request, urlopen

    request = Request(url, headers={"User-Agent": "dsharp"})
    with urlopen(request, timeout=timeout) as response:  # noqa: S310 - fixed https URL
        return response.read()


def _download(name: str, target: Path, fetcher: Callable[[str], bytes]) -> bytes:
    expected = expected_sha256(name)
    if expected is None:
        raise T2IDataError(f"{name}: not a file of the pinned T2I-CompBench snapshot")
    url = download_url(name)
    try:
        data = fetcher(url)
    except Exception as e:  # any network failure: offline, DNS, HTTP error, timeout
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise T2IDataError(
            f"cannot download T2I-CompBench file {name} from {url} ({reason}); "
            "pass --data DIR with the benchmark's prompt files (examples/dataset)"
        ) from None
    got = sha256_bytes(data)
    if got != expected:
        # digests shown cut short: a whole one (64 hex digits) reads as a key, and error lines
        # hide keys (dsharp.redaction.redact_text)
        raise T2IDataError(
            f"downloaded {name} has sha256 {got[:16]}..., expected {expected[:16]}...: "
            "checksum mismatch, file not used"
        )
    atomic_write_bytes(target, data)
    return data


# --------------------------------------------------------------------------- loading


@dataclass
class PromptSet:
    """The prompts of the requested categories, their subsets and where the files came from."""

    split: str
    prompts: dict[str, list[str]]
    complex_subsets: dict[str, set[str]] = field(default_factory=dict)
    source: str = "cache"
    folder: Path | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance: source, folder, snapshot commit, each file's checksum."""
        return {
            "source": self.source,
            "folder": str(self.folder) if self.folder else None,
            "snapshot_commit": snapshot_commit(),
            "split": self.split,
            "files": self.files,
        }


def _file_record(name: str, data: bytes, n_prompts: int) -> dict[str, Any]:
    digest = sha256_bytes(data)
    return {"sha256": digest, "matches_snapshot": digest == expected_sha256(name), "n": n_prompts}


def _read_from_data_dir(folder: Path, names: Sequence[str]) -> dict[str, bytes]:
    if not folder.is_dir():
        raise NotADirectoryError(f"--data {folder}: no such folder")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--data {folder}: missing T2I-CompBench prompt file(s) {', '.join(missing)}"
        )
    return {n: (folder / n).read_bytes() for n in names}


def _read_from_cache(names: Sequence[str], fetcher: Callable[[str], bytes]) -> dict[str, bytes]:
    root = cache_dir()
    out: dict[str, bytes] = {}
    for name in names:
        path = root / name
        if path.is_file():
            data = path.read_bytes()
            if sha256_bytes(data) == expected_sha256(name):
                out[name] = data
                continue
            # A damaged or foreign cached copy is replaced by a verified download.
        out[name] = _download(name, path, fetcher)
    return out


def load_prompt_set(
    categories: Sequence[str],
    split: str = "val",
    data_dir: Path | str | None = None,
    *,
    fetcher: Callable[[str], bytes] | None = None,
) -> PromptSet:
    """The prompt lists of ``categories`` (and complex's subset lists) for ``split``.

    ``data_dir``: read the files from this folder (every needed file must be there; the
    error names the missing ones); else the verified cache, downloading what is missing.
    ``fetcher(url) -> bytes`` replaces :func:`fetch` (tests).
    """
    check_split(split)
    categories = [check_category(c) for c in categories]
    names = [n for c in categories for n in files_for(c, split)]
    if data_dir is not None:
        folder = user_path(data_dir)
        raw = _read_from_data_dir(folder, names)
        source = "data_dir"
    else:
        folder = cache_dir()
        raw = _read_from_cache(names, fetcher or fetch)
        source = "cache"
    # a file of --data is named by its path, so that the message says which folder
    shown = {n: str(folder / n) if data_dir is not None else n for n in raw}
    parsed = {name: parse_prompts(data, shown[name]) for name, data in raw.items()}
    files = {name: _file_record(name, raw[name], len(parsed[name])) for name in names}
    prompts = {c: parsed[f"{c}_{split}.txt"] for c in categories}
    subsets = {}
    if "complex" in categories:
        subsets = {
            s: {normalize(p) for p in parsed[f"complex_{split}_{s}.txt"]} for s in COMPLEX_SUBSETS
        }
    return PromptSet(split, prompts, subsets, source, folder, files)


def normalize(prompt: str) -> str:
    """How prompts are matched across files: stripped, lower case, no final full stop."""
    return prompt.strip().lower().rstrip(".").strip()
