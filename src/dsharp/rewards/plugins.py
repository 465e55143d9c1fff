"""The one plugin manager for rewards: entry-point loading, the allow-list, the registry.

Built-in rewards register through the same ``register_rewards`` hook as third-party
plugins. Plugins come from setuptools entry points of group ``dsharp``; the environment
variable ``DSHARP_LOAD_PLUGINS`` (comma-separated distribution names) limits which
distributions load, and an empty value loads only the built-ins, for reproducible runs.
A plugin that fails to import, has an unknown hook or none, or fails while registering is recorded
in :func:`plugin_failures` and never stops the others from loading.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata as metadata
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from dsharp.rewards import hookspecs
from dsharp.rewards.base import Reward, RewardError, RewardInfo

if TYPE_CHECKING:
    from dsharp.config import RewardSpec

ENV_VAR = "DSHARP_LOAD_PLUGINS"
BUILTIN_MODULE = "dsharp.rewards.builtin"
BUILTIN_NAME = "builtin"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager that knows dsharp's hook specifications (tests use their own)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


pm = make_plugin_manager()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used, with a one-line reason."""

    plugin: str
    distribution: str | None
    error: str
    #: a clash's other claimants, left without the reward as well: the failure is one row,
    #: but the plugins whose rewards were not registered are all of them
    others: tuple[str, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "distribution": self.distribution, "error": self.error}


@dataclass(frozen=True)
class RegisteredReward:
    """A registered reward and where it came from."""

    info: RewardInfo
    plugin: str
    distribution: str | None
    version: str | None

    @property
    def name(self) -> str:
        return self.info.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.info.name,
            "description": self.info.description,
            "differentiable": self.info.differentiable,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
        }


class PluginFaultError(RuntimeError):
    """A plugin's own check (``check_options``, ``check_prompt``) failed with an exception
    its contract does not allow: a bug in the plugin, not a bad setting, so it is not a
    ``ValueError`` or ``RewardError`` that commands would report as a bad recipe (exit 2)."""


class UnknownRewardError(RewardError, KeyError):
    """No installed plugin provides the requested reward name (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _one_line(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())


# --------------------------------------------------------------------------- loading


def normalize_distribution(name: str) -> str:
    """PEP 503 normal form, so ``My_Plugin`` in the allow-list matches ``my-plugin``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_distributions(environ: dict[str, str] | None = None) -> set[str] | None:
    """The ``DSHARP_LOAD_PLUGINS`` allow-list, normalized; ``None`` when unset (load all)."""
    raw = (os.environ if environ is None else environ).get(ENV_VAR)
    if raw is None:
        return None
    return {normalize_distribution(n.strip()) for n in raw.split(",") if n.strip()}


def _distribution_of(entry_point: Any) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    name = getattr(dist, "name", None) or dist.metadata["Name"]
    return name, getattr(dist, "version", None)


# Plugin object -> (distribution, version), for the registry's provenance columns. Keyed by
# the object, not its name, so that managers built in tests cannot mix up names.
_provenance: dict[int, tuple[Any, str | None, str | None]] = {}
_load_failures: list[PluginFailure] = []
_registration_failures: list[PluginFailure] = []
_loaded = False


def _set_provenance(plugin: Any, dist: str | None, version: str | None) -> None:
    _provenance[id(plugin)] = (plugin, dist, version)  # holding the object keeps its id unique


def _provenance_of(plugin: Any) -> tuple[str | None, str | None]:
    entry = _provenance.get(id(plugin))
    return (entry[1], entry[2]) if entry is not None and entry[0] is plugin else (None, None)


def _hook_names(manager: pluggy.PluginManager) -> list[str]:
    return [
        n for n, caller in vars(manager.hook).items() if not n.startswith("_") and caller.has_spec()
    ]


def drop_invalid_plugins(manager: pluggy.PluginManager) -> list[PluginFailure]:
    """Run ``check_pending()`` until it passes, unregistering each plugin it rejects.

    A misspelled hook (``register_reward``) would otherwise be silently ignored.
    """
    failures = []
    while True:
        try:
            manager.check_pending()
            return failures
        except pluggy.PluginValidationError as e:
            name = manager.get_name(e.plugin) or repr(e.plugin)
            bad = [
                c.name
                for c in manager.get_hookcallers(e.plugin) or []
                if not c.has_spec() and not c.name.startswith("_")
            ]
            manager.unregister(e.plugin)
            hint = _hint(bad[0], _hook_names(manager)) if bad else ""
            what = f"unknown hook {bad[0]!r}{hint}" if bad else _one_line(str(e))
            failures.append(PluginFailure(name, _provenance_of(e.plugin)[0], what))


