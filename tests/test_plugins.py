"""Reward plugins: registry, entry-point loading, allow-list, building, combining, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dsharp.config import RewardSpec
from dsharp.rewards import plugins
from dsharp.rewards.base import RewardError, RewardImages, RewardInfo
from dsharp.rewards.combine import CombinedReward, batch_zscore
from dsharp.rewards.hookspecs import hookimpl


class ConstReward:
    """Scores every image with ``value``; records its calls."""

    differentiable = False

    def __init__(self, value: float = 1.0, on_error: str = "raise"):
        self.value = value
        self.on_error = on_error
        self.calls = 0

    def __call__(self, images, prompts, metadata):
        self.calls += 1
        return torch.full((len(images),), float(self.value)), {"value": self.value}


def build_const(value: float = 1.0, on_error: str = "raise") -> ConstReward:
    return ConstReward(value, on_error)


class FakePlugin:
    """A plugin object, as a third-party module would be."""

    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name="fake_const", factory=build_const, description="constant"))
        register(RewardInfo(name="fake_not_a_reward", factory=lambda: object()))
        register(
            RewardInfo(
                name="fake_lazy_missing",
                factory=plugins.lazy_factory("dsharp_no_such_module", "build", extra="clip"),
            )
        )


@pytest.fixture
def fake_plugin():
    """Register a fake plugin with the real plugin manager, and unregister it after."""
    plugins.load_plugins()
    pm = plugins.pm
    pm.register(FakePlugin(), name="test-fake-plugin")
    try:
        yield
    finally:
        pm.unregister(name="test-fake-plugin")


def _images(batch: int) -> RewardImages:
    return RewardImages(torch.rand(batch, 3, 8, 8))


# --------------------------------------------------------------------------- registry


def test_builtin_shapes_is_registered_without_importing_it() -> None:
    registry = plugins.reward_registry()
    shapes = registry["shapes"]
    assert shapes.plugin == "builtin" and shapes.distribution == "dsharp"
    assert shapes.info.differentiable is False
    assert isinstance(shapes.info.factory, plugins.LazyFactory)


def test_listing_does_not_import_reward_modules() -> None:
    code = (
        "import sys\n"
        "from dsharp.rewards.plugins import reward_registry\n"
        "assert 'shapes' in reward_registry()\n"
        "print('dsharp.shapes.reward' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


def test_fake_plugin_is_listed_and_builds(fake_plugin: None) -> None:
    registry = plugins.reward_registry()
    assert registry["fake_const"].plugin == "test-fake-plugin"
    assert registry["fake_const"].info.description == "constant"
    assert "shapes" in registry  # the built-ins are still there

    reward = plugins.build_reward(RewardSpec(name="fake_const", options={"value": 2.5}))
    scores, info = reward(_images(3), ["a"] * 3, [{}] * 3)
    assert scores.tolist() == [2.5, 2.5, 2.5] and info == {"value": 2.5}


def test_combined_reward_builds_its_specs_through_the_registry(fake_plugin: None) -> None:
    specs = [
        RewardSpec(name="fake_const", weight=2.0, options={"value": 1.5}),
        RewardSpec(name="fake_const", options={"value": -1.0}),
    ]
    combined = CombinedReward(specs)
    total, info = combined(_images(2), ["p"] * 2, [{}] * 2)
    assert total.tolist() == [2.0, 2.0]
    assert info["raw"] == {"fake_const": [1.5, 1.5], "fake_const#1": [-1.0, -1.0]}
    with pytest.raises(ValueError, match="at least one reward"):
        CombinedReward([])


def test_build_passes_on_error_to_factories_that_declare_it(fake_plugin: None) -> None:
    reward = plugins.build_reward(RewardSpec(name="fake_const", on_error="missing"))
    assert reward.on_error == "missing"


def test_build_errors_are_reward_errors(fake_plugin: None) -> None:
    with pytest.raises(RewardError, match=r"bad options: .*'colour'.*\(accepted: value\)$"):
        plugins.build_reward(RewardSpec(name="fake_const", options={"colour": 1}))
    with pytest.raises(RewardError, match="factory returned object, not a Reward"):
        plugins.build_reward(RewardSpec(name="fake_not_a_reward"))
    with pytest.raises(RewardError, match=r"cannot import dsharp_no_such_module.*dsharp\[clip\]"):
        plugins.build_reward(RewardSpec(name="fake_lazy_missing"))


def test_unknown_reward_is_a_one_line_key_error_listing_known_names(fake_plugin: None) -> None:
    with pytest.raises(KeyError) as info:
        plugins.get_reward_info("fake_cosnt")
    assert isinstance(info.value, RewardError)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown reward 'fake_cosnt', did you mean 'fake_const'? (known: ")
    assert "shapes" in message


def test_a_plugin_whose_hook_raises_does_not_hide_the_others() -> None:
    class Broken:
        @hookimpl
        def register_rewards(self, register):
            register(RewardInfo(name="half_registered", factory=build_const))
            raise RuntimeError("no GPU\nsecond line")

    class Duplicate:
        @hookimpl
        def register_rewards(self, register):
            register(RewardInfo(name="shapes", factory=build_const))
            register(RewardInfo(name="bad name!", factory=build_const))

    plugins.load_plugins()
    plugins.pm.register(Broken(), name="test-broken")
    plugins.pm.register(Duplicate(), name="test-duplicate")
    try:
        registry = plugins.reward_registry()
        failures = {(f.plugin, f.error) for f in plugins.plugin_failures()}
    finally:
        plugins.pm.unregister(name="test-broken")
        plugins.pm.unregister(name="test-duplicate")
    assert registry["shapes"].plugin == "builtin"  # a plugin cannot take a built-in's name
    assert "half_registered" not in registry  # a failed hook registers nothing
    assert ("test-broken", "register_rewards failed: RuntimeError: no GPU second line") in failures
    assert ("test-duplicate", "reward 'shapes' already registered by plugin 'builtin'") in failures
    assert any(
        p == "test-duplicate" and "invalid reward name 'bad name!'" in e for p, e in failures
    )
    assert not any(f.plugin.startswith("test-") for f in plugins.plugin_failures())  # gone after


# --------------------------------------------------------------------------- loading


class FakeEntryPoint:
    """Enough of ``importlib.metadata.EntryPoint`` for the loader."""

    def __init__(
        self, name: str, dist: str, obj: Any = None, error: Exception | None = None, value=""
    ):
        self.name = name
        self.value = value or f"{dist.replace('-', '_')}.plugin"
        self.group = "dsharp"
        self.dist = SimpleNamespace(name=dist, version="1.2.3")
        self._obj, self._error = obj, error

    def load(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._obj


class GoodPlugin:
    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name="good", factory=build_const))


class TypoPlugin:
    @hookimpl
    def register_reward(self, register):  # misspelled hook name
        register(RewardInfo(name="typo", factory=build_const))


def _entry_points() -> list[FakeEntryPoint]:
    return [
        FakeEntryPoint("good", "dsharp-good", GoodPlugin()),
        FakeEntryPoint("broken", "dsharp-broken", error=ImportError("No module named 'open_clip'")),
        FakeEntryPoint("typo", "dsharp-typo", TypoPlugin()),
        # the built-in's own entry point: load_plugins registers that module directly
        FakeEntryPoint("builtin", "dsharp", obj=object(), value="dsharp.rewards.builtin"),
    ]


def test_failing_plugins_are_recorded_and_the_rest_load() -> None:
    manager = plugins.make_plugin_manager()
    failures = plugins.load_entry_points(manager, _entry_points(), allow=None)
    assert sorted(name for name, _ in manager.list_name_plugin()) == ["good"]
    by_plugin = {f.plugin: f for f in failures}
    assert by_plugin["broken"].distribution == "dsharp-broken"
    assert by_plugin["broken"].error == (
        "cannot import dsharp_broken.plugin: ImportError: No module named 'open_clip'"
    )
    assert by_plugin["typo"].error == (
        "unknown hook 'register_reward', did you mean 'register_rewards'?"
    )
    manager.check_pending()  # what is left is valid
    registry, problems = plugins._collect(manager)
    assert list(registry) == ["good"] and problems == []
    assert registry["good"].distribution == "dsharp-good" and registry["good"].version == "1.2.3"


def test_same_entry_point_name_in_two_distributions_loads_both() -> None:
    class Other:
        @hookimpl
        def register_rewards(self, register):
            register(RewardInfo(name="other", factory=build_const))

    manager = plugins.make_plugin_manager()
    eps = [
        FakeEntryPoint("rewards", "dist-a", GoodPlugin()),
        FakeEntryPoint("rewards", "dist-b", Other()),
    ]
    assert plugins.load_entry_points(manager, eps, allow=None) == []
    assert sorted(name for name, _ in manager.list_name_plugin()) == ["dist-b.rewards", "rewards"]
    registry, _ = plugins._collect(manager)
    assert {n: r.distribution for n, r in registry.items()} == {"good": "dist-a", "other": "dist-b"}


@pytest.mark.parametrize(
    ("env", "loaded", "failed"),
    [
        ("Dsharp_Good", ["good"], []),
        ("dsharp-good, dsharp-missing", ["good"], ["dsharp-missing"]),
        ("", [], []),
    ],
)
def test_allow_list_limits_distributions(env: str, loaded: list[str], failed: list[str]) -> None:
    allow = plugins.allowed_distributions({plugins.ENV_VAR: env})
    manager = plugins.make_plugin_manager()
    failures = plugins.load_entry_points(manager, _entry_points(), allow)
    assert sorted(name for name, _ in manager.list_name_plugin()) == loaded
    assert [f.plugin for f in failures] == failed
    assert plugins.allowed_distributions({}) is None


def test_empty_allow_list_still_loads_builtins_through_the_cli() -> None:
    env = {**os.environ, plugins.ENV_VAR: "", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "dsharp.cli", "rewards", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    doc = json.loads(done.stdout)
    names = [r["name"] for r in doc["rewards"]]
    assert "shapes" in names and "mllm" in names
    assert all(r["distribution"] == "dsharp" for r in doc["rewards"])
    assert [p["name"] for p in doc["plugins"]] == ["builtin"]
    assert doc["failures"] == []


# --------------------------------------------------------------------------- combining


class FixedReward:
    """Returns fixed scores (or raises) so combination arithmetic can be checked exactly."""

    def __init__(self, scores: list[float] | None = None, error: str = "", diff: bool = False):
        self.scores, self.error, self.differentiable = scores, error, diff
        self.calls = 0

    def __call__(self, images, prompts, metadata):
        self.calls += 1
        if self.error:
            raise RewardError(self.error)
        return torch.tensor(self.scores), {"n": len(self.scores)}


def _combine(*parts: tuple[dict[str, Any], FixedReward]) -> CombinedReward:
    specs = [RewardSpec.model_construct(**{**_SPEC, **s}) for s, _ in parts]
    return CombinedReward(specs, [r for _, r in parts])


_SPEC = {"weight": 1.0, "normalize": "none", "on_error": "raise", "options": {}}


def test_weights_and_zscore() -> None:
    a = FixedReward([1.0, 2.0, 3.0])
    b = FixedReward([10.0, 10.0, 40.0])
    combined = _combine(
        ({"name": "a", "weight": 2.0}, a), ({"name": "b", "normalize": "batch_zscore"}, b)
    )
    total, info = combined(_images(3), ["p"] * 3, [{}] * 3)
    z = (torch.tensor([10.0, 10.0, 40.0]) - 20.0) / torch.tensor([10.0, 10.0, 40.0]).std(
        correction=0
    )
    assert torch.allclose(total, 2 * torch.tensor([1.0, 2.0, 3.0]) + z)
    assert info["raw"] == {"a": [1.0, 2.0, 3.0], "b": [10.0, 10.0, 40.0]}
    assert info["missing"] == 0 and info["rewards"]["a"] == {"n": 3}
    assert a.calls == 1 and b.calls == 1  # once per batch


def test_zscore_floors_the_std_and_ignores_nan() -> None:
    assert batch_zscore(torch.tensor([5.0, 5.0])).tolist() == [0.0, 0.0]
    out = batch_zscore(torch.tensor([1.0, math.nan, 3.0]))
    assert (
        out[0].item() == pytest.approx(-1.0)
        and math.isnan(out[1])
        and out[2].item() == pytest.approx(1.0)
    )


def test_missing_samples_make_the_total_nan_and_are_counted() -> None:
    partial = FixedReward([1.0, math.nan, 3.0])
    combined = _combine(
        ({"name": "ok"}, FixedReward([1.0, 1.0, 1.0])),
        ({"name": "partial", "on_error": "missing"}, partial),
    )
    total, info = combined(_images(3), ["p"] * 3, [{}] * 3)
    assert total[0].item() == 2.0 and math.isnan(total[1]) and total[2].item() == 4.0
    assert info["missing"] == 1 and info["missing_by_reward"] == {"ok": 0, "partial": 1}
    assert info["raw"]["partial"] == [1.0, None, 3.0]
    json.dumps(info, allow_nan=False)  # info stays strict JSON


def test_on_error_raise_propagates_and_missing_marks_all() -> None:
    failing = FixedReward(error="server said 500")
    with pytest.raises(RewardError, match="reward 'judge': server said 500"):
        _combine(({"name": "judge"}, failing))(_images(2), ["p"] * 2, [{}] * 2)
    total, info = _combine(({"name": "judge", "on_error": "missing"}, failing))(
        _images(2), ["p"] * 2, [{}] * 2
    )
    assert torch.isnan(total).all() and info["missing"] == 2
    assert info["rewards"]["judge"] == {"error": "server said 500"}
    with pytest.raises(RewardError, match="returned NaN for 1 sample.*on_error is 'raise'"):
        _combine(({"name": "x"}, FixedReward([math.nan, 1.0])))(_images(2), ["p"] * 2, [{}] * 2)
    with pytest.raises(
        RewardError, match=r"as a Tensor of shape \(3,\), expected a tensor of shape \(2,\)"
    ):
        _combine(({"name": "x"}, FixedReward([1.0, 2.0, 3.0])))(_images(2), ["p"] * 2, [{}] * 2)


def test_a_rewards_own_exception_stops_naming_it_even_with_on_error_missing() -> None:
    """on_error: missing covers RewardError (a sample it cannot score); a ValueError or
    TypeError is a fault in the reward, reported with its name and type."""

    class Broken:
        differentiable = False

        def __call__(self, images, prompts, metadata):
            raise TypeError("'NoneType' object is not subscriptable")

    for on_error in ("raise", "missing"):
        combined = _combine(({"name": "plug", "on_error": on_error}, Broken()))
        with pytest.raises(RewardError, match=r"reward 'plug' failed: TypeError: 'NoneType'"):
            combined(_images(2), ["p"] * 2, [{}] * 2)


def test_infinite_scores_are_refused_or_missing_like_nan() -> None:
    with pytest.raises(RewardError, match="reward 'x' returned inf for 1 sample"):
        _combine(({"name": "x"}, FixedReward([math.inf, 1.0])))(_images(2), ["p"] * 2, [{}] * 2)
    total, info = _combine(({"name": "x", "on_error": "missing"}, FixedReward([-math.inf, 1.0])))(
        _images(2), ["p"] * 2, [{}] * 2
    )
    assert math.isnan(total[0]) and total[1].item() == 1.0 and info["missing"] == 1

    class ListInfo:
        differentiable = False

        def __call__(self, images, prompts, metadata):
            return torch.ones(len(prompts)), ["not", "a", "dict"]

    with pytest.raises(RewardError, match="reward 'x' returned info of type list"):
        _combine(({"name": "x"}, ListInfo()))(_images(2), ["p"] * 2, [{}] * 2)


def test_zero_weight_reports_only_and_repeated_names_get_keys() -> None:
    combined = _combine(
        ({"name": "r"}, FixedReward([1.0, 2.0])),
        ({"name": "r", "weight": 0.0, "on_error": "missing"}, FixedReward([math.nan, 5.0])),
    )
    total, info = combined(_images(2), ["p"] * 2, [{}] * 2)
    assert total.tolist() == [1.0, 2.0]
    assert info["raw"] == {"r": [1.0, 2.0], "r#1": [None, 5.0]}


def test_gradients_flow_through_a_differentiable_combination() -> None:
    class Mean:
        differentiable = True

        def __call__(self, images, prompts, metadata):
            return images.tensor.mean(dim=(1, 2, 3)), {}

    spec = RewardSpec.model_construct(**{**_SPEC, "name": "mean", "normalize": "batch_zscore"})
    combined = CombinedReward([spec], [Mean()])
    assert combined.differentiable
    pixels = torch.rand(4, 3, 8, 8, requires_grad=True)
    total, _ = combined(RewardImages(pixels), ["p"] * 4, [{}] * 4)
    total[0].backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_the_example_plugin_cannot_pull_the_unrelated_dsharp_from_pypi() -> None:
    """PyPI's ``dsharp`` 0.0.3 is another project ("a programming language"): the example
    plugin's requirement must refuse it and accept this dsharp, a dev release included."""
    import tomllib

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    ours = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    plugin = root / "plugins" / "dsharp-reward-jpeg" / "pyproject.toml"
    requirements = [
        Requirement(r) for r in tomllib.loads(plugin.read_text())["project"]["dependencies"]
    ]
    (dsharp,) = [r for r in requirements if r.name == "dsharp"]
    assert not dsharp.specifier.contains("0.0.3", prereleases=True)
    assert list(dsharp.specifier.filter([ours, "0.0.3"])) == [ours]  # as pip picks, no --pre
    assert dsharp.specifier.contains("0.1.0") and dsharp.specifier.contains("1.0")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_rewards_list_exits_1_after_listing_when_a_plugin_failed(flags: list[str]) -> None:
    from dsharp.cli import app

    class Broken:
        @hookimpl
        def register_rewards(self, register):
            raise RuntimeError("no GPU")

    plugins.load_plugins()
    plugins.pm.register(Broken(), name="test-broken")
    try:
        result = CliRunner().invoke(app, ["rewards", "list", *flags])
    finally:
        plugins.pm.unregister(name="test-broken")
    assert result.exit_code == 1, result.output
    assert "shapes" in result.stdout  # the working rewards are still listed
    assert "test-broken" in result.stdout
    # it loaded: its hook failed, which is not 'failed to load'
    assert result.stderr.strip() == "error: rewards of 1 plugin not registered: test-broken"


