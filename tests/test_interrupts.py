"""Ctrl-C and SIGTERM during training: the first asks for a stop, a second Ctrl-C stops now."""

import signal

import pytest

from dsharp.interrupts import StopRequests


def test_first_signal_asks_a_second_ctrl_c_raises_and_handlers_come_back(capsys):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopRequests() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)  # what a scheduler sends before killing a job
        assert stop.requested
        assert "SIGTERM: stopping after this step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_without_a_signal_nothing_is_requested():
    with StopRequests() as stop:
        pass
    assert not stop.requested


def test_the_launchers_wait_leaves_a_handler_set_outside_python_as_it_is(monkeypatch):
    """A SIGTERM handler that ``getsignal`` cannot name (None: one set from C) is neither
    replaced nor "put back" (signal.signal refuses None); the launcher's SIGINT still ends
    the wait."""
    import os
    import time

    from dsharp.launch import stopped_by_the_launcher

    real = signal.getsignal
    before = {sig: real(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    during = []

    def launcher_stops(seconds: float) -> None:
        during.append(real(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(signal, "getsignal", lambda s: None if s == signal.SIGTERM else real(s))
    monkeypatch.setattr(time, "sleep", launcher_stops)
    try:
        assert stopped_by_the_launcher(5.0)
    finally:
        signal.signal(signal.SIGTERM, before[signal.SIGTERM])  # whatever a failure left
    assert during == [before[signal.SIGTERM]]
    assert real(signal.SIGINT) is before[signal.SIGINT]


def _set_outside_python(monkeypatch, sig: int) -> list[int]:
    """``sig``'s handler as one set from C (an embedding program, a library's own): for it
    ``getsignal`` gives None and ``signal.signal`` returns None. The list: each signal set."""
    real_get, real_set = signal.getsignal, signal.signal
    set_signals: list[int] = []

    def setting(s: int, handler: object) -> object:
        set_signals.append(s)
        previous = real_set(s, handler)  # None: the TypeError the real call raises
        return None if s == sig else previous

    monkeypatch.setattr(signal, "getsignal", lambda s: None if s == sig else real_get(s))
    monkeypatch.setattr(signal, "signal", setting)
    return set_signals


def test_training_leaves_a_handler_set_outside_python_as_it_is(monkeypatch):
    """Leaving training put back ``signal.signal(SIGTERM, None)``: a TypeError at the end of
    every run in such a process, and training's handler left in place."""
    real_get, real_set = signal.getsignal, signal.signal
    before = _handlers()
    set_signals = _set_outside_python(monkeypatch, signal.SIGTERM)
    try:
        with StopRequests() as stop:
            during = real_get(signal.SIGINT)
    finally:
        real_set(signal.SIGTERM, before[signal.SIGTERM])  # whatever a failure left
    assert during == stop._handle and set_signals == [signal.SIGINT, signal.SIGINT]
    assert real_get(signal.SIGINT) is before[signal.SIGINT]


def test_main_leaves_a_handler_set_outside_python_as_it_is(monkeypatch):
    import dsharp.cli

    real_get, real_set = signal.getsignal, signal.signal
    before = _handlers()
    seen = {}
    monkeypatch.setenv("DSHARP_VERBOSE", "1")
    monkeypatch.setattr(dsharp.cli, "app", lambda **_: seen.update(_handlers()))
    set_signals = _set_outside_python(monkeypatch, signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as ended:
            dsharp.cli.main()
    finally:
        real_set(signal.SIGTERM, before[signal.SIGTERM])
    assert ended.value.code == 0
    assert seen == {signal.SIGINT: dsharp.cli._stop, signal.SIGTERM: None}
    assert set_signals == [signal.SIGINT, signal.SIGINT]
    assert real_get(signal.SIGINT) is before[signal.SIGINT]


def _interrupted(*args, **kwargs):
    """Stands in for work that a Ctrl-C stops."""
    raise KeyboardInterrupt


def _train_one_step_then(report, tiny_sd_dir, run, monkeypatch):
    """``dsharp train`` of one step on the tiny SD into ``run``, a report following it that
    ``report`` stands in for (``post_train_report``); the CLI result."""
    from pathlib import Path

    from typer.testing import CliRunner

    import dsharp.posttrain
    from dsharp.cli import app

    monkeypatch.setattr(dsharp.posttrain, "post_train_report", report)
    monkeypatch.setattr(dsharp.posttrain, "wants_report", lambda recipe: True)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    args = ["train", str(recipe), f"model.pretrained={tiny_sd_dir}", f"output_dir={run}"]
    return CliRunner().invoke(app, [*args, "train.max_steps=1", "--no-progress"])


def test_a_signal_outside_training_says_so_in_one_line_and_exits_through_ctrl_c(capsys):
    from dsharp.cli import _stop

    with pytest.raises(KeyboardInterrupt):
        _stop(signal.SIGTERM, None)
    assert capsys.readouterr().err.strip() == "SIGTERM: stopped"


def test_an_interrupted_report_says_training_is_complete_and_how_to_write_it(
    tmp_path, tiny_sd_dir, monkeypatch
):

    run = tmp_path / "run"
    result = _train_one_step_then(_interrupted, tiny_sd_dir, run, monkeypatch)
    assert result.exit_code == 130, result.output
    assert f"training is complete in {run}, but its report was not written; write it with: " in (
        result.stderr
    )
    assert result.stderr.rstrip().endswith("train.resume=latest")
    assert (run / "checkpoints" / "step-000001").is_dir()


def _handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def test_main_handles_both_signals_while_a_command_runs_and_restores_them_after(monkeypatch):
    import dsharp.cli

    seen = {}
    monkeypatch.setenv("DSHARP_VERBOSE", "1")  # main leaves the environment alone
    monkeypatch.setattr(dsharp.cli, "app", lambda **_: seen.update(_handlers()))
    before = _handlers()
    with pytest.raises(SystemExit) as ended:
        dsharp.cli.main()
    assert ended.value.code == 0
    assert seen == {signal.SIGINT: dsharp.cli._stop, signal.SIGTERM: dsharp.cli._stop}
    assert _handlers() == before


def test_a_signal_the_job_was_started_ignoring_stays_ignored(monkeypatch):
    import dsharp.cli

    seen = {}
    monkeypatch.setenv("DSHARP_VERBOSE", "1")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` in a script
    try:
        monkeypatch.setattr(dsharp.cli, "app", lambda **_: seen.update(_handlers()))
        with pytest.raises(SystemExit):
            dsharp.cli.main()
        with StopRequests():
            seen["training"] = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen[signal.SIGINT] is signal.SIG_IGN and seen["training"] is signal.SIG_IGN
    assert seen[signal.SIGTERM] is dsharp.cli._stop


def test_ctrl_c_before_any_checkpoint_says_so_and_after_one_names_it(tmp_path, monkeypatch):
    from pathlib import Path

    from typer.testing import CliRunner

    import dsharp.engine
    from dsharp.cli import app

    monkeypatch.setattr(dsharp.engine, "train", _interrupted)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    run = tmp_path / "run"
    args = ["train", str(recipe), f"output_dir={run}", "eval.bench=null"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130
    assert result.stderr.strip().endswith("stopped before any checkpoint was saved")
    (run / "checkpoints" / "step-000003").mkdir(parents=True)
    (run / "checkpoints" / "step-000003" / "trainer_state.json").write_text('{"step": 3}')
    from dsharp.config import load_recipe, save_recipe
    from dsharp.methods.factory import with_method_defaults

    # the run is resumed: its recipe.yaml is what the resume is checked against
    save_recipe(with_method_defaults(load_recipe(recipe, args[2:])), run / "recipe.yaml")
    result = CliRunner().invoke(app, [*args, "train.resume=latest"])
    assert result.exit_code == 130
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped; continue from step-000003 with: dsharp train ")
    assert last.endswith("train.resume=latest")


def _sigterm_after_step(monkeypatch: pytest.MonkeyPatch, last: int) -> None:
    """Send SIGTERM (as a job scheduler does) once training step ``last`` has run."""
    from dsharp.engine import Trainer

    real_step = Trainer.train_step

    def step_then_sigterm(self, step):
        metrics = real_step(self, step)
        if step == last:
            signal.raise_signal(signal.SIGTERM)
        return metrics

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)


def test_a_stop_during_the_last_step_skips_the_report_and_says_how_to_write_it(
    tmp_path, tiny_sd_dir, monkeypatch
):
    """The report's evaluations can outlast training; a stop asked for during the last step
    (a scheduler's SIGTERM before its SIGKILL) must not start them."""
    from pathlib import Path

    from typer.testing import CliRunner

    import dsharp.posttrain
    from dsharp.cli import app

    reports = []
    _sigterm_after_step(monkeypatch, 2)
    monkeypatch.setattr(dsharp.posttrain, "post_train_report", lambda *a, **k: reports.append(a))
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    run = tmp_path / "run"
    args = ["train", str(recipe), f"model.pretrained={tiny_sd_dir}", "train.max_steps=2"]
    args += ["train.checkpoint_every=0", "--no-progress"]
    monkeypatch.setattr(dsharp.posttrain, "wants_report", lambda recipe: True)
    result = CliRunner().invoke(app, [*args, f"output_dir={run}"])
    assert result.exit_code == 130, result.output
    assert f"training is complete in {run}, but its report was not written" in result.stderr
    assert result.stderr.rstrip().endswith("train.resume=latest")
    assert reports == [] and (run / "checkpoints" / "step-000002").is_dir()

    monkeypatch.setattr(dsharp.posttrain, "wants_report", lambda recipe: False)
    result = CliRunner().invoke(app, [*args, f"output_dir={tmp_path / 'no-report'}"])
    assert result.exit_code == 0, result.output  # nothing was left out
    assert "not written" not in result.stderr


def test_a_stop_during_the_last_step_still_draws_the_final_training_curves(
    tmp_path, tiny_sd_dir, monkeypatch
):
    """Where a report follows, training leaves the final curves to it; a stop during the
    last step skips the report, so training draws them (they stopped one checkpoint short,
    or were never drawn where the only checkpoint is the last)."""
    from pathlib import Path

    from typer.testing import CliRunner

    import dsharp.curves
    import dsharp.engine
    import dsharp.posttrain
    from dsharp.cli import app

    drawn = []
    real_plot = dsharp.curves.plot_training_curves

    def plot(metrics, out, *args, **kwargs):
        drawn.append(max(row["step"] for row in dsharp.engine.read_jsonl(metrics)))
        return real_plot(metrics, out, *args, **kwargs)

    monkeypatch.setattr(dsharp.engine, "plot_training_curves", plot)
    _sigterm_after_step(monkeypatch, 2)
    monkeypatch.setattr(dsharp.posttrain, "wants_report", lambda recipe: True)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    run = tmp_path / "run"
    args = ["train", str(recipe), f"model.pretrained={tiny_sd_dir}", "train.max_steps=2"]
    result = CliRunner().invoke(app, [*args, "train.checkpoint_every=0", f"output_dir={run}"])
    assert result.exit_code == 130, result.output
    assert "its report was not written" in result.stderr
    assert drawn == [2] and (run / "training_curves.png").is_file()
    assert f"training curves: {run / 'training_curves.png'}" in result.stdout


def test_a_ctrl_c_while_the_report_files_are_renamed_does_not_say_it_was_not_written(
    tmp_path, tiny_sd_dir, monkeypatch
):
    """The Ctrl-C is held back until every file of the report's set is in place, then
    delivered: the report is whole and new, so 'its report was not written; write it with'
    (an evaluation run again for nothing) would be wrong."""
    import os
    from pathlib import Path

    from dsharp.file_sets import replaced_together

    real_replace = os.replace

    def report(recipe, run_dir, progress=True):
        files = [run_dir / "samples_grid.png", run_dir / "report.md"]

        def replace_interrupted(src, dst):
            if Path(dst).name == "samples_grid.png":  # the first rename of the set
                os.kill(os.getpid(), signal.SIGINT)
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace_interrupted)
        with replaced_together(*files) as staged:
            for path in files:
                staged(path).write_text("new")
        monkeypatch.setattr(os, "replace", real_replace)

    run = tmp_path / "run"
    result = _train_one_step_then(report, tiny_sd_dir, run, monkeypatch)
    monkeypatch.setattr(os, "replace", real_replace)
    assert result.exit_code == 130, result.output
    assert (run / "report.md").read_text() == "new"  # the whole set is in place
    assert "not written" not in result.stderr
    assert f"stopped after the report was written: {run / 'report.md'}" in result.stderr


_WAITING_COMMAND = """
import sys, time
import dsharp.cli

@dsharp.cli.app.command("wait")
def wait() -> None:
    print("ready", flush=True)
    time.sleep(60)

sys.argv = ["dsharp", "wait"]
dsharp.cli.main()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_through_the_console_script_exits_130_in_one_line(sig):
    """The real main(), which runs typer outside its standalone mode: a signal while a command
    runs ends it with status 130 and one line, not a traceback or typer's 'Aborted'."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", _WAITING_COMMAND],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready"  # main's handlers are in place
        process.send_signal(sig)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip() == f"{signal.Signals(sig).name}: stopped"


def test_no_command_with_plain_output_still_prints_the_help():
    """With TYPER_USE_RICH=0 typer leaves the help to whoever shows the usage error."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import sys, dsharp.cli; sys.argv = ['dsharp']; dsharp.cli.main()"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TYPER_USE_RICH": "0"},
    )
    assert done.returncode == 2
    assert (done.stdout + done.stderr).startswith("Usage: dsharp [OPTIONS] COMMAND")


def test_the_command_that_continues_a_stopped_run_prints_no_secret(
    tmp_path, tiny_sd_dir, monkeypatch
):
    """A base_url with credentials in it (the audit's scenario): the printed command shows it
    redacted, as every message does, and says to give it again."""
    from pathlib import Path

    from typer.testing import CliRunner

    from dsharp.cli import app

    _sigterm_after_step(monkeypatch, 1)
    monkeypatch.setenv("FAKE_KEY", "dummy")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    run = tmp_path / "run"
    secret_url = "rewards.0.options.base_url=http://alice:sk-SUPERSECRET123@127.0.0.1:9/v1"
    reward = ["rewards.0.name=mllm", "rewards.0.on_error=missing", "rewards.0.options.model=x"]
    reward += ["rewards.0.options.api_key_env=FAKE_KEY", "rewards.0.options.max_retries=0"]
    reward += ["rewards.0.options.timeout_s=1", secret_url]
    args = ["train", str(recipe), f"model.pretrained={tiny_sd_dir}", "train.max_steps=2"]
    args += ["train.checkpoint_every=0", *reward, f"output_dir={run}", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "SUPERSECRET" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped after step 1 of 2; checkpoint in {run}; continue with: ")
    assert " 'rewards.0.options.base_url=http://<redacted>@127.0.0.1:9/v1' " in last
    assert " rewards.0.options.model=x " in last  # the other overrides as given
    assert last.endswith(
        "train.resume=latest (secrets are not printed: give rewards.0.options.base_url its "
        "real value in place of <redacted>)"
    )


def test_the_continue_command_hides_a_secret_inside_a_mapping_or_declared_by_its_reward(
    monkeypatch,
):
    from pathlib import Path

    import dsharp.redaction
    from dsharp.commands.train import _resume_command
    from dsharp.config import recipe_from_dict

    monkeypatch.setattr(dsharp.redaction, "declared_secrets", lambda name: frozenset({"auth"}))
    base = {"model": {"pretrained": "dsharp-mini"}, "rewards": [{"name": "shapes"}]}
    cfg = recipe_from_dict({**base, "data": {"generator": "shapes"}})
    overrides = [
        "rewards.0.options={api_key: sk-SECRET1, model: m}",
        "rewards.0.options.auth=SECRET2",
        "train.lr=1e-3",
        "output_dir=elsewhere",
    ]
    command = _resume_command(cfg, Path("r.yaml"), overrides, Path("run"))
    assert "SECRET" not in command
    assert command == (
        'dsharp train r.yaml \'rewards.0.options={"api_key": "<redacted>", "model": "m"}\' '
        "'rewards.0.options.auth=<redacted>' train.lr=1e-3 output_dir=run train.resume=latest "
        "(secrets are not printed: give "
        "rewards.0.options, rewards.0.options.auth their real values in place of <redacted>)"
    )


@pytest.mark.parametrize("stop", ["signal", "ctrl-c"])
def test_under_a_launcher_one_process_says_how_to_continue_with_the_launcher(
    tmp_path, monkeypatch, stop
):
    """Every process of a launch stops; only the first prints the stop line (once, not once
    per process), and its command says to run it under the launcher again: a plain
    ``dsharp train`` is one process, whose steps would train on other batches."""
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    import dsharp.engine
    from dsharp.cli import app
    from dsharp.interrupts import TrainingInterrupted

    run = tmp_path / "run"

    def stopped(*args, **kwargs):  # after step 1's checkpoint
        (run / "checkpoints" / "step-000001").mkdir(parents=True, exist_ok=True)
        (run / "checkpoints" / "step-000001" / "trainer_state.json").write_text('{"step": 1}')
        if stop == "signal":
            raise TrainingInterrupted(1, run)
        raise KeyboardInterrupt

    monkeypatch.setattr(dsharp.engine, "train", stopped)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    args = ["train", str(recipe), f"output_dir={run}", "eval.bench=null"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        shutil.rmtree(run, ignore_errors=True)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 130, result.output
        said = [line for line in result.stderr.splitlines() if line.startswith("stopped")]
        if rank == "1":
            assert said == []
        else:
            assert len(said) == 1
            assert said[0].endswith(
                "train.resume=latest (under the launcher that started this run, with its "
                "2 processes)"
            )


def _launched(monkeypatch, rank: int) -> None:
    import dsharp.launch

    for name in dsharp.launch.RANK_VARIABLES + dsharp.launch.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")


@pytest.mark.parametrize("rank", [0, 1])
def test_under_a_launcher_the_launchers_repeat_of_a_stop_keeps_the_checkpoint(
    rank, monkeypatch, capsys
):
    """The terminal's Ctrl-C, then the launcher's SIGINT and SIGTERM: one stop at the step's
    end, said once by the first process, never the second Ctrl-C's stop without a checkpoint."""
    _launched(monkeypatch, rank)
    with StopRequests() as stop:
        try:
            for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
                signal.raise_signal(sig)
        except KeyboardInterrupt:
            pytest.fail("the launcher's repeat stopped at once, without a checkpoint")
        assert stop.requested
    said = capsys.readouterr().err.strip()
    expected = "SIGINT: stopping after this step and saving a checkpoint"
    assert said == (expected if rank == 0 else "")


def test_under_a_launcher_a_stop_outside_training_is_said_once(monkeypatch, capsys):
    """The launcher's SIGTERM after the Ctrl-C: no second line, and the cleanup the first
    one started is not interrupted."""
    import dsharp.cli

    _launched(monkeypatch, 0)
    monkeypatch.setattr(dsharp.cli, "_stopping", False)
    with pytest.raises(KeyboardInterrupt):
        dsharp.cli._stop(signal.SIGINT, None)
    try:
        dsharp.cli._stop(signal.SIGTERM, None)  # the launcher's: ignored
    except KeyboardInterrupt:
        pytest.fail("the launcher's SIGTERM interrupted the first stop's cleanup")
    assert capsys.readouterr().err.strip() == "SIGINT: stopped"
