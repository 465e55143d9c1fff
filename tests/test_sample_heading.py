"""A `dsharp sample` grid says what drew it: the method, its key options and verifier, and
the sampling (a demon grid looked just like a DDIM one). No model: a stand-in samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_results import invoke
from drawn_figures import drawn_figures
from dsharp import sheets
from dsharp.inference.demon import DemonOptions
from dsharp.score_words import sample_heading


@pytest.fixture
def figures(monkeypatch):
    """The figures grid.png would be written from."""
    return drawn_figures(monkeypatch, sheets)


@pytest.fixture
def stand_in_sampler(monkeypatch):
    """`dsharp sample` without a model: random images, as many as asked for."""
    import dsharp.commands.common as common
    import dsharp.generate as generate_module

    def generate(model, prompts, seeds, settings, **kwargs):
        evals = None if settings.method == "default" else 3.0
        return generate_module.Generated(torch.rand(len(prompts), 3, 8, 8), 4.0, evals)

    monkeypatch.setattr(common, "load_model_for_inference", lambda *args: None)
    monkeypatch.setattr(generate_module, "generate", generate)


def _sample_heading(tmp_path: Path, figures: list, *flags: str) -> str:
    args = ["sample", "--model", "dsharp-mini", "-p", "a red circle", "-n", "2"]
    result = invoke([*args, "--steps", "4", "--device", "cpu", "--out", tmp_path, *flags])
    assert result.exit_code == 0, result.output
    (sheet,) = figures
    return sheet._suptitle.get_text().replace("\n", " ")


def test_a_demon_grid_names_the_method_its_options_and_verifier(
    tmp_path, figures, stand_in_sampler
):
    flags = ["--method", "demon", "--option", "K=2", "--reward", "shapes"]
    heading = _sample_heading(tmp_path, figures, *flags)
    # demon does not use sample.eta: its own sde_eta is named instead
    assert heading == "demon K=2, sde_eta=1.0 (verifier: shapes); 4 DDIM steps, guidance 5.0"


def test_a_plain_grid_names_its_sampling(tmp_path, figures, stand_in_sampler):
    heading = _sample_heading(tmp_path, figures, "--guidance", "3")
    assert heading == "4 DDIM steps, guidance 3.0, eta 0.0"


def test_a_heading_names_a_methods_key_options_at_their_defaults():
    sample = {"method": "free2guide", "steps": 8, "guidance": 5.0, "eta": 0.5}
    sample |= {"options": {"temperature": 2.0}, "reward": [{"name": "shapes"}]}
    from dsharp.inference.free2guide import Free2GuideOptions

    assert sample_heading(sample, Free2GuideOptions(temperature=2.0)) == (
        "free2guide temperature=2.0, candidates=4, guided_steps=5 (verifier: shapes); "
        "8 DDIM steps, guidance 5.0, eta 0.5"
    )
    demon = {"method": "demon", "steps": 4, "guidance": 5.0, "eta": 0.0, "options": {}}
    assert sample_heading(demon, DemonOptions()) == "demon K=16, sde_eta=1.0; 4 DDIM steps, " + (
        "guidance 5.0, eta 0.0"
    )


def test_a_heading_with_one_side_given_does_not_say_none():
    """``--height 48`` alone drew the model's own width: the heading said ``48xNone``."""
    sample = {"steps": 3, "guidance": 5.0, "eta": 0.0}
    assert sample_heading({**sample, "height": 48, "width": None}).endswith(", height 48")
    assert sample_heading({**sample, "height": None, "width": 40}).endswith(", width 40")
    assert sample_heading({**sample, "height": 48, "width": 40}).endswith(", 48x40")


def test_a_scored_sheet_says_what_drew_it_above_what_its_numbers_are(tmp_path, figures):
    images = torch.rand(2, 3, 8, 8)
    sheets.save_contact_sheet(
        images, ["a", "a"], [0, 1], tmp_path / "g.png", [0.5, 0.25], "shapes", heading="DDIM"
    )
    assert figures[0]._suptitle.get_text() == (
        "DDIM\nabove each image: its seed and its score by shapes"
    )