LONG_DIST = "dsharp-reward-a-rather-long-distribution-name"


class LongNamedPlugin:
    @hookimpl
    def register_rewards(self, register):
        description = "a description long enough to have to wrap in an 80-column table, " * 2
        register(RewardInfo(name="fake_long", factory=build_const, description=description))


def test_rewards_list_never_cuts_a_name_piped_or_in_a_terminal() -> None:
    import io

    from rich.console import Console

    from dsharp.cli import app
    from dsharp.commands.rewards import _print_tables

    plugins.load_plugins()
    plugin = LongNamedPlugin()
    plugins._set_provenance(plugin, LONG_DIST, "1.2.3")
    plugins.pm.register(plugin, name="test-long")
    try:
        piped = CliRunner().invoke(app, ["rewards", "list"])  # not a terminal
        rows = [r.as_dict() for r in plugins.reward_registry().values()]
    finally:
        plugins.pm.unregister(name="test-long")
        plugins._provenance.pop(id(plugin), None)
    assert piped.exit_code == 0, piped.output
    assert "…" not in piped.stdout
    (line,) = [line for line in piped.stdout.splitlines() if "fake_long" in line]
    assert LONG_DIST in line and "1.2.3" in line and "wrap in an 80-column table" in line

    screen = io.StringIO()  # an 80-column terminal: long cells wrap, none is cut short
    _print_tables(rows, [], Console(file=screen, width=80, force_terminal=True, color_system=None))
    text = screen.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    rows_cells = [line.split("│")[1:3] for line in text.splitlines() if line.count("│") == 6]
    first = next(i for i, (name, _) in enumerate(rows_cells) if name.strip() == "fake_long")
    wrapped = [rows_cells[first][1]]  # the distribution cell, over the lines of its row
    for name, dist in rows_cells[first + 1 :]:
        if name.strip():
            break
        wrapped.append(dist)
    assert "".join(piece.strip() for piece in wrapped) == LONG_DIST


