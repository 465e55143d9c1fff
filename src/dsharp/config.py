"""Recipe schema: the pydantic models a recipe validates into (:class:`Recipe` and its
sections). Loading and saving live in :mod:`dsharp.recipe_io`, the dataset rules the ``data``
section checks in :mod:`dsharp.recipe_data`, one-line errors in :mod:`dsharp.recipe_errors`,
``dsharp recipes list`` in :mod:`dsharp.recipe_listing`.

A recipe is a YAML file whose sections map onto the models below. Every model forbids
unknown keys, so a misspelled key fails at load time with a message naming the file, the
dotted field and the reason::

    recipes/x.yaml: method.nn: unknown key, did you mean 'n'?

Scalars are strict (YAML already gives numbers and booleans their types), so ``max_steps:
"abc"`` or ``lr: yes`` are errors rather than silent coercions. This module imports no torch:
reward names are checked against the plugin registry only after the rest of the recipe is
valid, so structural mistakes are reported fast.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dsharp.hub import known_home, unknown_home, user_path
from dsharp.recipe_data import (
    DEFAULT_IMAGE_COLUMN,
    DEFAULT_SPLIT,
    SHAPES_SPLITS,
    check_balance,
    without_splits,
)
from dsharp.recipe_errors import FieldProblem, _first_error, unknown_name_message
from dsharp.recipe_errors import RecipeError as RecipeError  # re-exported: tests import it here
from dsharp.recipe_yaml import parse_yaml as parse_yaml  # re-exported: part of the public API

#: The largest seed (numpy's limit): ``train.seed``, and every image seed ``dsharp sample``
#: and ``dsharp.sample`` draw with (``seed + i``).
SEED_MAX = 2**32 - 1

# Validation context flags: skip the reward-name lookup (load_recipe checks names
# afterwards); skip checks that files exist (reloading a finished run's saved recipe).
_DEFER_REWARD_NAMES = "dsharp_defer_reward_names"
_SKIP_FILE_CHECKS = "dsharp_skip_file_checks"


def _looks_local(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or value.endswith(".jsonl")


def _check_files(info: ValidationInfo) -> bool:
    return not (info.context and info.context.get(_SKIP_FILE_CHECKS))


def _relative_hint(path: Path) -> str:
    """Recipes name files relative to where dsharp runs (the shipped ones: the checkout's
    root), which a user running a recipe from another folder may not expect. A ``~user``
    left as written (:func:`~dsharp.hub.user_path`) names no user: that is what to say."""
    if path.is_absolute():
        return ""
    head = unknown_home(path)
    if head is not None:
        return f" (no home folder for {head})"
    return f" (relative paths are read from the current folder, {Path.cwd()})"


def _check_prompts_file(path: Path | None, info: ValidationInfo) -> Path | None:
    if path is None or not _check_files(info):
        return path
    path = user_path(path)
    if not path.exists():
        raise ValueError(f"file not found: {path}{_relative_hint(path)}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    if not read_prompts_file(path):
        raise ValueError(f"no prompts in {path} (blank lines and # comments are skipped)")
    return path


def _check_prompt_list(prompts: list[str] | None) -> list[str] | None:
    if prompts is None:
        return None
    if not prompts:
        raise ValueError("empty list: give at least one prompt or leave the key out")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            raise FieldProblem((i,), "empty prompt")
    return prompts


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a text file: one per line, stripped; blank lines and ``#`` lines skipped."""
    try:
        text = user_path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: a folder, not a prompt file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason})") from e
    except OSError as e:  # unreadable: permissions, a device error
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    lines = (line.strip() for line in text.splitlines())  # splitlines handles CRLF and CR
    return [line for line in lines if line and not line.startswith("#")]


# --------------------------------------------------------------------------- schema


class _Section(BaseModel):
    # allow_inf_nan=False: an infinite lr, beta or guidance passes every range check and
    # trains or samples garbage ("lr": null, all-black images).
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )


