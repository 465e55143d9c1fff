"""Diffusion-DPO (Wallace et al., CVPR 2024, arXiv 2311.12908): DPO on preference pairs.

For a pair (winner ``w``, loser ``l``, prompt) both images are noised at one shared timestep
``t`` with one shared noise ``eps``; ``e`` is a sample's per-sample MSE between predicted and
drawn noise, under the trained model (``e_theta``) and the frozen reference (``e_ref``)::

    loss = -log sigmoid(-beta / 2 * ((e_theta(w) - e_ref(w)) - (e_theta(l) - e_ref(l))))

with ``beta`` 5000 (the authors used 2000-5000 for SD 1.5, 5000 for SDXL).
``method.options.error_space`` (``epsilon``, the authors' choice; ``native``; ``x0``; see
:mod:`dsharp.methods.error_space`) measures ``e`` in another space instead. The reference is
``model.reference()``: the same UNet with LoRA adapters disabled, or a frozen copy.

Pairs come from one of two sources (``method.options.pairs``):

- ``offline`` (default): a preference dataset, one JSON object per line of a ``.jsonl``
  file named by ``method.options.pairs_file``::

      {"prompt": "a red cube", "image_w": "imgs/0001_w.png", "image_l": "imgs/0001_l.png"}

  image paths relative to the file. Until the engine hands methods the recipe's ``data``
  section, the engine draws its batches from ``data.dataset`` (set it to the same file with
  ``data.image_column: image_w`` and ``data.caption_column: prompt``, which also checks every
  winner image exists before training) and the method draws its own pairs from
  ``pairs_file`` with the step's random generator (the engine's batch only sets how many):
  as reproducible and resumable as the engine's batches. The logged ``reward`` is the
  reward of the trained model's predicted clean images ``x0_hat`` of both pair members at
  the drawn ``t`` (``log_reward: false`` skips that decode and scoring and logs NaN).
- ``online`` (AI feedback): per prompt of the engine's batch, two images are generated with
  the current weights (``method.infer_steps`` DDIM steps, ``method.guidance``,
  ``method.eta``), labelled by the recipe's reward (higher wins; ties and unscored pairs are
  skipped), and trained on with the same loss. ``reward`` is the generated images' mean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dsharp.hub import user_path
from dsharp.methods.base import Batch, TrainingMethod, timestep_range
from dsharp.methods.d3po import preferred_pairs
from dsharp.methods.error_space import (
    check_error_space,
    clean_from_prediction,
    predict_in_space,
    target_in_space,
)
from dsharp.methods.losses import masked_mean, per_step_mse
from dsharp.methods.online import generate_latents
from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.reward_moments import scored_mean, scored_summary
from dsharp.rewards.base import RewardImages
from dsharp.sampling import add_noise
from dsharp.step_metrics import Mean

PAIR_MODES = ("offline", "online")


def diffusion_dpo_loss(
    policy_w: torch.Tensor,
    policy_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-pair Diffusion-DPO loss from per-sample noise errors ``(B,)`` each:
    ``-log sigmoid(-beta / 2 * ((policy_w - ref_w) - (policy_l - ref_l)))``."""
    inside = -0.5 * beta * ((policy_w - ref_w) - (policy_l - ref_l))
    return -F.logsigmoid(inside)


