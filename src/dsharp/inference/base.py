"""What the inference-time sample methods share: options, the verifier, the per-image context.

Every method generates one image at a time from an :class:`ImageContext`: the model, the
prompt's conditioning, the DDIM schedule, a verifier, and one CPU generator seeded with the
image's seed. All of a method's randomness (initial noise, candidate noises, resampling) is
drawn from that generator, so an image depends on its seed only, not on the batch it came in.
The first draw is the initial noise that plain DDIM (``default``) uses for the same seed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.sampling import (
    DDIMTables,
    StepOutput,
    ddim_step,
    guided_noise,
    inference_timesteps,
    previous_timesteps,
)

# --------------------------------------------------------------------------- options


def option_error(key: str, reason: str) -> ValueError:
    """The one-line error for a bad method option: ``sample.options.KEY: reason``."""
    return ValueError(f"sample.options.{key}: {reason}")


def check_at_least(key: str, value: float, low: float, strict: bool = False) -> None:
    """Raise the option error unless ``value >= low`` (``> low`` with ``strict``)."""
    if value < low or (strict and value == low):
        raise option_error(key, f"must be {'>' if strict else '>='} {low}, got {value!r}")


def check_eta(key: str, value: float) -> None:
    """Raise the option error unless ``0 < value <= 1``: above 1 a DDIM step's noise outgrows
    the variance left for it and the late steps take the square root of a negative number."""
    check_at_least(key, value, 0, strict=True)
    if value > 1:
        raise option_error(key, f"must be <= 1 (DDIM eta), got {value!r}")


def _check_type(key: str, value: Any, expected: Any) -> Any:
    if typing.get_origin(expected) is Literal:
        allowed = typing.get_args(expected)
        if value not in allowed:
            listing = ", ".join(repr(a) for a in allowed)
            raise option_error(key, f"expected one of {listing}, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise option_error(key, f"expected an integer, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise option_error(key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise option_error(key, f"expected a finite number, got {value!r}")
        return float(value)
    raise TypeError(f"option {key!r}: unsupported annotation {expected!r}")  # a dsharp bug


def parse_options(cls: type, options: Mapping[str, Any], method: str) -> Any:
    """Build the frozen options dataclass ``cls`` of ``method`` from a recipe's
    ``sample.options``: unknown keys (with the closest known one) and wrong types fail in
    one line; range checks live in each class's ``__post_init__``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in dict(options).items():
        if key not in names:
            match = difflib.get_close_matches(str(key), names, n=1)
            hint = f", did you mean {match[0]!r}?" if match else ""
            known = ", ".join(names) if names else "none: it takes no options"
            raise option_error(
                str(key), f"unknown option of method {method!r}{hint} (known: {known})"
            )
        values[key] = _check_type(key, value, hints[key])
    return cls(**values)


@dataclass(frozen=True)
class NoOptions:
    """Options of a method that takes none."""


# --------------------------------------------------------------------------- verifier


