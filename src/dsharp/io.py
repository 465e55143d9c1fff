"""Atomic file writes: an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from dsharp.temp_names import remove_dead_temps, temp_stem, temp_token


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe mid-run.
_UMASK = _process_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp's temp
    files are owner-only, which would hide results from a shared run folder's group).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        suffix = f".{temp_token()}.tmp"  # names its writer: dsharp.temp_names
        prefix = f".{temp_stem(path.name)}."
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    except OSError as err:  # a read-only folder: the file, not the temp file, is named
        raise naming(err, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if hasattr(os, "fchmod"):  # POSIX; Windows files have no such modes
                os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise naming(err, path) from None


def naming(err: BaseException, path: Path) -> BaseException:
    """``err`` as it should reach the user: an ``OSError`` that names no file (a full disk,
    a failed fsync) gets ``path``, the file being written, or the message would not say
    which; the temp file's name is replaced by it too. Anything else is ``err`` itself."""
    if not isinstance(err, OSError) or err.errno is None:
        return err
    if err.filename is not None and Path(err.filename).parent != Path(path).parent:
        return err  # names a file of its own (the folder it was made in, say)
    named = type(err)(err.errno, err.strerror, str(path))
    named.__traceback__ = err.__traceback__
    return named


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend: figures are written, never shown,
    and a machine without a display (CI, a GPU node) must not need one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def atomic_save_png(fig: Any, path: Path, dpi: int = 120) -> None:
    """Lay out a matplotlib figure, write it as a PNG atomically, and close it (figures
    left open accumulate in pyplot's registry over a long run)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:  # closed even when drawing fails, which a caller may only warn about
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` so that a reader sees the old file or the new one, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON atomically; NaN and inf become ``null`` (``json_safe``), as
    other JSON readers refuse them."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success it replaces ``final`` in one rename.

    What was written there (by libraries too: ``save_pretrained``, ``save_file``) is synced
    before the rename, so that after a power cut ``final`` never holds empty weights."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    restore_replaced(final)  # a failed write below leaves final as it was before the kill
    legacy = final.parent / f".{final.name}.tmp"  # an older dsharp's fixed name
    if os.path.exists(legacy):  # False, not 'too long', where final's name is 251-255 bytes
        shutil.rmtree(legacy)
    remove_dead_temps(final.parent)  # a killed writer's; a live one's (a second process) kept
    tmp = final.parent / f".{temp_stem(final.name)}.{temp_token()}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        sync_tree(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno is not None:
            raise _folder_not_written(err, tmp, final) from None
        raise
    replace_directory(tmp, final)
    sync_folder(final.parent)


def _folder_not_written(err: OSError, tmp: Path, final: Path) -> OSError:
    """A write into :func:`atomic_directory`'s temp folder that failed (a full disk), as
    the file of ``final`` it was for, and whether ``final`` is still its previous version:
    the temp folder's name means nothing to a user, and is gone."""
    from dsharp.file_sets import FileSetError

    path = final
    if err.filename is not None:
        try:
            path = final / Path(str(err.filename)).relative_to(tmp)
        except ValueError:
            return err  # names a file of its own (a source read while writing)
    kept = "is still the previous version" if final.exists() else "not written"
    return FileSetError(err, path, f"{final.name} {kept}")


def replace_directory(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``. An existing ``final`` is renamed aside
    (:func:`aside_name`) first and deleted only after, so that a kill in between leaves one of
    the two whole: :func:`restore_replaced` puts that one back. A folder aside is whole
    whenever it exists (:func:`discard_directory` renames it away before deleting it)."""
    tmp, final = Path(tmp), Path(final)
    old = aside_name(final)
    if final.exists():
        discard_directory(old)  # a kill's leftover beside a whole final
        os.replace(final, old)
    os.replace(tmp, final)
    discard_directory(old)  # also one a kill between the renames left: final is new now


def aside_name(final: Path) -> Path:
    """Where :func:`replace_directory` keeps ``final``'s previous version until the new one
    is in place: ``.NAME.old`` beside it."""
    final = Path(final)
    return final.parent / f".{final.name}.old"


def restore_replaced(final: Path) -> bool:
    """Put ``final``'s previous version back where a kill between the two renames of
    :func:`replace_directory` left it aside and ``final`` missing: that copy is whole, and
    the only one. True when it was put back; False when there was nothing to do or the
    folder refuses the rename (read-only: it stays aside, never deleted here)."""
    final = Path(final)
    old = aside_name(final)
    if os.path.exists(final) or not os.path.isdir(old):  # False, not 'too long', at 251+ bytes
        return False
    try:
        os.replace(old, final)
    except OSError:  # gone meanwhile (another process put it back) or read-only
        return False
    sync_folder(final.parent)
    return True


def discard_directory(path: Path) -> None:
    """Delete a folder, renamed first to ``NAME.deleting``: killed part way, the delete
    leaves no half-deleted folder under its own name (a folder aside, which
    :func:`restore_replaced` would put back as whole); the next discard of ``path``
    deletes the rest. A folder that refuses the rename is kept."""
    path = Path(path)
    gone = path.parent / f"{path.name}.deleting"
    shutil.rmtree(gone, ignore_errors=True)
    try:
        os.replace(path, gone)
    except OSError:  # missing (nothing to delete) or not renamable
        return
    shutil.rmtree(gone, ignore_errors=True)


def sync_file(path: Path) -> None:
    """fsync a file written without it (rows :func:`append_jsonl` added, which a checkpoint
    written next depends on), or a folder (its entries); nothing when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves: what libraries wrote
    there (torch.save, save_pretrained) without it, before a marker file says it is whole."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            sync_file(Path(root) / name)
        sync_folder(Path(root))


def sync_folder(folder: Path) -> None:
    """fsync a folder's entries (a rename into it), where the platform can: Windows cannot
    open a folder, and some network file systems refuse a folder's fsync. Best effort, as
    the files themselves are synced."""
    with suppress(OSError):
        sync_file(folder)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (from a crash mid-append) is dropped.
    ``ValueError`` naming the file for damage a crash cannot leave (text that is not UTF-8,
    a bad line before the last, a line that is not a JSON object), rather than rows that
    silently stop there."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = []
    for i, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn by a crash mid-append
            raise ValueError(f"{path}: line {number} is not JSON") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


def json_safe(obj: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, recursively."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite a JSON-lines file atomically (e.g. cut back to a resumed step)."""
    text = "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in rows)
    atomic_write_text(path, text)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one row; NaN becomes null so every line is strict JSON (:func:`sync_file`
    makes the rows durable where something written next depends on them)."""
    line = json.dumps(json_safe(row), allow_nan=False) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
    except OSError as err:  # a full disk: the file, not only the reason
        raise naming(err, path) from None
