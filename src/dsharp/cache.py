"""Where dsharp keeps what it builds or downloads once (dsharp-mini's init folders, grades of
the MLLM grader, benchmark data): one root for every cache, cheap to import."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$DSHARP_CACHE``, else ``$XDG_CACHE_HOME/dsharp``, else ``~/.cache/dsharp``."""
    if os.environ.get("DSHARP_CACHE"):
        return Path(os.environ["DSHARP_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dsharp"
