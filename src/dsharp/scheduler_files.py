"""A recipe's DDIM scheduler read from its config file alone, no weights, so that checks
before loading can see its schedule (which DDIM steps draw noise: what DDPO and D3PO train).
No download, except where asked (``train``, which downloads the whole model next) for a hub
model not in the cache. ``None`` wherever it is not cheap: the model's loader then decides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dsharp.hub import user_path

SCHEDULER_CONFIG = "scheduler/scheduler_config.json"


def config_file_without_download(model: Any, name: str) -> Path | None:
    """``name`` (``model_index.json``, ``scheduler/scheduler_config.json``) of ``model``'s
    ``pretrained`` (a ``model`` recipe section) where it is on disk: in a local folder, or in
    the Hugging Face cache for a hub id (never fetched). Built-in names are not looked up."""
    folder = user_path(model.pretrained)
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    from dsharp.hub import cached_file

    return cached_file(model.pretrained, name, revision=model.revision)


def fetch_scheduler_config(model: Any) -> Path | None:
    """``model``'s scheduler config fetched alone from the hub (a few hundred bytes, into the
    hub cache, where the model's download then finds it), for a hub id: so that a schedule
    the method cannot train is refused before the model's gigabytes download. None, with
    nothing fetched, for a local path, with ``HF_HUB_OFFLINE`` set, or where the hub does not
    answer one short request (:func:`dsharp.hub.hub_answers`: a timeout is not retried, as
    the hub client would for about 25 s, since the loader asks again); None too where the
    fetch fails (no such repo or file, gated): the loader reports those in its own words."""
    from dsharp.hub import QUICK_TIMEOUT, hub_answers, hub_offline, looks_local

    repo = model.pretrained
    if hub_offline() or looks_local(repo):
        return None
    if not hub_answers(repo, SCHEDULER_CONFIG, model.revision):
        return None
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo, SCHEDULER_CONFIG, revision=model.revision, etag_timeout=QUICK_TIMEOUT
            )
        )
    except Exception:  # the loader meets it again and says what it is
        return None


def scheduler_without_weights(model: Any, *, fetch: bool = False) -> Any | None:
    """The ``DDIMScheduler`` that loading ``model`` would build, from its config alone (the
    built-in dsharp-mini's shipped file, the untrained dsharp-mini's code, a local folder's or
    a cached hub model's ``scheduler/scheduler_config.json``; with ``fetch``, an uncached hub
    model's, fetched alone: :func:`fetch_scheduler_config`); None when that is not on disk
    or cannot be read (the loader reports it, with its own message)."""
    from diffusers import DDIMScheduler

    from dsharp.model_names import EMBEDDED, MINI_INITS

    if model.pretrained in MINI_INITS:
        from dsharp.models.mini import make_scheduler

        return make_scheduler()
    if model.pretrained in EMBEDDED:
        from dsharp.models.loading import assets_dir

        path: Path | None = assets_dir() / EMBEDDED[model.pretrained] / "scheduler"
        path = path / "scheduler_config.json"
    else:
        path = config_file_without_download(model, SCHEDULER_CONFIG)
        if path is None and fetch:
            path = fetch_scheduler_config(model)
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
        if not isinstance(config, dict):
            return None
        scheduler = DDIMScheduler.from_config(config)
        from dsharp.sampling import DDIMTables

        DDIMTables.from_scheduler(scheduler)  # one the samplers refuse: the loader says so
    except Exception:  # an unreadable or odd config is the loader's to report
        return None
    return scheduler
