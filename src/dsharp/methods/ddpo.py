"""DDPO (Black et al., ICLR 2024, arXiv 2305.13301): denoising as a multi-step MDP trained
with policy gradients on the reward of the final sample. No reference model.

Samples come from DDIM with ``eta > 0`` (the authors: eta 1, 50 steps, CFG 5), keeping every
transition ``(x_t, x_{t-1})`` and its log-prob. The advantage of a sample is its reward
normalised among the samples of the same prompt string in the round (a prompt with a single
scored sample uses the round's mean and std instead), clipped to ``[-adv_clip_max,
adv_clip_max]``. Log-probs are recomputed with gradients on the stored transitions:

- ``variant: sf`` (DDPO-SF, REINFORCE): ``-A * sum_t log p_theta(x_{t-1} | x_t)``, on-policy
  (one update per round);
- ``variant: is`` (DDPO-IS, PPO-clip): ``max(-A r, -A clip(r, 1 - c, 1 + c))`` with
  ``r = p_theta / p_old`` per transition, averaged over timesteps; ``inner_epochs`` updates
  per round, clip ``c = 1e-4``.

**How a round maps onto engine steps.** The engine calls :meth:`compute_loss` once per
micro-step and makes one backward pass of what it returns; it has no notion of "several
updates per sampled batch". So these methods keep the sampled round in memory and return one
chunk's loss per call (:class:`RoundMethod`):

1. when no chunk is left, the call samples a new round: the engine's batch of ``B`` prompts,
   ``n`` samples each, with the current weights, and scores it;
2. per inner epoch each sample (each pair for D3PO) gets its own random order of the ``S``
   stochastic steps, of which the first ``K = max(1, int(S * train_timestep_fraction))`` are
   trained, ``timesteps_per_step`` at a time (default: all ``K`` in one call);
3. each call trains on the next chunk, in one batched UNet call.

``S`` is ``T`` but for a step with no noise (std 0), which is not an action of the MDP: its
log-prob is 0 and its ratio 1 under any weights. The last step is one when it goes to the
final alpha with ``set_alpha_to_one=True`` (dsharp-mini), or from ``t = 0`` with
``set_alpha_to_one=False`` (``linspace``; ``leading`` with ``steps_offset=0``). Trained, it
would add a constant to the loss, shrink the mean over steps (DDPO-IS, D3PO) by
``(K-1)/K`` and count as an unclipped ratio in ``clipfrac``.

A round therefore lasts ``inner_epochs * ceil(K / timesteps_per_step)`` calls. With
``train.grad_accum`` equal to ``ceil(K / timesteps_per_step)``, one optimizer step
accumulates a whole epoch over the timesteps, as ddpo-pytorch does (DDPO-SF needs that to
stay on-policy when it trains in chunks). DDPO-IS then needs ``inner_epochs >= 2`` (or a
``grad_accum`` below a round's calls): while no optimizer step has happened since the round
was sampled, every ratio ``p_theta / p_old`` is 1 and the clip never acts, which is DDPO-SF
with a per-step mean. Every call logs the round's reward statistics (a step counts each
round it trained on once); ``new_round`` is 1 on the calls that sampled. A checkpoint
inside a round keeps it (``round_state``), so a resumed run trains on the same samples as an
uninterrupted one; a checkpoint without it (an older dsharp's, or a resume on another number
of processes) samples a fresh round on the first resumed step, as does one whose round an
older dsharp pickled (the round file now loads weights only: :mod:`dsharp.method_rounds`).

This module also holds what DDPO and D3PO (``d3po.py``) share: sampling a round with
per-step log-probs, re-evaluating stored transitions, and the timestep plan.
"""

from __future__ import annotations