def test_rewards_list_json(fake_plugin: None) -> None:
    from dsharp.cli import app

    result = CliRunner().invoke(app, ["rewards", "list", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {r["name"]: r for r in doc["rewards"]}
    assert rows["shapes"]["distribution"] == "dsharp"
    assert (
        rows["shapes"]["description"]
        == "Exact compositional score for the dsharp-mini shapes world"
    )
    assert rows["fake_const"] == {
        "name": "fake_const",
        "description": "constant",
        "differentiable": False,
        "plugin": "test-fake-plugin",
        "distribution": None,
        "version": None,
    }
    assert any(p["name"] == "test-fake-plugin" for p in doc["plugins"])


def test_rewards_score_prints_scores_and_fails_in_one_line(
    fake_plugin: None, tmp_path: Path
) -> None:
    from PIL import Image

    from dsharp.cli import app

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"im{i}.png")
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(paths[-1])
    args = ["rewards", "score", "fake_const", "--prompt", "a red circle", "--json"]
    args += ["--image", str(paths[0]), "--image", str(paths[1]), "--set", "value=0.25"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "reward": "fake_const",
        "scores": [0.25, 0.25],
        "info": {"value": 0.25},
    }

    bad = CliRunner().invoke(
        app, ["rewards", "score", "nope", "--image", str(paths[0]), "--prompt", "x"]
    )
    assert bad.exit_code == 2  # an unknown name is a bad setting, as in `dsharp eval`
    assert len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("error: unknown reward 'nope'")
    missing = CliRunner().invoke(
        app, ["rewards", "score", "fake_const", "--image", str(tmp_path / "x.png"), "--prompt", "x"]
    )
    assert missing.exit_code == 1 and "x.png: cannot read image" in missing.stderr
    # scored with training's checks: a NaN or inf score is refused, not printed as a score
    for value, word in ((".nan", "NaN"), (".inf", "inf")):
        args = ["rewards", "score", "fake_const", str(paths[0]), "--prompt", "x"]
        refused = CliRunner().invoke(app, [*args, "--set", f"value={value}"])
        assert refused.exit_code == 1, refused.output
        assert f"reward 'fake_const' returned {word} for 1 sample" in refused.stderr


def test_rewards_score_on_error_missing_shows_an_unscored_image_as_a_dash(
    fake_plugin: None, tmp_path: Path
) -> None:
    from PIL import Image

    from dsharp.cli import app

    path = tmp_path / "im.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    args = ["rewards", "score", "fake_const", str(path), "--prompt", "x", "--set", "value=.nan"]
    plain = CliRunner().invoke(app, [*args, "--on-error", "missing"])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines()[1].split() == [str(path), "-"]
    as_json = CliRunner().invoke(app, [*args, "--on-error", "missing", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["scores"] == [None]

    raised = CliRunner().invoke(app, args)  # the default stays: raise, saying how to go on
    assert raised.exit_code == 1 and "on_error is 'raise'" in raised.stderr
    assert raised.stderr.endswith(
        "; rerun with --on-error missing to show '-' for such images and score the others\n"
    )
    assert len(raised.stderr.splitlines()) == 1
    raised_json = CliRunner().invoke(app, [*args, "--json"])  # null there, not '-'
    assert raised_json.exit_code == 1 and raised_json.stdout == ""
    assert raised_json.stderr.endswith(
        "; rerun with --on-error missing to give such images null and score the others\n"
    )
    bad = CliRunner().invoke(app, [*args, "--on-error", "ignore"])
    assert bad.exit_code == 2
    assert bad.stderr == "error: --on-error: expected 'raise' or 'missing', got 'ignore'\n"
    in_set = CliRunner().invoke(app, [*args, "--set", "on_error=missing"])
    assert in_set.exit_code == 2 and "use --on-error" in in_set.stderr
    assert "--on-error" in CliRunner().invoke(app, ["rewards", "score", "--help"]).stdout


class NanInfoPlugin:
    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name="fake_naninfo", factory=NanInfoReward))


class NanInfoReward:
    """Scores 0.5, with a NaN and an infinity in its info (a confidence it could not tell)."""

    differentiable = False

    def __call__(self, images, prompts, metadata):
        info = {"confidence": [math.nan] * len(images), "spread": {"max": math.inf}}
        return torch.full((len(images),), 0.5), info


def test_rewards_score_json_is_strict_json_even_with_nan_in_the_info(tmp_path: Path) -> None:
    from PIL import Image

    from dsharp.cli import app

    path = tmp_path / "im.png"
    Image.new("RGB", (8, 8)).save(path)
    plugins.load_plugins()
    plugins.pm.register(NanInfoPlugin(), name="test-naninfo")
    try:
        args = ["rewards", "score", "fake_naninfo", str(path), "--prompt", "x", "--json"]
        result = CliRunner().invoke(app, args)
    finally:
        plugins.pm.unregister(name="test-naninfo")
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    doc = json.loads(result.stdout, parse_constant=refuse)
    assert doc["scores"] == [0.5]
    assert doc["info"] == {"confidence": [None], "spread": {"max": None}}


def test_rewards_score_takes_image_files_as_arguments(fake_plugin: None, tmp_path: Path) -> None:
    """`dsharp rewards score NAME a.png b.png` (a shell glob) scores them, with --image after
    them; no image at all (exit 2) or images of different sizes (exit 1) is one line."""
    from PIL import Image

    from dsharp.cli import app

    paths = []
    for i, size in enumerate([(8, 8), (8, 8), (8, 8), (16, 8)]):
        paths.append(tmp_path / f"im{i}.png")
        Image.new("RGB", size, (i * 60, 0, 0)).save(paths[-1])
    args = ["rewards", "score", "fake_const", str(paths[0]), str(paths[1])]
    args += ["--image", str(paths[2]), "--prompt", "a", "--prompt", "b", "--prompt", "c"]
    args += ["--set", "value=0.5"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scores"] == [0.5, 0.5, 0.5]
    plain = CliRunner().invoke(app, args)  # for a person: one line per image
    lines = plain.stdout.strip().splitlines()
    assert lines[0] == "fake_const:" and lines[-1] == "details (value) with --json"
    assert [line.split() for line in lines[1:-1]] == [[str(p), "0.5000"] for p in paths[:3]]

    none = CliRunner().invoke(app, ["rewards", "score", "fake_const", "--prompt", "a"])
    assert none.exit_code == 2  # a missing input, as no --prompt is
    assert none.stderr == "error: no image to score: give image files (or --image FILE)\n"

    mixed = CliRunner().invoke(
        app, ["rewards", "score", "fake_const", str(paths[0]), str(paths[3]), "--prompt", "a"]
    )
    assert mixed.exit_code == 1 and len(mixed.stderr.strip().splitlines()) == 1
    assert f"{paths[3]} is 16x8" in mixed.stderr and "separate calls" in mixed.stderr

    counts = CliRunner().invoke(app, [*args[:7], "--prompt", "a", "--prompt", "b", "--json"])
    assert counts.exit_code == 2  # three images, two prompts: a bad setting
    assert counts.stderr == "error: got 2 prompts for 3 images: give 1 or one each\n"
    outside = CliRunner().invoke(
        app, ["rewards", "score", "shapes", str(paths[0])] + ["--prompt", "a purple dragon"]
    )
    assert outside.exit_code == 2, outside.output  # refused before any image is scored
    assert outside.stderr.startswith("error: --prompt: reward 'shapes' cannot score a prompt")


def test_check_prompts_asks_rewards_that_can_tell_and_respects_on_error() -> None:
    from dsharp.config import RewardSpec
    from dsharp.rewards.plugins import check_prompts

    good, bad = ["a red circle", "two blue squares"], ["a red circle", "a red hexagon"]
    check_prompts([RewardSpec(name="shapes")], good)
    for name in ("shapes", "shapes_soft"):
        with pytest.raises(ValueError) as caught:
            check_prompts([RewardSpec(name="clip"), RewardSpec(name=name)], bad)
        assert str(caught.value) == (
            f"reward {name!r} cannot score a prompt: unknown word 'hexagon' in prompt "
            "'a red hexagon'"
        )
    # told to mark what it cannot score missing, the reward takes the prompt
    check_prompts([RewardSpec(name="shapes", on_error="missing")], bad)
    # a reward that registers no check is not asked
    check_prompts([RewardSpec(name="clip")], bad)


def test_a_name_two_third_party_plugins_claim_is_used_by_neither() -> None:
    """Which one won would depend on load order; the run would silently use one. Naming the
    reward then says why it is missing and how to choose."""

    def claim(name: str):
        class Claim:
            @hookimpl
            def register_rewards(self, register):
                register(RewardInfo(name="shapez", factory=build_const))
                register(RewardInfo(name=f"only_{name}", factory=build_const))

        return Claim()

    from dsharp.cli import app

    plugins.load_plugins()
    plugins.pm.register(claim("a"), name="test-claim-a")
    plugins.pm.register(claim("b"), name="test-claim-b")
    try:
        registry = plugins.reward_registry()
        about = [f for f in plugins.plugin_failures() if "shapez" in f.error]
        with pytest.raises(plugins.UnknownRewardError) as error:
            plugins.get_reward_info("shapez")
        listed = CliRunner().invoke(app, ["rewards", "list"])
        as_json = CliRunner().invoke(app, ["rewards", "list", "--json"])
    finally:
        plugins.pm.unregister(name="test-claim-a")
        plugins.pm.unregister(name="test-claim-b")
    assert "shapez" not in registry and {"only_a", "only_b"} <= set(registry)
    # one row in `dsharp rewards list`: not also "already registered by plugin 'test-claim-a'",
    # which says the first one is used
    assert [f.plugin for f in about] == ["test-claim-b"]
    message = str(error.value)
    assert "unknown reward 'shapez'" in message
    assert "did you mean" not in message  # the name is claimed, not misspelled
    assert "registered by several plugins, so neither is used" in message
    assert "test-claim-a" in message and "test-claim-b" in message
    assert "DSHARP_LOAD_PLUGINS" in message
    # both lost the reward: 'rewards of 1 plugin not registered: test-claim-b' blamed one
    assert listed.exit_code == 1, listed.output
    assert listed.stderr.strip() == (
        "error: rewards of 2 plugins not registered: test-claim-a, test-claim-b"
    )
    (row,) = [f for f in json.loads(as_json.stdout)["failures"] if "shapez" in f["error"]]
    assert row == about[0].as_dict() and set(row) == {"plugin", "distribution", "error"}


def test_an_unknown_reward_says_plugins_failed_or_were_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plugins, "_load_failures", [plugins.PluginFailure("x", "d", "boom")])
    monkeypatch.setattr(plugins, "_registration_failures", [])
    monkeypatch.delenv("DSHARP_LOAD_PLUGINS", raising=False)
    message = plugins.unknown_reward_message("jpeg", {"shapes": None})
    assert message.endswith("; plugin 'x' (d) failed to load: boom")  # the one: named
    two = [plugins.PluginFailure("x", "d", "boom"), plugins.PluginFailure("y", None, "bang")]
    monkeypatch.setattr(plugins, "_load_failures", two)
    message = plugins.unknown_reward_message("jpeg", {"shapes": None})
    assert "2 plugins failed to load (`dsharp rewards list`: why)" in message
    monkeypatch.setattr(plugins, "_load_failures", [])
    monkeypatch.setenv("DSHARP_LOAD_PLUGINS", "")
    assert "DSHARP_LOAD_PLUGINS limits" in plugins.unknown_reward_message("jpeg", {})


def test_an_unknown_reward_beside_one_plugin_that_loaded_but_registered_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plugin that loaded but whose rewards were refused did not 'fail to load'; a clash
    names both claimants in its own words: naming one as the failed plugin blamed it alone."""
    monkeypatch.delenv("DSHARP_LOAD_PLUGINS", raising=False)
    monkeypatch.setattr(plugins, "_load_failures", [])
    clash = (
        "reward 'bright' is registered by several plugins, so neither is used: a (da), b (db); "
        "choose one with DSHARP_LOAD_PLUGINS"
    )
    monkeypatch.setattr(
        plugins, "_registration_failures", [plugins.PluginFailure("b", "db", clash)]
    )
    message = plugins.unknown_reward_message("brigth", {"shapes": None})
    assert message.endswith(f"; {clash}")
    assert "failed to load" not in message
    failure = plugins.PluginFailure("c", "dc", "register_rewards failed: ValueError: no")
    monkeypatch.setattr(plugins, "_registration_failures", [failure])
    message = plugins.unknown_reward_message("brigth", {"shapes": None})
    assert message.endswith("; plugin 'c' (dc): register_rewards failed: ValueError: no")


def test_several_failures_are_counted_as_failed_to_load_or_not_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'N plugins failed to load' counted plugins that loaded but whose rewards were refused
    (a clash), and a plugin refused twice as two plugins."""
    monkeypatch.delenv("DSHARP_LOAD_PLUGINS", raising=False)
    broken = plugins.PluginFailure("x", "dx", "cannot import x: boom")
    monkeypatch.setattr(plugins, "_load_failures", [broken])
    refused = [
        plugins.PluginFailure("b", "db", "reward 'p' is registered by several plugins"),
        plugins.PluginFailure("b", "db", "invalid reward name 'q r'"),
    ]
    monkeypatch.setattr(plugins, "_registration_failures", refused)
    message = plugins.unknown_reward_message("jpeg", {"shapes": None})
    assert message.endswith(
        "; 1 plugin failed to load; rewards of 1 plugin not registered (`dsharp rewards list`: why)"
    )
    words = plugins.failures_in_words([broken, *refused], names=True)
    assert words == "1 plugin failed to load: x; rewards of 1 plugin not registered: b"
    monkeypatch.setattr(plugins, "_load_failures", [])
    message = plugins.unknown_reward_message("jpeg", {"shapes": None})
    assert "failed to load" not in message
    assert "; rewards of 1 plugin not registered (" in message


# --------------------------------------------------------------------------- plugin slips


class UnmarkedPlugin:
    def register_rewards(self, register):  # no @hookimpl: pluggy would skip it silently
        register(RewardInfo(name="unmarked", factory=build_const))


def test_a_plugin_whose_hook_is_not_marked_is_a_failure_not_silence() -> None:
    manager = plugins.make_plugin_manager()
    eps = [
        FakeEntryPoint("good", "dsharp-good", GoodPlugin()),
        FakeEntryPoint("unmarked", "dsharp-unmarked", UnmarkedPlugin()),
        FakeEntryPoint("empty", "dsharp-empty", SimpleNamespace()),
    ]
    failures = plugins.load_entry_points(manager, eps, allow=None)
    assert sorted(name for name, _ in manager.list_name_plugin()) == ["good"]
    errors = {f.plugin: (f.distribution, f.error) for f in failures}
    assert errors["unmarked"] == (
        "dsharp-unmarked",
        "dsharp_unmarked.plugin implements no dsharp hook: its register_rewards is not marked "
        "with dsharp's @hookimpl (from dsharp.rewards import hookimpl)",
    )
    assert errors["empty"][1] == (
        "dsharp_empty.plugin implements no dsharp hook (expected an @hookimpl register_rewards)"
    )


class MisnamedArgumentPlugin:
    @hookimpl
    def register_rewards(self, reg):  # the argument must be named as in the hookspec
        reg(RewardInfo(name="misnamed", factory=build_const))


def test_a_hook_with_the_wrong_argument_says_which_it_takes() -> None:
    manager = plugins.make_plugin_manager()
    eps = [FakeEntryPoint("misnamed", "dsharp-misnamed", MisnamedArgumentPlugin())]
    (failure,) = plugins.load_entry_points(manager, eps, allow=None)
    assert "Argument(s) {'reg'} are declared in the hookimpl" in failure.error
    assert failure.error.endswith("; dsharp's hook is register_rewards(register)")
    assert "\n" not in failure.error


def test_a_plugin_that_calls_sys_exit_is_a_failure_not_the_end_of_dsharp() -> None:
    """A module that runs its own CLI at import, or a hook that exits, would otherwise end
    every dsharp command, even one that uses only built-in rewards."""

    class ExitingHook:
        @hookimpl
        def register_rewards(self, register):
            raise SystemExit(3)

    manager = plugins.make_plugin_manager()
    eps = [
        FakeEntryPoint("exits", "dsharp-exits", error=SystemExit("usage: plugin [-h]")),
        FakeEntryPoint("hook", "dsharp-hook", ExitingHook()),
        FakeEntryPoint("good", "dsharp-good", GoodPlugin()),
    ]
    failures = plugins.load_entry_points(manager, eps, allow=None)
    assert [(f.plugin, f.error) for f in failures] == [
        ("exits", "cannot import dsharp_exits.plugin: SystemExit: usage: plugin [-h]")
    ]
    registry, problems = plugins._collect(manager)
    assert list(registry) == ["good"]
    assert [(f.plugin, f.error) for f in problems] == [
        ("hook", "register_rewards failed: SystemExit: 3")
    ]


class ChattyEntryPoint(FakeEntryPoint):
    def load(self) -> Any:
        print("chatty plugin imported")
        return super().load()


def test_a_plugin_that_prints_cannot_break_json_output(capsys: pytest.CaptureFixture) -> None:
    """``--json`` output is for programs: a plugin's prints go to stderr instead."""

    class Chatty:
        @hookimpl
        def register_rewards(self, register):
            print("chatty plugin registering")
            register(RewardInfo(name="chatty", factory=build_const))

    manager = plugins.make_plugin_manager()
    eps = [ChattyEntryPoint("chatty", "dsharp-chatty", Chatty())]
    assert plugins.load_entry_points(manager, eps, allow=None) == []
    registry, _ = plugins._collect(manager)
    assert list(registry) == ["chatty"]
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "chatty plugin imported\nchatty plugin registering\n"


class FaultyCheck(Exception):
    pass


def _raise(*args: Any) -> None:
    raise FaultyCheck("bug\nin plugin")


def _broken_build(**options: Any) -> Any:
    raise ModuleNotFoundError("No module named 'heavy_dep'")


class SlipsPlugin:
    """A third-party plugin whose own code fails where dsharp calls it."""

    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name="slip_build", factory=_broken_build))
        register(RewardInfo(name="slip_options", factory=build_const, check_options=_raise))
        register(RewardInfo(name="slip_prompt", factory=build_const, check_prompt=_raise))


