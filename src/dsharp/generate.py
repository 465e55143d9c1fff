"""Image generation for `dsharp sample` and `dsharp eval`: batched, seeded, method-aware.

Image ``i`` of a call uses seed ``seeds[i]``; its initial noise is what the diffusers
pipeline draws for ``generator=torch.Generator().manual_seed(seeds[i])``. ``sample.method``
picks the sampler (:mod:`dsharp.inference`): ``default`` is plain DDIM in batches; the
inference-time methods search with a verifier reward, one image at a time, every draw from
that image's seed. Network evaluations are counted, not computed from a formula.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dsharp.builders import resolution
from dsharp.inference import SAMPLE_METHODS as _REGISTRY
from dsharp.inference import (
    ImageContext,
    SampleMethod,
    Verifier,
    count_nfe,
    get_sample_method,
    reward_specs,
)
from dsharp.models.base import DiffusionModel
from dsharp.progress import task_progress
from dsharp.rewards.base import RewardError, UnscoredCandidateError, UnscoredError
from dsharp.sampling import sample

SAMPLE_METHODS = {name: m.description for name, m in _REGISTRY.items()}


#: What a sampler without its verifier is told where the caller names no input for one.
VERIFIER_HINT = "none was given (a recipe's rewards are its verifier)"
_SEARCHES = [name for name, method in _REGISTRY.items() if method.needs_reward]
#: The sample methods that ask a verifier ("free2guide, demon or inference_scaling"), for
#: the errors that name them.
VERIFIER_METHODS = f"{', '.join(_SEARCHES[:-1])} or {_SEARCHES[-1]}"


@dataclass
class SampleSettings:
    """How to sample: the `sample` section of a recipe, or the `dsharp sample` flags.

    ``options``: the method's ``sample.options``. ``reward``: the verifier of inference-time
    methods (a reward name, ``RewardSpec``, spec dict, or a list of them); it is kept as
    validated spec dicts, so that the settings stay JSON-able (see :meth:`as_dict`).
    """

    method: str = "default"
    steps: int = 25
    guidance: float = 5.0
    eta: float = 0.0
    height: int | None = None
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    reward: Any = None

    def __post_init__(self) -> None:
        specs = reward_specs(self.reward)
        self.reward = [s.model_dump(mode="json") for s in specs] if specs else None
        self.options = dict(self.options or {})

    @classmethod
    def from_config(cls, cfg: Any, reward: Any = None) -> SampleSettings:
        """From a recipe's ``sample`` section; ``reward``: the verifier (the recipe's rewards)."""
        options = dict(cfg.options)
        return cls(
            cfg.method, cfg.steps, cfg.guidance, cfg.eta, cfg.height, cfg.width, options, reward
        )

    def validate(
        self, verifier_hint: str = VERIFIER_HINT, verifier_given: str | None = None
    ) -> tuple[SampleMethod, Any]:
        """The method and its parsed options; one-line errors for an unknown method, a bad
        option, or an inference-time method without a verifier (checked before any model
        loads). ``verifier_hint`` says how the caller's user gives one (a command's flag).
        ``verifier_given``: the input (a flag, an argument) that gave this verifier, when the
        user gave it rather than a default: a method that asks none refuses it instead of
        leaving it silently unused."""
        method = get_sample_method(self.method)
        options = method.parse_options(self.options)
        if verifier_given and self.reward and not method.needs_reward:
            raise ValueError(
                f"{verifier_given}: sample.method {self.method!r} uses no verifier; it is for "
                f"an inference-time method ({VERIFIER_METHODS})"
            )
        if method.needs_reward:
            if not self.reward:
                raise ValueError(
                    f"sample.method {self.method!r} needs a verifier reward: {verifier_hint}"
                )
            from dsharp.config import check_reward_name

            for spec in self.reward:
                check_reward_name(spec["name"])
        return method, options

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-able data, the verifier's secret options redacted."""
        from dsharp.redaction import redact_reward_spec

        data = {k: v for k, v in vars(self).items() if k != "reward"}
        data["reward"] = [redact_reward_spec(s) for s in self.reward] if self.reward else None
        return data


def given_flags(values: Mapping[str, Any]) -> dict[str, str]:
    """``{"steps": "--steps"}`` for each ``sample`` field a command-line flag set (not None)."""
    return {name: f"--{name}" for name, value in values.items() if value is not None}


def refuse_flag_and_override(
    overrides: Sequence[str], flag_names: Mapping[str, str], options: Sequence[str] = ()
) -> None:
    """A ``RecipeError`` where a positional ``sample.*`` override sets what a flag
    (``flag_names``: field -> flag) or an ``--option KEY=VALUE`` also sets, so that neither
    wins silently."""
    from dsharp.recipe_errors import RecipeError
    from dsharp.redaction import shown_setting

    option_keys = {item.partition("=")[0].strip() for item in options}
    for text in overrides:
        key, sep, _ = text.partition("=")
        path = key.strip().split(".")
        if not sep or path[0] != "sample" or len(path) < 2:
            continue  # no `=`: the override's own parse says what is wrong
        if path[1] in flag_names:
            flag = flag_names[path[1]]
            raise RecipeError(
                f"override {shown_setting(text)!r}: {flag} also sets sample.{path[1]}; give one"
            )
        if path[1] == "options" and len(path) > 2 and path[2] in option_keys:
            raise RecipeError(
                f"override {shown_setting(text)!r}: --option {path[2]}=... also sets "
                f"sample.options.{path[2]}; give one"
            )