import contextlib
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dsharp.methods.base import Batch, TrainingMethod
from dsharp.methods.exact_log_probs import exact_noise, float32_forward, needs_float32_pass
from dsharp.methods.losses import masked_mean
from dsharp.methods.prompt_stats import GatherAll, PromptStatTracker, gather_with_offset
from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.reward_moments import scored_summary
from dsharp.rewards.base import RewardImages
from dsharp.sampling import (
    DDIMTables,
    ddim_log_prob,
    guided_noise,
    inference_timesteps,
    previous_timesteps,
    sample,
    stochastic_steps,
)
from dsharp.step_metrics import ROUND, Mean, metrics_from_plain, metrics_to_plain

VARIANTS = ("sf", "is")


# --------------------------------------------------------------------------- losses


def per_prompt_advantages(
    rewards: torch.Tensor, prompts: Sequence[str], eps: float = 1e-6
) -> torch.Tensor:
    """``(r - mean_p) / (std_p + eps)`` over the samples sharing prompt string ``p``.

    ``std`` is the population std (ddpo-pytorch's per-prompt tracker). A prompt with only
    one scored sample has no spread of its own and is normalised with the stats of every
    scored sample in the batch. NaN rewards (unscored samples) get NaN advantages and take
    no part in any statistic.
    """
    if rewards.ndim != 1 or rewards.numel() != len(prompts):
        raise ValueError(f"got {rewards.numel()} rewards for {len(prompts)} prompts")
    rewards = rewards.float()
    scored = ~torch.isnan(rewards)
    out = torch.full_like(rewards, float("nan"))
    if not bool(scored.any()):
        return out
    batch_mean = rewards[scored].mean()
    batch_std = rewards[scored].std(correction=0)
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        if bool(scored[i]):
            groups.setdefault(prompt, []).append(i)
    for idx in groups.values():
        values = rewards[idx]
        if len(idx) > 1:
            mean, std = values.mean(), values.std(correction=0)
        else:
            mean, std = batch_mean, batch_std
        out[idx] = (values - mean) / (std + eps)
    return out


def round_advantages(
    rewards: torch.Tensor, prompts: Sequence[str], gather: GatherAll = gather_with_offset
) -> torch.Tensor:
    """:func:`per_prompt_advantages` over the whole round, every process's samples (as
    ddpo-pytorch gathers them), returned for this process's: a prompt drawn on two processes
    is normalised over both, and a prompt with one scored sample by the whole round's mean
    and std, not by one process's batch (with ``n: 1`` and one prompt per process, that
    batch has no spread and every advantage would be 0)."""
    if rewards.ndim != 1 or rewards.numel() != len(prompts):
        raise ValueError(f"got {rewards.numel()} rewards for {len(prompts)} prompts")
    local = rewards.float()
    everyone, start = gather(list(zip(prompts, local.tolist(), strict=True)))
    all_rewards = torch.tensor([r for _, r in everyone], dtype=local.dtype)
    adv = per_prompt_advantages(all_rewards, [p for p, _ in everyone])
    return adv[start : start + len(prompts)].to(rewards.device)


#: The largest log probability ratio DDPO-IS exponentiates (see :func:`ppo_clip_loss`).
MAX_LOG_RATIO = 80.0


def ppo_clip_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
) -> torch.Tensor:
    """DDPO-IS per transition: ``max(-A r, -A clamp(r, 1 - c, 1 + c))``, ``r = exp(lp - old)``.

    Shapes broadcast; returns the elementwise loss (the caller averages). The log-ratio is
    capped at :data:`MAX_LOG_RATIO` before ``exp``: past float32's range (~88.7) the ratio is
    inf, and where the clipped branch is taken (A > 0) the zero gradient times ``exp``'s
    infinite one is NaN. Below the cap (a ratio of 5.5e34) nothing changes; above it the
    transition gives no gradient, as a clipped one does.
    """
    ratio = torch.exp(torch.clamp(log_prob - old_log_prob, max=MAX_LOG_RATIO))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped)


def reinforce_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """DDPO-SF per sample: ``-A * sum_t log p``; ``log_probs`` ``(N, c)``, ``advantages``
    ``(N,)``; returns ``(N,)``."""
    return -advantages * log_probs.sum(dim=1)