@pytest.fixture
def slips_plugin():
    plugins.load_plugins()
    plugin = SlipsPlugin()
    plugins._set_provenance(plugin, "dsharp-reward-slips", "0.2")
    plugins.pm.register(plugin, name="test-slips")
    try:
        yield
    finally:
        plugins.pm.unregister(name="test-slips")


def test_a_factory_fault_names_the_reward_and_its_plugin(slips_plugin: None) -> None:
    with pytest.raises(RewardError) as caught:
        plugins.build_reward(RewardSpec(name="slip_build"))
    assert str(caught.value) == (
        "reward 'slip_build' (plugin 'test-slips', distribution dsharp-reward-slips 0.2) could "
        "not be built: ModuleNotFoundError: No module named 'heavy_dep'"
    )


class WrongScoresPlugin:
    """A third-party reward that returns scores of the wrong type, or raises, as it scores."""

    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name="slip_string", factory=lambda: FixedScores("0.5")))
        register(RewardInfo(name="slip_raise", factory=lambda: FixedScores(None)))


class FixedScores:
    differentiable = False

    def __init__(self, scores: Any):
        self.scores = scores

    def __call__(self, images, prompts, metadata):
        if self.scores is None:
            raise ZeroDivisionError("division by zero")
        return self.scores, {}


