"""Test helper for tests/test_distributed.py: ``dsharp reproduce`` in each process of a
launch, recording the files the process writes under OUT_DIR (``["open", path]`` for a
file opened to write, ``["rename", destination]``, ``["remove", path]``) to
``OUT_DIR/writes{rank}.json`` as it exits. Usage:
``dist_study_worker.py OUT_DIR STUDY [reproduce arguments ...]``."""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    rank = os.environ.get("RANK", "0")
    writes: list[list[str]] = []

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].startswith(str(out)):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags and flags & os.O_CREAT):
                writes.append(["open", args[0]])
        elif event in ("os.rename", "os.replace") and str(args[0]).startswith(str(out)):
            writes.append(["rename", str(args[1])])
        elif event == "os.remove" and str(args[0]).startswith(str(out)):
            writes.append(["remove", str(args[0])])

    sys.addaudithook(audit)
    report = out / f"writes{rank}.json"
    atexit.register(lambda: report.write_text(json.dumps(writes)))
    from dsharp.cli import main as dsharp_main

    sys.argv = ["dsharp", "reproduce", *sys.argv[2:]]
    dsharp_main()


if __name__ == "__main__":
    main()