# --------------------------------------------------------------------------- rounds


@dataclass
class SampledRound:
    """``N`` sampled trajectories of ``T`` steps and their rewards (prompt-major: sample
    ``i * n + k`` is the ``k``-th sample of the batch's prompt ``i``).

    - ``latents`` ``(T+1, N, C, h, w)``: ``latents[j]`` is the input of step ``j``,
      ``latents[j + 1]`` the state it sampled;
    - ``timesteps`` ``(T,)``: the timestep of step ``j``;
    - ``log_probs`` ``(T, N)``: log-prob of each transition under the sampling weights;
    - ``rewards`` ``(N,)``: reward of each final image (NaN: not scored).
    """

    prompts: list[str]
    cond: Conditioning
    uncond: Conditioning | None
    latents: torch.Tensor
    timesteps: torch.Tensor
    log_probs: torch.Tensor
    rewards: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    def __len__(self) -> int:
        return len(self.prompts)

    def to_plain(self) -> dict[str, Any]:
        """Tensors, strings and dicts only, for a round file that loads with torch's
        ``weights_only`` (pickling this class would make loading it run code, and renaming
        it break old checkpoints)."""
        return {
            "prompts": list(self.prompts),
            "cond": self.cond.to_plain(),
            "uncond": self.uncond.to_plain() if self.uncond is not None else None,
            "latents": self.latents,
            "timesteps": self.timesteps,
            "log_probs": self.log_probs,
            "rewards": self.rewards,
        }

    @staticmethod
    def from_plain(plain: Mapping[str, Any]) -> SampledRound:
        """Back from :meth:`to_plain`."""
        uncond = plain["uncond"]
        return SampledRound(
            prompts=list(plain["prompts"]),
            cond=Conditioning.from_plain(plain["cond"]),
            uncond=Conditioning.from_plain(uncond) if uncond is not None else None,
            latents=plain["latents"],
            timesteps=plain["timesteps"],
            log_probs=plain["log_probs"],
            rewards=plain["rewards"],
        )


def sample_round(
    model: DiffusionModel,
    reward: Any,
    batch: Batch,
    *,
    n: int,
    steps: int,
    guidance: float,
    eta: float,
    height: int,
    width: int,
    generator: torch.Generator,
    latents: torch.Tensor | None = None,
    fp32: bool = True,
) -> SampledRound:
    """Sample ``n`` images per prompt of ``batch`` with the current weights (no grad), keep
    the trajectories with their log-probs, and score the final images.

    The model is conditioned on ``batch.cond_prompts`` and judged against ``batch.prompts``.
    ``latents`` ``(B * n, C, h, w)`` fixes the initial noises (D3PO starts pairs from one).
    ``fp32``: under bf16/fp16 autocast, sample in a float32 UNet pass (see
    :mod:`dsharp.methods.exact_log_probs`; ``method.options.fp32_log_probs``).
    """
    if eta <= 0:
        raise ValueError("sampling with log-probs needs eta > 0")
    cond_prompts = [p for p in batch.cond_prompts for _ in range(n)]
    prompts = [p for p in batch.prompts for _ in range(n)]
    metadata = [dict(md, sample=k) for md in batch.metadata for k in range(n)]
    # float32 under bf16/fp16 autocast: the stored log-probs are the old policy's exactly
    use_fp32 = fp32 and needs_float32_pass(model)
    exact = float32_forward(model) if use_fp32 else contextlib.nullcontext()
    with exact:
        images, trajectory = sample(
            model,
            cond_prompts,
            generator=generator,
            steps=steps,
            guidance=guidance,
            height=height,
            width=width,
            eta=eta,
            latents=latents,
            return_trajectory=True,
        )
        with torch.no_grad():  # rewards score without autocast in any case
            scores, _ = reward(RewardImages(images), prompts, metadata)
            # the conditioning the sampler used, for the recomputations
            cond = model.encode_prompt(cond_prompts, height, width)
            uncond = model.encode_negative(len(prompts), height, width) if guidance > 1 else None
    return SampledRound(
        prompts=prompts,
        cond=cond,
        uncond=uncond,
        latents=trajectory.latents,
        timesteps=trajectory.timesteps,
        log_probs=trajectory.log_probs,
        rewards=scores.detach().float().to(trajectory.latents.device),
    )


