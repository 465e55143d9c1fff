"""The scripts in bench/ and scripts/ end an input error as the CLI does: one line
``error: <input>: <reason>`` on stderr and exit 1 (2 for a bad flag value), no traceback;
``DSHARP_DEBUG=1`` shows the traceback. Each case fails before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MISSING = "{tmp}/missing"  # a path under the test's tmp_path that does not exist

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
no_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")

CASES = [
    # (script, arguments, exit status, what stderr's one line holds)
    ("bench/sharpening_step.py", ["--model", MISSING], 1, "model folder not found: "),
    pytest.param(
        "bench/sharpening_step.py",
        ["--model", MISSING, "--device", "cuda"],
        1,
        "--device cuda: CUDA is not available",
        marks=no_cuda,
        id="sharpening_step-cuda",
    ),
    pytest.param(
        "bench/sharpening_step.py",
        ["--model", MISSING, "--device", "mps"],
        1,
        "--device mps: MPS is not available",
        marks=no_mps,
        id="sharpening_step-mps",
    ),
    ("bench/sharpening_step.py", ["--model", MISSING, "--device", "xla"], 2, "--device: "),
    ("bench/sharpening_step.py", ["--model", MISSING, "--n", "0"], 2, "--n must be at least 1"),
    ("bench/shapes_verifier.py", ["--images", "0"], 2, "--images must be at least 1"),
    ("scripts/ship_mini.py", [MISSING], 1, "source: {tmp}/missing: no such folder"),
    ("scripts/ship_mini.py", ["{tmp}"], 1, "source: no checkpoint found in {tmp}"),
    ("scripts/ship_mini.py", [MISSING, "--seeds", "0"], 2, "--seeds must be at least 1"),
    (
        "scripts/probe_relation_use.py",
        ["--checkpoint", MISSING],
        1,
        "--checkpoint: {tmp}/missing: no such folder",
    ),
    ("scripts/probe_timesteps.py", ["--model", MISSING], 1, "model folder not found: "),
    ("scripts/probe_word_dropout.py", ["--model", MISSING, "--p", "2"], 2, "--p must be between"),
    ("scripts/probe_sample_ranking.py", ["--recipe", "{tmp}/no.yaml"], 2, "no.yaml: file not"),
    ("scripts/probe_sample_spacing.py", ["--recipe", "{tmp}/no.yaml"], 2, "no.yaml: file not"),
    ("scripts/probe_self_training.py", ["--prompts", "{tmp}/no.txt"], 1, "--prompts {tmp}/no.txt"),
    ("scripts/probe_target_steps.py", ["--m", "0"], 2, "--m must be at least 1"),
    ("scripts/shapes_failures.py", ["--prompts", "{tmp}/no.txt", "{tmp}"], 1, "no.txt: no such"),
    ("scripts/build_mini_init_relation.py", ["{tmp}"], 1, "{tmp}: exists; choose a new folder"),
]


def _run(script: str, args: list[str], tmp_path: Path, **env: str):
    environ = {k: v for k, v in os.environ.items() if k != "DSHARP_DEBUG"}
    # this checkout's dsharp, whichever one the environment has installed
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), environ.get("PYTHONPATH")) if p
    )
    command = [sys.executable, str(ROOT / script), *(a.format(tmp=tmp_path) for a in args)]
    return subprocess.run(
        command,
        cwd=tmp_path,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(("script", "args", "status", "message"), CASES)
def test_an_input_error_is_one_line(script, args, status, message, tmp_path):
    done = _run(script, args, tmp_path)
    assert done.returncode == status, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message.format(tmp=tmp_path) in lines[0]


def test_dsharp_debug_shows_the_traceback(tmp_path):
    done = _run("scripts/ship_mini.py", [MISSING], tmp_path, DSHARP_DEBUG="1")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("FileNotFoundError: source: ")


HELP_FROM_FIRST_LINE = [
    path.relative_to(ROOT).as_posix()
    for folder in ("bench", "scripts")
    for path in sorted((ROOT / folder).glob("*.py"))
    if "__doc__.splitlines()[0]" in path.read_text(encoding="utf-8")
]


@pytest.mark.parametrize("script", HELP_FROM_FIRST_LINE)
def test_a_scripts_help_description_is_a_whole_sentence(script):
    """``--help`` shows the docstring's first line alone: it must not stop mid-sentence."""
    import ast

    first = ast.get_docstring(ast.parse((ROOT / script).read_text(encoding="utf-8")))
    assert first is not None
    line = first.splitlines()[0]
    assert line.endswith("."), f"{script}: --help reads {line!r}"
