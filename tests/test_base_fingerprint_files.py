"""What ``base_files`` reads from a base's weight files before it loads: only the file the
load reads (a sharded component of a variant is left to the check after the load); and what
a refusal tells to set back."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from dsharp.base_files import files_fingerprint
from dsharp.base_fingerprint import SCHEME, STATE_KEY, BaseMismatch, check_base_fingerprint


def _checkpoint(tmp_path: Path) -> Path:
    """A checkpoint whose fingerprint saved one UNet value (not the base's: any read of it
    would refuse)."""
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    saved = {"scheme": SCHEME, "pretrained": "x", "components": {"unet": {"w[2]": 9.0}}}
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1, STATE_KEY: saved}))
    return ckpt


def _base(tmp_path: Path, variant: str | None) -> Path:
    folder = tmp_path / "base"
    (folder / "unet").mkdir(parents=True)
    name = f"diffusion_pytorch_model{f'.{variant}' if variant else ''}.safetensors"
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, folder / "unet" / name)
    return folder


def _model(base: Path, variant: str | None) -> SimpleNamespace:
    return SimpleNamespace(pretrained=str(base), revision=None, variant=variant)


def test_an_unsharded_variant_file_is_read(tmp_path: Path) -> None:
    base = _base(tmp_path, "fp16")
    read = files_fingerprint(_checkpoint(tmp_path), _model(base, "fp16"))
    assert read is not None and read["components"] == {"unet": {"w[2]": 2.0}}


def test_a_variant_sharded_beside_its_unsharded_file_is_not_read(tmp_path: Path) -> None:
    """diffusers names a variant's shard index ``NAME.safetensors.index.VARIANT.json`` and
    loads the shards where that index is there: the unsharded file is not what loads."""
    base = _base(tmp_path, "fp16")
    index = base / "unet" / "diffusion_pytorch_model.safetensors.index.fp16.json"
    index.write_text(json.dumps({"weight_map": {"w": "shard-1.safetensors"}}))
    assert files_fingerprint(_checkpoint(tmp_path), _model(base, "fp16")) is None


def _saved_run(tmp_path: Path, fingerprint: dict) -> Path:
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1, STATE_KEY: fingerprint}))
    return ckpt


def test_another_base_at_a_revision_says_the_run_had_none(tmp_path: Path) -> None:
    """Trained on a hub id at its default revision; the recipe now names another one at a
    revision: going back means unsetting model.revision too, not only model.pretrained."""
    then = {"scheme": SCHEME, "pretrained": "someone/a", "revision": None}
    ckpt = _saved_run(tmp_path, {**then, "components": {"unet": {"w[1]": 1.0}}})
    now = {"scheme": SCHEME, "pretrained": "someone/b", "revision": "v2"}
    now["components"] = {"unet": {"w[1]": 2.0}}
    for branch, says in (
        (False, "back to someone/a (no model.revision), the base"),
        (True, "set model.pretrained to someone/a (no model.revision)"),
    ):
        with pytest.raises(BaseMismatch) as caught:
            check_base_fingerprint(ckpt, now, "someone/b", "r.yaml", branch=branch, revision="v2")
        assert says in str(caught.value), str(caught.value)