def transition_log_probs(
    model: DiffusionModel,
    tables: DDIMTables,
    rnd: SampledRound,
    rows: torch.Tensor,
    step_idx: torch.Tensor,
    *,
    guidance: float,
    eta: float,
    unet: torch.nn.Module | None = None,
    fp32: bool = True,
) -> torch.Tensor:
    """Log-probs ``(S,)`` of the stored transitions ``(step_idx[s], rows[s])`` under the
    current model, in one batched (guided) UNet call.

    With ``unet`` (the engine's module) the call carries gradients; callers evaluate the
    reference with ``unet=None`` inside ``torch.no_grad()`` and ``model.reference()``.

    Under bf16/fp16 autocast (over float32 weights) the log-prob's value comes from a
    float32 pass and only the gradient from the autocast one, so that the ratios to the
    sampled and reference log-probs (float32 too) are not rounding noise
    (:mod:`dsharp.methods.exact_log_probs`); ``fp32=False`` keeps the autocast pass alone.
    """
    device = rnd.latents.device
    rows, step_idx = rows.to(device), step_idx.to(device)
    x_t = rnd.latents[step_idx, rows]
    x_prev = rnd.latents[step_idx + 1, rows]
    timesteps = rnd.timesteps.to(device)
    nexts = previous_timesteps(timesteps, tables.num_train_timesteps)
    t, t_prev = timesteps[step_idx], nexts[step_idx]
    cond = rnd.cond.index(rows)
    uncond = rnd.uncond.index(rows) if rnd.uncond is not None else None
    if not (fp32 and needs_float32_pass(model)):
        eps = guided_noise(model, x_t, t, cond, uncond, guidance, unet=unet)
        return ddim_log_prob(tables, x_t, eps.float(), t, t_prev, x_prev, eta)
    with torch.no_grad(), float32_forward(model):
        exact = guided_noise(model, x_t, t, cond, uncond, guidance).float()
    grad = None
    if torch.is_grad_enabled():
        grad = guided_noise(model, x_t, t, cond, uncond, guidance, unet=unet).float()
    return ddim_log_prob(tables, x_t, exact_noise(exact, grad), t, t_prev, x_prev, eta)


