"""open_clip's table of pretrained tags, read without importing open_clip.

``import open_clip`` takes seconds (it imports its models, timm, torchvision and
transformers), yet which hub repo a tag's weights come from is a plain table in its
``pretrained`` module, which imports none of them. Reading that module alone lets the clip
rewards refuse weights that cannot be had (``HF_HUB_OFFLINE`` and nothing cached, or no
network) at once, with open_clip's own table: there is no copy of it here to fall out of date.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from typing import Any

#: The name the copy of open_clip's package is loaded under, so that its ``__init__`` (the
#: slow part) never runs and the real ``open_clip`` is left as it is.
_ALIAS = "_dsharp_open_clip_tags"


def pretrained_cfg(model: str, tag: str) -> dict[str, Any]:
    """open_clip's ``get_pretrained_cfg(model, tag)``: the tag's weights (``hf_hub``,
    ``url``, ``quick_gelu`` ...), ``{}`` when ``tag`` is no tag of ``model``."""
    return dict(_pretrained_module().get_pretrained_cfg(model, tag))


def pretrained_tags(model: str) -> list[str]:
    """open_clip's ``list_pretrained_tags_by_model(model)``."""
    return list(_pretrained_module().list_pretrained_tags_by_model(model))


@functools.cache
def _pretrained_module() -> Any:
    """``open_clip.pretrained``: the imported one when open_clip already is, else a copy
    loaded alone; open_clip itself when that fails (a layout this does not know)."""
    if "open_clip" not in sys.modules:
        try:
            return _load_alone()
        except Exception:  # open_clip's layout changed: import it, slow but right
            pass
    import open_clip

    return open_clip


def _load_alone() -> Any:
    """``open_clip/pretrained.py`` (and what it imports of its package: constants and the
    version) as modules of a package named :data:`_ALIAS` whose ``__init__`` is not run."""
    spec = importlib.util.find_spec("open_clip")  # finds it without importing it
    if spec is None or spec.origin is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed")
    package_spec = importlib.util.spec_from_file_location(
        _ALIAS, spec.origin, submodule_search_locations=list(spec.submodule_search_locations)
    )
    if package_spec is None:
        raise ImportError(f"cannot locate open_clip at {spec.origin}")
    sys.modules[_ALIAS] = importlib.util.module_from_spec(package_spec)
    try:
        return importlib.import_module(f"{_ALIAS}.pretrained")
    finally:  # the functions keep their module's globals; the names go
        for name in [n for n in sys.modules if n == _ALIAS or n.startswith(_ALIAS + ".")]:
            del sys.modules[name]
