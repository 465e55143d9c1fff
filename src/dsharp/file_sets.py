"""Files that are read together (a report and its grid, a table and its CSV and plot) are
replaced together: a reader never finds a new one beside an old one.

Each file of the set is written first to a temp file beside it (with the usual atomic
writers); only when all are written are they renamed into place, in the order given, so that
the last one (the file that marks the set as complete: the report a reader opens, the
score another command reads) is replaced last. A failure before then (a full disk) leaves
every file as it was and says so; the temp files are removed, on Ctrl-C too. Those a
killed writer left (SIGKILL skips every cleanup) are removed by the next set written to
their folder, once their writer is known dead (:mod:`dsharp.temp_names`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dsharp.file_records import RECORD_NAME, digest, read_record, stale_files, write_record
from dsharp.interrupts import signals_noted
from dsharp.io import sync_folder
from dsharp.temp_names import remove_dead_temps, temp_stem, temp_token


class FileSetError(OSError):
    """A file of a set could not be written or put in place: ``str`` names it, then says
    which files of the set are still their previous version (or were not written).

    Made from a subclass of ``OSError`` (``PermissionError``, ``FileNotFoundError``), it is
    an instance of that subclass too (of :func:`_kind_of`'s class), so that a caller's
    ``except PermissionError`` still matches; ``errno`` and ``filename2`` are kept."""

    kind: type[OSError] = OSError  # the error's own class, which this one subclasses

    def __new__(cls, err: OSError, path: Path, state: str) -> FileSetError:
        if cls is FileSetError:
            cls = _kind_of(err)
        # OSError takes its arguments here, not in __init__, for a class with its own __new__
        return super().__new__(cls, err.errno, err.strerror, str(path), None, err.filename2)

    def __init__(self, err: OSError, path: Path, state: str) -> None:
        self.state = state

    def __str__(self) -> str:
        said = f"[Errno {self.errno}] {self.strerror}: {self.filename!r}"
        if self.filename2 is not None and str(self.filename2) != self.filename:
            said += f" -> {self.filename2!r}"  # a rename's target that is not the set's file
        return f"{said}; {self.state}"

    def __reduce__(self) -> tuple:
        """Pickled as it was made (a process pool sends a worker's error back so): OSError's
        own reduction calls the class with its args, which this ``__init__`` does not take,
        and the class made for a subclass has no name to import it by."""
        err = self.kind(self.errno, self.strerror, self.filename, None, self.filename2)
        return (FileSetError, (err, Path(self.filename), self.state))


_KINDS: dict[type[OSError], type[FileSetError]] = {}


def _kind_of(err: OSError) -> type[FileSetError]:
    """FileSetError for a plain ``OSError``; for a subclass, a class that is both (made
    once per subclass)."""
    kind = err.kind if isinstance(err, FileSetError) else type(err)
    if kind is OSError:
        return FileSetError
    if kind not in _KINDS:
        name = f"FileSet{kind.__name__}"
        _KINDS[kind] = type(name, (FileSetError, kind), {"kind": kind, "__module__": __name__})
    return _KINDS[kind]


class ReplacedThenInterrupted(KeyboardInterrupt):
    """A Ctrl-C held back while a set's files were renamed, raised once every one of them
    was: the set is whole and new, so a caller must not say that it was not written."""


@contextmanager
def replaced_together(
    *paths: Path, recorded: Iterable[Path] = ()
) -> Iterator[Callable[[Path], Path]]:
    """Yield ``staged(path)``: where to write the new version of ``path``, one of ``paths``.

    On leaving the block without an error, each staged file replaces its path in the order
    of ``paths`` (the last marks the set complete); a path whose staged file was not written
    this time is removed, as an older one would pass for part of this set. On an error, the
    staged files are removed and every path is left as it was; an ``OSError`` becomes a
    :class:`FileSetError` that names the file and the set's state.

    ``recorded``: those of ``paths`` in one folder that dsharp names for itself (a run's
    images), recorded in that folder (:mod:`dsharp.file_records`) with the set; where this
    set rewrites some of the files an earlier set recorded there (a rerun), those it does not
    rewrite are removed after its last rename, in the same step (a Ctrl-C or a full disk
    before it leaves all of them).
    """
    finals = list(dict.fromkeys(Path(p) for p in paths))  # a path named twice: once
    owned = list(dict.fromkeys(Path(p) for p in recorded))
    record = _record_path(owned, finals)
    order = [record, *finals] if record is not None else finals  # the record first: see _commit
    for folder in dict.fromkeys(p.parent for p in order):
        remove_dead_temps(folder)  # what killed writers left there (SIGKILL skips our cleanup)
    token = temp_token()
    staged = {p: p.parent / f".{temp_stem(p.name)}.{token}.tmp" for p in order}

    def where(path: Path) -> Path:
        if Path(path) not in finals:
            raise ValueError(f"{path} is not one of this set's files")
        return staged[Path(path)]

    committing = False
    try:
        yield where
        stale = _recorded(record, staged, owned) if record is not None else []
        committing = True  # a Ctrl-C before _commit holds it back: cleaned up here too
        _commit(order, staged, stale, shown=finals)
    except BaseException as err:
        _remove(staged.values())
        if not committing and isinstance(err, OSError) and err.errno is not None:
            failed = _final_of(err, staged)
            raise FileSetError(err, failed, _unchanged(finals, failed)) from None
        raise


def _record_path(owned: list[Path], finals: list[Path]) -> Path | None:
    """The record of the folder of ``owned`` (None for none), which must be set members."""
    if not owned:
        return None
    outside = [p for p in owned if p not in finals]
    if outside or len({p.parent for p in owned}) != 1:
        raise ValueError(f"recorded files must be of this set, in one folder: {owned}")
    return owned[0].parent / RECORD_NAME


def _recorded(record: Path, staged: dict[Path, Path], owned: list[Path]) -> list[Path]:
    """Write the folder's new record (staged) and return the files of the earlier set to
    remove: the record names them too, so that a run stopped before they are removed (a
    power cut) leaves them known to the next."""
    folder = record.parent
    written = {p.name: digest(staged[p]) for p in owned if staged[p].exists()}
    others = [p.name for p in staged if p.parent == folder and p not in owned]
    stale = stale_files(folder, read_record(folder), (p.name for p in owned), others)
    write_record(staged[record], {**stale, **written})
    return [folder / name for name in stale]


def _commit(
    finals: list[Path], staged: dict[Path, Path], stale: Sequence[Path], shown: list[Path]
) -> None:
    """Rename the staged files into place in order, then remove ``stale``, with Ctrl-C held
    back until done: an interrupt between two renames would leave the mix this module is
    there to prevent. ``shown``: the files an error lists (not the folder's record)."""
    written = {p for p in finals if staged[p].exists()}
    with _interrupts_held():
        for i, path in enumerate(finals):
            try:
                if path in written:
                    os.replace(staged[path], path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as err:
                _remove(staged.values())
                done = [p for p in finals[:i] if p in shown]
                left = [p for p in finals[i:] if p in shown]
                raise FileSetError(err, path, _partly(done, left, path)) from None
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                state = "the new files are in place; this older one was not removed"
                raise FileSetError(err, path, state) from None
        for folder in {p.parent for p in finals}:
            sync_folder(folder)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C held back while entered, delivered on leaving (not on leaving with an error,
    which ends the command all the same and must say itself): Python's SIGINT handler is
    swapped for one that notes it. A blocked signal mask did not hold it back: with other
    threads running (torch's, tqdm's) the kernel hands the signal to one of them, and Python
    raises it in the main thread all the same. Off the main thread nothing is needed, as
    Python raises KeyboardInterrupt in the main thread alone."""
    with signals_noted(signal.SIGINT) as caught:
        try:
            yield
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            if caught:  # the error ends the command all the same; a KeyboardInterrupt (and
                # dsharp.cli's "stopped") would hide which files are still the previous ones
                err.add_note("a Ctrl-C came meanwhile (held back, then dropped for this error)")
            raise
    if caught:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt as err:  # Python's handler's, or dsharp.cli's
            if type(err) is not KeyboardInterrupt:
                raise
            raise ReplacedThenInterrupted from None  # the same, saying the set is whole


def _remove(files: Iterable[Path]) -> None:
    """The staged files (the atomic writers remove their own temp files on a failure)."""
    for tmp in files:
        tmp.unlink(missing_ok=True)


def _final_of(err: OSError, staged: dict[Path, Path]) -> Path:
    """The set's file an error is about: the writers name the staged file they wrote."""
    if err.filename is None:
        return next(iter(staged))
    named = Path(str(err.filename))
    for final, tmp in staged.items():
        if named == tmp or named.name.startswith(f".{temp_stem(tmp.name)}."):
            return final
    return named


def _name(path: Path, failed: Path) -> str:
    return path.name if path.parent == failed.parent else str(path)


def _listed(paths: list[Path], failed: Path) -> str:
    names = [_name(p, failed) for p in paths]
    if len(names) > 4:
        return f"{len(names)} files ({names[0]}, ..., {names[-1]})"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _unchanged(finals: list[Path], failed: Path) -> str:
    """Nothing was replaced: which files are still their previous version, which absent."""
    old = [p for p in finals if p.exists()]
    absent = [p for p in finals if not p.exists()]
    parts = []
    if old:
        still = (
            "is still the previous version" if len(old) == 1 else "are still the previous versions"
        )
        parts.append(f"{_listed(old, failed)} {still}")
    if absent:
        parts.append(f"{_listed(absent, failed)} not written")
    return "; ".join(parts)


def _partly(done: list[Path], left: list[Path], failed: Path) -> str:
    """A rename failed midway: which files are new, which still the previous version."""
    if not done:
        return _unchanged(left, failed)
    return f"{_listed(done, failed)} replaced; {_unchanged(left, failed)}"
