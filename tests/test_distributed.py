"""Data-parallel training: two CPU processes (gloo, DDP) under ``accelerate launch``.

Each process draws different prompts, DDP averages the gradients, and both processes end
with the same UNet weights, equal to the checkpoint the main process saved.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsharp.io import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "dist_worker.py"
sys.path.insert(0, str(WORKER.parent))

from dist_worker import state_hash  # noqa: E402

LR = 1e-3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unet(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


@pytest.mark.slow
def test_two_processes_average_gradients_and_end_with_the_same_weights(tiny_sd_dir, tmp_path):
    out, run = tmp_path / "reports", tmp_path / "run"
    out.mkdir()
    overrides = [
        f"model.pretrained={tiny_sd_dir}",
        f"output_dir={run}",
        "train.max_steps=2",
        "train.batch_size=1",
        "train.optimizer=sgd",  # plain SGD: the update is -lr times the averaged gradient
        f"train.lr={LR}",
        "train.max_grad_norm=null",
        "train.lr_scheduler=linear",  # stepped once per optimizer step, not per process
        "method.n=2",
        "rewards.0.name=test_brightness",  # registered by the worker: no ties, always a pair
    ]
    # `accelerate launch --cpu` starts ONE process unless an MPI launcher is set up; the
    # torchrun-based launcher with ACCELERATE_USE_CPU gives two gloo processes (MULTI_CPU).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += [str(WORKER), str(ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml"), str(out)]
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "DSHARP_LOAD_PLUGINS": "",
    }
    done = subprocess.run(
        command + overrides, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    # each process drew its own prompts (and so computed its own losses)
    assert reports[0]["prompts"] != reports[1]["prompts"]
    assert len(reports[0]["losses"]) == len(reports[1]["losses"]) == 2
    # ... yet both end with the same weights, which the main process saved
    final = run / "checkpoints" / "step-000002" / "model" / "unet"
    assert reports[0]["hash"] == reports[1]["hash"] == state_hash(_unet(final))

    # step 1 moved the weights by -lr times the mean of the two processes' own gradients
    before = _unet(tiny_sd_dir / "unet")
    after = _unet(run / "checkpoints" / "step-000001" / "model" / "unet")
    grads = [torch.load(out / f"grad{r}.pt") for r in (0, 1)]
    mean = {k: (grads[0][k] + grads[1][k]) / 2 for k in grads[0]}
    assert any(float((grads[0][k] - grads[1][k]).abs().max()) > 1e-3 for k in mean)
    for name, grad in mean.items():
        delta = after[name] - before[name]
        torch.testing.assert_close(delta, -LR * grad, rtol=1e-3, atol=1e-7, msg=name)

    # the linear schedule: full rate at step 1, half at step 2 (not 0: one step per process)
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([LR, LR / 2])
    # each process trained on its prompt's pair: the step's count is their sum
    assert [r["pairs"] for r in rows] == [2, 2]
    # reward and reward_std are those of all the step's rewards, from every process
    for step, row in enumerate(rows):
        own = [r["metrics"][step] for r in reports]
        counts = [m["_reward_scored"] for m in own]
        assert counts == [2, 2]  # method.n=2 samples of one prompt
        mean = sum(n * m["reward"] for n, m in zip(counts, own, strict=True)) / sum(counts)
        square = sum(
            n * (m["reward_std"] ** 2 + m["reward"] ** 2) for n, m in zip(counts, own, strict=True)
        )
        assert row["reward"] == pytest.approx(mean, rel=1e-6)
        assert row["reward_std"] == pytest.approx((square / sum(counts) - mean**2) ** 0.5, rel=1e-4)
        assert "_reward_scored" not in row
    spread = [
        abs(a["reward"] - b["reward"])
        for a, b in zip(*(r["metrics"] for r in reports), strict=True)
    ]
    assert max(spread) > 1e-3  # the processes' means differ: the pooled std is not their mean


def _launch_worker(out: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    """tests/dist_worker.py on the tiny RLHF recipe in two gloo processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += [str(WORKER), str(ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml"), str(out)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["DSHARP_LOAD_PLUGINS"] = ""
    return subprocess.run(
        command + overrides, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


@pytest.mark.slow
def test_two_processes_pool_means_over_pairs_by_the_pairs_of_every_micro_batch(
    tiny_sd_dir, tmp_path
):
    """Two processes of two micro-batches each train on 2 + 1 and 2 + 0 pairs (the other
    prompts' trajectories tie): the step's winner_mse is the mean over its five pairs, not a
    mean of per-batch and per-process means; pairs and reward evaluations are the sums."""
    out, run = tmp_path / "reports", tmp_path / "run"
    out.mkdir()
    tied = "a blue circle"
    overrides = [
        f"model.pretrained={tiny_sd_dir}",
        f"output_dir={run}",
        "train.max_steps=1",
        "train.grad_accum=2",
        "train.seed=5",  # untied prompts per micro-batch: 2, 1 on rank 0; 2, 0 on rank 1
        "method.n=2",
        "rewards.0.name=test_brightness",
        f"rewards.0.options.constant_prompt={tied}",
        "data.generator=none",
        f"data.prompts=[a red square, {tied}]",
    ]
    done = _launch_worker(out, overrides)
    assert done.returncode == 0, done.stderr[-3000:]

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    calls = [m for r in reports for m in r["metrics"]]
    assert [m["pairs"] for m in calls] == [2, 1, 2, 0]
    (row,) = read_jsonl(run / "metrics.jsonl")
    assert row["pairs"] == 5
    mse = [m["winner_mse"] for m in calls]
    assert row["winner_mse"] == pytest.approx((2 * mse[0] + mse[1] + 2 * mse[2]) / 5, rel=1e-6)
    per_process = ((mse[0] + mse[1]) / 2 + mse[2]) / 2  # what a mean of means logged
    assert row["winner_mse"] != pytest.approx(per_process, rel=1e-6)
    assert row["reward_evals"] == sum(r["evaluations"] for r in reports) > 0


def test_two_processes_pool_ddpo_reward_statistics_over_the_whole_round(tmp_path):
    """Each process's rewards of a prompt enter both processes' buffers ({1, 3} and {5, 7}:
    mean 4), so their statistics and checkpoint state agree, as in ddpo-pytorch."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += [str(WORKER.parent / "dist_stats_worker.py"), str(tmp_path)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"stats{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["state"] == reports[1]["state"] == {"buffers": {"a": [1.0, 3.0, 5.0, 7.0]}}
    std = 5**0.5  # population std of {1, 3, 5, 7}
    assert reports[0]["advantages"] == pytest.approx([-3 / std, -1 / std], rel=1e-5)
    assert reports[1]["advantages"] == pytest.approx([1 / std, 3 / std], rel=1e-5)
    # without a buffer, a lone sample is normalised by the round's {1, 5}, not its own {x}
    assert [r["alone"] for r in reports] == [pytest.approx([-1.0]), pytest.approx([1.0])]


@pytest.mark.slow
def test_a_reward_fault_on_one_process_ends_both_instead_of_hanging(tiny_sd_dir, tmp_path):
    """Rank 1's reward raises at step 1 while rank 0 goes on into the step's collectives:
    rank 1 exits with its one-line error, and rank 0 must fail too (the launch ends
    non-zero) rather than wait for it; no checkpoint is left."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += [str(WORKER.parent / "dist_fault_worker.py")]
    command += [str(ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml")]
    command += [f"model.pretrained={tiny_sd_dir}", f"output_dir={run}", "--no-progress"]
    command += ["rewards.0.name=test_fails_on_rank_1", "method.n=2", "train.batch_size=1"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["DSHARP_LOAD_PLUGINS"] = ""
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode != 0
    failed = [line for line in done.stderr.splitlines() if "injected fault" in line]
    assert failed == [
        "error: reward 'test_fails_on_rank_1' (plugin 'test-fault-plugin') failed: "
        "RuntimeError: injected fault on rank 1"
    ], done.stderr[-3000:]
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_a_study_trains_its_rows_on_every_process_and_the_first_alone_evaluates(
    tiny_sd_dir, tmp_path
):
    """`dsharp reproduce` under a launch of two: the trained row trains data-parallel, then
    the first process alone evaluates both rows and writes the table, and prints them once."""
    out = tmp_path / "study"
    study = tmp_path / "study.yaml"
    study.write_text(
        json.dumps(  # JSON is YAML
            {
                "kind": "table",
                "title": "two processes",
                "base": str(ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml"),
                "overrides": [
                    f"model.pretrained={tiny_sd_dir}",
                    "train.max_steps=1",
                    "train.batch_size=1",
                    "method.n=2",
                    "method.infer_steps=2",
                    "sample.steps=2",
                ],
                "rows": [{"label": "base", "train": False}, {"label": "trained"}],
                "evaluate": {"prompts": ["a red circle"], "seeds": 1},
                "output_dir": str(out),
            }
        )
    )
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += [str(WORKER.parent / "dist_study_worker.py"), str(tmp_path), str(study)]
    command += ["--no-progress"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["DSHARP_LOAD_PLUGINS"] = ""
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    state = json.loads(
        (out / "trained" / "checkpoints" / "step-000001" / "trainer_state.json").read_text()
    )
    assert state["processes"] == 2
    for row in ("base", "trained"):
        assert json.loads((out / row / "eval.json").read_text())["n_images"] == 1
    assert done.stdout.count("wrote ") == 1 and done.stdout.count("[trained] train") == 1
    first, other = (json.loads((tmp_path / f"writes{r}.json").read_text()) for r in (0, 1))
    for name in ("base/eval.json", "trained/eval.json", "table.md", "table.csv"):
        assert first.count(["rename", str(out / name)]) == 1, name
    assert other == []  # (accelerate's random_states_1.pkl is written where no hook sees it)


@pytest.mark.slow
def test_a_refusal_every_process_makes_is_said_once(tiny_sd_dir, tmp_path):
    """A data file that is not there, found by every process after the launch: the first
    process says so in one line and the other exits as quietly (each printed it before)."""
    missing = tmp_path / "missing.jsonl"
    recipe = ROOT / "recipes" / "tiny" / "sft_sharpening.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += ["-m", "dsharp.cli", "train", str(recipe), f"model.pretrained={tiny_sd_dir}"]
    command += [f"output_dir={tmp_path / 'run'}", f"data.dataset={missing}", "data.generator=none"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["DSHARP_LOAD_PLUGINS"] = ""
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("recipe error:")]
    assert len(said) == 1 and f"data.dataset: not found: {missing}" in said[0], done.stderr
    assert "exitcode  : 2" in done.stderr  # both processes: the other's exit, as the first's
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "sample"])
def test_eval_and_sample_refuse_a_launch_once(command, tmp_path):
    """eval and sample run in one process: under a launch of two, the first says so in one
    line and the other waits for the launcher's stop without a word. It exited at once,
    and the launcher then stopped a first process slower to start (here by 2 s) before it
    had said anything: the launch failed without a line of why."""
    slow = tmp_path / "slow-first"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        'import os, time\nif os.environ.get("RANK") == "0":\n    time.sleep(2)\n'
    )
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    args = {
        "eval": ["eval", "--model", "dsharp-mini", "--bench", "shapes", "--limit", "1"],
        "sample": ["sample", "--model", "dsharp-mini", "-p", "a red circle"],
    }[command]
    command_line = [*launch, "-m", "dsharp.cli", *args, "--out", str(tmp_path / "out")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["DSHARP_LOAD_PLUGINS"] = ""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(slow), env.get("PYTHONPATH")]))
    done = subprocess.run(
        command_line, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert said == [
        f"error: dsharp {command} runs in one process, and this launch started 2: run it "
        "without accelerate launch (or torchrun, mpirun)"
    ], done.stderr
    assert not (tmp_path / "out").exists()


RESUME_WORKER = """
import os, sys, time
from pathlib import Path
from dsharp.folder_lock import hold_folder_lock
from dsharp.launch import leave_process_group
from dsharp.recipe_io import load_recipe
from dsharp.resume import launch_resume

recipe_path, run, out = (Path(a) for a in sys.argv[1:4])
recipe = load_recipe(recipe_path, [f"output_dir={run}", "train.resume=latest"])
rank = os.environ["RANK"]
if rank == "0":  # holds the run folder, as dsharp train's first process does
    lock = hold_folder_lock(run, "output_dir")
    while not (out / "rank1-asks").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # rank 1 asks first
else:
    (out / "rank1-asks").touch()
(out / f"rank{rank}.txt").write_text(launch_resume(recipe).name)
leave_process_group()
"""


def test_every_process_resumes_from_the_checkpoint_the_first_one_put_back(tmp_path):
    """A kill between the renames of step 2's re-save left it aside (``.step-000002.old``).
    The first process, which holds the run folder, puts it back and resumes from it; the
    second, which leaves it alone while another process holds the folder, took step 1: the
    two trained on from different checkpoints."""
    recipe = ROOT / "recipes" / "quickstart.yaml"
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    for folder, step in (("step-000001", 1), (".step-000002.old", 2)):
        state = run / "checkpoints" / folder / "trainer_state.json"
        state.parent.mkdir(parents=True)
        state.write_text(json.dumps({"step": step}))
    (run / "recipe.yaml").write_text(recipe.read_text())
    worker = tmp_path / "worker.py"
    worker.write_text(RESUME_WORKER)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += [str(worker), str(recipe), str(run), str(out)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(out / f"rank{r}.txt").read_text() for r in (0, 1)] == ["step-000002"] * 2