def test_a_scoring_fault_names_the_plugin_and_what_came_back() -> None:
    """Not ``scores of shape <class 'str'>``, and with the package to blame, as a fault in
    building the reward says."""
    plugins.load_plugins()
    plugin = WrongScoresPlugin()
    plugins._set_provenance(plugin, "dsharp-reward-slips", "0.2")
    plugins.pm.register(plugin, name="test-wrong-scores")
    where = "(plugin 'test-wrong-scores', distribution dsharp-reward-slips 0.2)"
    try:
        for name, said in (
            ("slip_string", "returned scores as a str, expected a tensor of shape (2,)"),
            ("slip_raise", "failed: ZeroDivisionError: division by zero"),
        ):
            with pytest.raises(RewardError) as caught:
                CombinedReward([RewardSpec(name=name)])(_images(2), ["p"] * 2, [{}] * 2)
            assert str(caught.value) == f"reward {name!r} {where} {said}"
    finally:
        plugins.pm.unregister(name="test-wrong-scores")


def test_a_check_that_crashes_is_a_plugin_fault_not_a_bad_setting(slips_plugin: None) -> None:
    """Not a ValueError or RewardError: those mean a value the user gave (exit 2)."""
    where = "(plugin 'test-slips', distribution dsharp-reward-slips 0.2)"
    with pytest.raises(plugins.PluginFaultError) as caught:
        plugins.check_reward_options(RewardSpec(name="slip_options"))
    assert not isinstance(caught.value, ValueError | RewardError)
    assert str(caught.value) == (
        f"reward 'slip_options' {where}: check_options failed: FaultyCheck: bug in plugin"
    )
    with pytest.raises(plugins.PluginFaultError) as caught:
        plugins.check_prompts([RewardSpec(name="slip_prompt")], ["a cat"])
    assert str(caught.value) == (
        f"reward 'slip_prompt' {where}: check_prompt failed on 'a cat': FaultyCheck: bug in plugin"
    )


