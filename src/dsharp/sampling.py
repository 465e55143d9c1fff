"""Vectorised per-sample DDIM (Song et al. 2021, arXiv 2010.02502) with log-probs and CFG.

Small functions in the k-diffusion style. Unlike ``DDIMScheduler.step``, every function takes
per-sample integer timesteps ``t`` of shape ``(B,)`` and gathers ``abar_t`` by index, so one
batch may hold samples at different points of the schedule (the Diffusion-Sharpening
trajectories need this). With scalar-equal timesteps the results equal the stock scheduler's.

Conventions: ``abar_t`` is the cumulative alpha product; a ``t_prev`` below zero means "to the
final alpha" (``scheduler.final_alpha_cumprod``), exactly as the stock scheduler treats its last
step. The samplers consume epsilon: a ``v_prediction`` model's adapter converts its output
(:func:`eps_from_v`) before it gets here. No dynamic thresholding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from dsharp.models.base import Conditioning

if TYPE_CHECKING:
    from dsharp.models.base import DiffusionModel

Generators = torch.Generator | list[torch.Generator] | None

#: What a UNet may predict. Samplers work on epsilon; adapters convert ``v`` on the way out.
PREDICTION_TYPES = ("epsilon", "v_prediction")


# -- schedule tables ----------------------------------------------------------------------


def check_scheduler(scheduler: Any) -> None:
    """Refuse, with the reason, a scheduler whose steps the samplers cannot take.

    A zero-terminal-SNR schedule (``rescale_betas_zero_snr=True``) has ``abar = 0`` at its last
    timestep, where an epsilon prediction says nothing of the clean image: refused for an
    epsilon model (a v-prediction model's tables floor it instead, see :func:`_floored`)."""
    config = scheduler.config
    if config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"scheduler prediction_type {config.prediction_type!r} is not supported "
            f"(dsharp supports {', '.join(PREDICTION_TYPES)})"
        )
    if getattr(config, "thresholding", False):
        raise ValueError("scheduler thresholding=True is not supported by dsharp samplers")
    if float(scheduler.alphas_cumprod.min()) <= 0 and config.prediction_type == "epsilon":
        raise ValueError(
            "scheduler has zero terminal SNR (rescale_betas_zero_snr=True) with "
            "prediction_type epsilon: the clean image is undefined where abar is 0 (such "
            "schedules need v_prediction)"
        )


#: What a zero-terminal-SNR schedule's last ``abar = 0`` becomes in the tables, as in
#: diffusers' Euler scheduler, so that the samplers' epsilon form of a v-prediction stays
#: defined (its clean estimate is then off by about 1e-3 at that step).
ABAR_FLOOR = 2.0**-24


