"""One rule for reward options that name a local path: `recipes validate`'s early check
(the registered ``check_options``) and the reward's loader refuse the same values with the
same line (:func:`dsharp.hub.missing_local_path`), and leave the same values (hub ids,
open_clip names) to loading. They used to be four copies of the rule, which disagreed (a
``weights.pt`` with no slash, a folder where a file goes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dsharp.config import RewardSpec
from dsharp.hub import missing_local_path
from dsharp.rewards import plugins
from dsharp.rewards.builtin import _LOCAL_SOURCES


@pytest.fixture
def values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The table: what each value is, and the value (relative ones read from tmp_path)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id is never fetched
    (tmp_path / "weights.pt").write_bytes(b"not weights")
    (tmp_path / "folder").mkdir()
    return {
        "existing file": str(tmp_path / "weights.pt"),
        "existing folder": str(tmp_path / "folder"),
        "missing ./x.pt": "./x.pt",
        "missing x.pt": "x.pt",
        "missing /abs/x": "/no-such-dsharp-folder/x",
        "local-dir:/missing": "local-dir:/no-such-dsharp-folder",
        "hf-hub:org/name": "hf-hub:dsharp-test/no-such-model",
        "hub id org/name": "dsharp-test/no-such-model",
        "missing ~/x": "~/no-such-dsharp-file",
    }


def test_missing_local_path_by_kind(values: dict[str, str]) -> None:
    file, folder = values["existing file"], values["existing folder"]
    home = Path("~/no-such-dsharp-file").expanduser()
    expected = {
        "file": {
            "existing folder": f"not a file: {folder}",
            "missing ./x.pt": "file not found: x.pt",
            "missing x.pt": "file not found: x.pt",
            "missing /abs/x": "file not found: /no-such-dsharp-folder/x",
            "missing ~/x": f"file not found: {home}",
        },
        "folder": {
            "existing file": f"not a folder: {file}",
            "missing ./x.pt": "folder not found: x.pt",
            "missing x.pt": "folder not found: x.pt",
            "missing /abs/x": "folder not found: /no-such-dsharp-folder/x",
            "missing ~/x": f"folder not found: {home}",
        },
        "file or folder": {
            "missing ./x.pt": "file not found: x.pt",
            "missing x.pt": "file not found: x.pt",
            "missing /abs/x": "file not found: /no-such-dsharp-folder/x",
            "missing ~/x": f"file not found: {home}",
        },
        "open_clip model": {
            "existing folder": f"not a file: {folder} (a model folder is given as "
            f"'local-dir:{folder}')",
            "missing ./x.pt": "file not found: x.pt",
            "missing x.pt": "file not found: x.pt",
            "missing /abs/x": "file not found: /no-such-dsharp-folder/x",
            "local-dir:/missing": "folder not found: /no-such-dsharp-folder",
            "missing ~/x": f"file not found: {home}",
        },
    }
    for kind, reasons in expected.items():
        got = {what: missing_local_path(value, kind) for what, value in values.items()}  # type: ignore[arg-type]
        assert got == {what: reasons.get(what) for what in values}, kind


def _early(reward: str, options: dict[str, Any]) -> str | None:
    check = plugins.get_reward_info(reward).check_options
    assert check is not None
    try:
        check(options)
    except ValueError as e:
        return str(e)
    return None


def _load(reward: str, options: dict[str, Any]) -> str | None:
    try:
        plugins.build_reward(RewardSpec(name=reward, options=options))
    except Exception as e:  # a path error, or any other reason the load fails
        return str(e)
    return None


@pytest.mark.parametrize("reward", sorted(_LOCAL_SOURCES))
def test_the_early_check_and_the_loader_agree(
    reward: str, tiny_reward_options: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    """For each option that may name a local path and each value of the table: the early
    check refuses it exactly when the loader refuses it for its path, in the same words."""
    refused = []
    for option in _LOCAL_SOURCES[reward]:
        path_error = re.compile(
            rf"option {option!r}: (file not found|folder not found|not a file|not a folder)"
        )
        for what, value in values.items():
            options = {**tiny_reward_options[reward], option: value}
            early, loaded = _early(reward, options), _load(reward, options)
            if early is not None:
                assert loaded == early, (option, what)
                refused.append((option, what))
            else:
                assert loaded is None or not path_error.search(loaded), (option, what, loaded)
    assert refused  # each reward has options the table's missing paths are refused for
