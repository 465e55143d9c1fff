"""Builds the training method a recipe names (``method.name``) from its ``method`` section."""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from dsharp.methods.base import TrainingMethod
from dsharp.models.base import DiffusionModel

#: Table-1 baselines built from their constructor's signature: (module, class).
_BASELINES: dict[str, tuple[str, str]] = {
    "finetune": ("dsharp.methods.finetune", "FineTune"),
    "diffusion_dpo": ("dsharp.methods.dpo", "DiffusionDPO"),
    "ddpo": ("dsharp.methods.ddpo", "DDPO"),
    "d3po": ("dsharp.methods.d3po", "D3PO"),
    "iterpo": ("dsharp.methods.iterpo", "IterPO"),
}


class UnknownOptionError(TypeError, ValueError):
    """``method.options`` names an option the method does not take (a ``TypeError``, and a
    ``ValueError`` so that the CLI reports it in one line)."""


def _keyword_defaults(cls: type) -> dict[str, Any]:
    """Keyword-only constructor parameters of ``cls`` with their defaults, and those of its
    bases where its constructor passes ``**kwargs`` on."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                out.setdefault(p.name, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return out


def _generic_fields(cfg: Any) -> list[str]:
    """The ``method.*`` fields every method shares (``n``, ``beta``, ...), not its options."""
    return [f for f in type(cfg).model_fields if f not in ("name", "options")]


def _check_unused_fields(cfg: Any, defaults: dict[str, Any], generic: list[str]) -> None:
    """A generic field the method's constructor does not take must keep its schema default."""
    schema = type(cfg).model_fields
    for field in generic:
        if field not in defaults and getattr(cfg, field) != schema[field].default:
            used = ", ".join(f for f in generic if f in defaults) or "none"
            raise ValueError(
                f"method.{field}: not used by {cfg.name} (its method.* fields: {used}; "
                "method-specific settings go in method.options)"
            )


def _check_option_keys(cfg: Any, defaults: dict[str, Any], generic: list[str]) -> None:
    """Every key of ``method.options`` must be a constructor keyword that is not a generic
    ``method.*`` field; else :class:`UnknownOptionError` naming it (and a close match)."""
    options = [name for name in defaults if name not in generic]
    for key in cfg.options:
        if key in generic:
            raise UnknownOptionError(f"method.options.{key}: set it as method.{key} instead")
        if key not in options:
            match = difflib.get_close_matches(str(key), options, n=1, cutoff=0.6)
            hint = f", did you mean {match[0]!r}?" if match else ""
            known = ", ".join(options) or "none"
            raise UnknownOptionError(
                f"method.options.{key}: unknown option of {cfg.name}{hint} (known: {known})"
            )


def _fill_defaults(cfg: Any, defaults: dict[str, Any], generic: list[str]) -> None:
    """Write the method's own defaults into the generic fields the recipe left unset."""
    for field in generic:
        if field in defaults and field not in cfg.model_fields_set:
            setattr(cfg, field, defaults[field])


def resolve_method_kwargs(cfg: Any, cls: type) -> dict[str, Any]:
    """Constructor keywords for ``cls`` from a ``method`` section, checked against what the
    constructor takes.

    The generic ``method.*`` fields (``n``, ``beta``, ``eta``, ...) that the constructor
    takes are passed. For a Table-1 baseline, one the recipe left unset gets the method's own
    default (its authors' value) rather than the schema's, and is written back into ``cfg``
    so that the run's saved recipe records what ran; the sharpening methods take the
    schema's values. A generic field the method does not use must keep its schema default.
    Every key of ``method.options`` must be another keyword of the constructor: an unknown
    one raises :class:`UnknownOptionError` naming it.
    """
    defaults, generic = _keyword_defaults(cls), _generic_fields(cfg)
    _check_unused_fields(cfg, defaults, generic)
    _check_option_keys(cfg, defaults, generic)
    if _baseline_class(cfg.name) is not None:
        _fill_defaults(cfg, defaults, generic)
    kwargs = {field: getattr(cfg, field) for field in generic if field in defaults}
    kwargs.update(cfg.options)
    return kwargs


