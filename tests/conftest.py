"""Shared fixtures. Tiny random models are built once per session from the real classes."""

from __future__ import annotations

import os

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine competing
# thread pools make the suite many times slower. Subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

if TYPE_CHECKING:
    from mllm_server import GraderServer

#: The workplace's shared data beside the repository (T2I-CompBench's prompt lists); tests
#: that read it skip without it, except where ``DSHARP_REQUIRE_SHARED=1`` (CI) says it must
#: be there: a missing folder must fail CI, not quietly skip what it covers.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2i-compbench"


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("DSHARP_REQUIRE_SHARED") == "1" and not SHARED_DATA.is_dir():
        pytest.exit(
            f"DSHARP_REQUIRE_SHARED=1 but {SHARED_DATA} is not there: the tests that read "
            "it would skip",
            returncode=1,
        )


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal():
    """Each test starts with SIGINT as a terminal gives it (KeyboardInterrupt), even when
    pytest itself was started with it ignored (``nohup``, ``cmd &`` in a script): the
    interrupt tests check what a user's Ctrl-C does, and training leaves an ignored SIGINT
    ignored on purpose. Tests of the ignored case set it themselves."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures a test kept open to inspect (many patch ``atomic_save_png``, which closes
    them) are closed after it, so that they do not pile up in pyplot's registry."""
    import sys

    yield
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion diffusers folder (64x64 images, latents 4x8x8)."""
    from dsharp.testing import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def sd_model(tiny_sd_dir: Path) -> Any:
    """The tiny SD model, full fine-tuning, one per test module; its tests never step an
    optimizer on it. The reference copy is made at once, before a test registers a hook on
    the UNet, so that the copy has none."""
    from dsharp.models import load_model

    model = load_model(str(tiny_sd_dir))
    model.prepare_reference()
    return model


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL diffusers folder (64x64 images, latents 4x8x8)."""
    from dsharp.testing import make_tiny_sdxl

    return make_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_reward_options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Options of each model-based built-in reward pointing at a tiny saved model of its
    real architecture, on the CPU; built once for every test that reads them."""
    from dsharp.testing import tiny_rewards

    root = tmp_path_factory.mktemp("tiny-rewards")
    options = {
        "clip": tiny_rewards.make_tiny_open_clip(root / "clip"),
        "aesthetic": tiny_rewards.make_tiny_aesthetic(root / "aesthetic"),
        "hpsv2": tiny_rewards.make_tiny_hpsv2(root / "hpsv2"),
        "pickscore": tiny_rewards.make_tiny_pickscore(root / "pickscore"),
        "compositional": tiny_rewards.make_tiny_blip_vqa(root / "vqa"),
        "imagereward": tiny_rewards.make_tiny_imagereward(root / "imagereward"),
    }
    return {name: {**opts, "device": "cpu"} for name, opts in options.items()}


@pytest.fixture
def model_must_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training (or `dsharp merge`) fails the test if it builds its model: for refusals of bad
    input that must come before the (slow) model loads."""
    import dsharp.builders
    import dsharp.engine

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was refused")

    monkeypatch.setattr(dsharp.engine, "build_model", must_not_load)
    monkeypatch.setattr(dsharp.builders, "build_model", must_not_load)  # merge's own import


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def launcher_stops_the_wait(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A launched process other than the first, after a refusal, waits for the launcher's
    stop: here the wait ends at once with the SIGTERM the launcher sends once the first
    process has exited. The list holds each wait's seconds."""
    import signal
    import time

    waits: list[float] = []

    def stopped(seconds: float) -> None:
        waits.append(seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(time, "sleep", stopped)
    return waits


def _import_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Imports ``scripts/<name>.py`` as a module (scripts are not a package)."""
    return _import_script


@pytest.fixture
def server() -> Iterator[GraderServer]:
    """The fake MLLM grader server (``mllm_server.py``) on 127.0.0.1, closed after the test."""
    from mllm_server import GraderServer

    srv = GraderServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def mllm_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fake key the MLLM tests look for (``mllm_server.KEY``); no real endpoint or user
    cache can be touched."""
    from mllm_server import KEY

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("DSHARP_CACHE", str(tmp_path / "cache"))