def parse_sample_overrides(
    base: dict[str, Any],
    overrides: Sequence[str] = (),
    options: Sequence[str] = (),
    flag_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``sample`` section from flag values ``base`` (``None`` = unset), ``--option k=v``
    and positional ``sample.method=x`` / ``sample.options.K=4`` overrides, validated as a
    recipe's ``sample`` section would be (one-line ``RecipeError`` naming the field).

    ``flag_names`` maps a field to the flag that set it (:func:`given_flags`): a positional
    override of that field, or of an ``--option`` key, is refused."""
    from pydantic import BaseModel, ConfigDict, ValidationError

    from dsharp.config import SampleConfig
    from dsharp.recipe_errors import RecipeError, _first_error
    from dsharp.recipe_yaml import apply_overrides
    from dsharp.redaction import shown_setting

    class _SampleSection(BaseModel):  # the `sample` field of a Recipe, errors located alike
        model_config = ConfigDict(extra="forbid", strict=True)
        sample: SampleConfig

    texts = []
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--option {shown_setting(item)!r}: expected KEY=VALUE, e.g. K=4")
        texts.append(f"sample.options.{key.strip()}={value}")
    for text in overrides:
        if not text.startswith("sample."):
            raise RecipeError(
                f"override {shown_setting(text)!r}: only sample.* settings can be set here "
                "(e.g. sample.method=demon sample.options.K=4)"
            )
        texts.append(text)
    refuse_flag_and_override(overrides, flag_names or {}, options)
    data = {"sample": {k: v for k, v in base.items() if v is not None}}
    applied = apply_overrides(data, texts)
    try:
        _SampleSection.model_validate(data)
    except ValidationError as e:
        raise _first_error(e, None, applied) from None
    return data["sample"]


def prompt_seeds(prompts: Sequence[str], num_images: int, seed: int) -> tuple[list[str], list[int]]:
    """Each prompt ``num_images`` times (prompt-major) and their seeds: image ``i`` counting
    across prompts gets ``seed + i`` (``dsharp sample -p A -p B -n 2``: A 0, 1 and B 2, 3)."""
    repeated = [p for p in prompts for _ in range(num_images)]
    return repeated, [seed + i for i in range(len(repeated))]


@dataclass
class Generated:
    images: torch.Tensor  # (N, 3, H, W) in [0, 1], on CPU
    nfe_per_image: float
    #: Images the verifier scored per generated image (None for plain sampling).
    reward_evals_per_image: float | None = None


def generate(
    model: DiffusionModel,
    prompts: Sequence[str],
    seeds: Sequence[int],
    settings: SampleSettings,
    batch_size: int = 8,
    progress: bool = False,
    progress_label: str = "sample",
    verifier: Verifier | None = None,
) -> Generated:
    """Generate one image per (prompt, seed) pair; UNet forwards per image are counted.
    ``progress_label`` names the progress bar (e.g. which model a report is evaluating).
    ``verifier``: the built verifier of an inference-time method (else built here from
    ``settings.reward``), so that a command can build it before its model loads."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        raise ValueError("prompts must not be empty")
    method, options = settings.validate()
    height, width = resolution(model, settings.height, settings.width)
    out = []
    with task_progress(progress_label, enabled=progress) as bar, count_nfe(model) as counter:
        task = bar.add_task(progress_label, total=len(prompts))
        if method.run is None:  # default: batched plain DDIM
            for start in range(0, len(prompts), batch_size):
                chunk = slice(start, start + batch_size)
                images = sample(
                    model,
                    list(prompts[chunk]),
                    seeds=list(seeds[chunk]),
                    steps=settings.steps,
                    guidance=settings.guidance,
                    height=height,
                    width=width,
                    eta=settings.eta,
                )
                out.append(images.float().cpu())
                bar.update(task, advance=images.shape[0])
        else:
            verifier = verifier or Verifier(reward_specs(settings.reward))
            # one image can take long (N full samples, a search at every step): a second
            # counter moves with the network evaluations, its total estimated from the first
            # image's, so that the bar (and, off a terminal, its lines) show work going on
            evals = bar.add_task(f"{progress_label} network evaluations", total=None)
            counter.on_rows = lambda rows: bar.advance(evals, rows)
            for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
                ctx = ImageContext(
                    model,
                    prompt,
                    int(seed),
                    settings.steps,
                    settings.guidance,
                    settings.eta,
                    height,
                    width,
                    verifier=verifier,
                    batch_size=batch_size,
                    method=method.name,
                )
                try:
                    out.append(method.run(ctx, options).float().cpu())
                except UnscoredError as err:  # which image the verifier failed on
                    message = f"prompt {prompt!r}, seed {seed}: {err}"
                    raise UnscoredCandidateError(message, err.key) from err
                except RewardError as err:
                    raise RewardError(f"prompt {prompt!r}, seed {seed}: {err}") from err
                bar.update(task, advance=1)
                if i == 0:  # images of one setting cost alike: the first's count, times all
                    bar.update(evals, total=counter.rows * len(prompts))
            bar.update(evals, total=counter.rows)
    images = torch.cat(out)
    searched = None if method.run is None else verifier.reward.evaluations / images.shape[0]
    return Generated(
        images=images,
        nfe_per_image=counter.per_image(images.shape[0]),
        reward_evals_per_image=searched,
    )
