"""Gather bench/gpu_check.sh's logs into summary.json in its output folder.

It holds each step's exit status and seconds, pytest's counts and failures, the sharpening
step's lines, the UNet timings and DDPO's precision timings. Prints one line; exits 1 when a
step failed (or pytest's log has no summary, or, on the GPU, a test was skipped or none
passed), so the device call's status says whether the check passed.

    python bench/gpu_summary.py OUT_FOLDER [--dry-run 0|1]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from dsharp.commands.errors import run_script
from dsharp.io import atomic_write_text

#: pytest's last line: "3 passed, 9 skipped, 1660 deselected in 12.3s" (any order).
COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)\b")


def steps(folder: Path) -> list[dict[str, Any]]:
    """The rows ``step`` wrote: name, exit status, seconds."""
    rows = []
    path = folder / "steps.tsv"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        name, rc, seconds = line.split("\t")
        rows.append({"name": name, "exit": int(rc), "seconds": int(seconds)})
    return rows


def pytest_counts(log: Path) -> dict[str, Any]:
    """pytest's counts from its last summary line, and the ids of its failures and errors."""
    if not log.is_file():
        return {}
    text = log.read_text(encoding="utf-8", errors="replace")
    summary = [line for line in text.splitlines() if COUNT.search(line) and " in " in line]
    counts = {kind: int(n) for n, kind in COUNT.findall(summary[-1])} if summary else {}
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.M)
    skipped = re.findall(r"^SKIPPED \[\d+\] (.+)$", text, flags=re.M)
    return {"counts": counts, "failed": failed, "skip_reasons": sorted(set(skipped))}


def step_lines(log: Path) -> list[str]:
    """The sharpening step's result lines (timings, ratios) and any error line."""
    if not log.is_file():
        return []
    keep = ("model ", "public-code", "dsharp (", "speed ratio", "peak memory", "error:", "== ")
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line for line in lines if line.startswith(keep)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dry-run", choices=["0", "1"], default="0")
    args = parser.parse_args()
    folder = args.folder
    rows = steps(folder)
    unet_path = folder / "unet_step.json"
    unet = json.loads(unet_path.read_text(encoding="utf-8")) if unet_path.is_file() else None
    ddpo_path = folder / "ddpo_precision.json"
    ddpo = json.loads(ddpo_path.read_text(encoding="utf-8")) if ddpo_path.is_file() else None
    tests = pytest_counts(folder / "pytest.log")
    summary = {
        "dry_run": args.dry_run == "1",
        "steps": rows,
        "tests": tests,
        "sharpening_step": step_lines(folder / "sharpening_step.log"),
        "unet_step": unet,
        "ddpo_precision": ddpo,
    }
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    failed = [row["name"] for row in rows if row["exit"] != 0]
    if not rows:
        failed = ["no step ran"]
    elif not tests.get("counts"):
        failed.append("tests (no pytest summary line)")
    elif args.dry_run == "0" and (
        tests["counts"].get("skipped") or not tests["counts"].get("passed")
    ):
        # on the GPU every gpu test must run: one skipped there (CUDA not seen by pytest, a
        # fixture that skips) checked nothing, and "all steps passed" would say otherwise
        failed.append(f"tests ({tests['counts'].get('skipped', 0)} skipped on the GPU)")
    counts = ", ".join(f"{n} {kind}" for kind, n in tests.get("counts", {}).items())
    verdict = f"failed: {', '.join(failed)}" if failed else "all steps passed"
    print(f"gpu_check: {verdict}; tests: {counts or 'none'}; summary: {folder / 'summary.json'}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main)
