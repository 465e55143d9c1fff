"""Test helper for tests/test_distributed.py, run by ``accelerate launch`` in each process.

Usage: ``dist_worker.py RECIPE OUT_DIR [key=value ...]``; the fake reward ``test_brightness``
(tests/fake_rewards.py) is registered here for recipes to use. Before training, each process
computes its own (not yet averaged) gradient of step 1 on the inner UNet and saves it; then
it trains with the real engine, recording the prompts it drew, its losses and its own
metrics. At the end
each process writes ``OUT_DIR/rank{N}.json`` with a hash of its final UNet weights, so the
test can prove that every process ends with the same weights although each saw other data.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from dsharp.config import load_recipe
from dsharp.data import torch_generator
from dsharp.engine import Trainer
from fake_rewards import register as register_fake_rewards


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and float32 bytes of a state dict, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def local_step_one_gradient(trainer: Trainer) -> dict[str, torch.Tensor]:
    """This process's own step-1 gradient, computed on the unwrapped UNet (no averaging)."""
    train, rank = trainer.recipe.train, trainer.accelerator.process_index
    batch = trainer.data.batch(train.batch_size, 1, rank, 0)
    loss, _ = trainer.method.compute_loss(
        batch, trainer.model.unet, torch_generator(train.seed, 1, rank, 0)
    )
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.unet.named_parameters()}
    trainer.model.unet.zero_grad(set_to_none=True)
    return grads


def main() -> None:
    recipe_path, out_dir, *overrides = sys.argv[1:]
    out = Path(out_dir)
    register_fake_rewards()
    trainer = Trainer(load_recipe(recipe_path, overrides), progress=False)
    rank = trainer.accelerator.process_index
    torch.save(local_step_one_gradient(trainer), out / f"grad{rank}.pt")

    drawn: list[list[str]] = []
    losses: list[float] = []
    raw: list[dict[str, float]] = []  # each call's own metrics, before the engine pools them
    batch_fn, loss_fn = trainer.data.batch, trainer.method.compute_loss

    def record_batch(*args, **kwargs):
        batch = batch_fn(*args, **kwargs)
        drawn.append(list(batch.prompts))
        return batch

    def record_loss(*args, **kwargs):
        loss, metrics = loss_fn(*args, **kwargs)
        losses.append(loss.item())
        raw.append(dict(metrics))
        return loss, metrics

    trainer.data.batch = record_batch
    trainer.method.compute_loss = record_loss
    evaluations = trainer.reward.evaluations  # those of the gradient above are not training's
    trainer.run()
    report = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "hash": state_hash(trainer.model.unet.state_dict()),
        "prompts": drawn,
        "losses": losses,
        "metrics": raw,
        "evaluations": trainer.reward.evaluations - evaluations,  # this process's in training
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