def test_recipes_validate_reports_a_crashing_check_in_one_line(
    slips_plugin: None, tmp_path: Path
) -> None:
    from dsharp.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\nmethod: {name: rlhf_sharpening}\n"
        f"rewards: [{{name: slip_options}}]\ndata: {{generator: shapes}}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    for command in (["recipes", "validate"], ["train"]):
        result = CliRunner().invoke(app, [*command, str(recipe)])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.stderr.strip().splitlines()[-1] == (
            "error: reward 'slip_options' (plugin 'test-slips', distribution "
            "dsharp-reward-slips 0.2): check_options failed: FaultyCheck: bug in plugin"
        )


def _refuse_terse(options: Any) -> None:
    raise ValueError(f"option 'value': expected at most 1, got {options.get('value')!r}")


def _refuse_terse_reward_error(options: Any) -> None:
    raise RewardError("option 'value' is refused")


def _refuse_naming_itself(options: Any) -> None:
    raise ValueError("named_refusal: option 'value' is refused")


def _refuse_with_the_name_as_a_word(options: Any) -> None:
    raise ValueError("threshold must be > 0 (sharpness is measured on edges)")


def _refuse_option_named_as_the_reward(options: Any) -> None:
    raise ValueError("option 'model' is required")


def _refuse_quoted(options: Any) -> None:
    raise ValueError("reward 'quoted' needs option 'value'")


