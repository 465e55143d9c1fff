"""The base fingerprint covers the text encoder(s) as well as the UNet (not the VAE), says
what changed (folder files, revision, or neither told apart), keeps checking checkpoints
saved with the UNet-only format, and refuses from the base's files before the base loads
where they can be read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.base_fingerprint import (
    STATE_KEY,
    UNET_SCHEME,
    BaseMismatch,
    base_fingerprint,
    check_base_fingerprint,
    fingerprint_difference,
)
from dsharp.cli import app
from dsharp.config import load_recipe, save_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "rlhf_sharpening.yaml"
SMALL = ["train.batch_size=1", "method.n=2", "method.m=1", "method.infer_steps=2"]
STEP = Path("checkpoints") / "step-000001"


@pytest.fixture(scope="module")
def other_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD of the same shapes as ``tiny_sd_dir``, other random weights."""
    from dsharp.testing import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("models") / "other-sd", seed=1)


def _train(base: Path, run: Path, lora_rank: int) -> Path:
    args = [f"model.pretrained={base}", f"output_dir={run}", "train.max_steps=1"]
    args += [f"model.lora_rank={lora_rank}", *SMALL, "--no-progress"]
    result = CliRunner().invoke(app, ["train", str(RECIPE), *args])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def trained(tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA run on ``tiny_sd_dir``, one step; tests copy it before changing it."""
    return _train(tiny_sd_dir, tmp_path_factory.mktemp("runs") / "run", 2)


def _copy_run(trained: Path, to: Path, base: Path) -> Path:
    """``trained`` copied to ``to`` with its recipe.yaml naming ``base`` (as a user might)."""
    shutil.copytree(trained, to)
    recipe = load_recipe(to / "recipe.yaml", overrides=[f"model.pretrained={base}"])
    recipe.output_dir = str(to)
    save_recipe(recipe, to / "recipe.yaml")
    return to


def _swapped(base: Path, donor: Path, component: str, to: Path) -> Path:
    """``base`` with ``component``'s folder taken from ``donor`` (same shapes)."""
    shutil.copytree(base, to)
    shutil.rmtree(to / component)
    shutil.copytree(donor / component, to / component)
    return to


def _sample(run: Path, tmp_path: Path) -> tuple[int, list[str]]:
    args = ["sample", "--checkpoint", str(run), "-p", "a", "--steps", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "png")])
    lines = [x for x in result.stderr.strip().splitlines() if x.strip() and "Loading" not in x]
    return result.exit_code, lines