class PairSource:
    """Preference pairs from a ``.jsonl`` of ``{"prompt", "image_w", "image_l"}`` rows;
    image paths are relative to the file. Every row and image is checked when opened."""

    def __init__(self, path: str | Path):
        path = user_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"method.options.pairs_file: file not found: {path}")
        self.path = path
        self.rows: list[tuple[str, Path, Path]] = []
        self.lines: list[int] = []  # each row's line in the file, to name it when drawn
        from dsharp.data import jsonl_lines, shown_value

        for lineno, line in jsonl_lines(path):  # a byte-order mark dropped, as data's rows
            try:
                row = json.loads(line)
                prompt, image_w, image_l = row["prompt"], row["image_w"], row["image_l"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{lineno}: bad pair row ({type(exc).__name__}: {exc}); expected "
                    '{"prompt": ..., "image_w": ..., "image_l": ...}'
                ) from None
            for key, value in (("prompt", prompt), ("image_w", image_w), ("image_l", image_l)):
                if not isinstance(value, str):  # str() would train on "None" or "5"
                    raise ValueError(f"{path}:{lineno}: {key} holds {shown_value(value)}, not text")
            paths = []
            for key, rel in (("image_w", image_w), ("image_l", image_l)):
                full = (path.parent / user_path(rel)).resolve()  # ~ is the home directory
                if not full.is_file():
                    raise FileNotFoundError(f"{path}:{lineno}: {key} not found: {rel}")
                paths.append(full)
            self.rows.append((prompt, paths[0], paths[1]))
            self.lines.append(lineno)
        if not self.rows:
            raise ValueError(f"{path}: no pairs")

    def __len__(self) -> int:
        return len(self.rows)

    def draw(
        self, count: int, generator: torch.Generator, height: int, width: int
    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """``count`` random pairs: prompts, winners and losers ``(count, 3, H, W)`` in [0, 1],
        read as every training image is (:func:`dsharp.image_files.read_rgb`: upright,
        8-bit, transparency on white; a file that cannot be decoded names its row)."""
        from dsharp.data import to_tensor
        from dsharp.image_files import read_rgb

        idx = torch.randint(len(self.rows), (count,), generator=generator).tolist()
        prompts, winners, losers = [], [], []
        for i in idx:
            prompt, w, loser = self.rows[i]
            where = f"{self.path}:{self.lines[i]}"
            prompts.append(prompt)
            winners.append(to_tensor(read_rgb(w, where), height, width))
            losers.append(to_tensor(read_rgb(loser, where), height, width))
        return prompts, torch.stack(winners), torch.stack(losers)


class DiffusionDPO(TrainingMethod):
    """Diffusion-DPO on offline or online (AI-feedback) pairs; see the module docstring."""

    name = "diffusion_dpo"
    needs_reference = True

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        beta: float = 5000.0,
        infer_steps: int = 25,
        guidance: float = 5.0,
        eta: float = 0.0,
        timestep_min: int = 0,
        timestep_max: int | None = None,
        pairs: str = "offline",
        pairs_file: str | None = None,
        log_reward: bool = True,
        error_space: str = "epsilon",
    ):
        super().__init__(model, reward, height, width)
        own = {"error_space": error_space, "pairs": pairs, "pairs_file": pairs_file}
        DiffusionDPO._check_own(own | {"beta": beta, "log_reward": log_reward})
        self.error_space = error_space
        self.mode = pairs
        self.source: PairSource | None = None
        if pairs == "offline":
            assert pairs_file is not None  # _check_own
            self.source = PairSource(pairs_file)
            self.data_kind = "images"
            # Offline pairs come with their preference: the reward is only logged, so its
            # evaluations are not part of the method's reward budget (Table 1).
            self.trains_on_reward = False
        else:
            self.data_kind = "prompts"
        self.beta = float(beta)
        self.infer_steps, self.guidance, self.eta = infer_steps, guidance, eta
        self.t_min, self.t_max = timestep_range(model, timestep_min, timestep_max)
        self.log_reward = log_reward

    @staticmethod
    def _check_own(settings: Mapping[str, Any]) -> None:
        check_error_space(settings["error_space"])
        pairs, pairs_file = settings["pairs"], settings["pairs_file"]
        if pairs not in PAIR_MODES:
            raise ValueError(f"method.options.pairs: expected 'offline' or 'online', got {pairs!r}")
        if not settings["beta"] > 0:
            raise ValueError(f"method.beta: must be > 0, got {settings['beta']}")
        if not isinstance(settings["log_reward"], bool):
            raise ValueError(
                f"method.options.log_reward: expected true or false, got {settings['log_reward']!r}"
            )
        if pairs == "offline" and pairs_file is None:
            raise ValueError(
                "method.options.pairs_file: offline Diffusion-DPO needs a .jsonl of "
                '{"prompt", "image_w", "image_l"} rows (or set method.options.pairs: online)'
            )
        if pairs == "online" and pairs_file is not None:
            raise ValueError("method.options.pairs_file: only used with pairs: offline")

    # -- pairs ----------------------------------------------------------------------------
    def _offline_pairs(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[list[str], torch.Tensor, torch.Tensor, Conditioning]:
        assert self.source is not None
        model = self.model
        prompts, winners, losers = self.source.draw(
            len(batch.prompts), generator, self.height, self.width
        )
        with torch.no_grad():
            images = torch.cat([winners, losers]).to(model.device)
            x0 = model.encode_images(images, generator=generator)
            cond = model.encode_prompt(prompts, self.height, self.width)
        x0_w, x0_l = x0.chunk(2)
        return prompts, x0_w, x0_l, cond

    def _online_pairs(
        self, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, Conditioning, torch.Tensor, dict[str, float]]:
        model = self.model
        with torch.no_grad():
            cond = model.encode_prompt(batch.cond_prompts, self.height, self.width)
            x0 = generate_latents(
                model,
                cond.repeat_interleave(2),
                steps=self.infer_steps,
                guidance=self.guidance,
                height=self.height,
                width=self.width,
                eta=self.eta,
                generator=generator,
            )
            prompts = [p for p in batch.prompts for _ in range(2)]
            meta = [dict(md, sample=k) for md in batch.metadata for k in range(2)]
            scores, _ = self.reward(RewardImages(model.decode(x0)), prompts, meta)
        rewards = scores.detach().float().to(x0.device)
        winners, losers, usable = preferred_pairs(rewards)
        metrics = scored_summary(rewards, std=False)
        # Every key on every step, NaN without a usable pair: processes average them together.
        metrics["reward_w"] = masked_mean(rewards[winners], usable)
        metrics["reward_l"] = masked_mean(rewards[losers], usable)
        return x0[winners], x0[losers], cond, usable, metrics

    # -- loss -------------------------------------------------------------------------------
    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        model = self.model
        if self.mode == "offline":
            prompts, x0_w, x0_l, cond = self._offline_pairs(batch, generator)
            usable = torch.ones(len(prompts), dtype=torch.bool, device=x0_w.device)
            metrics: dict[str, float] = {}
        else:
            prompts = list(batch.prompts)
            x0_w, x0_l, cond, usable, metrics = self._online_pairs(batch, generator)
        num = x0_w.shape[0]
        t = torch.randint(self.t_min, self.t_max, (num,), generator=generator)
        noise = torch.randn(x0_w.shape, generator=generator).to(x0_w.device, x0_w.dtype)
        t2 = t.repeat(2).to(x0_w.device)
        noise2 = torch.cat([noise, noise])
        x_t = add_noise(self.tables, torch.cat([x0_w, x0_l]), noise2, t2)
        cond2 = Conditioning.cat([cond, cond])
        space = self.error_space
        pred = predict_in_space(model, self.tables, space, x_t, t2, cond2, unet)
        with torch.no_grad(), model.reference():
            pred_ref = predict_in_space(model, self.tables, space, x_t, t2, cond2)
        target = target_in_space(model, space, torch.cat([x0_w, x0_l]), noise2, t2)
        err = per_step_mse(pred, target)
        err_ref = per_step_mse(pred_ref, target)
        per_pair = diffusion_dpo_loss(err[:num], err[num:], err_ref[:num], err_ref[num:], self.beta)
        weights = usable.to(per_pair.dtype)
        loss = (per_pair * weights).sum() / weights.sum().clamp(min=1)
        with torch.no_grad():
            margin = (err_ref[:num] - err[:num]) - (err_ref[num:] - err[num:])
            metrics["implicit_acc"] = masked_mean((margin > 0).float(), usable)
            metrics["mse_w"] = Mean(err[:num].mean().item(), num)
            metrics["mse_l"] = Mean(err[num:].mean().item(), num)
            metrics["pairs"] = int(usable.sum().item())
            if self.mode == "offline":
                metrics.update(self._x0_reward(x_t, pred, t2, prompts))
        return loss, metrics

    @torch.no_grad()
    def _x0_reward(
        self, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor, prompts: list[str]
    ) -> dict[str, float]:
        """Mean ``reward`` of the trained model's ``x0_hat`` for both members of every pair
        (and the :data:`~dsharp.reward_moments.SCORED` count it is over)."""
        if not self.log_reward:
            return {"reward": float("nan")}
        x0_hat = clean_from_prediction(
            self.model, self.tables, self.error_space, x_t, pred.detach().float(), t
        )
        images = self.model.decode(x0_hat)
        both = prompts + prompts
        meta = [{"pair": i % len(prompts), "member": i // len(prompts)} for i in range(len(both))]
        scores, _ = self.reward(RewardImages(images), both, meta)
        return scored_mean(scores)