def _no_hook_message(value: str, plugin: Any) -> str:
    """Why a plugin that imported has no hook: an unmarked ``register_rewards`` is the
    usual slip (pluggy ignores a function without dsharp's ``@hookimpl``)."""
    if callable(getattr(plugin, "register_rewards", None)):
        return (
            f"{value} implements no dsharp hook: its register_rewards is not marked with "
            "dsharp's @hookimpl (from dsharp.rewards import hookimpl)"
        )
    return f"{value} implements no dsharp hook (expected an @hookimpl register_rewards)"


def _spec_hint(error: str) -> str:
    """``; dsharp's hook is register_rewards(register)`` after pluggy's complaint about a
    hook's arguments, which names the plugin's arguments but not the ones expected."""
    match = re.search(r"for hook '(\w+)'", error)
    spec = getattr(hookspecs, match.group(1), None) if match else None
    if spec is None or "hookspec" not in error:
        return ""
    arguments = ", ".join(inspect.signature(spec).parameters)
    return f"; dsharp's hook is {match.group(1)}({arguments})"


def _hint(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f", did you mean {match[0]!r}?" if match else ""


def load_entry_points(
    manager: pluggy.PluginManager, entry_points: Iterable[Any], allow: set[str] | None
) -> list[PluginFailure]:
    """Register each allowed entry point's object; return what failed, one line each.

    ``allow`` is a set of normalized distribution names, or ``None`` for every one. The
    built-in module is skipped here because :func:`load_plugins` always registers it.
    """
    failures: list[PluginFailure] = []
    seen: set[str] = set()
    for ep in sorted(entry_points, key=lambda e: (_distribution_of(e)[0] or "", e.name)):
        if ep.value.split(":")[0] == BUILTIN_MODULE:
            continue
        dist, version = _distribution_of(ep)
        if allow is not None and normalize_distribution(dist or "") not in allow:
            continue
        seen.add(normalize_distribution(dist or ""))
        name = ep.name if manager.get_plugin(ep.name) is None else f"{dist}.{ep.name}"
        try:
            with contextlib.redirect_stdout(sys.stderr):  # keep --json output clean
                plugin = ep.load()
        except (Exception, SystemExit) as e:  # any import-time error (a module that
            # calls sys.exit too): record it, keep loading the rest
            failures.append(
                PluginFailure(ep.name, dist, f"cannot import {ep.value}: {_one_line(e)}")
            )
            continue
        _set_provenance(plugin, dist, version)
        try:
            manager.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as e:
            failures.append(PluginFailure(name, dist, _one_line(str(e)) + _spec_hint(str(e))))
            continue
        if not manager.get_hookcallers(plugin):  # loaded, but would silently register nothing
            manager.unregister(plugin)
            failures.append(PluginFailure(name, dist, _no_hook_message(ep.value, plugin)))
    for name in sorted((allow or set()) - seen - {"dsharp"}):
        failures.append(PluginFailure(name, name, f"named in {ENV_VAR} but provides no plugin"))
    return failures + drop_invalid_plugins(manager)


def _installed_entry_points() -> list[Any]:
    return list(metadata.entry_points(group=hookspecs.PROJECT))


def load_plugins() -> None:
    """Register the built-ins and the allowed entry-point plugins into ``pm``, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    builtin = importlib.import_module(BUILTIN_MODULE)
    if not pm.is_registered(builtin):
        pm.register(builtin, name=BUILTIN_NAME)
    try:
        version = metadata.version("dsharp")
    except metadata.PackageNotFoundError:
        from dsharp import __version__ as version
    _set_provenance(builtin, "dsharp", version)
    _load_failures.extend(load_entry_points(pm, _installed_entry_points(), allowed_distributions()))


# --------------------------------------------------------------------------- registry


def _collect(manager: pluggy.PluginManager) -> tuple[dict[str, RegisteredReward], list]:
    """Call every ``register_rewards`` hook, one plugin at a time, in registration order."""
    registry: dict[str, RegisteredReward] = {}
    failures: list[PluginFailure] = []
    # a name two third-party plugins claim: its claimants, (plugin, distribution) each
    clashes: dict[str, list[tuple[str, str | None]]] = {}
    impls = manager.hook.register_rewards.get_hookimpls()
    for impl in sorted(impls, key=lambda i: i.plugin_name != BUILTIN_NAME):  # built-ins first
        name = impl.plugin_name
        dist, version = _provenance_of(impl.plugin)
        pending: list[RewardInfo] = []
        try:
            with contextlib.redirect_stdout(sys.stderr):  # a plugin's print: not in --json
                impl.function(**{arg: pending.append for arg in impl.argnames})
        except (Exception, SystemExit) as e:  # SystemExit too: it would end any command
            failures.append(PluginFailure(name, dist, f"register_rewards failed: {_one_line(e)}"))
            continue
        for info in pending:
            named = isinstance(info, RewardInfo) and isinstance(info.name, str)
            first = registry.get(info.name) if named else None
            if first is not None and first.plugin not in (BUILTIN_NAME, name):  # a clash,
                # said once, below: not also 'already registered', as if the first one won
                claimants = clashes.setdefault(info.name, [(first.plugin, first.distribution)])
                claimants.append((name, dist))
                continue
            problem = _check_info(info, registry)
            if problem:
                failures.append(PluginFailure(name, dist, problem))
            else:
                registry[info.name] = RegisteredReward(info, name, dist, version)
    for reward, claimants in clashes.items():
        del registry[reward]
        listed = ", ".join(f"{p} ({d or 'not installed'})" for p, d in claimants)
        failures.append(
            PluginFailure(
                *claimants[-1],
                f"reward {reward!r} is registered by several plugins, so neither is used: "
                f"{listed}; choose one with {ENV_VAR}",
                others=tuple(p for p, _ in claimants[:-1]),
            )
        )
    return registry, failures


def _check_info(info: Any, registry: dict[str, RegisteredReward]) -> str:
    if not isinstance(info, RewardInfo):
        return f"registered a {type(info).__name__}, expected a RewardInfo"
    if not isinstance(info.name, str) or not _NAME.match(info.name):
        return f"invalid reward name {info.name!r} (letters, digits, '_', '-', '.')"
    if not callable(info.factory):
        return f"reward {info.name!r}: factory is not callable"
    if info.name in registry:
        return f"reward {info.name!r} already registered by plugin {registry[info.name].plugin!r}"
    return ""


def reward_registry() -> dict[str, RegisteredReward]:
    """Every registered reward by name. Cheap: factories are not called."""
    load_plugins()
    _load_failures.extend(drop_invalid_plugins(pm))  # plugins registered after loading
    registry, failures = _collect(pm)
    _registration_failures[:] = failures
    return registry


def plugin_failures() -> list[PluginFailure]:
    """Plugins that failed to import, validate or register, each with a one-line error."""
    reward_registry()
    return [*_load_failures, *_registration_failures]


def plugin_list() -> list[dict[str, Any]]:
    """Registered plugins with their hooks and provenance (like ``llm plugins``)."""
    load_plugins()
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda p: p[0]):
        if plugin is None:
            continue
        dist, version = _provenance_of(plugin)
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "distribution": dist, "version": version, "hooks": hooks})
    return out


def get_reward_info(name: str) -> RewardInfo:
    """The registered ``RewardInfo`` for ``name``; ``UnknownRewardError`` lists known names."""
    registry = reward_registry()
    if name not in registry:
        raise UnknownRewardError(unknown_reward_message(name, registry))
    return registry[name].info


def unknown_reward_message(name: str, registry: dict[str, RegisteredReward]) -> str:
    """``unknown reward 'x' (known: ...)``, and why it may be missing: the plugin failure
    that names it, else how many plugins failed to load, else the allow-list."""
    from dsharp.config import unknown_name_message

    failures = [*_load_failures, *_registration_failures]
    about = [f for f in failures if f"reward {name!r}" in f.error]
    if about:  # the name is known, and why it is unusable says more than a near match would
        return f"unknown reward {name!r}: {about[-1].error}"
    message = unknown_name_message("reward", name, registry)
    if len(failures) == 1:  # the one to suspect: say which, and why, as `rewards list` would
        message += f"; {_one_failure(failures[0])}"
    elif failures:
        message += f"; {failures_in_words(failures)} (`dsharp rewards list`: why)"
    if allowed_distributions() is not None:
        message += f"; {ENV_VAR} limits which plugins load"
    return message


def failures_in_words(failures: list[PluginFailure], *, names: bool = False) -> str:
    """How many plugins failed to load and how many loaded but had rewards not registered
    (a clash, an invalid entry, a failing hook), each plugin counted once (``2 plugins
    failed to load; rewards of 1 plugin not registered``), with ``names`` followed by
    theirs. Why: one count of both called a plugin whose reward clashed 'failed to load'."""
    loaded = [f for f in failures if f not in _load_failures]
    parts = []
    for group, words in (
        ([f for f in failures if f in _load_failures], "{} failed to load"),
        (loaded, "rewards of {} not registered"),
    ):
        plugins = sorted({p for f in group for p in (f.plugin, *f.others)})
        if plugins:
            count = f"{len(plugins)} plugin{'s' if len(plugins) > 1 else ''}"
            parts.append(words.format(count) + (f": {', '.join(plugins)}" if names else ""))
    return "; ".join(parts)


def _one_failure(failure: PluginFailure) -> str:
    """A plugin failure in an unknown reward's message: ``plugin 'p' (d) failed to load: E``
    for one that did not load; one that loaded but whose rewards were refused, in its own
    words, naming the plugin only where they do not (a clash names every claimant: naming
    one of them would blame it alone)."""
    where = f" ({failure.distribution})" if failure.distribution else ""
    if failure in _load_failures:
        return f"plugin {failure.plugin!r}{where} failed to load: {failure.error}"
    if f"{failure.plugin} ({failure.distribution or 'not installed'})" in failure.error:
        return failure.error
    return f"plugin {failure.plugin!r}{where}: {failure.error}"


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class LazyFactory:
    """A factory that imports ``module.attr`` only when a reward is built.

    ``extra`` names the dsharp extra that installs the module's dependencies, for the hint.
    """

    module: str
    attr: str
    extra: str | None = None

    def resolve(self) -> Callable[..., Reward]:
        """Import and return the real factory; import problems become ``RewardError``."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as e:
            hint = f" (install it with: pip install 'dsharp[{self.extra}]')" if self.extra else ""
            raise RewardError(f"cannot import {self.module}: {e}{hint}") from e
        try:
            return getattr(module, self.attr)
        except AttributeError:
            raise RewardError(f"{self.module} has no attribute {self.attr!r}") from None

    def __call__(self, **options: Any) -> Reward:
        return self.resolve()(**options)


def lazy_factory(module: str, attr: str, extra: str | None = None) -> LazyFactory:
    """``RewardInfo.factory`` that defers ``import module`` to build time."""
    return LazyFactory(module, attr, extra)


def _parameters(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None


def _accepts(signature: inspect.Signature | None, name: str) -> bool:
    if signature is None or name not in signature.parameters:
        return False
    kind = signature.parameters[name].kind
    return kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _check_options(
    reward: str, signature: inspect.Signature | None, options: dict[str, Any]
) -> None:
    if signature is None:
        return
    try:
        signature.bind(**options)
    except TypeError as e:
        # on_error is the spec's own setting, passed by _checked_factory: never an option
        accepted = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "on_error"
        ]
        listing = ", ".join(accepted) or "none"
        message = f"reward {reward!r}: bad options: {e} (accepted: {listing})"
        raise RewardError(message + _key_hint(options, accepted)) from None


def _key_hint(options: dict[str, Any], accepted: list[str]) -> str:
    """Where a key goes instead, for an unknown option that looks like one (``api_key``)
    when the reward reads its key from an environment variable it is told the name of: a
    key given as an option would be saved with the recipe."""
    from dsharp.redaction import looks_secret

    unknown = [name for name in options if name not in accepted and looks_secret(name)]
    env = [name for name in accepted if name.endswith("_env")]
    if not unknown or not env:
        return ""
    return (
        f"; {unknown[0]} is not an option: put the key in an environment variable and give "
        f"its name as {env[0]}"
    )


def check_reward_options(spec: RewardSpec) -> None:
    """``RewardError`` when the spec's options are not keywords its factory takes, or (for a
    reward that registers ``check_options``) a value it refuses: what :func:`build_reward`
    would refuse, checked without building (no weights load)."""
    _, options = _checked_factory(spec)
    check = get_reward_info(spec.name).check_options
    if check is not None:
        try:
            check(options)
        except (ValueError, RewardError) as e:  # a value it refuses: the contract
            message = _naming_reward(spec.name, str(e))
            if message == str(e):
                raise
            raise (RewardError if isinstance(e, RewardError) else ValueError)(message) from None
        except Exception as e:
            raise PluginFaultError(
                f"reward {spec.name!r}{reward_source(spec.name)}: check_options failed: "
                f"{_one_line(e)}"
            ) from e


def _naming_reward(name: str, message: str) -> str:
    """``message`` led by ``reward 'NAME': `` unless it is led by the reward's name already
    (``NAME: ...``, ``NAME reward option ...``, ``reward 'NAME' ...``, as dsharp's rewards
    word theirs): a plugin's refusal (``quality: expected 1-100``) would not say which of a
    recipe's rewards it is. The name further on (``option 'model'``, ``(sharpness is ...)``)
    may be a word of the reason, not the reward."""
    quoted = rf"""reward ['"]{re.escape(name)}['"]"""
    if re.match(rf"(?:{re.escape(name)}(?![\w-])|{quoted})", message):
        return message
    return f"reward {name!r}: {message}"


def reward_source(name: str) -> str:
    """`` (plugin 'p', distribution d 1.0)`` for a third-party reward, else empty: which
    package to blame for a fault, where the reward's name alone may not say."""
    registered = reward_registry().get(name)
    if registered is None or registered.plugin == BUILTIN_NAME:
        return ""
    where = f"plugin {registered.plugin!r}"
    if registered.distribution:
        where += f", distribution {registered.distribution} {registered.version or ''}".rstrip()
    return f" ({where})"


def _checked_factory(spec: RewardSpec) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The spec's factory and the keywords to call it with, checked against its signature.

    The factory is passed ``on_error=spec.on_error`` when it declares an ``on_error``
    parameter: that is how a reward is told to mark samples it cannot score as NaN.
    Rewards that do not declare it are handled by :class:`CombinedReward` instead.
    """
    info = get_reward_info(spec.name)
    factory = info.factory.resolve() if isinstance(info.factory, LazyFactory) else info.factory
    signature = _parameters(factory)
    options = dict(spec.options)
    if _accepts(signature, "on_error"):
        options["on_error"] = spec.on_error
    _check_options(spec.name, signature, options)
    _refuse_redacted(spec.name, spec.options)
    return factory, options


def _redacted_at(value: Any, where: str) -> str | None:
    """The dotted place of the first value that a saved recipe redacted, if any."""
    from dsharp.redaction import REDACTED

    if isinstance(value, str):
        return where if REDACTED in value else None
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            found = _redacted_at(item, f"{where}.{key}")
            if found:
                return found
    return None


def _refuse_redacted(reward: str, options: Mapping[str, Any]) -> None:
    """A recipe that a run saved hides secret options as ``<redacted>``: building a reward
    from it (``dsharp eval --checkpoint RUN``, a resume from the saved recipe) would send
    that placeholder as the secret rather than say so."""
    for name, value in options.items():
        where = _redacted_at(value, str(name))
        if where:
            raise RewardError(
                f"reward {reward!r}: option {where!r} was redacted in a saved recipe: set it "
                "again (a key belongs in the environment variable the reward reads)"
            )


def build_reward(spec: RewardSpec) -> Reward:
    """Build the reward a spec names, with its options (see :func:`_checked_factory` for
    how ``on_error`` reaches it)."""
    factory, options = _checked_factory(spec)
    try:
        reward = factory(**options)
    except RewardError:  # the factory's own one-line message
        raise
    except (TypeError, ValueError) as e:  # mostly an option value it refuses: one line
        # naming the reward (DSHARP_DEBUG=1 shows the chain when it is something else)
        raise RewardError(_naming_reward(spec.name, str(e))) from e
    except Exception as e:  # a fault while building (a missing import, unreadable weights):
        # named, with the plugin it came from, or the user sees a bare message
        raise RewardError(
            f"reward {spec.name!r}{reward_source(spec.name)} could not be built: {_one_line(e)}"
        ) from e
    if not isinstance(reward, Reward):
        raise RewardError(
            f"reward {spec.name!r}: factory returned {type(reward).__name__}, not a Reward "
            "(a callable with a 'differentiable' attribute)"
        )
    return reward


def check_prompts(
    specs: Iterable[RewardSpec], prompts: Iterable[str], source: object = None
) -> None:
    """Raise ``ValueError`` for the first prompt that a reward of ``specs`` cannot score,
    its message led by ``source`` (where the prompts came from) when given.

    Only rewards that register a ``check_prompt`` are checked; the others find out when they
    score. Why: a bad prompt should fail before minutes of sampling, not after.
    """
    where = "" if source is None else f"{source}: "
    distinct = list(dict.fromkeys(prompts))
    for spec in specs:
        check = get_reward_info(spec.name).check_prompt
        if check is None:
            continue
        options = {**spec.options, "on_error": spec.on_error}
        for prompt in distinct:
            try:
                check(prompt, options)
            except ValueError as err:
                raise ValueError(
                    f"{where}reward {spec.name!r} cannot score a prompt: {err}"
                ) from None
            except Exception as e:  # not a refusal: a fault in the reward's check
                raise PluginFaultError(
                    f"reward {spec.name!r}{reward_source(spec.name)}: check_prompt failed on "
                    f"{prompt!r}: {_one_line(e)}"
                ) from e