def _baseline_class(name: str) -> type | None:
    """The Table-1 baseline class ``method.name`` names, imported (None: not a baseline)."""
    baseline = _BASELINES.get(name)
    if baseline is None:
        return None
    module, cls_name = baseline
    return getattr(importlib.import_module(module), cls_name)


def _sharpening_class(name: str) -> type | None:
    from dsharp.methods.sharpening import RLHFSharpening, SFTSharpening

    return {"rlhf_sharpening": RLHFSharpening, "sft_sharpening": SFTSharpening}.get(name)


def _method_class(name: str) -> type | None:
    """The class ``method.name`` names (a baseline or a sharpening variant), or None."""
    return _baseline_class(name) or _sharpening_class(name)


def _method_settings(cfg: Any) -> tuple[type, dict[str, Any]] | None:
    """The class ``cfg`` names and its constructor keywords with every default filled in, as
    :func:`build_method` would pass them (None for a method without a class). Resolved on a
    copy: the defaults a baseline fills stay out of the recipe."""
    cls = _method_class(cfg.name)
    if cls is None:
        return None
    kwargs = resolve_method_kwargs(cfg.model_copy(deep=True), cls)
    return cls, {**_keyword_defaults(cls), **kwargs}


def check_method_section(cfg: Any) -> None:
    """What :func:`build_method` would refuse, checked without a model (so that ``dsharp
    recipes validate`` and ``dsharp train`` say it before any weights load): a generic
    ``method.*`` field the method does not use, an unknown ``method.options`` key, or a
    value the method refuses (``TrainingMethod.check_settings``)."""
    resolved = _method_settings(cfg)
    if resolved is not None:
        cls, settings = resolved
        cls.check_settings(settings)


def method_uses_schedule(cfg: Any) -> bool:
    """Whether the ``method`` section's class reads the model's DDIM scheduler in its checks
    (``TrainingMethod.uses_schedule``): the checks before loading read it only then."""
    cls = _method_class(cfg.name)
    return bool(cls is not None and cls.uses_schedule)


def check_method_schedule(cfg: Any, scheduler: Any) -> None:
    """What :func:`build_method` would refuse about a valid ``method`` section given the
    model's DDIM ``scheduler`` (read from its config, no weights):
    ``TrainingMethod.check_schedule``."""
    resolved = _method_settings(cfg)
    if resolved is not None:
        cls, settings = resolved
        cls.check_schedule(settings, scheduler)


def method_notes(cfg: Any, grad_accum: int, scheduler: Any = None) -> list[str]:
    """Notes on a valid ``method`` section whose settings defeat their purpose with the
    recipe's ``train.grad_accum`` (``TrainingMethod.notes_with_accumulation``); ``scheduler``:
    the model's, where it could be read without loading."""
    resolved = _method_settings(cfg)
    if resolved is None:
        return []
    cls, settings = resolved
    return cls.notes_with_accumulation(settings, grad_accum, scheduler)


def fill_method_defaults(cfg: Any) -> None:
    """Write into ``cfg`` (a ``method`` section) the method's own defaults for the generic
    fields the recipe left unset, as training does before it saves the run's recipe, so that
    a recipe can be compared with a run's saved one. Sharpening methods use the schema's."""
    cls = _baseline_class(cfg.name)
    if cls is not None:
        _fill_defaults(cfg, _keyword_defaults(cls), _generic_fields(cfg))


def with_method_defaults(recipe: Any) -> Any:
    """A copy of ``recipe`` as training saves it: with the method's own defaults filled in."""
    resolved = recipe.model_copy(deep=True)
    fill_method_defaults(resolved.method)
    return resolved


def build_method(
    cfg: Any, model: DiffusionModel, reward: Any, height: int, width: int
) -> TrainingMethod:
    """Instantiate ``cfg.name`` with the recipe's hyperparameters."""
    cls = _method_class(cfg.name)
    if cls is None:
        raise NotImplementedError(f"method.name: '{cfg.name}' is not implemented yet")
    return cls(model, reward, height, width, **resolve_method_kwargs(cfg, cls))
