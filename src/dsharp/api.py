"""The Python API: what ``dsharp train``, ``sample``, ``eval`` and ``rewards score`` do, as
functions that return values and raise exceptions (never print to stdout or exit).

Each function is a thin wrapper over the module that does the work; heavy modules (torch,
diffusers) are imported when a function is called, so ``import dsharp`` stays fast.
``dsharp/__init__.py`` re-exports these names lazily.
"""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from dsharp.hub import user_path

if TYPE_CHECKING:
    from dsharp.config import Recipe, RewardSpec
    from dsharp.generate import Generated, SampleSettings
    from dsharp.models.base import DiffusionModel
    from dsharp.rewards.base import Reward

    #: One reward of ``rewards`` or ``verifier``: a name, a spec dict or a recipe's spec.
    RewardArg: TypeAlias = str | Mapping[str, Any] | RewardSpec

_REWARD_KINDS = "a reward name, a spec dict or a dsharp.config.RewardSpec"


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """A validated recipe from a YAML file, with ``a.b=value`` overrides applied
    (``["train.max_steps=2", "output_dir=runs/x"]``, as on the command line).

    Raises :class:`~dsharp.recipe_errors.RecipeError` naming the file and field."""
    from dsharp.recipe_io import load_recipe as _load

    return _load(path, overrides)


def train(recipe: Recipe, *, progress: bool = True, report: bool = True) -> Path:
    """Train as ``recipe`` says; returns the run folder (its newest checkpoint loads with
    :func:`load_model`).

    The recipe is checked as ``dsharp train`` checks it before the model loads, by the same
    function (:func:`dsharp.train_start.check_training`: a sampler recipe, prompts the rewards
    cannot score, method and reward options, input files, an output folder holding another
    run or nothing to resume): a ``RecipeError`` in seconds, not a failure at the first
    step. Notes that ``dsharp train`` prints are warnings here. The run folder is then held
    until the report is written: a folder another process is training into raises
    :class:`~dsharp.folder_lock.FolderInUseError` before the model loads.

    ``report``: as ``dsharp train``, where the recipe's ``eval`` section names a bench or
    prompts, evaluate the base and the fine-tuned model after training and write
    ``eval-base.json``, ``eval-final.json``, ``samples_grid.png`` and ``report.md`` into the
    run folder (``report=False``: training alone, for sweeps scored otherwise). A training
    stopped by :class:`~dsharp.interrupts.TrainingInterrupted` (or ``KeyboardInterrupt``)
    writes no report and lets go of the folder; a report stopped by an image its reward
    could not score raises ``UnscoredError`` naming the (kept) run folder. What the run's
    metrics say went wrong (no step scored a sample, no usable pair) is a warning, as
    ``dsharp train`` prints it. The global random generators (Python's, numpy's, torch's)
    training seeds from ``train.seed`` are as they were before the call when it returns."""
    from dsharp.config import Recipe
    from dsharp.global_rng import global_rngs_kept

    if not isinstance(recipe, Recipe):  # a path: an AttributeError deep in the checks
        raise TypeError(
            f"recipe: expected a dsharp.Recipe (from dsharp.load_recipe), got {_given(recipe)}"
        )
    # from the start: training seeds them, and importing what it needs draws from Python's
    with global_rngs_kept():
        return _checked_train(recipe, progress=progress, report=report)


def _checked_train(recipe: Recipe, *, progress: bool, report: bool) -> Path:
    """Check as ``dsharp train`` does, warn its notes, hold the folder, train and report."""
    from dsharp.launch import launcher_rank_zero
    from dsharp.posttrain import wants_report
    from dsharp.train_start import check_training, claimed_run_folder

    reports = report and wants_report(recipe)
    notes = check_training(recipe, evaluation=reports)
    if launcher_rank_zero():  # under a launcher, once for the launch, as dsharp train says them
        for note in notes:
            warnings.warn(note, stacklevel=3)  # at the caller of train
    with claimed_run_folder(recipe):
        return _train_and_report(recipe, progress=progress, reports=reports)


