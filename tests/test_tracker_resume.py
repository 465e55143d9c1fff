"""A resumed run's TensorBoard logs: the steps that a run killed past its last checkpoint
logged, and the resume logs again, are purged, as ``metrics.jsonl`` drops their rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dsharp.engine import tracker_init_kwargs
from dsharp.io import read_jsonl
from dsharp.recipe_io import load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def test_tensorboard_purges_the_steps_after_the_one_resumed():
    assert tracker_init_kwargs(["tensorboard"], 2) == {"tensorboard": {"purge_step": 3}}
    # a fresh run (step 0) purges what a killed start before any checkpoint logged
    assert tracker_init_kwargs(["wandb", "tensorboard"], 0) == {"tensorboard": {"purge_step": 1}}
    assert tracker_init_kwargs(["wandb"], 2) == {}  # wandb.init takes no purge_step
    assert tracker_init_kwargs([], 2) == {}


def _train(model_dir: Path, run: Path, *overrides: str):
    from dsharp.engine import Trainer

    recipe = load_recipe(
        RECIPE,
        [
            f"model.pretrained={model_dir}",
            f"output_dir={run}",
            "train.batch_size=1",
            "method.n=2",
            "train.trackers=[tensorboard]",
            "train.checkpoint_every=2",
            "train.max_steps=3",
            *overrides,
        ],
    )
    trainer = Trainer(recipe, progress=False)
    trainer.run()  # ends with the trackers' end_training: the event files closed
    return trainer


@pytest.mark.slow
def test_a_resumed_run_logs_each_step_once_in_tensorboard(tiny_sd_dir, tmp_path):
    """Killed after step 3 was logged and before its checkpoint was saved (here: that
    checkpoint deleted), the run resumes from step 2 and logs step 3 again: TensorBoard
    showed step 3 twice, the dead run's and the resumed one's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _train(tiny_sd_dir, run)
    shutil.rmtree(run / "checkpoints" / "step-000003")
    assert _train(tiny_sd_dir, run, "train.resume=latest").start_step == 2
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    events = EventAccumulator(str(run / "logs" / "dsharp"))
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert loss[-1].value == pytest.approx(rows[-1]["loss"])