def timestep_plan(
    num_groups: int,
    steps: int | torch.Tensor,
    *,
    fraction: float,
    per_call: int | None,
    epochs: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """The chunks of one round: a list of ``(num_groups, c)`` step-index tensors.

    ``steps``: the number of steps (all trainable), or the indices ``(S,)`` of the trainable
    ones (the stochastic steps, :func:`dsharp.sampling.stochastic_steps`). Per epoch, each
    group gets its own random order of the ``S`` trainable steps; the first
    ``K = max(1, int(S * fraction))`` are kept and split into chunks of ``per_call``
    (None: all ``K`` at once).
    """
    candidates = torch.arange(steps) if isinstance(steps, int) else steps.long().cpu()
    if candidates.ndim != 1 or not candidates.numel():
        raise ValueError("timestep_plan needs at least one trainable step")
    count = candidates.numel()
    keep = max(1, int(count * fraction))
    per_call = min(per_call or keep, keep)
    chunks: list[torch.Tensor] = []
    for _ in range(epochs):
        order = torch.argsort(torch.rand(num_groups, count, generator=generator), dim=1)
        chunks += list(candidates[order[:, :keep]].split(per_call, dim=1))
    return chunks


def trainable_steps(scheduler: Any, tables: DDIMTables, steps: int, eta: float) -> torch.Tensor:
    """Indices ``(S,)`` of the steps of ``scheduler``'s ``steps``-step schedule that draw
    noise, or a one-line error when none does. A deterministic step (std 0, see
    :func:`dsharp.sampling.stochastic_steps`) has log-prob 0 and ratio 1 under any
    weights: trained, it would add a constant to the loss, dilute the mean over steps and
    the ratio statistics, and cost a UNet call. The preflight checks call it with the
    scheduler read from the model's config, before any weights load."""
    timesteps = inference_timesteps(scheduler, steps).to(tables.alphas_cumprod.device)
    keep = stochastic_steps(tables, timesteps, eta).nonzero().flatten().cpu()
    if not keep.numel():
        config = scheduler.config
        raise ValueError(
            f"method.infer_steps: all {steps} DDIM step(s) of this scheduler "
            f"(timestep_spacing {config.timestep_spacing}, set_alpha_to_one "
            f"{config.set_alpha_to_one}) are deterministic, so there is nothing to train; "
            "use more steps"
        )
    return keep


def scheduled_trainable_steps(settings: Mapping[str, Any], scheduler: Any) -> torch.Tensor:
    """:func:`trainable_steps` of a round method's settings (``infer_steps``, ``eta``) on
    ``scheduler`` alone, without a model."""
    tables = DDIMTables.from_scheduler(scheduler)
    return trainable_steps(scheduler, tables, settings["infer_steps"], settings["eta"])


def calls_per_round(steps: int, fraction: float, per_call: int | None, epochs: int) -> int:
    """How many engine calls one round lasts (see :func:`timestep_plan`)."""
    keep = max(1, int(steps * fraction))
    return epochs * math.ceil(keep / min(per_call or keep, keep))


def reward_stats(rewards: torch.Tensor) -> dict[str, float]:
    """Mean, std and missing count of a round's rewards, NaN-aware (and the count scored,
    which the engine pools them by)."""
    return scored_summary(rewards)


def check_fraction(name: str, value: float) -> float:
    """``method.options.<name>`` as a number in (0, 1], or a one-line error."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError(f"method.options.{name}: must be a number in (0, 1], got {value!r}")
    return float(value)


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    """``method.options.<name>`` as an integer >= ``minimum`` (or None if allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"method.options.{name}: must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``method.options.<name>`` as a number > 0, or a one-line error."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"method.options.{name}: must be a number > 0, got {value!r}")
    return float(value)


class RoundMethod(TrainingMethod):
    """A method that samples a round of trajectories and trains on it over several calls
    (see the module docstring). Subclasses say how many samples each prompt gets, how
    samples group (each sample, or a pair) and what one chunk's loss is."""

    data_kind = "prompts"
    samples_per_prompt: int = 1
    uses_schedule = True  # it trains only the steps that draw noise

    @staticmethod
    def _check_own(settings: Mapping[str, Any]) -> None:
        if settings["eta"] <= 0:
            raise ValueError(
                "method.eta: sampling with log-probs needs a stochastic DDIM step "
                f"(eta > 0; the authors used 1.0), got {settings['eta']}"
            )
        if settings["infer_steps"] < 1:
            raise ValueError(f"method.infer_steps: must be >= 1, got {settings['infer_steps']}")
        check_int("inner_epochs", settings["inner_epochs"], 1)
        check_fraction("train_timestep_fraction", settings["train_timestep_fraction"])
        check_int("timesteps_per_step", settings["timesteps_per_step"], 1, allow_none=True)
        if not isinstance(settings["fp32_log_probs"], bool):
            raise ValueError(
                "method.options.fp32_log_probs: expected true or false, got "
                f"{settings['fp32_log_probs']!r}"
            )

    @classmethod
    def check_schedule(cls, settings: Mapping[str, Any], scheduler: Any) -> None:
        """Refuse a schedule with no step that draws noise (:func:`trainable_steps`), as the
        constructor would once the model has loaded."""
        scheduled_trainable_steps(settings, scheduler)

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        infer_steps: int,
        guidance: float,
        eta: float,
        inner_epochs: int,
        train_timestep_fraction: float,
        timesteps_per_step: int | None,
        fp32_log_probs: bool,
    ):
        super().__init__(model, reward, height, width)
        own = {"eta": eta, "infer_steps": infer_steps, "inner_epochs": inner_epochs}
        own |= {"train_timestep_fraction": train_timestep_fraction}
        own |= {"fp32_log_probs": fp32_log_probs}
        RoundMethod._check_own(own | {"timesteps_per_step": timesteps_per_step})
        self.fp32_log_probs = fp32_log_probs
        self.infer_steps, self.guidance, self.eta = infer_steps, guidance, eta
        self.inner_epochs = inner_epochs
        self.fraction = float(train_timestep_fraction)
        self.per_call = timesteps_per_step
        self.trainable_steps = trainable_steps(model.scheduler, self.tables, infer_steps, eta)
        self._round: SampledRound | None = None
        self._plan: list[torch.Tensor] = []
        self._round_metrics: dict[str, float] = {}
        self._rounds = 0  # rounds sampled: tags the round's metrics (ROUND)

    @property
    def calls_per_round(self) -> int:
        steps = self.trainable_steps.numel()
        return calls_per_round(steps, self.fraction, self.per_call, self.inner_epochs)

    def round_state(self) -> dict[str, Any] | None:
        """The round being trained on (None between rounds): what a checkpoint inside a
        round keeps, so that a resume trains on the same samples as an uninterrupted run
        (they were drawn with weights the checkpoint no longer has). Tensors, Python
        numbers and strings in lists, tuples and dicts only: the file loads with torch's
        ``weights_only``, so a shared checkpoint cannot run code (a change to this layout
        bumps :data:`dsharp.method_rounds.ROUND_FORMAT`)."""
        if not self._plan:
            return None
        assert self._round is not None
        return {
            "round": self._round.to_plain(),
            "plan": list(self._plan),
            "round_metrics": metrics_to_plain(self._round_metrics),
            "rounds": self._rounds,
            "derived": self._derived(),
        }

    def load_round_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`round_state` on resume: the next call goes on with the round."""
        self._round = SampledRound.from_plain(state["round"])
        self._plan = list(state["plan"])
        self._round_metrics = metrics_from_plain(dict(state["round_metrics"]))
        self._rounds = int(state["rounds"])
        self._restore_derived(state["derived"])

    def _derived(self) -> Any:
        """What :meth:`_prepare` computed from the round that its chunks' losses use:
        tensors (or a tuple of them), as :meth:`round_state` keeps them."""
        return None

    def _restore_derived(self, derived: Any) -> None:
        """Set back what :meth:`_derived` returned."""

    def _initial_latents(self, batch: Batch, generator: torch.Generator) -> torch.Tensor | None:
        """Initial noises of a round; None lets the sampler draw one per sample."""
        return None

    @abstractmethod
    def _prepare(self, rnd: SampledRound) -> tuple[int, dict[str, float]]:
        """Per-round work after scoring: returns the number of groups (samples or pairs)
        that timestep orders are drawn for, and the round's metrics."""

    @abstractmethod
    def _chunk_loss(
        self, rnd: SampledRound, chunk: torch.Tensor, unet: torch.nn.Module
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one chunk ``(groups, c)`` of step indices."""

    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        fresh = not self._plan
        if fresh:
            rnd = sample_round(
                self.model,
                self.reward,
                batch,
                n=self.samples_per_prompt,
                steps=self.infer_steps,
                guidance=self.guidance,
                eta=self.eta,
                height=self.height,
                width=self.width,
                generator=generator,
                latents=self._initial_latents(batch, generator),
                fp32=self.fp32_log_probs,
            )
            groups, self._round_metrics = self._prepare(rnd)
            self._rounds += 1
            self._round = rnd
            self._plan = timestep_plan(
                groups,
                self.trainable_steps,
                fraction=self.fraction,
                per_call=self.per_call,
                epochs=self.inner_epochs,
                generator=generator,
            )
        assert self._round is not None
        chunk = self._plan.pop(0)
        loss, metrics = self._chunk_loss(self._round, chunk, unet)
        metrics.update(self._round_metrics)
        metrics[ROUND] = (self._rounds, tuple(self._round_metrics))
        metrics["new_round"] = float(fresh)
        return loss, metrics


# --------------------------------------------------------------------------- DDPO


class DDPO(RoundMethod):
    """DDPO-SF / DDPO-IS on rounds of ``n`` samples per prompt (see the module docstring)."""

    name = "ddpo"

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        n: int = 4,
        infer_steps: int = 50,
        guidance: float = 5.0,
        eta: float = 1.0,
        variant: str = "is",
        clip_range: float = 1e-4,
        adv_clip_max: float = 5.0,
        inner_epochs: int = 1,
        train_timestep_fraction: float = 1.0,
        timesteps_per_step: int | None = None,
        stat_buffer: int = 0,
        stat_min_count: int | None = None,
        fp32_log_probs: bool = True,
    ):
        super().__init__(
            model,
            reward,
            height,
            width,
            infer_steps=infer_steps,
            guidance=guidance,
            eta=eta,
            inner_epochs=inner_epochs,
            train_timestep_fraction=train_timestep_fraction,
            timesteps_per_step=timesteps_per_step,
            fp32_log_probs=fp32_log_probs,
        )
        # after the base's checks, in the order TrainingMethod.check_settings runs them
        own = {"variant": variant, "inner_epochs": inner_epochs, "n": n}
        own |= {"clip_range": clip_range, "adv_clip_max": adv_clip_max}
        DDPO._check_own(own | {"stat_buffer": stat_buffer, "stat_min_count": stat_min_count})
        self.samples_per_prompt = n
        self.variant = variant
        self.clip_range, self.adv_clip_max = float(clip_range), float(adv_clip_max)
        self.tracker = (
            PromptStatTracker(stat_buffer, stat_min_count or stat_buffer) if stat_buffer else None
        )
        self._advantages: torch.Tensor | None = None

    def _derived(self) -> Any:
        return self._advantages

    def _restore_derived(self, derived: Any) -> None:
        self._advantages = derived

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict() if self.tracker is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.tracker is not None:
            self.tracker.load_state_dict(state)
        else:
            super().load_state_dict(state)

    @classmethod
    def notes_with_accumulation(
        cls, settings: Mapping[str, Any], grad_accum: int, scheduler: Any = None
    ) -> list[str]:
        """DDPO-IS learns from ratios ``p_theta / p_old`` only where an optimizer step has
        happened since the round was sampled. When every step falls on a round boundary
        (``grad_accum`` a multiple of the round's calls), every ratio is 1 and the clip never
        acts: the run is DDPO-SF with a per-step mean. A note, not a refusal: such a run may
        be an ablation, or the run of a recipe written before this was noticed. The round's
        calls count its stochastic steps on ``scheduler`` (the model's, read from its
        config); without it, all ``infer_steps``, which is one chunk per epoch too many at
        most where the last step is deterministic (``set_alpha_to_one``)."""
        if settings["variant"] != "is":
            return []
        epochs = settings["inner_epochs"]
        steps = settings["infer_steps"]
        if scheduler is not None:
            steps = scheduled_trainable_steps(settings, scheduler).numel()
        calls = calls_per_round(
            steps,
            settings["train_timestep_fraction"],
            settings["timesteps_per_step"],
            epochs,
        )
        if grad_accum % calls:
            return []
        passes = f"{epochs} pass" + ("es" if epochs != 1 else "")
        lasts = f"{calls} engine call" + ("s" if calls != 1 else "")
        hints = ["set inner_epochs to 2 or more"] if epochs == 1 else []
        if calls > 1:
            hints.append(f"use a train.grad_accum that is not a multiple of {calls}")
        hint = ", or ".join([*hints, "use variant 'sf'"])
        return [
            f"method.options.inner_epochs: with DDPO-IS, {passes} over a round ({lasts}) and "
            f"train.grad_accum {grad_accum}, every optimizer step falls between rounds, so "
            f"every importance ratio is 1 and the clip never acts (DDPO-SF); {hint}"
        ]

    @staticmethod
    def _check_own(settings: Mapping[str, Any]) -> None:
        variant, inner_epochs, n = settings["variant"], settings["inner_epochs"], settings["n"]
        if variant not in VARIANTS:
            raise ValueError(f"method.options.variant: expected 'sf' or 'is', got {variant!r}")
        check_int("inner_epochs", inner_epochs, 1)
        if variant == "sf" and inner_epochs != 1:
            raise ValueError(
                "method.options.inner_epochs: DDPO-SF is on-policy (one update per round); "
                f"use variant 'is' for {inner_epochs} updates per round"
            )
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"method.n: samples per prompt must be >= 1, got {n!r}")
        check_positive("clip_range", settings["clip_range"])
        check_positive("adv_clip_max", settings["adv_clip_max"])
        buffer, min_count = settings["stat_buffer"], settings["stat_min_count"]
        check_int("stat_buffer", buffer, 0)
        check_int("stat_min_count", min_count, 1, allow_none=True)
        if min_count is not None and buffer == 0:
            raise ValueError(
                "method.options.stat_min_count: counts the rewards of stat_buffer, which is 0 "
                "(each round's own statistics); set stat_buffer too"
            )
        if min_count is not None and min_count > buffer:
            raise ValueError(
                f"method.options.stat_min_count: a buffer of {buffer} (stat_buffer) never holds "
                f"{min_count} rewards; use at most {buffer}"
            )

    def _prepare(self, rnd: SampledRound) -> tuple[int, dict[str, float]]:
        if self.tracker is not None:
            adv = self.tracker.advantages(rnd.rewards, rnd.prompts)
        else:
            adv = round_advantages(rnd.rewards, rnd.prompts)
        self._advantages = adv.clamp(-self.adv_clip_max, self.adv_clip_max)
        metrics = reward_stats(rnd.rewards)
        valid = ~torch.isnan(adv)
        metrics["adv_abs"] = masked_mean(adv.abs(), valid)
        return len(rnd), metrics

    def _chunk_loss(
        self, rnd: SampledRound, chunk: torch.Tensor, unet: torch.nn.Module
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert self._advantages is not None
        num, per = chunk.shape
        device = rnd.latents.device
        rows = torch.arange(num).repeat_interleave(per)
        steps = chunk.reshape(-1)
        log_prob = transition_log_probs(
            self.model,
            self.tables,
            rnd,
            rows,
            steps,
            guidance=self.guidance,
            eta=self.eta,
            unet=unet,
            fp32=self.fp32_log_probs,
        ).view(num, per)
        old = rnd.log_probs[steps.to(device), rows.to(device)].view(num, per)
        valid = ~torch.isnan(self._advantages)
        adv = torch.nan_to_num(self._advantages, nan=0.0).to(log_prob.dtype)
        if self.variant == "sf":
            per_sample = reinforce_loss(log_prob, adv)
        else:
            per_sample = ppo_clip_loss(log_prob, old, adv[:, None], self.clip_range).mean(1)
        weights = valid.to(per_sample.dtype)
        loss = (per_sample * weights).sum() / weights.sum().clamp(min=1)
        with torch.no_grad():
            diff = (log_prob - old)[valid]
            ratio = torch.exp(diff)
            count = diff.numel()  # the transitions of samples with an advantage
            metrics = {
                "approx_kl": Mean((0.5 * diff.pow(2).mean()).item() if count else 0.0, count),
                "clipfrac": Mean(
                    ((ratio - 1).abs() > self.clip_range).float().mean().item() if count else 0.0,
                    count,
                ),
            }
        return loss, metrics