def reward_specs(value: Any) -> list[Any] | None:
    """A verifier given as a reward name, a ``RewardSpec``, a spec dict, or a list of them,
    as validated ``RewardSpec`` objects (None stays None)."""
    from dsharp.config import RewardSpec, parse_reward_spec

    if value is None:
        return None
    items = [value] if isinstance(value, str | dict | RewardSpec) else list(value)
    if not items:
        return None
    specs = []
    for item in items:
        if isinstance(item, RewardSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(parse_reward_spec({"name": item}, source="sample.reward"))
        elif isinstance(item, Mapping):
            specs.append(parse_reward_spec(item, source="sample.reward"))
        else:
            raise ValueError(
                f"sample.reward: expected a reward name or spec, got {type(item).__name__}"
            )
    return specs


class Verifier:
    """The (weighted, combined) reward that inference-time methods search with."""

    def __init__(self, specs: Sequence[Any]):
        from dsharp.rewards.combine import CombinedReward

        self.specs = list(specs)
        self.reward = CombinedReward(self.specs)

    def __call__(
        self, images: torch.Tensor, prompt: str, metadata: Sequence[dict[str, Any]]
    ) -> torch.Tensor:
        """Scores ``(n,)`` float64 on the CPU of images ``(n, 3, H, W)`` for one prompt;
        NaN where the reward could not score a candidate (``on_error: missing``)."""
        scores, _ = self.reward(RewardImages(images), [prompt] * len(images), list(metadata))
        return scores.detach().to("cpu", torch.float64)


def best_index(scores: torch.Tensor, what: str = "candidate") -> int:
    """Index of the highest score, NaN counting as lowest; an error if every score is NaN."""
    if bool(torch.isnan(scores).all()):
        raise RewardError(f"the verifier could not score any {what} (every score is NaN)")
    return int(torch.nan_to_num(scores, nan=-math.inf).argmax())


# --------------------------------------------------------------------------- per image


def _candidate_seed(seed: int, k: int) -> int:
    """The seed of candidate ``k``'s step-noise generator for the image of ``seed``."""
    digest = hashlib.sha256(f"dsharp candidate {int(seed)} {int(k)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # below 2**63: any torch accepts it


@dataclass
class ImageContext:
    """One image's sampling state and helpers: ``eps``, ``step``, ``x0``, ``rollout``,
    ``denoise``, ``score`` and ``randn``, each a few lines over :mod:`dsharp.sampling`.

    ``batch_size`` caps the rows of one UNet call (before CFG doubling) when a method
    evaluates many candidates at once.
    """

    model: DiffusionModel
    prompt: str
    seed: int
    steps: int
    guidance: float
    eta: float
    height: int
    width: int
    verifier: Verifier | None = None
    batch_size: int = 8
    method: str = ""
    generator: torch.Generator = field(init=False)
    cond: Conditioning = field(init=False)
    uncond: Conditioning | None = field(init=False)
    tables: DDIMTables = field(init=False)
    timesteps: torch.Tensor = field(init=False)
    _next: dict[int, int] = field(init=False, repr=False)  # timestep -> where its step goes

    def __post_init__(self) -> None:
        model = self.model
        self.generator = torch.Generator().manual_seed(int(self.seed))
        self.cond = model.encode_prompt([self.prompt], self.height, self.width)
        self.uncond = model.encode_negative(1, self.height, self.width) if self.guided else None
        self.tables = DDIMTables.from_scheduler(model.scheduler, device=model.device)
        self.timesteps = inference_timesteps(model.scheduler, self.steps).to(model.device)
        nexts = previous_timesteps(self.timesteps, self.tables.num_train_timesteps)
        self._next = dict(zip(self.timesteps.tolist(), nexts.tolist(), strict=True))

    @property
    def guided(self) -> bool:
        """Whether steps need the unconditional pass: a guidance of 1 or less skips it."""
        return self.guidance > 1

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.model.latent_shape(self.height, self.width))

    def randn(self, n: int, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """``n`` standard normal latents ``(n, C, h, w)``, drawn one row at a time from this
        image's generator (the first draw of a fresh context is ``default``'s initial noise),
        or row ``i`` from ``generators[i]``."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (1, *self.latent_shape)
        if generators is not None and len(generators) != n:
            raise ValueError(f"{len(generators)} generators for {n} rows")
        sources = generators if generators is not None else [self.generator] * n
        rows = [randn_tensor(shape, generator=g, device=self.model.device) for g in sources]
        return torch.cat(rows).float()

    def candidate_generators(self, n: int) -> list[torch.Generator]:
        """One generator per candidate sample for its step noise (``sample.eta > 0``):
        candidate 0's continues as ``default``'s does after its initial noise, so that a
        candidate from ``default``'s initial noise is ``default``'s image; candidate ``k > 0``
        draws from its own stream, seeded from the image's seed and ``k`` (so it does not
        depend on how many candidates there are, nor on the batch)."""
        first = torch.Generator().manual_seed(int(self.seed))
        self.randn(1, [first])  # default's initial noise, which it draws before its steps
        return [first] + [
            torch.Generator().manual_seed(_candidate_seed(self.seed, k)) for k in range(1, n)
        ]

    def initial_noise(self, n: int = 1) -> torch.Tensor:
        """``n`` initial latents ``x_T`` (scaled by the scheduler's ``init_noise_sigma``)."""
        return self.randn(n) * self.model.scheduler.init_noise_sigma

    def prev(self, t: torch.Tensor | int) -> int:
        """The timestep a DDIM step from ``t`` goes to (below 0: the final alpha)."""
        if int(t) not in self._next:
            raise ValueError(f"timestep {int(t)} is not in this image's schedule")
        return self._next[int(t)]

    def eps(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Guided noise prediction for every row of ``x`` at timestep ``t``, in chunks."""
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size]
            n = chunk.shape[0]
            cond = self.cond.repeat_interleave(n)
            uncond = self.uncond.repeat_interleave(n) if self.uncond is not None else None
            t_vec = torch.full((n,), int(t), device=x.device, dtype=torch.long)
            out.append(guided_noise(self.model, chunk, t_vec, cond, uncond, self.guidance).float())
        return torch.cat(out)

    def step(
        self,
        x: torch.Tensor,
        eps: torch.Tensor,
        t: torch.Tensor | int,
        t_prev: int,
        eta: float,
        noise: torch.Tensor | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> StepOutput:
        """One DDIM step of every row; with ``eta > 0`` and no ``noise``, the noise is drawn
        from this image's generator (or row ``i``'s from ``generators[i]``)."""
        if eta > 0 and noise is None:
            noise = self.randn(x.shape[0], generators)
        return ddim_step(self.tables, x, eps, int(t), t_prev, eta=eta, noise=noise)

    def x0(self, x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        """The one-step (Tweedie) clean estimate ``x0_hat``, clipped as the scheduler clips."""
        abar = self.tables.abar(torch.tensor(t)).to(x.device, x.dtype)
        x0 = (x - (1 - abar) ** 0.5 * eps) / abar**0.5
        if self.tables.clip_sample:
            x0 = x0.clamp(-self.tables.clip_sample_range, self.tables.clip_sample_range)
        return x0

    def rollout(self, x: torch.Tensor, t: int, steps: int) -> torch.Tensor:
        """Deterministic DDIM (ODE) from ``x`` at timestep ``t`` to a clean sample in
        ``min(steps, t + 1)`` UNet evaluations at evenly spaced timesteps ``t .. 0``."""
        points = torch.linspace(t, 0, steps).round().long().unique_consecutive().tolist()
        for i, s in enumerate(points):
            s_next = points[i + 1] if i + 1 < len(points) else -1
            x = self.step(x, self.eps(x, s), s, s_next, eta=0.0).prev_sample
        return x

    def denoise(
        self, x: torch.Tensor, generators: Sequence[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Plain DDIM over the whole schedule from initial latents ``x`` (``sample.eta``);
        with ``eta > 0`` the step noise of row ``i`` comes from ``generators[i]`` where
        given (see :meth:`candidate_generators`), else from this image's generator."""
        for t in self.timesteps:
            eps = self.eps(x, t)
            x = self.step(x, eps, t, self.prev(t), eta=self.eta, generators=generators).prev_sample
        return x

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(n, 3, H, W)`` in ``[0, 1]`` (float32, on the model's device)."""
        parts = [
            self.model.decode(x[i : i + self.batch_size]).float()
            for i in range(0, x.shape[0], self.batch_size)
        ]
        return torch.cat(parts)

    def score_images(self, images: torch.Tensor, **meta: Any) -> torch.Tensor:
        """Verifier scores ``(n,)`` (float64, CPU) of decoded candidate images."""
        if self.verifier is None:
            raise ValueError(f"sample.method {self.method!r} needs a verifier reward")
        metadata = [
            {"seed": self.seed, "method": self.method, "candidate": k, **meta}
            for k in range(len(images))
        ]
        return self.verifier(images, self.prompt, metadata)

    def score(self, x0: torch.Tensor, **meta: Any) -> torch.Tensor:
        """Decode clean latents ``(n, C, h, w)`` and score them with the verifier."""
        return self.score_images(self.decode(x0), **meta)
