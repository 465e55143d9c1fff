"""The example plugin package, really installed: pip builds it, dsharp finds its entry point.

``plugins/dsharp-reward-jpeg`` is copied to a temporary folder (so the build leaves nothing
in the repository), installed with pip into a ``--target`` folder offline (no deps, no
build isolation: setuptools comes from this venv), and put on ``PYTHONPATH`` for ``dsharp``
subprocesses. The project venv itself is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "dsharp-reward-jpeg"

pytestmark = pytest.mark.slow  # a pip build and four interpreter starts: ~10 s on 2 cores


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the installed plugin (its ``.dist-info`` carries the entry point)."""
    work = tmp_path_factory.mktemp("jpeg-plugin")
    source = shutil.copytree(
        PLUGIN, work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "--target", str(target), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def dsharp(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DSHARP_LOAD_PLUGINS"}
    environ["PYTHONPATH"] = os.pathsep.join([str(site), environ.get("PYTHONPATH", "")])
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "dsharp.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
    )


def test_installed_plugin_is_listed_with_its_distribution(site: Path) -> None:
    done = dsharp(site, "rewards", "list", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rows = {r["name"]: r for r in doc["rewards"]}
    assert rows["jpeg_compressibility"]["distribution"] == "dsharp-reward-jpeg"
    assert rows["jpeg_compressibility"]["version"] == "0.1.0"
    assert rows["jpeg_compressibility"]["plugin"] == "jpeg"
    assert "shapes" in rows  # the built-ins still load beside it
    plugin = next(p for p in doc["plugins"] if p["name"] == "jpeg")
    assert plugin["hooks"] == ["register_rewards"]
    assert doc["failures"] == []

    builtins_only = dsharp(site, "rewards", "list", "--json", DSHARP_LOAD_PLUGINS="")
    names = [r["name"] for r in json.loads(builtins_only.stdout)["rewards"]]
    assert "jpeg_compressibility" not in names and "shapes" in names


def test_installed_plugin_scores_image_files(site: Path, tmp_path: Path) -> None:
    from PIL import Image

    flat, noisy = tmp_path / "flat.png", tmp_path / "noisy.png"
    Image.new("RGB", (64, 64), (120, 130, 140)).save(flat)
    Image.effect_noise((64, 64), 80).convert("RGB").save(noisy)
    done = dsharp(
        site, "rewards", "score", "jpeg_compressibility", "--image", str(flat),
        "--image", str(noisy), "--prompt", "p", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["reward"] == "jpeg_compressibility"
    flat_score, noisy_score = doc["scores"]
    assert isinstance(flat_score, float) and flat_score < 0 and flat_score > noisy_score
    assert doc["info"]["jpeg_kb"] == pytest.approx([-flat_score, -noisy_score])

    bad = dsharp(
        site, "rewards", "score", "jpeg_compressibility", "--image", str(flat), "--prompt", "p",
        "--set", "quality=500",
    )  # fmt: skip
    assert bad.returncode == 2  # a bad setting, refused by its check_options before scoring
    assert bad.stderr.strip() == (
        "error: jpeg_compressibility: option 'quality': expected an integer 1-100, got 500"
    )


def _readme_block(marker: str) -> str:
    """The README code block whose first line is ``marker``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in text.split("```")[1::2]:
        body = block.split("\n", 1)[1]
        if body.startswith(marker):
            return body
    raise AssertionError(f"no README code block starts with {marker!r}")


def test_the_readmes_plugin_example_installs_and_scores(tmp_path: Path) -> None:
    """The package a reader builds from the README's two blocks, as written."""
    package = tmp_path / "myplugin"
    module = package / "src" / "dsharp_reward_myplugin"
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(_readme_block("# src/dsharp_reward_myplugin/__init__.py"))
    (package / "pyproject.toml").write_text(_readme_block("# pyproject.toml"))
    target = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "--target", str(target), str(package)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    listed = dsharp(target, "rewards", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)["rewards"]}
    assert rows["myreward"]["distribution"] == "dsharp-reward-myplugin"
    image = tmp_path / "grey.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (51, 51, 51)).save(image)
    scored = dsharp(target, "rewards", "score", "myreward", str(image), "--prompt", "x", "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["scores"] == [pytest.approx(0.2, abs=1e-3)]
