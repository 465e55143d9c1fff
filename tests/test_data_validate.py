"""``dsharp recipes validate`` says what is wrong with a data row, and where, as ``train``
refuses it: not as something this machine cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "sft_sharpening.yaml"


@pytest.mark.parametrize(
    ("files", "dataset", "reason"),
    [
        (
            {"rows.jsonl": '{"image": "gone.png", "text": "a"}\n'},
            "rows.jsonl",
            "data.dataset: rows.jsonl:1: image not found: gone.png",
        ),
        (
            {"ds/metadata.jsonl": '{"img": "a.png", "text": "a"}\n'},
            "ds",
            f"data.image_column: {Path('ds') / 'metadata.jsonl'}:1 has no column 'file_name' "
            "(it has 'img', 'text')",
        ),
    ],
)
def test_validate_names_a_bad_data_row_as_train_refuses_it(
    tmp_path, monkeypatch, files, dataset, reason, model_must_not_load
):
    from dsharp.cli import app

    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    args = [str(RECIPE), "data.generator=none", f"data.dataset={dataset}", "output_dir=run"]
    train = CliRunner().invoke(app, ["train", *args])
    assert train.exit_code == 2, train.output
    assert train.stderr.strip() == f"recipe error: {RECIPE}: {reason}"
    validate = CliRunner().invoke(app, ["recipes", "validate", *args])
    assert validate.exit_code == 0, validate.output
    assert validate.stderr.strip() == f"note: train would refuse its data: {reason}"


def test_validate_names_a_missing_pairs_file_as_its_data(tmp_path, monkeypatch):
    # a missing input file is the recipe's data, not something this machine cannot run
    from dsharp.cli import app

    monkeypatch.chdir(tmp_path)
    recipe = RECIPE.parents[1] / "paper" / "diffusion_dpo.yaml"
    args = [str(recipe), "model.pretrained=dsharp-mini", "output_dir=run"]
    validate = CliRunner().invoke(app, ["recipes", "validate", *args])
    assert validate.exit_code == 0, validate.output
    assert validate.stderr.strip() == (
        "note: train would refuse its data: method.options.pairs_file: file not found: "
        f"your-preference-pairs.jsonl (relative to {tmp_path})"
    )
