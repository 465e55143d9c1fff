"""transformers' and diffusers' own progress bars ("Loading weights", "Loading checkpoint
shards"), off while dsharp loads a model and as the caller had them after.

``dsharp`` (the command) keeps them off for the whole process through the environment it
sets before those libraries import; the Python API cannot (they are often imported already)
and must not leave a notebook's settings changed, so each load turns them off and back.
huggingface_hub's download bars are left alone: a first download takes minutes, and its bar
says how many. ``DSHARP_VERBOSE=1`` keeps every bar, as for the command.

The flag is the process's: loads that overlap (one per thread) share one "off", and the last
to finish puts back what the first found; each putting back what it found left the bars off
for good where the first finished before the second.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import ModuleType

_lock = threading.Lock()
# per logging module: how many loads hold its bars off, and the flag the first one found
_held: dict[str, tuple[int, object]] = {}


@contextmanager
def library_bars_off() -> Iterator[None]:
    """While entered, the progress bars of whichever of transformers and diffusers is
    imported (the loader in hand imported it) are off; on leaving, each flag is as it was."""
    with ExitStack() as stack:
        if not os.environ.get("DSHARP_VERBOSE"):
            for name in ("transformers.utils.logging", "diffusers.utils.logging"):
                module = sys.modules.get(name)
                if module is not None:
                    stack.enter_context(_flag_off(module))
        yield


@contextmanager
def _flag_off(logging_module: ModuleType) -> Iterator[None]:
    """``logging_module._tqdm_active`` (what its ``is_progress_bar_enabled`` reads, and its
    ``tqdm`` checks at each bar) False, then back once no other load holds it off. Set
    directly: transformers' ``disable_progress_bar`` also turns off, and clears the per-group
    settings of, huggingface_hub's bars, which its ``enable_progress_bar`` cannot put back."""
    if not hasattr(logging_module, "_tqdm_active"):  # a version without it: bars as they are
        yield
        return
    name = logging_module.__name__
    with _lock:
        depth, before = _held.get(name, (0, None))
        if depth == 0:
            before = logging_module._tqdm_active
        _held[name] = (depth + 1, before)
        logging_module._tqdm_active = False
    try:
        yield
    finally:
        with _lock:
            depth, before = _held.pop(name)
            if depth > 1:
                _held[name] = (depth - 1, before)
            else:
                logging_module._tqdm_active = before
