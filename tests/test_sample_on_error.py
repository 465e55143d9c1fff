"""`dsharp sample --on-error`: what an inference-time method does with candidates its verifier
(a flaky grader) cannot score. An unscored candidate is never chosen while another scored,
and is never given a score of its own; an image with no scored candidate stops the command."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_results import error_line as _error_line
from cli_results import invoke as _invoke
from dsharp.generate import SampleSettings, generate
from dsharp.inference.demon import demon_weights
from dsharp.models import load_model
from dsharp.rewards.base import RewardError
from fake_rewards import FLAKY, flaky_registered

PROMPT = "a red circle"


def _sample(out: Path, *extra: object):
    args = ["sample", "--model", "dsharp-mini", "-p", PROMPT, "--steps", "2", "--device", "cpu"]
    args += ["--method", "inference_scaling", "--option", "N=3", "--verifier", FLAKY]
    return _invoke([*args, "--out", out, "--no-grid", *extra])


def _brightest(meta, raw):
    """The brightest candidate of each call cannot be scored."""
    best = max(range(len(raw)), key=raw.__getitem__)
    return [i == best for i in range(len(raw))]


def _every(meta, raw):
    return [True] * len(raw)


def test_sample_stops_on_an_unscored_candidate_and_says_which_flag_goes_on(tmp_path):
    with flaky_registered(_brightest):
        result = _sample(tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert _error_line(result.stderr) == (
        f"error: prompt {PROMPT!r}, seed 0: reward {FLAKY!r} returned NaN for 1 sample(s) but "
        "its on_error is 'raise'; rerun with --on-error missing to pass over candidates the "
        "verifier cannot score (an image with none scored still stops)"
    )
    assert not (tmp_path / "out").exists()


def test_sample_on_error_missing_never_picks_the_unscored_candidate(tmp_path):
    """The brightest of three candidates is unscored: the image is the brightest scored one."""
    with flaky_registered(_brightest) as raw_calls:
        result = _sample(tmp_path / "out", "--on-error", "missing", "--json")
    assert result.exit_code == 0, result.output
    [raw] = raw_calls  # N=3 full samples, scored in one call
    [png] = (tmp_path / "out").glob("*.png")
    got = np.asarray(Image.open(png), dtype=np.float64).mean() / 255
    best, second = sorted(raw, reverse=True)[:2]
    assert abs(got - second) < 1 / 255 < best - second  # the unscored best lost


def test_sample_on_error_missing_with_no_candidate_scored_stops_in_one_line(tmp_path):
    with flaky_registered(_every):
        result = _sample(tmp_path / "out", "--on-error", "missing")
    assert result.exit_code == 1, result.output
    assert _error_line(result.stderr) == (
        f"error: prompt {PROMPT!r}, seed 0: the verifier could not score any candidate "
        "(every score is NaN)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "demon", "--reward", "shapes", "--on-error", "skip"], "expected 'raise' or"),
        (["--on-error", "missing"], "--on-error: used only by the verifier (--reward NAME)"),
        (["--reward", "shapes", "--on-error", "raise"], "--reward: sample.method 'default' uses"),
    ],
)
def test_sample_refuses_a_bad_or_unused_on_error_before_the_model_loads(tmp_path, extra, message):
    args = ["sample", "--model", tmp_path / "never-loaded", "-p", PROMPT, *extra]
    result = _invoke([*args, "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    assert message in _error_line(result.stderr)
    assert "--on-error" in _invoke(["sample", "--help"]).stdout


def test_zero_order_search_keeps_a_scored_pivot_over_a_round_with_no_neighbour_scored(
    tiny_sd_dir,
):
    """Every neighbour of round 1 unscored stopped the search, though the pivot (default's
    sample for the seed) had scored: it is kept."""
    model = load_model(str(tiny_sd_dir))
    verifier = {"name": FLAKY, "on_error": "missing"}
    options = {"search": "zero_order", "N": 2, "rounds": 1}
    settings = SampleSettings("inference_scaling", 2, 5.0, 0.0, 64, 64, options, verifier)
    plain = SampleSettings("default", 2, 5.0, 0.0, 64, 64)
    with flaky_registered(lambda meta, raw: [m["round"] == 1 for m in meta]):
        searched = generate(model, [PROMPT], [0], settings).images
    torch.testing.assert_close(searched, generate(model, [PROMPT], [0], plain).images)
    with flaky_registered(_every), pytest.raises(RewardError) as raised:
        generate(model, [PROMPT], [0], settings)  # nothing scored: no image to choose
    assert str(raised.value) == (
        f"prompt {PROMPT!r}, seed 0: the verifier could not score any candidate (every score "
        "is NaN)"
    )


def test_demon_counts_only_scored_candidates_when_the_scored_ones_tie():
    """Tied scores under tanh weigh 0 each, and combine_noises then counted every candidate
    equally, the unscored one too."""
    weights = demon_weights(torch.tensor([0.5, math.nan, 0.5]), "tanh", 1.0)
    assert weights.tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_verifier_for_the_plain_sampler_is_refused_not_ignored(tmp_path, command):
    """The default sampler draws one image per seed and asks no verifier: a ``--verifier``
    given to it would silently do nothing, so it is refused before the model loads."""
    args = [command, "--model", "dsharp-mini", "--verifier", "shapes", "--device", "cpu"]
    if command == "sample":
        args += ["-p", PROMPT, "--out", tmp_path / "out"]
    else:
        args += ["--bench", "shapes", "--limit", "1", "--seeds", "1"]
    result = _invoke(args)
    assert result.exit_code == 2, result.output
    line = _error_line(result.stderr)
    assert "uses no verifier" in line and "'default'" in line, line
    assert not (tmp_path / "out").exists()