def _train_and_report(recipe: Recipe, *, progress: bool, reports: bool) -> Path:
    """Train, then (main process) warn what the metrics say and write the report."""
    from dsharp.engine import train as _train

    run_dir = _train(recipe, progress=progress, report_follows=reports)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one report and one set of warnings
        return run_dir
    from dsharp.runs import training_warnings

    for warning in training_warnings(run_dir):  # `dsharp train` prints them
        warnings.warn(warning, stacklevel=4)  # at the caller of train
    if reports:
        from dsharp.posttrain import post_train_report
        from dsharp.rewards.base import UnscoredError

        try:
            post_train_report(recipe, run_dir, progress=progress)
        except UnscoredError as err:  # training is kept: say where, so it is not run again
            said = f"training is complete in {run_dir}, but its report was not written: {err}"
            raise UnscoredError(said, err.key) from None
    return run_dir


def load_model(source: str | os.PathLike[str], *, device: str = "auto") -> DiffusionModel:
    """A model ready to sample: a run folder (its newest checkpoint) or one checkpoint
    folder, else a model name (``dsharp-mini``), diffusers folder or hub id.

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda[:N]``, ..."""
    from dsharp.builders import load_run_model
    from dsharp.devices import pick_device
    from dsharp.models import load_model as _load

    dev = pick_device(device)
    path = user_path(source)
    if (path / "trainer_state.json").is_file() or (path / "recipe.yaml").is_file():
        model, _ = load_run_model(path, dev, label="source")
    else:
        model = _load(str(source), device=dev)
    model.unet.eval()
    return model


