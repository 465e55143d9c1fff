"""The verifier's flags: `dsharp sample --set` passes options to every verifier (--reward), as
`dsharp eval --set` does to the rewards that score; a verifier that stops `dsharp eval` names
the way on for candidates, not for images."""

from __future__ import annotations

import pytest

from cli_results import error_line as _error_line
from cli_results import invoke as _invoke
from dsharp.cli import app
from dsharp.commands.errors import VERIFIER_ON_ERROR_HINT
from dsharp.commands.evaluate import ON_ERROR_HINT as IMAGES_HINT
from fake_rewards import FLAKY, NAME, brightness_registered, flaky_registered

PROMPT = "a red circle"


def _sample(out, *extra: object):
    """inference_scaling on dsharp-mini with two verifiers, both brightness (the flaky one is
    brightness that never fails by default), unscored candidates passed over."""
    args = ["sample", "--model", "dsharp-mini", "-p", PROMPT, "--steps", "2", "--device", "cpu"]
    args += ["--method", "inference_scaling", "--option", "N=2", "--no-grid", "--json"]
    args += ["--reward", NAME, "--reward", FLAKY, "--on-error", "missing", "--out", out]
    return _invoke([*args, *extra])


def test_sample_set_gives_its_option_to_every_verifier(tmp_path):
    """``nan_prompt`` makes a reward unable to score the prompt: given to both verifiers, no
    candidate scores and sampling stops; without --set both score."""
    with brightness_registered(), flaky_registered(lambda meta, raw: [False] * len(raw)):
        plain = _sample(tmp_path / "plain")
        assert plain.exit_code == 0, plain.output
        result = _sample(tmp_path / "set", "--set", f"nan_prompt={PROMPT}")
    assert result.exit_code == 1, result.output
    assert _error_line(result.stderr) == (
        f"error: prompt {PROMPT!r}, seed 0: the verifier could not score any candidate "
        "(every score is NaN)"
    )
    assert not (tmp_path / "set").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--set", "nan_prompt=x"],
            "error: --set: used only by the verifier (--reward NAME) of an inference-time "
            "method (--method free2guide, demon or inference_scaling)",
        ),
        (
            ["--method", "demon", "--reward", NAME, "--set", "on_error=missing"],
            "error: --set on_error=missing: on_error is not a reward option; use --on-error "
            "missing",
        ),
        (["--set", "nan_prompt"], "error: --set 'nan_prompt': expected KEY=VALUE"),
        (["--method", "demon", "--reward", NAME, "--set", "no_such_option=1"], "no_such_option"),
    ],
    ids=["no-verifier", "on_error", "malformed", "unknown-option"],
)
def test_sample_refuses_a_set_it_cannot_use_before_the_model_loads(tmp_path, extra, message):
    args = ["sample", "--model", tmp_path / "never-loaded", "-p", PROMPT, *extra]
    with brightness_registered():
        result = _invoke([*args, "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    line = _error_line(result.stderr)
    assert line.startswith(message) if message.startswith("error:") else message in line, line
    assert not (tmp_path / "out").exists()


def test_sample_help_shows_set_as_eval_does():
    import typer.main

    def set_option(command: str):
        params = typer.main.get_command(app).commands[command].params
        return next(p for p in params if "--set" in p.opts)

    sample, evaluate = set_option("sample"), set_option("eval")
    assert (sample.opts, sample.metavar, sample.multiple) == (
        evaluate.opts,
        evaluate.metavar,
        evaluate.multiple,
    )
    assert "KEY=VALUE (every --reward)" in sample.help and "--verifier" in evaluate.help
    assert "--set" in _invoke(["sample", "--help"]).stdout


def _brightest(meta, raw):
    """The brightest candidate of each call cannot be scored."""
    best = max(range(len(raw)), key=raw.__getitem__)
    return [i == best for i in range(len(raw))]


def test_eval_stopped_by_its_verifier_says_how_to_pass_over_candidates(tmp_path):
    """The hint was the scoring rewards' (images left unscored, counted in n_images), which
    does not say what --on-error missing does to a candidate of the verifier."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    args = ["eval", "--model", "dsharp-mini", "--prompts", prompts, "--reward", NAME]
    args += ["--method", "inference_scaling", "--option", "N=3", "--verifier", FLAKY]
    args += ["--seeds", "1", "--steps", "2", "--device", "cpu", "--out", out, "--json"]
    with brightness_registered(), flaky_registered(_brightest):
        result = _invoke(args)
    assert result.exit_code == 1, result.output
    line = _error_line(result.stderr)
    assert line.startswith(f"error: prompt {PROMPT!r}, seed 0: reward {FLAKY!r} returned NaN")
    assert line.endswith(f"; {VERIFIER_ON_ERROR_HINT}"), line
    assert IMAGES_HINT not in line
    assert not out.exists()


def test_eval_set_reaches_its_verifier_too(tmp_path):
    """``eval --set`` is every reward's option, the ``--verifier``'s included: given
    ``nan_prompt``, the verifier can score no candidate and says so (it used to be built
    without options, sample on, and leave the failure to the scoring reward)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT + "\n")
    args = ["eval", "--model", "dsharp-mini", "--prompts", prompts, "--reward", NAME]
    args += ["--seeds", "1", "--steps", "2", "--device", "cpu", "--out", tmp_path / "e.json"]
    args += ["--method", "inference_scaling", "--option", "N=2", "--verifier", NAME]
    args += ["--on-error", "missing", "--set", f"nan_prompt={PROMPT}"]
    with brightness_registered():
        result = _invoke(args)
    assert result.exit_code == 1, result.output
    assert "the verifier could not score any candidate" in _error_line(result.stderr)
    assert not (tmp_path / "e.json").exists()
