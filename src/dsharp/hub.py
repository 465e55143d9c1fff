"""Whether the Hugging Face hub can be asked, decided once and at once.

Models (``model.pretrained``) and reward weights both name hub ids. On a machine with no
network the hub client retries each file for about 25 s before it fails; one request made
without its retries tells the same thing at once, so every loader asks here first. Kept free
of torch: ``train``'s early checks use it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

_TRUE = {"1", "true", "yes", "on"}

#: Endings of weights and config files: a value ending so names a local file even without a
#: slash (``weights.pt``); hub repo ids do not end so.
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".pkl", ".json")

#: What a local path must be: a ``file``, a ``folder`` (a transformers ``save_pretrained``
#: one), a ``file or folder`` (weights, or a folder holding them), or an ``open_clip model``
#: name (a built-in name, ``hf-hub:ID``, ``local-dir:FOLDER`` or a model config ``.json``).
PathKind = Literal["file", "folder", "file or folder", "open_clip model"]

#: Why a hub id cannot be loaded with ``HF_HUB_OFFLINE`` set and nothing of it cached.
NOT_CACHED_OFFLINE = "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for cache-only loading."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def user_path(value: str | os.PathLike[str]) -> Path:
    """``value`` with ``~`` expanded; as given where it cannot be (``~nouser/x``: Python
    raises rather than say the folder is not there), so that the caller's "not found"
    names it."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        return Path(value)


def unknown_home(value: str | os.PathLike[str]) -> str | None:
    """The ``~user`` that ``value`` starts with where it names no user (:func:`user_path`
    leaves it as written), else None: what a "not found" for it should say."""
    text = os.fspath(value)
    if not text.startswith("~") or not str(user_path(text)).startswith("~"):
        return None
    return text.replace("\\", "/").split("/", 1)[0]


def known_home(value: str) -> str:
    """``value`` (a folder dsharp will create), refused with a ``ValueError`` where it starts
    with a ``~user`` that names no user: :func:`user_path` leaves it as written, and a folder
    literally named ``~user`` would be made in the working directory."""
    head = unknown_home(value)
    if head is not None:
        raise ValueError(f"no home folder for {head}: {value}")
    return value


def looks_local(source: str) -> bool:
    """A path rather than a hub id: absolute, relative with ``./``, ``~``, existing, or
    ending as a weights or config file does (:data:`FILE_SUFFIXES`)."""
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or user_path(source).exists()
        or source.count("/") > 1
        or (len(source) > 1 and source[1] == ":")  # a Windows drive
        or source.lower().endswith(FILE_SUFFIXES)
    )


def missing_local_path(value: str, kind: PathKind = "file or folder") -> str | None:
    """Why ``value`` names a local path that is not there as ``kind`` (``file not found:
    /abs/x.pt``, ``not a folder: ...``), or None: it is there, or it names no local path (a
    hub id, an open_clip name or tag, ``hf-hub:ID``), which loading decides. The one rule of
    reward options: ``recipes validate`` applies it before any model loads, and the loaders
    when they load, so the two cannot disagree."""
    hint, local = "", False
    if kind == "open_clip model":
        if value.startswith("hf-hub:"):
            return None
        if value.startswith("local-dir:"):  # open_clip's name of a model folder
            value, kind, local = value.removeprefix("local-dir:"), "folder", True
        else:  # a model config file, else a model name
            kind, hint = "file", f" (a model folder is given as 'local-dir:{value}')"
    if not (local or looks_local(value)):
        return None
    path = user_path(value)
    if not path.exists():
        return f"{'folder' if kind == 'folder' else 'file'} not found: {path}"
    if kind == "file" and not path.is_file():
        return f"not a file: {path}{hint if path.is_dir() else ''}"
    if kind == "folder" and not path.is_dir():
        return f"not a folder: {path}"
    return None