def sample(
    model: DiffusionModel,
    prompts: str | Sequence[str] | os.PathLike[str],
    *,
    num_images: int = 1,
    seed: int = 0,
    steps: int = 25,
    guidance: float = 5.0,
    eta: float = 0.0,
    height: int | None = None,
    width: int | None = None,
    method: str = "default",
    options: Mapping[str, Any] | None = None,
    verifier: RewardArg | Sequence[RewardArg] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> Generated:
    """Images for ``prompts`` (one, a list, or a ``pathlib.Path`` of a prompt file) as
    ``dsharp sample`` draws them: ``num_images`` per prompt, image ``i`` (counting across
    prompts) from seed ``seed + i``, each from 0 to 2**32 - 1 as ``--seed``.

    Returns a :class:`~dsharp.generate.Generated`: ``images`` ``(N, 3, H, W)`` in [0, 1]
    on the CPU, prompt-major, and the network evaluations spent per image. ``method``,
    ``options`` and ``verifier`` (reward names or specs) pick an inference-time sampler."""
    from dsharp.generate import generate, prompt_seeds

    _require_counts(num_images=num_images, batch_size=batch_size)
    settings = _sample_settings(steps, guidance, eta, height, width, method, options, verifier)
    _check_verifier_used(settings, verifier)  # an unknown method or option: before drawing
    all_prompts, seeds = prompt_seeds(_prompt_list(prompts), num_images, _seed(seed))
    _require_seeds_in_range(seeds)
    _require_model(model)
    return generate(model, all_prompts, seeds, settings, batch_size=batch_size, progress=progress)


def get_reward(name: str, /, *, on_error: str = "raise", **options: Any) -> Reward:
    """The reward registered as ``name`` (``dsharp rewards list``), built with ``options``.

    Call it as ``scores, info = reward(dsharp.RewardImages(images), prompts, metadata)``:
    ``images`` ``(B, 3, H, W)`` in [0, 1], one prompt and one metadata dict per image;
    ``scores`` is a ``(B,)`` tensor. ``on_error='missing'`` makes an image the reward cannot
    score NaN instead of an error (for rewards that support it)."""
    from dsharp.config import parse_reward_spec
    from dsharp.rewards.plugins import build_reward

    spec = parse_reward_spec({"name": name, "options": options, "on_error": on_error})
    return build_reward(spec)


def evaluate_model(
    model: DiffusionModel,
    bench: str | None = None,
    *,
    prompts: str | Sequence[str] | os.PathLike[str] | None = None,
    rewards: RewardArg | Iterable[RewardArg] | None = None,
    seeds: int = 2,
    limit: int | None = None,
    steps: int = 25,
    guidance: float = 5.0,
    eta: float = 0.0,
    height: int | None = None,
    width: int | None = None,
    method: str = "default",
    options: Mapping[str, Any] | None = None,
    verifier: RewardArg | Sequence[RewardArg] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` as ``dsharp eval`` does: every prompt with seeds ``0..seeds-1``.

    Prompts: ``prompts`` (a list, or a ``pathlib.Path`` of a prompt file), else the bench's;
    ``limit``: at most this many per category. Rewards: ``rewards`` (one or a list of names,
    spec dicts such as ``{"name": "shapes", "options": {"binary": True}}`` or ``RewardSpec``
    objects, as a recipe's ``rewards``), else the bench's. Returns
    the evaluation dict (``overall``, ``metrics``, ``categories``, ``images``, ...), with
    ``bench`` and ``rewards`` as in the command's JSON."""
    from dsharp.eval_inputs import choose_prompts, choose_rewards
    from dsharp.evaluate import evaluate
    from dsharp.rewards.plugins import check_prompts

    _require_counts(seeds=seeds, batch_size=batch_size, limit=limit)
    given_rewards = _reward_specs(rewards) if rewards is not None else None
    given = _prompt_list(prompts) if prompts is not None else None
    prompt_list, spec_bench = choose_prompts(given, bench, limit=limit)
    specs = choose_rewards(given_rewards, spec_bench, bench=bench)
    category_of = spec_bench.category_of if spec_bench else None
    # The verifier, as dsharp eval's: the one given, else the rewards that score.
    chosen = verifier if verifier is not None else list(specs)
    settings = _sample_settings(steps, guidance, eta, height, width, method, options, chosen)
    if not _check_verifier_used(settings, verifier):
        settings.reward = None  # plain DDIM: no verifier, none recorded
    check_prompts(specs, prompt_list, "prompts")  # before any image is drawn
    _require_model(model)
    result = evaluate(
        model,
        prompt_list,
        specs,
        num_seeds=seeds,
        settings=settings,
        batch_size=batch_size,
        category_of=category_of,
        groupings=spec_bench.groupings if spec_bench else None,
        progress=progress,
    )
    names = [s.name for s in specs]
    return {"bench": spec_bench.name if spec_bench else None, "rewards": names, **result}


# --------------------------------------------------------------------------- helpers


def _require_counts(**counts: int | None) -> None:
    """``ValueError`` naming the first count (None: not given) below 1."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name}: expected an integer, got {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"{name}: must be at least 1, got {value}")


def _seed(given: int) -> int:
    """``given`` as a Python int if it is an integer from 0 to 2**32 - 1, as ``dsharp sample
    --seed``. An integer of numpy's (a seed from ``np.arange``) is one: it drew as its value."""
    from dsharp.config import SEED_MAX

    try:  # 1.5 drew from seed 1; a bool is an int, but no seed
        seed = None if isinstance(given, bool) else operator.index(given)
    except TypeError:
        seed = None
    if seed is None:
        raise TypeError(f"seed: expected an integer, got {given!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed: must be from 0 to 2**32 - 1, got {seed}")
    return seed


def _require_seeds_in_range(seeds: Sequence[int]) -> None:
    """A ``ValueError`` where the last image's seed (``seed + i``) runs past 2**32 - 1, as
    ``dsharp sample`` refuses it (torch's generator failed with an overflow message)."""
    from dsharp.config import SEED_MAX

    if seeds and seeds[-1] > SEED_MAX:
        images = len(seeds)
        raise ValueError(
            f"seed {seeds[0]}: {images} images use seeds up to {seeds[-1]} (image i: seed + i), "
            f"past 2**32 - 1; give seed {SEED_MAX - images + 1} or less"
        )


def _require_model(model: object) -> None:
    """A ``TypeError`` for what :func:`load_model` does not return (a model name, a folder),
    rather than an ``AttributeError`` from inside the sampler."""
    from dsharp.models.base import DiffusionModel

    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model: expected a model from dsharp.load_model, got {_given(model)}")


def _given(value: object) -> str:
    """What was passed, in one short line: a name or path as itself, else its type (the
    repr of a diffusers pipeline runs to pages)."""
    if isinstance(value, str | os.PathLike):
        return repr(os.fspath(value))
    kind = type(value).__name__
    return f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}"


def _check_verifier_used(settings: SampleSettings, verifier: object) -> bool:
    """Validate ``settings``; whether its method asks a verifier. A ``verifier`` given to a
    sampler that asks none (the default one) is a ``ValueError`` rather than silently
    unused."""
    entry, _ = settings.validate("pass verifier=NAME", "verifier" if verifier else None)
    return bool(entry.needs_reward)


def _prompt_list(prompts: str | Sequence[str] | os.PathLike[str]) -> list[str]:
    """One prompt (a str), a list of prompts, or a prompt file (a path object)."""
    if isinstance(prompts, os.PathLike):
        from dsharp.data import read_prompt_file

        return read_prompt_file(Path(prompts))
    found = [prompts] if isinstance(prompts, str) else list(prompts)
    if not found:
        raise ValueError("prompts: empty")
    odd = [p for p in found if not isinstance(p, str)]
    if odd:
        raise TypeError(f"prompts: expected strings, got {odd[0]!r}")
    return found


def _reward_specs(
    rewards: RewardArg | Iterable[RewardArg], what: str = "rewards"
) -> list[RewardSpec]:
    """One reward (not its letters, keys or fields) or a list of them as validated specs;
    anything else is a one-line ``TypeError`` naming ``what`` and what is taken."""
    from dsharp.config import RewardSpec

    if isinstance(rewards, str | Mapping | RewardSpec):  # a spec iterates as its fields
        rewards = [rewards]
    elif not isinstance(rewards, Iterable):  # a number: "'int' object is not iterable"
        raise TypeError(
            f"{what}: expected {_REWARD_KINDS}, or a list of them, got {_given(rewards)}"
        )
    specs = [_reward_spec(r, what) for r in rewards]
    if not specs:
        raise ValueError(f"{what}: empty")
    return specs


def _reward_spec(reward: RewardArg, what: str) -> RewardSpec:
    """A reward name, spec dict or spec as a validated spec (one-line errors)."""
    from dsharp.config import RewardSpec, parse_reward_spec

    if isinstance(reward, RewardSpec):
        return reward
    if not isinstance(reward, str | Mapping):
        raise TypeError(f"{what}: expected {_REWARD_KINDS} in the list, got {_given(reward)}")
    data = {"name": reward} if isinstance(reward, str) else reward
    return parse_reward_spec(data, what)


def _sample_settings(
    steps: int,
    guidance: float,
    eta: float,
    height: int | None,
    width: int | None,
    method: str,
    options: Mapping[str, Any] | None,
    verifier: RewardArg | Sequence[RewardArg] | None,
) -> SampleSettings:
    """The ``sample`` section these keywords give, validated as a recipe's would be."""
    from dsharp.generate import SampleSettings, parse_sample_overrides

    fields = {"method": method, "steps": steps, "guidance": guidance, "eta": eta}
    fields |= {"height": height, "width": width, "options": dict(options or {})}
    specs = _reward_specs(verifier, "verifier") if verifier is not None else None
    return SampleSettings(**parse_sample_overrides(fields), reward=specs)
