"""A round of samples as dsharp kept it in checkpoints before ``ROUND_FORMAT``."""

from __future__ import annotations

from typing import Any

import torch


def older_round() -> dict[str, Any]:
    """A round as an older dsharp's ``method_round_<process>.pt`` held it: the method's own
    objects (round, conditioning, metrics), pickled; the shapes of a tiny SD DDPO round of
    two samples and three steps, which that dsharp trained on."""
    from dsharp.methods.ddpo import SampledRound
    from dsharp.models.base import Conditioning
    from dsharp.step_metrics import Mean

    rnd = SampledRound(
        prompts=["a", "a"],
        cond=Conditioning(torch.zeros(2, 77, 32)),
        uncond=Conditioning(torch.zeros(2, 77, 32)),
        latents=torch.zeros(4, 2, 4, 8, 8),
        timesteps=torch.tensor([667, 334, 1]),
        log_probs=torch.zeros(3, 2),
        rewards=torch.tensor([0.1, 0.2]),
    )
    metrics = {"reward": 0.15, "adv_abs": Mean(1.0, 2)}
    plan = [torch.tensor([[1], [2]])]
    derived = torch.tensor([1.0, -1.0])  # the advantages
    return {"round": rnd, "plan": plan, "round_metrics": metrics, "rounds": 1, "derived": derived}