class RefusingPlugin:
    """A plugin whose check_options refuse a value: terse ones, and ones naming the reward."""

    @hookimpl
    def register_rewards(self, register):
        refusals = {
            "terse": _refuse_terse,
            "terse_rewarderror": _refuse_terse_reward_error,
            "named_refusal": _refuse_naming_itself,
            "sharpness": _refuse_with_the_name_as_a_word,
            "model": _refuse_option_named_as_the_reward,
            "quoted": _refuse_quoted,
        }
        for name, check in refusals.items():
            register(RewardInfo(name=name, factory=build_const, check_options=check))


@pytest.fixture
def refusing_plugin():
    plugins.load_plugins()
    plugins.pm.register(RefusingPlugin(), name="test-refusing")
    try:
        yield
    finally:
        plugins.pm.unregister(name="test-refusing")


def test_a_check_options_refusal_is_led_by_the_rewards_name(refusing_plugin: None) -> None:
    """The plugin contract asks the message to name the reward; one that does not would not
    say which of a recipe's rewards refused, so dsharp leads it with the name, keeping the
    kind of error (a bad setting, exit 2), and leaves a message that names it as it is."""
    with pytest.raises(ValueError) as caught:
        plugins.check_reward_options(RewardSpec(name="terse", options={"value": 2.0}))
    assert str(caught.value) == "reward 'terse': option 'value': expected at most 1, got 2.0"
    with pytest.raises(RewardError) as caught:
        plugins.check_reward_options(RewardSpec(name="terse_rewarderror"))
    assert str(caught.value) == "reward 'terse_rewarderror': option 'value' is refused"
    with pytest.raises(ValueError) as caught:
        plugins.check_reward_options(RewardSpec(name="named_refusal"))
    assert str(caught.value) == "named_refusal: option 'value' is refused"


