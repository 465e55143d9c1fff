"""Everything about a recipe that can be checked without model weights, checked before any
load: so that ``dsharp recipes validate`` says what ``dsharp train`` would refuse, and
``train`` refuses it in seconds rather than after the model has loaded.

Value checks that need the model (a timestep range against its schedule, `infer_steps`
against its timesteps) stay where the model is; each method's own option values are checked here
without one (``TrainingMethod.check_settings``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from dsharp.hub import unknown_home, user_path
from dsharp.recipe_errors import RecipeError


def first_existing_non_folder(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) when it is not a folder:
    writing under it would fail only when the results are saved."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def name_too_long(path: Path) -> str | None:
    """The first part of ``path`` not there yet whose name is longer than its file system
    takes (``NAME_MAX``, 255 bytes on most), as a message; None when every part fits. Said
    before the work: the write would fail only when the results are saved."""
    path = Path(path)
    parts = [path, *path.parents]
    anchor = next((p for p in parts if os.path.exists(p)), None)  # ENAMETOOLONG: False
    limit = 255
    with contextlib.suppress(OSError, ValueError, AttributeError):
        said = os.pathconf(anchor if anchor is not None else ".", "PC_NAME_MAX")
        limit = said if said > 0 else limit  # -1: no limit; 0: a FUSE mount that set none
    for part in reversed(parts[: parts.index(anchor)] if anchor is not None else parts):
        size = len(os.fsencode(part.name))
        if size > limit:
            return f"its name {part.name[:24]}... is {size} bytes, more than the {limit} allowed"
    return None


def check_output_folder(path: Path, name: str = "") -> None:
    """``ValueError`` (naming the flag ``name``, if given) when ``path`` cannot become a
    folder: it, or a folder it would be made in, is a file, or nothing can be written where
    it would be made (no permission, a read-only or virtual file system). The second is
    tried for real, with an empty folder made and removed at once: permission bits alone
    do not say (root, /proc)."""
    label = f"{name} " if name else ""
    if (too_long := name_too_long(Path(path))) is not None:
        raise ValueError(f"{label}{path}: {too_long}")
    blocker = first_existing_non_folder(Path(path))
    if blocker is not None:
        where = "is a file" if blocker == Path(path) else f"would be made inside {blocker}, a file"
        raise ValueError(f"{label}{path}: {where}, not a folder")
    anchor = next((p for p in [Path(path), *Path(path).parents] if p.exists()), Path.cwd())
    times = anchor.stat()
    try:
        probe = tempfile.mkdtemp(prefix=".dsharp-write-check-", dir=anchor)
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ValueError(f"{label}{path}: cannot be written in {anchor} ({why})") from None
    os.rmdir(probe)
    # a check changes nothing: `dsharp runs` orders run folders by their modification time.
    # Only a folder's owner may set its times (not /tmp's other users): then it stays touched.
    with contextlib.suppress(OSError):
        os.utime(anchor, ns=(times.st_atime_ns, times.st_mtime_ns))


def check_before_loading(
    recipe: Any,
    *,
    source: str | None = None,
    training: bool = True,
    evaluation: bool = True,
    fetch_scheduler: bool = False,
) -> None:
    """Raise :class:`RecipeError` (naming ``source`` and the field) for the first problem:
    a prompt the rewards cannot score, a method field or option the method does not take (or,
    when ``training``, a setting the model's scheduler config leaves nothing to train with), a
    reward option its reward does not take, an output folder that cannot be made.
    ``fetch_scheduler``: a hub model's scheduler config not in the cache is fetched alone for
    that (``train``, which downloads the model next; ``validate`` downloads nothing)."""
    from dsharp.methods.factory import check_method_section
    from dsharp.prompt_checks import check_recipe_prompts
    from dsharp.rewards.plugins import check_reward_options

    # the model first: a local check, where reading the prompts may fetch a dataset
    _run_checks([("model.pretrained", lambda: _check_model_name(recipe.model.pretrained))], source)
    check_recipe_prompts(recipe, source=source, training=training, evaluation=evaluation)
    checks: list[tuple[str, Any]] = [("method", lambda: check_method_section(recipe.method))]
    if training:  # the schedule, once the method's own values pass
        checks.append(("method", lambda: _check_method_schedule(recipe, fetch_scheduler)))
    checks.append(("sample.options", lambda: _check_sample_options(recipe.sample)))
    for i, spec in enumerate(recipe.rewards):
        checks.append((f"rewards.{i}.options", lambda spec=spec: check_reward_options(spec)))
    for i, spec in enumerate(recipe.eval.rewards or []):
        checks.append((f"eval.rewards.{i}.options", lambda spec=spec: check_reward_options(spec)))
    if evaluation and recipe.eval.bench and recipe.eval.rewards is None:
        checks.append(("eval.bench", lambda: _check_bench_reward(recipe.eval.bench)))
    factor = image_size_factor(recipe.model)
    if factor > 1:
        for section in ("train", "sample"):
            for side in ("height", "width"):
                field = f"{section}.{side}"
                value = getattr(getattr(recipe, section), side)
                checks.append((field, lambda v=value: _check_side(v, factor, recipe.model)))
    if training:
        checks.append(("model.weight_dtype", lambda: check_training_precision(recipe)))
        out = Path(recipe.output_dir)
        checks.append(("output_dir", lambda: check_output_folder(out)))
    _run_checks(checks, source)


def _run_checks(checks: list[tuple[str, Any]], source: str | None) -> None:
    """Each ``(field, check)`` in order; the first refusal as a ``RecipeError`` naming it."""
    from dsharp.rewards.base import RewardError

    for field, check in checks:
        try:
            check()
        except (ValueError, NotImplementedError, RewardError) as err:
            where, reason = _located(str(err), field)
            raise RecipeError(reason, source=source, field=where) from None


def _check_bench_reward(bench: str) -> None:
    """The bench's reward as the evaluation after training builds it (no options): one that
    needs options (``mllm``: its model) must say so before training, not after it."""
    from dsharp.bench.reward_benches import REWARD_BENCHES
    from dsharp.config import RewardSpec
    from dsharp.rewards.base import RewardError
    from dsharp.rewards.plugins import check_reward_options

    try:
        check_reward_options(RewardSpec(name=REWARD_BENCHES[bench].reward))
    except (ValueError, RewardError) as err:
        raise RewardError(f"{err} (give the reward with its options in eval.rewards)") from None


def check_training_precision(recipe: Any) -> None:
    """``ValueError`` for a LoRA over an fp16 UNet trained without fp16 mixed precision.

    The LoRA's weights are fp32, but its gradients reach them through the frozen fp16 UNet's
    activations; without the gradient scaler that only ``train.mixed_precision: fp16`` gives,
    small gradients underflow to zero in fp16 (diffusers' examples pair fp16 weights with
    fp16 mixed precision for this reason). Without a GPU, bf16 autocast over fp16 weights
    also fails outright (``mixed dtype`` in layer norm)."""
    model, train = recipe.model, recipe.train
    if model.weight_dtype == "fp16" and model.lora_rank > 0 and train.mixed_precision != "fp16":
        raise ValueError(
            "fp16 with LoRA needs train.mixed_precision: fp16 (CUDA), whose gradient scaler "
            "keeps the LoRA's gradients through the fp16 UNet from underflowing (it is "
            f"{train.mixed_precision}); or set model.weight_dtype: bf16"
        )


def recipe_notes(recipe: Any) -> list[str]:
    """Notes on a valid recipe that may not do what it seems to (a DDPO-IS recipe whose
    ratios are always 1): ``validate`` and ``train`` print them and go on."""
    from dsharp.methods.factory import method_notes, method_uses_schedule
    from dsharp.scheduler_files import scheduler_without_weights

    uses = method_uses_schedule(recipe.method)
    scheduler = scheduler_without_weights(recipe.model) if uses else None
    return method_notes(recipe.method, recipe.train.grad_accum, scheduler)


def _check_method_schedule(recipe: Any, fetch: bool = False) -> None:
    """The method's settings against the model's DDIM schedule, read from its config where
    that is on disk (no weights; no download unless ``fetch``: then a hub model's config
    alone); skipped otherwise, the method then refuses once the model has loaded."""
    from dsharp.methods.factory import check_method_schedule, method_uses_schedule
    from dsharp.scheduler_files import scheduler_without_weights

    if not method_uses_schedule(recipe.method):
        return
    scheduler = scheduler_without_weights(recipe.model, fetch=fetch)
    if scheduler is not None:
        check_method_schedule(recipe.method, scheduler)


def check_inputs(recipe: Any, source: str | None = None) -> None:
    """``RecipeError`` (exit 2, naming ``source``) for a file a method reads that is not
    here. ``train`` refuses it before loading; ``dsharp recipes validate`` only notes it,
    since a valid recipe may name a file the user is still to make, as the shipped paper
    recipes do."""
    pairs_file = (recipe.method.options or {}).get("pairs_file")
    if recipe.method.name == "diffusion_dpo" and pairs_file is not None:
        path = user_path(str(pairs_file))
        if not path.is_file():
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            head = unknown_home(path)  # a ~user that names no user
            if head is not None:
                where = f" (no home folder for {head})"
            raise RecipeError(
                f"file not found: {pairs_file}{where}",
                source=source,
                field="method.options.pairs_file",
            )
    if _reads_dataset(recipe.method):
        _check_dataset_columns(recipe.data, source)
        _check_dataset_rows(recipe.data, source)


def _reads_dataset(method: Any) -> bool:
    """Whether training reads ``data.dataset``: the methods that train on image-text data
    (finetune, sft_sharpening, offline diffusion_dpo). The others sample from prompts and
    never open it, so that its rows must not refuse their run."""
    from dsharp.methods.registry import method_specs

    spec = method_specs().get(method.name)
    if spec is None or spec.data == "dataset":
        return True
    if spec.data == "prompts":
        return False
    if method.name == "diffusion_dpo":  # "any": its options decide
        return (method.options or {}).get("pairs", "offline") != "online"
    return True


def _check_dataset_rows(data: Any, source: str | None) -> None:
    """``RecipeError`` for a local dataset's first bad row (a missing or empty image, a
    caption that is not text), found by indexing it now, before the model loads: a stat per
    row, no image read (a damaged image is named when it is drawn)."""
    from dsharp.data import check_local_data

    if not data.dataset:
        return
    try:
        check_local_data(data.dataset, data.dataset_type, data.image_column, data.caption_column)
    except (OSError, ValueError) as exc:
        raise RecipeError(str(exc), source=source, field="data.dataset") from None


def _check_dataset_columns(data: Any, source: str | None) -> None:
    """``RecipeError`` when the first row of a local ``.jsonl`` dataset (or of an image
    folder's ``metadata.jsonl``) lacks the image or caption column the recipe names: read
    now, since the data opens only after the model has loaded. The rows are checked in
    full when the data opens."""
    from dsharp.recipe_data import dataset_kind, folder_image_column

    if not data.dataset:
        return
    kind = dataset_kind(data.dataset, data.dataset_type)
    path = user_path(data.dataset)
    image_column = data.image_column
    if kind == "folder":
        path, image_column = path / "metadata.jsonl", folder_image_column(image_column)
    if kind not in ("folder", "jsonl") or not path.is_file():
        return
    try:
        with path.open(encoding="utf-8") as lines:
            lineno, row = next(((n, line) for n, line in enumerate(lines, 1) if line.strip()))
        row = json.loads(row)
    except (OSError, UnicodeDecodeError, ValueError, StopIteration):
        return  # an unreadable file or row: the data's own error names it when it opens
    if not isinstance(row, dict):
        return
    for field, column in (("image_column", image_column), ("caption_column", data.caption_column)):
        if column not in row:
            has = ", ".join(repr(str(k)) for k in row)
            raise RecipeError(
                f"{path}:{lineno} has no column {column!r} (it has {has})",
                source=source,
                field=f"data.{field}",
            )


def check_run_folder(recipe: Any, source: str | None = None) -> None:
    """``RecipeError`` (exit 2, naming ``source``) when the run folder refuses the recipe:
    it holds another run's checkpoints, or ``train.resume`` names no checkpoint or one whose
    run the recipe would not continue. ``train`` asks before the model loads."""
    from dsharp.folder_lock import locked_by_another_process
    from dsharp.resume import planned_resume

    out = Path(recipe.output_dir)
    if out.is_dir() and locked_by_another_process(out):
        return  # a run is writing it: the lock's own refusal says so when train takes it
    try:
        planned_resume(recipe)
    except (OSError, ValueError) as err:
        if isinstance(err, OSError) and err.filename is not None:  # the folder cannot be read
            reason = f"{err.filename}: {err.strerror or err}"
            raise RecipeError(reason, source=source, field="output_dir") from None
        # a message that starts with a field (``method.n: 3 differs from 2 ...``, or
        # ``train.resume: not a checkpoint folder``) is reported at that field; others at the
        # setting that led to the folder's refusal
        match = re.match(r"^([A-Za-z_][\w.]*): (.+)$", str(err))
        if match:
            field, reason = match.groups()
        else:
            field = "train.resume" if recipe.train.resume else "output_dir"
            reason = str(err)
        raise RecipeError(reason, source=source, field=field) from None


def check_runtime(recipe: Any) -> None:
    """Fail before any model loads on settings this machine cannot run, or on a missing
    input file (:func:`check_inputs`); a valid recipe may need another machine, so
    ``dsharp recipes validate`` only notes these."""
    import torch

    check_inputs(recipe)
    try:  # `dsharp train` checked it before loading; dsharp.engine.train(recipe) had not
        check_training_precision(recipe)
    except ValueError as err:
        raise ValueError(f"model.weight_dtype: {err}") from None
    train = recipe.train
    _check_process_seeds(train.seed)
    if train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("train.mixed_precision: fp16 needs a CUDA GPU; use bf16 or no on CPU")
    if (
        train.mixed_precision == "bf16"
        and recipe.model.weight_dtype == "fp16"
        and not torch.cuda.is_available()
    ):
        # CPU autocast leaves layer norm to its inputs' dtypes: a bf16 activation meets the
        # fp16 text encoder's weights and torch raises "mixed dtype (CPU)" at the first step
        raise ValueError(
            "train.mixed_precision: bf16 autocast over model.weight_dtype fp16 fails on CPU; "
            "set model.weight_dtype: bf16 (or fp32)"
        )
    if train.optimizer == "adamw8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ValueError(
                "train.optimizer: adamw8bit needs bitsandbytes (pip install bitsandbytes)"
            ) from None
    missing = missing_trackers(train.trackers)
    if missing:
        name = missing[0]
        raise ValueError(
            f"train.trackers: {name} needs its package, which is not installed "
            f"(pip install {name}); accelerate would log nothing to it"
        )


def _check_process_seeds(seed: int) -> None:
    """Refuse a ``train.seed`` that a launch's later processes cannot seed with: accelerate
    seeds process ``i`` with ``seed + i`` (random, numpy, torch), and numpy refuses any seed
    past 2**32 - 1, which would fail those processes only, after the launch."""
    from dsharp.launch import launch_size

    processes = launch_size()
    from dsharp.config import SEED_MAX

    if seed + processes - 1 > SEED_MAX:
        raise ValueError(
            f"train.seed: {seed} with {processes} processes: process i seeds with train.seed "
            f"+ i, up to 2**32 - 1 (numpy's limit); give train.seed "
            f"{SEED_MAX - processes + 1} or less"
        )


def missing_trackers(trackers: list[str]) -> list[str]:
    """The trackers of ``trackers`` that accelerate would leave out here (their package is not
    installed): it drops them with a warning and the run logs nothing to them."""
    if not trackers:
        return []
    from accelerate import tracking

    available = {str(t) for t in tracking.get_available_trackers()}
    return [name for name in trackers if name not in available]


def _check_model_name(pretrained: str) -> None:
    """A near-miss of a built-in model name (``dsharp-mni``) would go to the hub and fail
    there, after retries; a missing path or a folder that holds no model would fail only
    after the plan line, with the loader's exit status 1: say so now."""
    from dsharp.model_names import missing_model, not_a_model_folder

    # the label (model.pretrained) says it is the model: the message does not say it again
    problem = missing_model(pretrained, subject="") or not_a_model_folder(pretrained)
    if problem is not None:
        raise ValueError(problem)


def image_size_factor(model: Any) -> int:
    """What every image side must be a multiple of for the recipe's model (its VAE's
    downsampling: 8 for SD and SDXL, 1 in pixel space), read from its config files where
    they are on disk without a download (a local folder, the hub cache); 1 when they are
    not, and the model itself checks once it has loaded."""
    from dsharp.model_names import is_builtin
    from dsharp.scheduler_files import config_file_without_download as config_file

    if is_builtin(model.pretrained):
        return 1  # pixel space
    index, vae = config_file(model, "model_index.json"), config_file(model, "vae/config.json")
    try:
        entry = json.loads(index.read_text(encoding="utf-8")).get("vae") if index else None
        if not entry or entry[0] is None or vae is None:
            return 1
        return 2 ** (len(json.loads(vae.read_text(encoding="utf-8"))["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 1  # an unreadable config is the loader's to report, with its own message


def check_image_sides(model: Any, sides: dict[str, int | None]) -> None:
    """Refuse, naming its input (``{"--height": 60}``; None: not given), an image side the
    model (a ``model`` recipe section) cannot draw, from its config files alone: so that
    ``dsharp sample`` and ``eval`` say it before the weights load, not after."""
    factor = image_size_factor(model)
    for label, value in sides.items():
        if value is not None and value % factor:
            raise ValueError(
                f"{label} {value}: must be a multiple of {factor} for {model.pretrained} "
                "(its VAE's downsampling)"
            )


def _check_side(value: int | None, factor: int, model: Any) -> None:
    if value is not None and value % factor:
        raise ValueError(f"{value} must be a multiple of {factor} for {model.pretrained}")


def _check_sample_options(sample: Any) -> None:
    """The sampler's options, as ``dsharp sample`` / ``eval`` parse them (previews and the
    post-training evaluation draw with them)."""
    from dsharp.inference import get_sample_method

    get_sample_method(sample.method).parse_options(sample.options)


def _located(message: str, field: str) -> tuple[str, str]:
    """(field, reason): a message that starts with a more precise location inside ``field``
    (``method.options.foo: unknown option``) is reported at that location."""
    match = re.match(r"^([A-Za-z_][\w.]*): (.+)$", message)
    if match and match.group(1).split(".")[0] == field.split(".")[0]:
        return match.group(1), match.group(2)
    return field, message
