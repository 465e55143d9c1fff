"""A hand-edited ``imagereward.json`` (dsharp's ImageReward folder) is refused in one line
naming the file, before transformers is imported where the file itself is at fault."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dsharp.rewards.base import RewardError
from dsharp.rewards.imagereward import CONFIG_FILE, build_imagereward_reward

REPO = Path(__file__).resolve().parents[1]

# Each a config that can be refused from the file alone: (config, what the error says).
BAD_FILES: dict[str, tuple[Any, str]] = {
    "other format": ({"format": "other"}, "format is 'other'"),
    "not an object": ([], "expected a JSON object, got list"),
    "no blip": ({"format": "dsharp-imagereward", "mean": 0, "std": 1}, "'blip' must be"),
    "std zero": (
        {"format": "dsharp-imagereward", "blip": {}, "mean": 0, "std": 0},
        "'mean' and 'std' must be finite numbers, std > 0",
    ),
    "mean not a number": (
        {"format": "dsharp-imagereward", "blip": {}, "mean": "x", "std": 1},
        "'mean' and 'std' must be finite numbers",
    ),
}

SCRIPT = """
import sys
from dsharp.rewards.imagereward import build_imagereward_reward
try:
    build_imagereward_reward(model=sys.argv[1], device="cpu")
except Exception as e:
    print(type(e).__name__, e)
print("transformers imported:", "transformers" in sys.modules)
"""


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_config_file_is_one_line_before_transformers_is_imported(
    tmp_path: Path, case: str
) -> None:
    """Before: transformers (seconds to import) was imported first, and a config that is no
    JSON object ended in an AttributeError traceback."""
    config, reason = BAD_FILES[case]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("RewardError imagereward reward option 'model': bad "), done
    assert reason in lines[0] and str(tmp_path / CONFIG_FILE) in lines[0]
    assert lines[1:] == ["transformers imported: False"], done


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dsharp.testing import tiny_rewards

    root = tmp_path_factory.mktemp("imagereward")
    return Path(tiny_rewards.make_tiny_imagereward(root)["model"])


@pytest.mark.parametrize(
    "blip",
    [{"vision_config": "x"}, {"text_config": {"num_attention_heads": 7}}],
    ids=["vision_config not a mapping", "heads not dividing the width"],
)
def test_a_blip_config_that_makes_no_model_is_one_line(
    tiny_folder: Path, tmp_path: Path, blip: dict[str, Any]
) -> None:
    """Before: transformers' own error (a dataclass check, a ValueError) as a traceback."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    (folder / CONFIG_FILE).write_text(json.dumps({**meta, "blip": blip}), encoding="utf-8")
    with pytest.raises(RewardError, match="'blip' config makes no model") as error:
        build_imagereward_reward(model=str(folder), device="cpu")
    assert "\n" not in str(error.value) and len(str(error.value)) < 600


def test_the_tiny_folder_still_loads(tiny_folder: Path) -> None:
    reward = build_imagereward_reward(model=str(tiny_folder), device="cpu")
    assert reward.std > 0


def test_a_damaged_tokenizer_of_the_folder_is_blamed_on_option_model(
    tiny_folder: Path, tmp_path: Path
) -> None:
    """A dsharp folder carries its own tokenizer; option 'tokenizer' is not used for it, so
    a refusal naming that option sent the user to a setting that changes nothing."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    (folder / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RewardError) as error:
        build_imagereward_reward(model=str(folder), tokenizer="bert-base-uncased", device="cpu")
    assert str(error.value).startswith("imagereward reward option 'model': cannot load "), error
    assert str(folder) in str(error.value) and "'tokenizer'" not in str(error.value)