def _floored(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``alphas_cumprod`` with its zeros (and only those) raised to ``ABAR_FLOOR``."""
    return torch.where(alphas_cumprod > 0, alphas_cumprod, ABAR_FLOOR)


@dataclass(frozen=True)
class DDIMTables:
    """The parts of a DDIMScheduler a per-sample step needs, on one device."""

    alphas_cumprod: torch.Tensor  # (num_train_timesteps,)
    final_alpha_cumprod: torch.Tensor  # () used when t_prev < 0
    num_train_timesteps: int
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    @classmethod
    def from_scheduler(
        cls,
        scheduler: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> DDIMTables:
        """Tables of a diffusers DDIMScheduler; float32 reproduces the scheduler bit for bit
        (but for a zero-terminal-SNR schedule's last ``abar``, floored at ``ABAR_FLOOR``)."""
        check_scheduler(scheduler)
        config = scheduler.config
        return cls(
            alphas_cumprod=_floored(scheduler.alphas_cumprod).to(device=device, dtype=dtype),
            final_alpha_cumprod=torch.as_tensor(scheduler.final_alpha_cumprod).to(device, dtype),
            num_train_timesteps=int(config.num_train_timesteps),
            clip_sample=bool(config.clip_sample),
            clip_sample_range=float(config.clip_sample_range),
        )

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """``abar_t`` for integer timesteps ``t`` (any shape); ``t < 0`` gives the final alpha."""
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long()
        if (t >= self.num_train_timesteps).any():
            raise ValueError(f"timestep {int(t.max())} >= num_train_timesteps")
        gathered = self.alphas_cumprod[t.clamp(min=0)]
        return torch.where(t < 0, self.final_alpha_cumprod, gathered)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` coefficients reshaped to broadcast over ``like`` ``(B, ...)`` in its dtype."""
    if values.ndim == 0:
        values = values.expand(like.shape[0])
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.device, like.dtype)


def _timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    """Scalar or ``(B,)`` timesteps as a ``(B,)`` long tensor."""
    t = torch.as_tensor(t, device=device).long()
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"timesteps must be a scalar or shape ({batch},), got {tuple(t.shape)}")
    return t


TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")


def inference_timesteps(
    scheduler: Any, steps: int, timestep_spacing: str | None = None
) -> torch.Tensor:
    """The ``steps`` timesteps, descending, exactly as ``DDIMScheduler.set_timesteps`` gives them.

    Runs ``set_timesteps`` on a fresh scheduler built from the same config (with
    ``timestep_spacing`` in place of the config's, if given), so the caller's scheduler is
    never mutated and every spacing option behaves as in diffusers.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    overrides = {}
    if timestep_spacing is not None:
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"unknown timestep spacing {timestep_spacing!r} "
                f"(expected {', '.join(TIMESTEP_SPACINGS)})"
            )
        overrides["timestep_spacing"] = timestep_spacing
    fresh = type(scheduler).from_config(scheduler.config, **overrides)
    fresh.set_timesteps(steps)
    return fresh.timesteps.clone().long()


def previous_timesteps(timesteps: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """For each entry of a descending inference schedule (all of it), the timestep its DDIM
    step goes to: the schedule's next entry; from the last, ``t - num_train_timesteps //
    steps`` as diffusers steps, -1 (the final alpha) where that is below 0.

    Why not diffusers' ``t - num_train_timesteps // steps``: that rule lands on the next
    entry only for ``leading`` spacing (and ``trailing`` when ``steps`` divides the training
    timesteps). With ``linspace`` (5 steps: 999 -> 799 instead of 749) or ``trailing`` at 13
    steps (999 -> 923 instead of 922) every step reads the wrong ``abar`` and leaves noise in
    the sample (diffusers issues #12633, #9261). Where the rule is right the two agree, and
    the last step is the rule's in every case (over 500 leading steps it ends at ``abar_0``,
    not the final alpha), so dsharp matches ``DDIMScheduler.step`` there exactly. Works along
    dim 0 of any shape.
    """
    if timesteps.ndim == 0 or timesteps.shape[0] == 0:
        raise ValueError("timesteps must hold at least one step")
    stride = num_train_timesteps // timesteps.shape[0]
    final = (timesteps[-1:] - stride).clamp(min=-1)
    return torch.cat([timesteps[1:], final]).long()


# -- closed-form relations ----------------------------------------------------------------


def pred_x0_from_eps(
    tables: DDIMTables, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Clean sample implied by ``x_t`` and noise ``eps``: (x_t - sqrt(1-abar) eps)/sqrt(abar)."""
    abar = _per_sample(tables.abar(t), x_t)
    return (x_t - (1 - abar) ** 0.5 * eps) / abar**0.5


def eps_from_x0(
    tables: DDIMTables, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Noise implied by state ``x_t`` and clean ``x0``: (x_t - sqrt(abar) x0)/sqrt(1-abar)."""
    abar = _per_sample(tables.abar(t), x_t)
    return (x_t - abar**0.5 * x0) / (1 - abar) ** 0.5


def eps_from_v(
    tables: DDIMTables, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Noise implied by a v-prediction (Salimans & Ho 2022): sqrt(1-abar) x_t + sqrt(abar) v."""
    abar = _per_sample(tables.abar(t), x_t)
    return (1 - abar) ** 0.5 * x_t + abar**0.5 * v


def x0_from_v(
    tables: DDIMTables, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Clean sample implied by a v-prediction: sqrt(abar) x_t - sqrt(1-abar) v (no division,
    so it stays finite at t near 1000 where abar is ~0)."""
    abar = _per_sample(tables.abar(t), x_t)
    return abar**0.5 * x_t - (1 - abar) ** 0.5 * v


def v_target(
    tables: DDIMTables, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The velocity a v-prediction model regresses: sqrt(abar) eps - sqrt(1-abar) x0."""
    abar = _per_sample(tables.abar(t), x0)
    return abar**0.5 * eps - (1 - abar) ** 0.5 * x0


def add_noise(
    tables: DDIMTables, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Forward process q(x_t | x0): sqrt(abar) x0 + sqrt(1-abar) eps, per-sample ``t``."""
    abar = _per_sample(tables.abar(t), x0)
    return abar**0.5 * x0 + (1 - abar) ** 0.5 * eps


# -- the DDIM step ------------------------------------------------------------------------


class StepOutput(NamedTuple):
    """One DDIM step for a batch of ``B`` samples.

    ``prev_sample``, ``pred_x0``, ``mean``: like ``x_t`` ``(B, C, h, w)``; ``std``:
    ``(B, 1, 1, 1)`` (broadcastable, zero when ``eta == 0``); ``log_prob``: ``(B,)`` or None.
    """

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor
    log_prob: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor


def transition_std(
    tables: DDIMTables, t: torch.Tensor, t_prev: torch.Tensor, eta: float
) -> torch.Tensor:
    """Std of the DDIM step ``t -> t_prev`` (Song et al. 2021, eq. 16), any shape.

    Exactly 0 where the step is deterministic whatever ``eta``: to ``abar_prev = 1``
    (``set_alpha_to_one=True``) or from ``t = 0`` to the final alpha ``abar_0``
    (``set_alpha_to_one=False`` with a schedule that ends at 0: ``linspace``, ``leading``
    with ``steps_offset=0``, ``trailing`` at 1000 steps)."""
    abar_t, abar_prev = tables.abar(t), tables.abar(t_prev)
    variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    return eta * variance**0.5


def stochastic_steps(tables: DDIMTables, timesteps: torch.Tensor, eta: float) -> torch.Tensor:
    """Which steps ``(T,)`` of a descending inference schedule draw noise (std > 0).

    Only these are actions of the denoising MDP that DDPO and D3PO train: a step with std 0
    maps ``x_t`` to one ``x_{t_prev}``, so it has no density, its log-prob is a constant
    and its importance ratio is 1 whatever the weights."""
    nexts = previous_timesteps(timesteps, tables.num_train_timesteps)
    return transition_std(tables, timesteps, nexts, eta) > 0


def _ddim_mean_std(
    tables: DDIMTables,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    t_prev: torch.Tensor,
    eta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, std, pred_x0) of p(x_{t_prev} | x_t), written as DDIMScheduler.step computes it."""
    t = _timesteps(t, x_t.shape[0], x_t.device)
    t_prev = _timesteps(t_prev, x_t.shape[0], x_t.device)
    std = _per_sample(transition_std(tables, t, t_prev, eta), x_t)
    abar_t = _per_sample(tables.abar(t), x_t)
    abar_prev = _per_sample(tables.abar(t_prev), x_t)

    pred_x0 = (x_t - (1 - abar_t) ** 0.5 * eps) / abar_t**0.5
    if tables.clip_sample:
        pred_x0 = pred_x0.clamp(-tables.clip_sample_range, tables.clip_sample_range)
    direction = (1 - abar_prev - std**2) ** 0.5 * eps
    mean = abar_prev**0.5 * pred_x0 + direction
    return mean, std, pred_x0


def _gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over non-batch dims of log N(sample; mean, std^2); 0 where std == 0."""
    safe_std = torch.where(std > 0, std, torch.ones_like(std))
    log_density = (
        -((sample - mean) ** 2) / (2 * safe_std**2)
        - torch.log(safe_std)
        - 0.5 * math.log(2 * math.pi)
    )
    log_density = torch.where(std > 0, log_density, torch.zeros_like(log_density))
    return log_density.mean(dim=tuple(range(1, sample.ndim)))


def ddim_step(
    tables: DDIMTables,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    t_prev: torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: Generators = None,
) -> StepOutput:
    """One DDIM step x_t -> x_{t_prev} per sample (Song et al. 2021, eq. 12 and 16).

    With ``eta > 0`` the step adds ``std * noise`` (``noise`` given, or drawn like diffusers
    with ``generator``: one generator per sample reproduces a pipeline's draws) and
    ``log_prob`` is the Gaussian log-density of ``prev_sample`` under ``N(mean, std^2)``,
    averaged (not summed) over the non-batch dims as DDPO does, evaluated at the detached
    ``prev_sample`` so that gradients flow only through ``mean`` (the policy). Samples whose
    step is deterministic (``std == 0``) get log-prob 0. With ``eta == 0``: ``log_prob`` None.
    """
    if not 0 <= eta <= 1:  # above 1 the late steps' direction term is sqrt(negative)
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
    mean, std, pred_x0 = _ddim_mean_std(tables, x_t, eps, t, t_prev, eta)
    if eta == 0:
        return StepOutput(mean, pred_x0, None, mean, std)
    if noise is None:
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
    prev_sample = mean + std * noise
    log_prob = _gaussian_log_prob(prev_sample.detach(), mean, std)
    return StepOutput(prev_sample, pred_x0, log_prob, mean, std)


def ddim_log_prob(
    tables: DDIMTables,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    t_prev: torch.Tensor,
    prev_sample: torch.Tensor,
    eta: float,
) -> torch.Tensor:
    """Log-prob ``(B,)`` of a given ``prev_sample`` under the DDIM transition that ``eps``
    (the current model's prediction) defines; same convention as :func:`ddim_step`. Used by
    RL methods to re-evaluate stored trajectories under the current or reference policy."""
    if eta <= 0:
        raise ValueError(f"log-probs need a stochastic step (eta > 0), got eta={eta}")
    mean, std, _ = _ddim_mean_std(tables, x_t, eps, t, t_prev, eta)
    return _gaussian_log_prob(prev_sample.detach(), mean, std)


# -- guidance -----------------------------------------------------------------------------


def guided_noise(
    model: DiffusionModel,
    x: torch.Tensor,
    t: torch.Tensor | int,
    cond: Conditioning,
    uncond: Conditioning | None,
    guidance: float,
    unet: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Classifier-free guidance as the diffusers pipelines do it: for ``guidance > 1`` one
    batched UNet call on ``[uncond, cond]``, then ``e_u + g (e_c - e_u)``; else a plain call."""
    t = _timesteps(t, x.shape[0], x.device)
    if guidance <= 1.0:
        return model.predict_noise(x, t, cond, unet=unet)
    if uncond is None:
        raise ValueError(f"guidance {guidance} > 1 needs unconditional conditioning")
    both = model.predict_noise(
        torch.cat([x, x]), torch.cat([t, t]), Conditioning.cat([uncond, cond]), unet=unet
    )
    eps_uncond, eps_cond = both.chunk(2)
    return eps_uncond + guidance * (eps_cond - eps_uncond)


# -- full sampling ------------------------------------------------------------------------


class Trajectory(NamedTuple):
    """A batch of ``B`` denoising trajectories of ``T`` steps.

    - ``latents``: ``(T+1, B, C, h, w)``: ``latents[0]`` is the initial noise ``x_T``,
      ``latents[i+1]`` the state after step ``i``, ``latents[T]`` the final sample.
    - ``timesteps``: ``(T,)`` when all samples share the schedule (as :func:`sample` makes
      them), or ``(T, B)``; step ``i`` went from ``timesteps[i]`` to
      the next entry (:func:`previous_timesteps`; the final alpha after the last step).
    - ``log_probs``: ``(T, B)`` log-prob of each transition (see :func:`ddim_step`), or None
      for deterministic sampling (``eta == 0``).
    - ``pred_x0``: ``(T, B, C, h, w)`` the model's clean-sample estimate at each step, or None.
    - ``nfe``: UNet forward passes per image (``T``, doubled with CFG).
    """

    latents: torch.Tensor
    timesteps: torch.Tensor
    log_probs: torch.Tensor | None
    pred_x0: torch.Tensor | None
    nfe: int


def _generators(seeds: Sequence[int] | None, generator: Generators, n: int) -> Generators:
    """One CPU generator per image from ``seeds``, or the given generator(s)."""
    if seeds is not None and generator is not None:
        raise ValueError("pass either seeds or generator, not both")
    if seeds is not None:
        if len(seeds) != n:
            raise ValueError(f"seeds has {len(seeds)} entries for {n} prompts")
        return [torch.Generator().manual_seed(int(s)) for s in seeds]
    if isinstance(generator, list) and len(generator) != n:
        raise ValueError(f"generator list has {len(generator)} entries for {n} prompts")
    return generator


@torch.no_grad()
def sample(
    model: DiffusionModel,
    prompts: Sequence[str],
    *,
    seeds: Sequence[int] | None = None,
    generator: Generators = None,
    steps: int = 50,
    guidance: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    eta: float = 0.0,
    latents: torch.Tensor | None = None,
    return_trajectory: bool = False,
    keep_pred_x0: bool = False,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    unet: torch.nn.Module | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Full DDIM sampling; images ``(B, 3, H, W)`` in ``[0, 1]`` (and the Trajectory).

    Initial latents are drawn as the diffusers pipelines draw them, so ``seeds=[s0, s1]``
    reproduces ``pipe(prompts, generator=[Generator().manual_seed(s) for s in seeds])``
    (the same generators also draw the ``eta > 0`` step noise, as the pipeline does). Latents
    stay float32 whatever the weight dtype. Runs without grad: methods that need gradients
    recompute single steps with :func:`ddim_step`. ``callback(i, info)`` sees each step.
    """
    if not prompts:
        raise ValueError("prompts must not be empty")
    height = height or model.default_resolution
    width = width or model.default_resolution
    batch = len(prompts)
    device = model.device
    gens = _generators(seeds, generator, batch)
    shape = (batch, *model.latent_shape(height, width))
    if latents is None:
        from diffusers.utils.torch_utils import randn_tensor

        latents = randn_tensor(shape, generator=gens, device=device, dtype=torch.float32)
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
    x = latents.to(device, torch.float32) * model.scheduler.init_noise_sigma

    cond = model.encode_prompt(list(prompts), height, width)
    uncond = model.encode_negative(batch, height, width) if guidance > 1 else None
    tables = DDIMTables.from_scheduler(model.scheduler, device=device)
    timesteps = inference_timesteps(model.scheduler, steps).to(device)

    states, log_probs, x0s = [x], [], []
    for i, (t, t_next) in enumerate(
        zip(timesteps, previous_timesteps(timesteps, tables.num_train_timesteps), strict=True)
    ):
        t_vec = t.expand(batch)
        t_prev = t_next.expand(batch)
        eps = guided_noise(model, x, t_vec, cond, uncond, guidance, unet=unet).float()
        out = ddim_step(tables, x, eps, t_vec, t_prev, eta=eta, generator=gens)
        x = out.prev_sample
        if return_trajectory:
            states.append(x)
            if out.log_prob is not None:
                log_probs.append(out.log_prob)
            if keep_pred_x0:
                x0s.append(out.pred_x0)
        if callback is not None:
            callback(i, {"x": x, "t": t, "eps": eps, "pred_x0": out.pred_x0, "step": out})
    images = model.decode(x)
    if not return_trajectory:
        return images
    trajectory = Trajectory(
        latents=torch.stack(states),
        timesteps=timesteps,
        log_probs=torch.stack(log_probs) if log_probs else None,
        pred_x0=torch.stack(x0s) if x0s else None,
        nfe=steps * (2 if guidance > 1 else 1),
    )
    return images, trajectory


# -- output -------------------------------------------------------------------------------


def save_images(
    images: torch.Tensor,
    folder: Path,
    names: Sequence[str],
    staged: Callable[[Path], Path] | None = None,
) -> list[Path]:
    """Write ``images`` ``(B, 3, H, W)`` in ``[0, 1]`` as PNGs ``folder/name`` atomically
    (:func:`dsharp.io.atomic_write_bytes`), so readers never see half a file; returns their
    paths. ``staged`` (of :func:`dsharp.file_sets.replaced_together`) says where each is
    written first, for images replaced together with other files."""
    from io import BytesIO

    from PIL import Image

    from dsharp.io import atomic_write_bytes

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if len(names) != images.shape[0]:
        raise ValueError(f"{len(names)} names for {images.shape[0]} images")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    arrays = arrays.permute(0, 2, 3, 1).cpu().numpy()
    paths = []
    for array, name in zip(arrays, names, strict=True):
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"image name {name!r} must be a plain file name")
        path = folder / (name if name.endswith(".png") else f"{name}.png")
        encoded = BytesIO()
        Image.fromarray(array).save(encoded, format="PNG")
        atomic_write_bytes(staged(path) if staged else path, encoded.getvalue())
        paths.append(path)
    return paths
