"""bench/gpu_check.sh and its python refuse what they cannot run in one line, before the GPU
work, and its summary says which step failed (the full CPU dry run, ``--cpu-dry-run``, takes
a minute or more and is not run here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _run(command: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("DSHARP_DEBUG", "OUT")}
    environ["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run(
        command,
        cwd=tmp_path,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@no_cuda
def test_the_check_without_cuda_stops_with_one_line(tmp_path):
    out = tmp_path / "out"
    result = _run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        tmp_path,
        PYTHON=sys.executable,
        OUT=str(out),
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "gpu_check.sh: no CUDA device here (torch.cuda.is_available() is False); "
        "--cpu-dry-run checks the script on a CPU"
    ]
    assert not out.exists()


def test_the_check_refuses_an_unknown_argument(tmp_path):
    result = _run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--small"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == "gpu_check.sh: unknown argument --small (expected --cpu-dry-run)\n"


@pytest.mark.parametrize(
    ("args", "status", "line"),
    [
        (["--dtypes", "fp8"], 1, "error: --dtypes: expected fp16 and/or bf16, got 'fp8'"),
        (["--batches", "1,x"], 1, "error: --batches: expected comma-separated counts, got '1,x'"),
        (["--batches", "0,4"], 2, "error: --batches must be at least 1, got 0"),
        (["--repeats", "0"], 2, "error: --repeats must be at least 1, got 0"),
        pytest.param(
            ["--device", "cuda"],
            1,
            "error: --device cuda: CUDA is not available here (use cpu or auto)",
            marks=no_cuda,
        ),
    ],
)
def test_the_unet_timing_refuses_bad_flags_before_building_the_unet(args, status, line, tmp_path):
    result = _run([sys.executable, str(ROOT / "bench" / "unet_step.py"), *args], tmp_path)
    assert result.returncode == status
    assert result.stderr.strip() == line


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--steps", "0"], "error: --steps must be at least 1, got 0"),
        (["--infer-steps", "-1"], "error: --infer-steps must be at least 1, got -1"),
    ],
)
def test_the_ddpo_precision_bench_refuses_bad_counts_before_training(args, line, tmp_path):
    result = _run([sys.executable, str(ROOT / "bench" / "ddpo_precision.py"), *args], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == line
    assert not list(tmp_path.iterdir())


def test_the_summary_names_the_failed_step_and_counts_the_tests(tmp_path):
    (tmp_path / "steps.tsv").write_text("tests\t1\t30\nunet_step\t0\t50\n", encoding="utf-8")
    (tmp_path / "pytest.log").write_text(
        "FAILED tests/test_gpu_cuda.py::test_x - AssertionError\n"
        "1 failed, 8 passed, 7 deselected in 12.50s\n",
        encoding="utf-8",
    )
    (tmp_path / "unet_step.json").write_text(json.dumps({"cases": []}), encoding="utf-8")
    ddpo = {"bf16, bf16 log-probs": {"seconds_per_step": 0.5, "approx_kl": 0.08}}
    (tmp_path / "ddpo_precision.json").write_text(json.dumps(ddpo), encoding="utf-8")
    result = _run([sys.executable, str(ROOT / "bench" / "gpu_summary.py"), "."], tmp_path)
    assert result.returncode == 1
    assert result.stdout == (
        f"gpu_check: failed: tests; tests: 1 failed, 8 passed, 7 deselected; "
        f"summary: {Path('.') / 'summary.json'}\n"
    )
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["tests"]["failed"] == ["tests/test_gpu_cuda.py::test_x"]
    assert summary["tests"]["counts"] == {"failed": 1, "passed": 8, "deselected": 7}
    assert summary["unet_step"] == {"cases": []}
    assert summary["ddpo_precision"] == ddpo


def test_the_summary_of_a_gpu_run_whose_tests_were_skipped_is_a_failure(tmp_path):
    """On the GPU a skipped gpu test checked nothing: "all steps passed" with every test
    skipped (CUDA not seen by pytest) read as a passed check. A dry run skips them all."""
    (tmp_path / "steps.tsv").write_text("tests\t0\t3\n", encoding="utf-8")
    (tmp_path / "pytest.log").write_text("9 skipped, 9 deselected in 0.53s\n", encoding="utf-8")
    summary = [sys.executable, str(ROOT / "bench" / "gpu_summary.py"), "."]
    result = _run(summary, tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("gpu_check: failed: tests (9 skipped on the GPU); ")
    assert _run([*summary, "--dry-run", "1"], tmp_path).returncode == 0