class ModelConfig(_Section):
    """Which diffusion model to fine-tune and how its weights are held."""

    pretrained: str = Field(
        description="Local diffusers folder, Hugging Face hub id, or 'dsharp-mini' "
        "(the built-in tiny model)."
    )
    family: Literal["auto", "sd", "sdxl", "mini"] = Field(
        "auto", description="Model family; 'auto' infers it from the pipeline config."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    variant: str | None = Field(None, description="Weight variant to load, e.g. 'fp16'.")
    lora_rank: int = Field(0, ge=0, description="LoRA rank; 0 = full fine-tuning.")
    lora_alpha: float | None = Field(
        None, gt=0, description="LoRA alpha; None = equal to lora_rank."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
    weight_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32",
        description="dtype of the frozen parts: text encoders, the VAE (SDXL's stays fp32 where "
        "its config sets force_upcast), and with LoRA the base UNet (the LoRA itself trains in "
        "fp32; fp16 needs train.mixed_precision fp16, whose gradient scaler keeps its "
        "gradients from underflowing); a fully fine-tuned UNet and its reference copy stay "
        "fp32.",
    )

    @field_validator("pretrained")
    @classmethod
    def _pretrained_exists(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("empty model name")
        from dsharp.model_names import looks_like_model_path  # the loader's rule

        local = looks_like_model_path(value)
        if _check_files(info) and local and not user_path(value).exists():
            raise ValueError(f"path not found: {value}")
        return value

    @model_validator(mode="after")
    def _alpha_needs_rank(self) -> ModelConfig:
        if self.lora_alpha is not None and self.lora_rank == 0:
            raise FieldProblem(("lora_alpha",), "only used with lora_rank > 0")
        return self


class MethodConfig(_Section):
    """The training method and its hyperparameters (defaults: the paper's code)."""

    name: str = Field("rlhf_sharpening", description="Method name; see `dsharp.methods.registry`.")
    n: int = Field(3, ge=1, description="Noisy latents (trajectories) per prompt.")
    m: int = Field(3, ge=1, description="Denoising steps per trajectory; 1 = plain fine-tuning.")
    stride: int | None = Field(
        None, ge=1, description="Timesteps between trajectory steps; None = T // infer_steps."
    )
    infer_steps: int = Field(25, ge=1, description="DDIM steps when generating samples.")
    beta: float = Field(2500.0, gt=0, description="DPO temperature of the RLHF loss.")
    target: Literal["consistent", "original"] = Field(
        "consistent",
        description="Regression target at later trajectory steps: the noise implied by the "
        "current state ('consistent') or the public code's original noise ('original').",
    )
    guidance: float = Field(
        5.0,
        ge=0,
        description="Classifier-free guidance scale of the samples a method draws (RLHF online "
        "samples, DDPO/D3PO rounds); trajectory steps use the conditional prediction.",
    )
    eta: float = Field(
        0.0,
        ge=0,
        le=1,
        description="DDIM eta of the samples a method draws, in [0, 1] (0 = deterministic, "
        "1 = DDPM's variance); trajectory steps are deterministic.",
    )
    timestep_min: int = Field(0, ge=0, description="Smallest training timestep drawn.")
    timestep_max: int | None = Field(
        None,
        ge=1,
        description="End of the training timesteps drawn, excluded (they are drawn from "
        "[timestep_min, timestep_max)); None = up to the last one, included.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Method-specific extras for other methods."
    )

    @field_validator("name")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from dsharp.methods.registry import method_names

        known = method_names()
        if value not in known:
            raise ValueError(unknown_name_message("method", value, known))
        return value

    @model_validator(mode="after")
    def _timestep_range(self) -> MethodConfig:
        if self.timestep_max is not None and self.timestep_max <= self.timestep_min:
            # timesteps are drawn from [min, max): an equal pair draws none, which the method
            # refused only once the model had loaded
            raise FieldProblem(
                ("timestep_max",),
                f"must be > timestep_min ({self.timestep_min}; timesteps are drawn from "
                f"[timestep_min, timestep_max)), got {self.timestep_max}",
            )
        return self


class RewardSpec(_Section):
    """One reward in the objective: which plugin reward, its weight and its options."""

    name: str = Field(description="Registered reward name (`dsharp rewards list`).")
    weight: float = Field(1.0, description="Multiplier of this reward in the total.")
    normalize: Literal["none", "batch_zscore"] = Field(
        "none",
        description="'batch_zscore': (score - batch mean) / batch std before weighting, over "
        "the samples scored together: one process's micro-batch (adding processes does not "
        "change it; train.batch_size and grad_accum do).",
    )
    on_error: Literal["raise", "missing"] = Field(
        "raise",
        description="'missing': a sample the reward cannot score becomes NaN (skipped) "
        "instead of stopping the run.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the reward's factory."
    )

    @field_validator("name")
    @classmethod
    def _known_reward(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("empty reward name")
        if info.context and info.context.get(_DEFER_REWARD_NAMES):
            return value
        check_reward_name(value)
        return value

    @field_validator("weight")
    @classmethod
    def _finite_weight(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    @field_validator("options")
    @classmethod
    def _no_on_error_option(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "on_error" in value:
            raise FieldProblem(("on_error",), "set on_error on the reward, not in its options")
        return value


def check_reward_name(name: str) -> None:
    """Raise ``ValueError`` naming close matches if no installed plugin provides ``name``."""
    from dsharp.rewards.plugins import reward_registry, unknown_reward_message

    known = reward_registry()
    if name not in known:
        raise ValueError(unknown_reward_message(name, known))


class _PromptSource(_Section):
    """Prompts given inline and/or as a file (shared by ``data`` and ``eval``)."""

    prompts: list[str] | None = Field(None, description="Inline prompts.")
    prompts_file: Path | None = Field(
        None,
        strict=False,
        description="Text file, one prompt per line; blank lines and # comments skipped.",
    )

    @field_validator("prompts")
    @classmethod
    def _nonempty_prompts(cls, value: list[str] | None) -> list[str] | None:
        return _check_prompt_list(value)

    @field_validator("prompts_file")
    @classmethod
    def _readable_prompts_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _check_prompts_file(value, info)

    def load_prompts(self) -> list[str]:
        """Inline prompts followed by those of ``prompts_file``."""
        prompts = list(self.prompts or [])
        if self.prompts_file is not None:
            prompts += read_prompts_file(self.prompts_file)
        return prompts


class DataConfig(_PromptSource):
    """Training inputs: prompts (RLHF) or image-text data (SFT)."""

    dataset: str | None = Field(
        None, description="Image-text folder, .jsonl file, or Hugging Face datasets name."
    )
    dataset_type: Literal["auto", "folder", "jsonl", "hf"] = Field(
        "auto", description="How to read `dataset`; 'auto' guesses from the path."
    )
    image_column: str = Field(
        DEFAULT_IMAGE_COLUMN,
        description="Image column (jsonl / hf / a folder's metadata.jsonl or .csv, where the "
        "default reads 'file_name', as Hugging Face's imagefolder names it).",
    )
    caption_column: str = Field(
        "text", description="Caption column (jsonl / hf / a folder's metadata.jsonl or .csv)."
    )
    split: str = Field(
        DEFAULT_SPLIT,
        description="Dataset split (hf; an image folder or .jsonl file has none, and is "
        "refused another value). With data.generator shapes: 'train' (the train "
        "prompts) or 'grammar' (the whole grammar, held-out colour-shape pairs included, "
        "never a val prompt).",
    )
    generator: Literal["none", "shapes"] = Field(
        "none", description="Procedural image-text data; 'shapes' is for dsharp-mini."
    )
    empty_prompt_prob: float = Field(
        0.0, ge=0, le=1, description="Probability of training on the empty prompt."
    )
    caption_noise: float = Field(
        0.0,
        ge=0,
        le=1,
        description="data.generator shapes: probability that a caption is perturbed "
        "(under-described or wrong; see dsharp.shapes.data).",
    )
    balance: str | dict[str, float] = Field(
        "prompt",
        description="data.generator shapes: 'prompt' draws every prompt of the split equally "
        "often; 'category' draws a category first, all five equally often (as in the shapes "
        "bench and T2I-CompBench), then one of its prompts; a mapping of category -> weight "
        "draws the categories in proportion to their weights (a category not listed is not "
        "drawn).",
    )

    @field_validator("balance", mode="before")
    @classmethod
    def _known_balance(cls, value: Any) -> str | dict[str, float]:
        return check_balance(value)

    @field_validator("dataset")
    @classmethod
    def _local_dataset_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("empty dataset name")
            local = _looks_local(value)
            if _check_files(info) and local and not user_path(value).exists():
                raise ValueError(f"not found: {value}")
        return value

    @model_validator(mode="after")
    def _dataset_consistent(self, info: ValidationInfo) -> DataConfig:
        if self.dataset is not None and self.generator != "none":
            raise FieldProblem(("generator",), "set either data.dataset or data.generator")
        if self.caption_noise and self.generator != "shapes":
            raise FieldProblem(("caption_noise",), "only used with data.generator: shapes")
        if self.balance != "prompt" and (
            self.generator != "shapes" or self.prompts or self.prompts_file
        ):
            raise FieldProblem(
                ("balance",), "only used with data.generator: shapes and no data.prompts(_file)"
            )
        if self.generator == "shapes" and self.split not in SHAPES_SPLITS:
            raise FieldProblem(
                ("split",),
                f"with data.generator shapes, expected one of {', '.join(SHAPES_SPLITS)} "
                f"(got {self.split!r})",
            )
        if self.split != DEFAULT_SPLIT and self.dataset is not None and _check_files(info):
            # it would pick nothing: only a Hugging Face dataset (or the shapes generator)
            # has splits. (Prompt lists keep a recipe's split unused, as the shipped
            # quickstart's with data.generator=none.)
            unused = without_splits(self.dataset, self.dataset_type)
            if unused is not None:
                raise FieldProblem(
                    ("split",),
                    f"only used with a Hugging Face dataset or data.generator: shapes; {unused}",
                )
        if self.dataset_type != "auto":
            if self.dataset is None:
                raise FieldProblem(("dataset_type",), "set without data.dataset")
            if not _check_files(info):
                return self
            path = user_path(self.dataset)
            hint = _relative_hint(path)
            if self.dataset_type == "folder" and not path.is_dir():
                raise FieldProblem(("dataset",), f"folder not found: {path}{hint}")
            if self.dataset_type == "jsonl" and not path.is_file():
                raise FieldProblem(("dataset",), f"file not found: {path}{hint}")
        return self


class TrainConfig(_Section):
    """Optimisation, precision, checkpointing and logging."""

    max_steps: int = Field(1000, ge=1, description="Optimizer steps to run.")
    batch_size: int = Field(1, ge=1, description="Prompts per process per step.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    lr: float = Field(1e-6, gt=0, description="Peak learning rate.")
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = Field("adamw", description="Optimizer.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    adam_eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Gradient clipping norm; None = no clipping."
    )
    lr_scheduler: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="Learning-rate schedule after warmup."
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Linear warmup steps: step k <= W trains at lr x (k-1)/W, so the first "
        "step's rate is 0 and changes no weight (diffusers' convention).",
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no",
        description="Autocast precision of training steps (accelerate; fp16 adds a gradient "
        "scaler); rewards score without it, and a VAE held in fp32 still decodes in fp32 "
        "under fp16.",
    )
    seed: int = Field(
        0,
        ge=0,
        le=SEED_MAX,
        description="Random seed (0 to 2**32 - 1, numpy's range; process i of a launch "
        "seeds with seed + i, so at most 2**32 - N with N processes).",
    )
    height: int | None = Field(None, ge=1, description="Image height; None = model default.")
    width: int | None = Field(None, ge=1, description="Image width; None = model default.")
    checkpoint_every: int = Field(
        500,
        ge=0,
        description="Steps between checkpoints; 0 = only the final checkpoint (the last step "
        "is always saved).",
    )
    keep_checkpoints: int | None = Field(
        None, ge=1, description="Keep only the newest N checkpoints; None = keep all."
    )
    log_every: int = Field(1, ge=1, description="Steps between log lines.")
    resume: str | None = Field(None, description="'latest' or a checkpoint folder to resume from.")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="Experiment trackers besides the run's metrics file."
    )
    project: str = Field("dsharp", description="Tracker project name.")

    @field_validator("project")
    @classmethod
    def _no_key_as_project(cls, value: str) -> str:
        # the project names a folder of the run's tracker logs (and a wandb project): a key
        # pasted here would be written there, whatever the saved recipe hides; a W&B key (40
        # hex digits) too, which elsewhere passes as a commit
        from dsharp.redaction import looks_like_key

        if looks_like_key(value, commit_ok=False):
            raise ValueError("looks like an API key or token (not shown): give a project name")
        return value

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_not_false(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `no` as false: the documented value must still work,
        # in a recipe file and as an override (train.mixed_precision=no)
        return "no" if value is False else value

    @field_validator("trackers")
    @classmethod
    def _unique_trackers(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if name in value[:i]:
                raise FieldProblem((i,), f"duplicate tracker {name!r}")
        return value

    @model_validator(mode="after")
    def _adam_settings_need_adam(self, info: ValidationInfo) -> TrainConfig:
        # SGD takes none of them: set, they would be saved with the run but never used. (A
        # finished run's saved recipe is read as it was.)
        if self.optimizer == "sgd" and _check_files(info):
            for name in ("adam_beta1", "adam_beta2", "adam_eps"):
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise FieldProblem(
                        (name,), "only used with train.optimizer adamw or adamw8bit, not sgd"
                    )
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.warmup_steps > self.max_steps:
            raise FieldProblem(
                ("warmup_steps",),
                f"must be <= max_steps ({self.max_steps}), got {self.warmup_steps}",
            )
        return self


class SampleConfig(_Section):
    """How samples are drawn for previews and evaluation."""

    method: str = Field("default", description="Sampler ('default' = DDIM).")
    steps: int = Field(25, ge=1, description="Sampling steps.")
    guidance: float = Field(5.0, ge=0, description="Classifier-free guidance scale.")
    eta: float = Field(
        0.0, ge=0, le=1, description="DDIM eta in [0, 1] (0 = deterministic, 1 = DDPM)."
    )
    height: int | None = Field(None, ge=1, description="Image height; None = model default.")
    width: int | None = Field(None, ge=1, description="Image width; None = model default.")
    options: dict[str, Any] = Field(default_factory=dict, description="Sampler-specific extras.")

    @field_validator("method")
    @classmethod
    def _known_sample_method(cls, value: str) -> str:
        if value not in SAMPLE_METHOD_NAMES:
            raise ValueError(unknown_name_message("sample method", value, SAMPLE_METHOD_NAMES))
        return value


# The names of dsharp.inference.SAMPLE_METHODS, kept here so that parsing a recipe imports no
# torch (a test checks the two agree).
SAMPLE_METHOD_NAMES = ("default", "free2guide", "demon", "inference_scaling")


class EvalConfig(_PromptSource):
    """Evaluation prompts, seeds and rewards."""

    seeds: int = Field(2, ge=1, description="Images per prompt (seeds 0..seeds-1).")
    rewards: list[RewardSpec] | None = Field(
        None, description="Rewards to report; None = the recipe's training rewards."
    )
    bench: str | None = Field(None, description="Named benchmark to run instead of prompts.")
    limit: int | None = Field(
        None,
        ge=1,
        description="At most this many prompts per category (benches with categories) or in "
        "all (prompt lists); None = all.",
    )

    @field_validator("bench")
    @classmethod
    def _known_bench(cls, value: str | None) -> str | None:
        """The report after training scores a reward bench; a wrong name must fail now,
        not when training is over."""
        from dsharp.bench.reward_benches import REWARD_BENCHES

        if value is None or value in REWARD_BENCHES:
            return value
        if value == "t2i-compbench":
            raise ValueError(
                "t2i-compbench is not scored after training; run `dsharp eval --bench "
                f"t2i-compbench --checkpoint RUN` (here: {', '.join(REWARD_BENCHES)})"
            )
        raise ValueError(unknown_name_message("bench", value, REWARD_BENCHES))


_SECTIONS = ("method", "data", "train", "sample", "eval")


class Recipe(_Section):
    """A whole training recipe: the validated form of one YAML file."""

    model: ModelConfig = Field(description="The model to fine-tune.")
    method: MethodConfig = Field(default_factory=MethodConfig, description="Training method.")
    rewards: list[RewardSpec] = Field(
        default_factory=list, description="Rewards summed (weighted) into the objective."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Training inputs.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="Sampling.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    output_dir: str = Field(
        "runs/{recipe_name}",
        min_length=1,
        description="Run folder; '{recipe_name}' is replaced by the recipe file's stem.",
    )

    @field_validator("output_dir")
    @classmethod
    def _known_home(cls, value: str) -> str:
        """A ``~user`` that names no user: refused, not a folder named ``~user`` made here
        (nor Python's 'Could not determine home directory' when it is expanded)."""
        return known_home(value)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section whose keys are all commented out (YAML null) means its defaults."""
        if isinstance(data, dict):
            data = dict(data)
            for key in _SECTIONS:
                if key in data and data[key] is None:
                    data[key] = {}
            if "rewards" in data and data["rewards"] is None:
                data["rewards"] = []
        return data

    @model_validator(mode="after")
    def _method_requirements(self) -> Recipe:
        from dsharp.methods.registry import method_specs

        spec = method_specs().get(self.method.name)
        if spec is None:  # the name validator already reported it
            return self
        data = self.data
        if spec.data == "dataset" and data.dataset is None and data.generator == "none":
            raise FieldProblem(
                ("data", "dataset"),
                f"method {spec.name!r} needs image-text data: set data.dataset or data.generator",
            )
        if (
            spec.data == "prompts"
            and data.prompts is None
            and data.prompts_file is None
            and data.generator == "none"
        ):
            raise FieldProblem(
                ("data", "prompts"),
                f"method {spec.name!r} needs prompts: set data.prompts, data.prompts_file "
                "or data.generator (its train prompts)",
            )
        if spec.needs_reward and not self.rewards:
            raise FieldProblem(("rewards",), f"method {spec.name!r} needs at least one reward")
        if self.method.n < spec.min_n:
            raise FieldProblem(
                ("method", "n"),
                f"method {spec.name!r} needs n >= {spec.min_n} trajectories per prompt "
                f"(got {self.method.n})",
            )
        return self

    def resolved_output_dir(self, recipe_name: str) -> Path:
        """``output_dir`` with ``{recipe_name}`` filled in."""
        return user_path(self.output_dir.replace("{recipe_name}", recipe_name))


# --------------------------------------------------------------------------- public API


def parse_reward_spec(data: Mapping[str, Any], source: str | None = None) -> RewardSpec:
    """Validate one reward spec with one-line errors; the name is left for ``build_reward``
    (whose unknown-name error lists the installed rewards)."""
    try:
        return RewardSpec.model_validate(dict(data), context={_DEFER_REWARD_NAMES: True})
    except ValidationError as e:
        raise _first_error(e, source, ()) from None


# Loading and saving moved to dsharp.recipe_io, which imports this schema; they stay importable
# from here (loaded on first use, so there is no import cycle) because tests/ and scripts/
# import them from dsharp.config: load_recipe (tests, scripts/ship_mini.py,
# scripts/probe_sample_*.py), recipe_to_yaml (tests, scripts/ship_mini.py), recipe_from_dict,
# recipe_to_dict and save_recipe (tests).
_MOVED = ("load_recipe", "recipe_from_dict", "recipe_to_dict", "recipe_to_yaml", "save_recipe")

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads them
    from dsharp.recipe_io import load_recipe as load_recipe
    from dsharp.recipe_io import recipe_from_dict as recipe_from_dict
    from dsharp.recipe_io import recipe_to_dict as recipe_to_dict
    from dsharp.recipe_io import recipe_to_yaml as recipe_to_yaml
    from dsharp.recipe_io import save_recipe as save_recipe


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("dsharp.recipe_io"), name)
    raise AttributeError(f"module 'dsharp.config' has no attribute {name!r}")