def test_a_refusal_with_the_rewards_name_further_on_is_still_led_by_it(
    refusing_plugin: None,
) -> None:
    """The name anywhere as a word counted as naming the reward: `sharpness`'s refusal
    `threshold must be > 0 (sharpness is ...)` and `model`'s `option 'model' ...` were left
    without it. Only a message led by the name (or `reward 'NAME'`) is left as it is."""
    said = {}
    for name in ("sharpness", "model", "quoted"):
        with pytest.raises(ValueError) as caught:
            plugins.check_reward_options(RewardSpec(name=name))
        said[name] = str(caught.value)
    assert said == {
        "sharpness": "reward 'sharpness': threshold must be > 0 (sharpness is measured on edges)",
        "model": "reward 'model': option 'model' is required",
        "quoted": "reward 'quoted' needs option 'value'",
    }


def test_recipes_validate_and_rewards_score_name_a_terse_plugins_reward(
    refusing_plugin: None, tmp_path: Path
) -> None:
    from dsharp.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\nmethod: {name: rlhf_sharpening}\n"
        "rewards: [{name: shapes}, {name: terse, options: {value: 2.0}}]\n"
        f"data: {{generator: shapes}}\noutput_dir: {tmp_path / 'run'}\n"
    )
    result = CliRunner().invoke(app, ["recipes", "validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().endswith(
        "rewards.1.options: reward 'terse': option 'value': expected at most 1, got 2.0"
    ), result.stderr
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    args = ["rewards", "score", "terse", str(image), "--prompt", "p", "--set", "value=2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "reward 'terse': option 'value': expected at most 1, got 2" in result.stderr


def test_a_reward_that_returns_bare_scores_is_told_to_return_a_tuple() -> None:
    class Bare:
        differentiable = False

        def __call__(self, images, prompts, metadata):
            return torch.zeros(len(images))

    reward = _combine(({"name": "bare"}, Bare()))
    for batch in (2, 3):  # unpacking 2 would mislead ("shape ()"), 3 would not unpack
        with pytest.raises(RewardError) as caught:
            reward(_images(batch), ["p"] * batch, [{}] * batch)
        assert str(caught.value) == (
            f"reward 'bare' returned a Tensor of shape ({batch},), expected a (scores, info) tuple"
        )


def test_a_reward_that_returns_scores_and_info_as_a_list_still_scores() -> None:
    """A 2-item list worked before the (scores, info) check, and still does."""

    class Listed:
        differentiable = False

        def __call__(self, images, prompts, metadata):
            return [torch.full((len(images),), 0.25), {}]

    total, _ = _combine(({"name": "listed"}, Listed()))(_images(2), ["p"] * 2, [{}] * 2)
    assert total.tolist() == [0.25, 0.25]


@pytest.mark.parametrize(
    "pyproject", ["pyproject.toml", "plugins/dsharp-reward-jpeg/pyproject.toml"]
)
def test_the_license_is_an_spdx_expression_that_setuptools_will_keep_building(
    pyproject: str,
) -> None:
    """setuptools >= 77 deprecates ``license = {text = ...}`` and stops building it after
    2027-02-18; the SPDX string needs setuptools >= 77 at build time."""
    import tomllib

    from packaging.licenses import canonicalize_license_expression
    from packaging.requirements import Requirement

    doc = tomllib.loads((Path(__file__).resolve().parents[1] / pyproject).read_text())
    license_ = doc["project"]["license"]
    assert isinstance(license_, str) and canonicalize_license_expression(license_) == license_
    (setuptools,) = [
        Requirement(r) for r in doc["build-system"]["requires"] if r.startswith("setuptools")
    ]
    assert not setuptools.specifier.contains("76.0") and setuptools.specifier.contains("77.0")


def test_a_key_given_as_an_option_is_told_where_keys_go():
    """`--set api_key=...` on mllm was refused as an unknown option, with no word on how the
    grader takes its key; the message names api_key_env and never the key itself."""
    from dsharp.config import RewardSpec
    from dsharp.rewards.base import RewardError
    from dsharp.rewards.plugins import check_reward_options

    spec = RewardSpec(name="mllm", options={"model": "m", "api_key": "sk-canary-123"})
    with pytest.raises(RewardError) as caught:
        check_reward_options(spec)
    message = str(caught.value)
    assert message.endswith(
        "; api_key is not an option: put the key in an environment variable and give its "
        "name as api_key_env"
    )
    assert "sk-canary-123" not in message
    spec = RewardSpec(name="mllm", options={"model": "m", "colour": "red"})
    with pytest.raises(RewardError) as caught:
        check_reward_options(spec)
    assert "environment variable" not in str(caught.value)


def test_rewards_score_reads_the_images_before_it_builds_the_reward(
    fake_plugin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing image, or images of two sizes, fail in one line before the reward is built
    (a model reward loads its weights then: seconds to minutes)."""
    from PIL import Image

    import dsharp.rewards.combine
    from dsharp.cli import app

    def not_built(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("the reward was built")

    monkeypatch.setattr(dsharp.rewards.combine, "CombinedReward", not_built)
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (8, 8)).save(small)
    Image.new("RGB", (16, 16)).save(large)
    for images, reason in (
        ([str(small), str(tmp_path / "x.png")], "x.png: cannot read image"),
        ([str(small), str(large)], "images of one call must share a size"),
    ):
        args = ["rewards", "score", "fake_const", *images, "--prompt", "x", "--set", "value=1"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and reason in result.stderr