def test_a_base_with_the_same_unet_and_another_text_encoder_is_refused(
    trained: Path, tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    base = _swapped(tiny_sd_dir, other_sd_dir, "text_encoder", tmp_path / "base")
    run = _copy_run(trained, tmp_path / "run", base)
    code, lines = _sample(run, tmp_path)
    assert code == 1, lines
    (line,) = lines
    assert line.startswith(f"error: {run}: its checkpoint step-000001 was trained on other base")
    assert "UNet" not in line and " sampled text encoder" in line, line
    assert line.endswith(
        f"set model.pretrained back to {tiny_sd_dir}, the base the run was trained from"
    )
    assert not (tmp_path / "png").exists()


def test_a_base_with_another_vae_loads(
    trained: Path, tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    """A fine-tuned decoder of the same latent space (sd-vae-ft-mse, sdxl-vae-fp16-fix) is a
    sound choice for a trained UNet: the VAE is not part of the fingerprint."""
    base = _swapped(tiny_sd_dir, other_sd_dir, "vae", tmp_path / "base")
    run = _copy_run(trained, tmp_path / "run", base)
    code, lines = _sample(run, tmp_path)
    assert code == 0, lines
    assert len(list((tmp_path / "png").glob("0000-*.png"))) == 1


def test_the_sdxl_second_text_encoder_is_in_the_fingerprint(
    tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    from dsharp.models import load_model
    from dsharp.testing import make_tiny_sdxl

    other = make_tiny_sdxl(tmp_path / "other-xl", seed=1)
    base = base_fingerprint(load_model(str(tiny_sdxl_dir)))
    assert set(base["components"]) == {"unet", "text_encoder", "text_encoder_2"}
    swapped = _swapped(tiny_sdxl_dir, other, "text_encoder_2", tmp_path / "xl")
    difference = fingerprint_difference(base, base_fingerprint(load_model(str(swapped))))
    assert difference is not None and "UNet" not in difference, difference
    count = len(base["components"]["text_encoder_2"])
    assert f" of {count} sampled second text encoder weights differ, e.g. " in difference


def test_a_checkpoint_with_the_unet_only_fingerprint_is_checked_on_its_unet(
    trained: Path, tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    """The format checkpoints were saved with before: only its UNet values, compared."""
    swapped = _swapped(tiny_sd_dir, other_sd_dir, "text_encoder", tmp_path / "base")
    for name, base in (("encoder", swapped), ("other", other_sd_dir)):
        run = _copy_run(trained, tmp_path / name, base)
        state_file = run / STEP / "trainer_state.json"
        state = json.loads(state_file.read_text())
        unet = state[STATE_KEY]["components"]["unet"]
        state[STATE_KEY] = {"scheme": UNET_SCHEME, "pretrained": str(tiny_sd_dir), "values": unet}
        state_file.write_text(json.dumps(state))
        if name == "encoder":  # same UNet, other text encoder: v1 cannot tell, loads
            code, lines = _sample(run, tmp_path / name)
            assert code == 0 and not [x for x in lines if not x.startswith("sample")], lines
        else:
            code, lines = _sample(run, tmp_path / name)
            assert code == 1 and len(lines) == 1, lines
            assert " of 64 sampled UNet weights differ, e.g. " in lines[0]


def _saved(tmp_path: Path, fingerprint: dict) -> Path:
    ckpt = tmp_path / "run" / STEP
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1, STATE_KEY: fingerprint}))
    return ckpt


def _refusal(ckpt: Path, now: dict, pretrained: str, revision: str | None) -> str:
    with pytest.raises(BaseMismatch) as caught:
        check_base_fingerprint(ckpt, now, pretrained, "recipe.yaml", revision=revision)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_changed_revision_of_a_hub_id_is_named_as_such(
    tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    from dsharp.models import load_model

    hub = "someone/tiny-sd"
    then = base_fingerprint(load_model(str(tiny_sd_dir)), hub, None)
    now = base_fingerprint(load_model(str(other_sd_dir)), hub, "v2")
    ckpt = _saved(tmp_path, then)
    message = _refusal(ckpt, now, hub, "v2")
    assert message.startswith(
        f"{tmp_path / 'run'}: its checkpoint step-000001 was trained on other base weights than "
        f"{hub} (revision v2) holds now, the base model recipe.yaml names ("
    ), message
    assert message.endswith(
        "): the run was trained on the default revision of it; remove model.revision"
    )
    assert "replaced" not in message

    ckpt.parent.parent.rename(tmp_path / "first")
    ckpt = _saved(tmp_path, {**then, "revision": "v1"})
    message = _refusal(ckpt, now, hub, None)
    assert f"than {hub} holds now, " in message
    assert message.endswith(
        "): the run was trained on revision v1 of it; set model.revision back to v1"
    )

    # the same revision (a branch moved on), or a UNet-only fingerprint (no revision kept):
    # not told apart, said neutrally
    shutil.rmtree(tmp_path / "run")
    unet_only = {"scheme": UNET_SCHEME, "pretrained": hub, "values": then["components"]["unet"]}
    for saved in ({**then, "revision": "v2"}, unet_only):
        ckpt = _saved(tmp_path, saved)
        message = _refusal(ckpt, now, hub, "v2")
        assert message.endswith(
            "): the weights under that name changed since the run trained; set "
            "model.pretrained and model.revision to the weights the run was trained from"
        ), message
        shutil.rmtree(tmp_path / "run")


def test_a_local_folder_ignores_the_revision_in_the_message(
    tiny_sd_dir: Path, other_sd_dir: Path, tmp_path: Path
) -> None:
    from dsharp.models import load_model

    then = base_fingerprint(load_model(str(tiny_sd_dir)), str(other_sd_dir), "v1")
    now = base_fingerprint(load_model(str(other_sd_dir)), str(other_sd_dir), None)
    message = _refusal(_saved(tmp_path, then), now, str(other_sd_dir), "main")
    assert f"than {other_sd_dir} holds now, " in message
    assert message.endswith(
        "that model's files were replaced since the run trained; restore them, or set "
        "model.pretrained to a copy of them"
    )


def _no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a base model fails: what is said must come before any load."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr("dsharp.builders.build_model", refuse)
    monkeypatch.setattr("dsharp.engine.build_model", refuse)


def test_other_base_weights_are_refused_before_the_base_loads(
    trained: Path,
    tiny_sd_dir: Path,
    other_sd_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = _copy_run(trained, tmp_path / "run", other_sd_dir)
    _no_load(monkeypatch)
    code, lines = _sample(run, tmp_path)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {run}: its checkpoint step-000001 was trained on other")
    assert lines[0].endswith(
        f"set model.pretrained back to {tiny_sd_dir}, the base the run was trained from"
    )

    args = [f"model.pretrained={other_sd_dir}", "model.lora_rank=2", *SMALL, f"output_dir={run}"]
    args += ["train.max_steps=2", "train.resume=latest", "--no-progress"]
    result = CliRunner().invoke(app, ["train", str(RECIPE), *args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: train.resume: {run}: its checkpoint step-000001 ")

    monkeypatch.undo()  # merge averages full fine-tuning runs: two are trained first
    good = _train(tiny_sd_dir, tmp_path / "good", 0)
    moved = _copy_run(_train(other_sd_dir, tmp_path / "full", 0), tmp_path / "moved", tiny_sd_dir)
    _no_load(monkeypatch)
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["merge", str(good), str(moved), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "trained on other base weights" in result.stderr and not out.exists()


def test_the_files_read_are_those_the_load_reads_or_none(
    trained: Path, tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsharp.base_files import files_fingerprint

    ckpt = trained / STEP
    model = load_recipe(trained / "recipe.yaml").model
    saved = json.loads((ckpt / "trainer_state.json").read_text())[STATE_KEY]
    read = files_fingerprint(ckpt, model)
    assert read is not None and read["components"] == saved["components"]  # fp32: exact

    # sharded beside the file, .bin weights, or a name the file lacks: not read
    base = tmp_path / "base"
    shutil.copytree(tiny_sd_dir, base)
    (base / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text("{}")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    encoder = state[STATE_KEY]["components"]["text_encoder"]
    encoder["missing.weight[1]"] = 0.5
    mine = tmp_path / "ckpt"
    shutil.copytree(ckpt, mine)
    (mine / "trainer_state.json").write_text(json.dumps(state))
    assert files_fingerprint(mine, model.model_copy(update={"pretrained": str(base)})) is None
    (base / "text_encoder" / "model.safetensors").rename(base / "text_encoder" / "x.bin")
    assert files_fingerprint(ckpt, model.model_copy(update={"pretrained": str(base)})) is None

    # a hub id: from the cache only where the load reads that snapshot too
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-sd"
    shutil.copytree(tiny_sd_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = model.model_copy(update={"pretrained": "someone/tiny-sd"})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert files_fingerprint(ckpt, hub) is None  # online: main may have moved on the hub
    pinned = files_fingerprint(ckpt, hub.model_copy(update={"revision": commit}))
    assert pinned is not None and pinned["components"] == saved["components"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = files_fingerprint(ckpt, hub)
    assert offline is not None and offline["components"] == saved["components"]
    assert files_fingerprint(ckpt, hub.model_copy(update={"revision": "v2"})) is None
