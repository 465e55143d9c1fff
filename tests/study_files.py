"""study.yaml files written by hand over the tiny RLHF recipe, for tests of `dsharp
reproduce` and a study's outputs: one place says what a small study is, so that tests
differ only in what they vary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY_RLHF = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
#: dsharp-mini (no weights to load) trained two steps in a row that trains.
MINI_TWO_STEPS = ["model.pretrained=dsharp-mini", "train.max_steps=2"]
#: Each row evaluated on one prompt and one seed.
ONE_PROMPT = {"prompts": ["a red circle"], "seeds": 1}


def write_study(folder: Path, rows: list[dict], **fields: Any) -> Path:
    """``folder/study.yaml``: a table study of the tiny RLHF recipe with ``rows``, on
    ``MINI_TWO_STEPS``, evaluated on ``ONE_PROMPT``, into ``folder/out``. ``fields`` replace
    or add to these (``name``, ``kind="figure"``, ``plot``); a field given as None is left
    out; ``file`` names another file in ``folder``."""
    data = {
        "kind": "table",
        "base": str(TINY_RLHF),
        "overrides": MINI_TWO_STEPS,
        "rows": rows,
        "evaluate": ONE_PROMPT,
        "output_dir": str(folder / "out"),
    }
    path = folder / fields.pop("file", "study.yaml")
    data = {key: value for key, value in {**data, **fields}.items() if value is not None}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