def error_line(error: BaseException, limit: int | None = None) -> str:
    """``Type: message`` on one line; cut to ``limit`` characters, where given, for an error
    whose message is an essay (torch's ``weights_only`` refusal runs to 900)."""
    line = " ".join(f"{type(error).__name__}: {error}".split())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """``filename`` of hub repo ``repo_id`` in the local hub cache, or None (not cached, or
    ``repo_id`` is no repo id: the download says so); never fetched."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except HFValidationError:
        return None
    return Path(found) if isinstance(found, str) else None


def hub_cached(repo_id: str, filenames: Iterable[str], revision: str | None = None) -> bool:
    """Whether one of ``filenames`` of hub repo ``repo_id`` (at ``revision``, None: main) is
    in the local hub cache."""
    return any(cached_file(repo_id, name, revision) is not None for name in filenames)


def offline_not_cached(repo_id: str, filenames: Iterable[str], revision: str | None = None) -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set and none of ``filenames`` of ``repo_id`` (at
    ``revision``) is cached: a load would fail, so it fails before the libraries that load
    are even imported."""
    return hub_offline() and not hub_cached(repo_id, filenames, revision)


def hub_fetch_blocked(repo_id: str, filenames: Sequence[str]) -> str | None:
    """Why none of ``filenames`` of ``repo_id`` can be fetched, asked before a download so
    that it fails at once rather than after the hub client's retries: the hub cannot be
    reached (probed for the last file, the one a loader falls back to). None when the files
    need no network (``HF_HUB_OFFLINE``, where the download reads the cache itself; one of
    them cached) or when the hub answered."""
    if hub_offline() or hub_cached(repo_id, filenames):
        return None
    return hub_unreachable(repo_id, filenames[-1])


def hub_unreachable(repo_id: str, filename: str) -> str | None:
    """Why the hub cannot be reached, from one request for ``filename`` of ``repo_id`` made
    without the hub client's retries (which take about 25 s a file before a download that
    cannot connect fails); ``None`` when the hub answered, whatever the answer (a missing or
    gated file is the download's own error to report), and when the failure may pass (a
    timeout, a dropped connection): the download's retries may then get through."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename))
    except (HfHubHTTPError, HFValidationError):  # the download reports these itself
        return None
    except Exception as e:
        return error_line(e) if _no_network(e) else None
    return None


#: Seconds an optional fetch (a file asked ahead of the loader, which asks again anyway)
#: waits for the hub: the hub client waits 10 s, then retries for about 25 s more.
QUICK_TIMEOUT = 5.0


def hub_answers(repo_id: str, filename: str, revision: str | None = None) -> bool:
    """Whether the hub answers one request for ``filename`` of ``repo_id`` with the file's
    metadata within :data:`QUICK_TIMEOUT` seconds, without retries: where a fetch is only a
    head start (the loader fetches the file anyway), a slow or absent hub is not waited for;
    a missing, gated or invalid file says no too, and the loader reports it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, filename, revision=revision), timeout=QUICK_TIMEOUT
        )
    except Exception:  # a timeout, no network, a 404: none of them is this caller's to report
        return False
    return True


#: What says there is no way to the hub from here, in an error or one it was raised from:
#: no name resolution, a refused connection, no route, a certificate that does not verify.
#: A reset connection, a failed handshake or a timeout may pass: the download retries them.
_NO_NETWORK_ERRNOS = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)
_NO_NETWORK_TEXTS = (
    "Name or service not known",
    "nodename nor servname",
    "name resolution",
    "getaddrinfo failed",
    "Connection refused",
    "Network is unreachable",
    "No route to host",
    "CERTIFICATE_VERIFY_FAILED",
)


def exception_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from or during, outermost first (libraries
    wrap the hub client's errors); a chain that loops back is followed once."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _no_network(error: BaseException) -> bool:
    """Whether ``error``, or one it was raised from, says the hub cannot be reached at all."""
    import socket

    for current in exception_chain(error):
        if "Timeout" in type(current).__name__:
            return False
        if type(current).__name__ == "ProxyError" or isinstance(current, socket.gaierror):
            return True
        if isinstance(current, OSError) and current.errno in _NO_NETWORK_ERRNOS:
            return True
        if any(text in str(current) for text in _NO_NETWORK_TEXTS):
            return True
    return False
