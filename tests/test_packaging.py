"""dsharp as a package index gives it: an sdist that holds what a rebuild and its tests need,
and a wheel built from that sdist that holds dsharp-mini, its model card and the recipes.

The project files are copied to a temporary folder (the build leaves nothing in the
repository); setuptools comes from this venv (no build isolation, nothing fetched). The wheel
is installed with ``--target`` and run from an empty folder with only that copy of dsharp on
``PYTHONPATH``, as a user without a checkout runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what the sdist is built from: the files a release of the checkout has (MANIFEST.in, pyproject)
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "CHANGELOG.md", "src"]
SOURCES += ["recipes", "tests", "docs", "bench", "scripts", "plugins", ".ci"]


def test_pyproject_lists_every_subpackage_and_ships_the_recipes() -> None:
    """The package list is written out (so recipes/ can ship as dsharp.recipes): a new
    subpackage left out of it would be missing from the wheel."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT / "src").parts)
        for p in (ROOT / "src" / "dsharp").rglob("__init__.py")
    }
    assert set(tool["packages"]) == on_disk | {"dsharp.recipes"}
    assert tool["package-dir"] == {"": "src", "dsharp.recipes": "recipes"}


def _build(backend_call: str, source: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    code = f"from setuptools import build_meta as b; print(b.{backend_call}({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel built from that sdist's unpacked tree)."""
    pytest.importorskip("setuptools", minversion="77")  # the SPDX license string (dev extra)
    work = tmp_path_factory.mktemp("packaging")
    tree = work / "tree"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tree / name, ignore=skip)
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    sdist = _build("build_sdist", tree, work / "dist")
    with tarfile.open(sdist) as tar:
        # the "data" filter (no links out, no devices) came with Python 3.11.4
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(work / "unpacked", **safe)  # noqa: S202 - our own sdist
    unpacked = next((work / "unpacked").iterdir())
    wheel = _build("build_wheel", unpacked, work / "dist")
    return sdist, wheel


@pytest.mark.slow  # two setuptools builds of 16 MB of model files: ~10 s on 2 cores
def test_sdist_holds_what_a_rebuild_and_its_tests_need(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in [
        "LICENSE",
        "CHANGELOG.md",
        "recipes/quickstart.yaml",
        "recipes/prompts/general.txt",
        "tests/conftest.py",  # the tests' fixtures and helpers, not only test_*.py
        "tests/cli_results.py",
        "docs/methods.md",
        "plugins/dsharp-reward-jpeg/pyproject.toml",
        "src/dsharp/assets/dsharp-mini/unet/diffusion_pytorch_model.safetensors",
    ]:
        assert needed in names, needed
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


@pytest.mark.slow
def test_wheel_holds_the_code_the_embedded_model_and_the_recipes(
    built: tuple[Path, Path],
) -> None:
    _, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "dsharp"
    modules = {f"dsharp/{p.relative_to(package)}" for p in package.rglob("*.py")}
    assert modules <= names, sorted(modules - names)[:5]
    mini = "dsharp/assets/dsharp-mini/"
    for needed in [
        mini + "MODEL_CARD.md",
        mini + "model_index.json",
        mini + "unet/diffusion_pytorch_model.safetensors",
        mini + "text_encoder/model.safetensors",
        mini + "tokenizer/tokenizer.json",
        mini + "scheduler/scheduler_config.json",
        "dsharp/assets/reference/paper_tables.yaml",
        "dsharp/recipes/quickstart.yaml",
        "dsharp/recipes/mini/table1.yaml",
        "dsharp/recipes/prompts/general.txt",
        "dsharp/py.typed",
    ]:
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "recipes/", "docs/")) for n in names)


@pytest.mark.slow
def test_installed_wheel_runs_the_readme_quickstart_setup_without_a_checkout(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, wheel = built
    site = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index"]
    command += ["--disable-pip-version-check", "--target", str(site), str(wheel)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    user = tmp_path / "user"
    user.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DSHARP_")}
    environ["PYTHONPATH"] = str(site)  # not this checkout's src/
    environ["DSHARP_CACHE"] = str(tmp_path / "cache")

    def dsharp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dsharp.cli", *args],
            cwd=user,
            capture_output=True,
            text=True,
            timeout=300,
            env=environ,
        )

    missing = dsharp("recipes", "validate", "recipes/quickstart.yaml")
    assert missing.returncode == 2
    assert "`dsharp recipes copy`" in missing.stderr
    copied = dsharp("recipes", "copy")
    assert copied.returncode == 0, copied.stderr
    assert (user / "recipes" / "quickstart.yaml").read_bytes() == (
        ROOT / "recipes" / "quickstart.yaml"
    ).read_bytes()
    valid = dsharp("recipes", "validate", "recipes/quickstart.yaml")
    assert valid.returncode == 0, valid.stderr
    assert "dsharp-mini" in valid.stdout

    code = (
        "import dsharp, dsharp.models.loading as m;"
        "print(dsharp.__file__); print(m.resolve_pretrained('dsharp-mini'))"
    )
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=user, capture_output=True, text=True, env=environ
    )
    assert where.returncode == 0, where.stderr
    package, mini = where.stdout.split()
    assert Path(package).is_relative_to(site) and Path(mini).is_relative_to(site)
    assert (Path(mini) / "MODEL_CARD.md").is_file()
