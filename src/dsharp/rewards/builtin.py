"""The rewards that ship with dsharp, registered through the same hook as any plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dsharp.hub import PathKind
from dsharp.rewards.base import RewardInfo
from dsharp.rewards.hookspecs import hookimpl
from dsharp.rewards.plugins import lazy_factory


def _shapes_prompt(prompt: str, options: Mapping[str, Any]) -> None:
    """Raise the shapes grammar's error for a prompt outside it, which the verifier cannot
    score (unless the reward was told to mark such samples missing)."""
    if options.get("on_error") == "missing":
        return
    from dsharp.shapes.grammar import parse

    parse(prompt)


@hookimpl
def register_rewards(register: Callable[[RewardInfo], None]) -> None:
    """Register the built-in rewards; each factory imports its module only when built."""
    register(
        RewardInfo(
            name="shapes",
            factory=lazy_factory("dsharp.shapes.reward", "build_shapes_reward"),
            description="Exact compositional score for the dsharp-mini shapes world",
            differentiable=False,
            check_prompt=_shapes_prompt,
            check_options=_shapes_options,
        )
    )
    register(
        RewardInfo(
            name="shapes_soft",
            factory=lazy_factory("dsharp.shapes.soft", "build_shapes_soft_reward"),
            description="Differentiable surrogate of `shapes` (colour amounts, positions, "
            "single-object shape moments) for ReFL/IterPO",
            differentiable=True,
            check_prompt=_shapes_prompt,
            check_options=_shapes_soft_options,
        )
    )
    register(
        RewardInfo(
            name="mllm",
            factory=lazy_factory("dsharp.rewards.mllm", "build_mllm_reward"),
            description="Multimodal LLM grader on an OpenAI-compatible server: overall / 10 "
            "over the paper's five aspects",
            differentiable=False,
            check_options=_mllm_options,
        )
    )
    for name, module, extra, differentiable, description in _MODEL_REWARDS:
        register(
            RewardInfo(
                name=name,
                factory=lazy_factory(f"dsharp.rewards.{module}", f"build_{module}_reward", extra),
                description=description,
                differentiable=differentiable,
                check_options=_local_sources_check(name, _LOCAL_SOURCES[name]),
            )
        )


def _shapes_options(options: Mapping[str, Any]) -> None:
    from dsharp.shapes.reward import check_shapes_options

    check_shapes_options(options)


def _shapes_soft_options(options: Mapping[str, Any]) -> None:
    from dsharp.shapes.soft import check_shapes_soft_options

    check_shapes_soft_options(options)


def _mllm_options(options: Mapping[str, Any]) -> None:
    from dsharp.rewards.mllm import check_mllm_options  # imported only when checked

    check_mllm_options(options)


# Model-based rewards: (name, module in dsharp.rewards, extra, differentiable, description).
# Each module imports torch / open_clip / transformers only when its reward is built.
_MODEL_REWARDS = (
    ("clip", "clip", "clip", True, "CLIP score: cosine of open_clip image and prompt embeddings"),
    (
        "aesthetic",
        "aesthetic",
        "clip",
        True,
        "LAION aesthetic predictor v2 (MLP on CLIP ViT-L/14 image embeddings), about 1..10",
    ),
    (
        "pickscore",
        "pickscore",
        None,
        True,
        "PickScore: CLIP-H/14 preference model, logit_scale * cosine",
    ),
    ("hpsv2", "hpsv2", "clip", True, "HPSv2: CLIP-H/14 human preference score (cosine)"),
    (
        "compositional",
        "compositional",
        None,
        False,
        "T2I-CompBench BLIP-VQA: product over noun phrases of P(yes), in [0, 1]",
    ),
    (
        "imagereward",
        "imagereward",
        None,
        True,
        "ImageReward-v1.0 (BLIP + MLP head), published normalisation",
    ),
)


#: The options of each model reward that may name a local path (else an open_clip name or
#: tag, or a hub id), with what the path must be (:data:`dsharp.hub.PathKind`): what each
#: reward's loader requires of it, so that this early check and the load agree.
_LOCAL_SOURCES: dict[str, dict[str, PathKind]] = {
    "clip": {"model": "open_clip model", "pretrained": "file"},
    "aesthetic": {"weights": "file or folder", "model": "open_clip model", "pretrained": "file"},
    "pickscore": {"model": "folder", "processor": "folder"},
    "hpsv2": {"checkpoint": "file or folder", "model": "open_clip model"},
    "compositional": {"model": "folder", "processor": "folder"},
    "imagereward": {"model": "file or folder", "tokenizer": "folder"},
}


#: Options a model reward cannot do without (no default weights to fall back on), with
#: what each names.
_REQUIRED = {
    "aesthetic": {
        "weights": "the path of the LAION aesthetic predictor v2's weights file, or a hub "
        "repo id holding it"
    },
}


def _local_sources_check(
    reward: str, kinds: Mapping[str, PathKind]
) -> Callable[[Mapping[str, Any]], None]:
    """A ``check_options`` that refuses a missing required option or a local path that is
    not there, with the rule and the words the reward's loader uses
    (:func:`dsharp.rewards._weights.local_path_error`), but without building it: ``recipes
    validate`` and ``train`` then refuse it before any model loads, and a study's evaluation
    reward before its rows train."""

    def check(options: Mapping[str, Any]) -> None:
        from dsharp.rewards._weights import local_path_error  # no torch

        for name, what in _REQUIRED.get(reward, {}).items():
            if options.get(name) is None:
                raise ValueError(f"{reward} reward needs option {name!r}: {what}")
        _check_values(reward, [*kinds, *_NAMED_FILES.get(reward, ())], options)
        for name, kind in kinds.items():
            value = options.get(name)
            if isinstance(value, str) and value.strip():  # else the factory's check says so
                message = local_path_error(reward, name, value.strip(), kind)
                if message is not None:
                    raise ValueError(message)

    return check


#: Options of a model reward naming a file inside its ``model``'s folder or hub repo.
_NAMED_FILES = {
    "aesthetic": ("weights_file",),
    "hpsv2": ("checkpoint_file",),
    "imagereward": ("checkpoint_file",),
}
#: Model rewards that take ``scale``, a number > 0.
_SCALED = ("clip", "hpsv2")


def _check_values(reward: str, names: list[str], options: Mapping[str, Any]) -> None:
    """The checks of the reward's own factory that need no weights, run before any model
    loads: a name or path that is no string, a ``scale`` that is no number > 0 and a
    ``device`` that is no torch device (not whether this machine has it: a recipe may be
    checked elsewhere). ``recipes validate`` passed them, and the run failed at the build."""
    from dsharp.rewards._weights import check_device, check_number, check_str

    for name in names:
        if name in options:
            check_str(reward, name, options[name], allow_none=True)
    if reward in _SCALED and "scale" in options:
        check_number(reward, "scale", options["scale"], positive=True)
    if "device" in options:
        check_device(reward, options["device"])
