"""`dsharp train recipes/rlhf_mllm.yaml` on a tiny SDXL against a loopback grader server:
the run completes, the grader was really asked, and the API key is in no file of the run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mllm_server import GraderServer, Reply, grade_json

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-dsharp-accept-0123456789abcdef"


def _scored_reply(body: dict, n: int) -> Reply:
    """A deterministic overall score that differs between images (so pairs are not ties)."""
    image_url = body["messages"][-1]["content"][1]["image_url"]["url"]
    digest = hashlib.sha256(image_url.encode()).digest()
    return Reply(content=grade_json(overall=round(10 * digest[0] / 255, 3)))


@pytest.mark.slow
def test_rlhf_mllm_recipe_trains_one_step_and_keeps_the_key_secret(tmp_path, tiny_sdxl_dir):
    server = GraderServer()
    server.responder = _scored_reply
    try:
        env = dict(
            os.environ,
            OPENAI_BASE_URL=server.url,
            OPENAI_API_KEY=KEY,
            DSHARP_CACHE=str(tmp_path / "cache"),
        )
        run = tmp_path / "run"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dsharp.cli",
                "train",
                str(REPO / "recipes" / "rlhf_mllm.yaml"),
                f"model.pretrained={tiny_sdxl_dir}",
                "train.max_steps=1",
                f"output_dir={run}",
                # the tiny SDXL's native size keeps this CPU test short; the recipe says 512
                "train.height=64",
                "train.width=64",
                "train.grad_accum=1",
                "method.infer_steps=4",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=REPO,
        )
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert server.requests, "the grader server was never asked"
    assert all(r["auth"] == f"Bearer {KEY}" for r in server.requests)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and rows[-1]["reward"] is not None
    assert KEY not in done.stdout + done.stderr
    for path in run.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"key leaked into {path}"
