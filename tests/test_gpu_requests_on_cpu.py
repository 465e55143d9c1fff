"""What a GPU-only request does on a machine without the GPU it names, and the dtypes a
CPU run keeps: the parts of the CUDA and half-precision paths that a CPU can check
(``test_gpu_cuda.py`` holds the ones that need the device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_results import invoke
from dsharp.checkpoints import checkpoint_dir
from dsharp.devices import pick_device
from dtype_checks import unet_file_dtypes
from fake_rewards import brightness_registered

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
QUICKSTART = RECIPES / "quickstart.yaml"


def _one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_a_cuda_index_the_machine_lacks_is_refused_before_anything_loads(monkeypatch):
    """``--device cuda:1`` on a one-GPU machine passed, and failed only at the first tensor
    moved there ("invalid device ordinal"), after the model had loaded."""
    _one_gpu(monkeypatch)
    with pytest.raises(ValueError) as caught:
        pick_device("cuda:1", "--device")
    assert str(caught.value) == "--device cuda:1: this machine has 1 CUDA device(s), cuda:0"
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    assert pick_device("cuda") == torch.device("cuda")


def test_sample_with_a_cuda_index_the_machine_lacks_exits_with_one_line(
    monkeypatch, tiny_sd_dir, tmp_path
):
    _one_gpu(monkeypatch)
    out = tmp_path / "samples"
    args = ["sample", "--model", tiny_sd_dir, "-p", "a cat", "--out", out, "--device", "cuda:3"]
    result = invoke(args)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --device cuda:3: this machine has 1 CUDA device(s), cuda:0"
    )
    assert not out.exists()


def test_sample_on_cuda_without_cuda_exits_with_one_line(monkeypatch, tiny_sd_dir):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke(["sample", "--model", tiny_sd_dir, "-p", "a cat", "--device", "cuda"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --device cuda: CUDA is not available here (use cpu or auto)"
    )


def test_train_in_fp16_without_cuda_is_one_error_line_and_no_plan_line(monkeypatch, tmp_path):
    """The plan line ("training: ... fp16 autocast ...") was printed before the refusal, as
    if the run had started."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    result = invoke(
        ["train", QUICKSTART, "train.mixed_precision=fp16", f"output_dir={out}", "--no-progress"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: train.mixed_precision: fp16 needs a CUDA GPU; use bf16 or no on CPU"
    )
    assert not out.exists()


def test_bf16_autocast_over_fp16_weights_without_cuda_is_one_error_line(
    monkeypatch, tiny_sd_dir, tmp_path
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = RECIPES / "tiny" / "sft_sharpening.yaml"
    args = [f"model.pretrained={tiny_sd_dir}", f"output_dir={tmp_path / 'run'}"]
    args += ["model.weight_dtype=fp16", "train.mixed_precision=bf16"]
    result = invoke(["train", recipe, *args, "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: train.mixed_precision: bf16 autocast over model.weight_dtype fp16 fails on CPU; "
        "set model.weight_dtype: bf16 (or fp32)"
    ]


def test_bf16_autocast_over_bf16_frozen_parts_saves_the_trained_unet_in_fp32(tiny_sd_dir, tmp_path):
    """Mixed precision keeps the trained weights in fp32: the checkpoint is fp32 whatever
    ``model.weight_dtype`` the frozen parts (text encoder, VAE) were held in."""
    from dsharp.engine import Trainer
    from dsharp.recipe_io import load_recipe

    overrides = [
        f"model.pretrained={tiny_sd_dir}",
        f"output_dir={tmp_path / 'run'}",
        "rewards.0.name=test_brightness",
        "model.weight_dtype=bf16",
        "train.mixed_precision=bf16",
        "train.max_steps=1",
        "train.checkpoint_every=1",
        "train.batch_size=1",
        "method.n=2",
    ]
    with brightness_registered():
        recipe = load_recipe(RECIPES / "tiny" / "sft_sharpening.yaml", overrides)
        trainer = Trainer(recipe, progress=False)
        trainer.run()
    assert trainer.model.text_encoder.dtype == torch.bfloat16
    assert unet_file_dtypes(checkpoint_dir(tmp_path / "run", 1)) == {"F32"}


def test_a_lora_over_fp16_weights_without_autocast_gets_fp16_gradients(tiny_sd_dir):
    """Why preflight refuses ``model.weight_dtype: fp16`` + LoRA with
    ``train.mixed_precision: no``: the LoRA's gradients pass through the fp16 UNet's
    activations (fp16 gradients, no scaler), where an fp32 base gives none. Whether bf16
    autocast on CUDA avoids them is ``test_gpu_cuda.py``'s to check: CPU autocast fails on
    it outright (mixed dtype in the norms), which check_runtime refuses."""
    from dsharp.models import load_model
    from dtype_checks import HalfGradRecorder, lora_noise_loss

    found = {}
    for dtype in (torch.float16, torch.float32):
        model = load_model(str(tiny_sd_dir), lora_rank=4, weight_dtype=dtype)
        with HalfGradRecorder() as recorder:
            lora_noise_loss(model).backward()
        found[dtype] = recorder.fp16_on_grad_path
    assert {"linear", "conv2d"} <= set(found[torch.float16])
    assert not found[torch.float32]


class _ConvDtypes(torch.overrides.TorchFunctionMode):
    """The dtypes of the convolutions' results while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        if func is torch.nn.functional.conv2d:
            self.seen.add(out.dtype)
        return out


@pytest.mark.parametrize(
    ("autocast", "vae_runs_in"),
    [(torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16)],
)
def test_an_fp32_vae_decodes_outside_fp16_autocast_only(tiny_sdxl_dir, autocast, vae_runs_in):
    """SDXL's VAE is kept fp32 (its fp16 activations overflow): under a training step's fp16
    autocast it runs with autocast off, in fp32; bf16 autocast, with fp32's range, stays on.
    The CPU's autocast takes both dtypes, so the branch CUDA's fp16 training takes runs here."""
    from dsharp.models import load_model

    model = load_model(str(tiny_sdxl_dir), weight_dtype=torch.float16)
    assert model.vae.dtype == torch.float32
    latents = torch.randn(1, *model.latent_shape(64, 64), generator=torch.Generator())
    with torch.autocast("cpu", dtype=autocast), _ConvDtypes() as convs:
        images = model.decode(latents)
    assert convs.seen == {vae_runs_in}
    assert torch.isfinite(images).all()
