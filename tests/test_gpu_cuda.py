"""The CUDA and half-precision paths a CPU cannot run: training on the device in each mixed
precision, a LoRA over fp16 weights under bf16 autocast, and sampling on the device against
the CPU. Marked ``gpu`` and skipped where ``torch.cuda.is_available()`` is False;
``bench/gpu_check.sh`` runs them on a lent GPU (``pytest -m gpu``)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch

from dsharp.checkpoints import checkpoint_dir
from dsharp.io import read_jsonl
from dtype_checks import HalfGradRecorder, lora_grads, lora_noise_loss, unet_file_dtypes
from fake_rewards import brightness_registered

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
#: Images in [0, 1], CUDA fp32 (TF32 off) against CPU fp32, 4 DDIM steps of a tiny random
#: model: a relative change of 1e-6 in every UNet weight moves them by ~3e-6 on CPU, so 1e-3
#: is two orders of magnitude above rounding and far below a wrong draw or dtype.
FP32_ATOL = 1e-3
#: The same with the UNet's base weights in fp16 / bf16 under a LoRA, against CPU fp32: on
#: CPU fp16 differs by at most 3e-3 (mean 3e-4), bf16 by at most 2e-2 (mean 2e-3).
HALF_ATOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
HALF_MEAN = {torch.float16: 1e-3, torch.bfloat16: 5e-3}


def _train(recipe_path: Path, overrides: list[str]):
    from dsharp.engine import Trainer
    from dsharp.recipe_io import load_recipe

    with brightness_registered():
        trainer = Trainer(load_recipe(recipe_path, overrides), progress=False)
        trainer.run()
    return trainer


def _finite_rows(run: Path, scaler: bool = False) -> list[dict]:
    """The two steps' metrics, with finite losses and gradient norms. ``scaler``: fp16's
    gradient scaler starts high and skips a step whose scaled gradients overflow (a
    non-finite norm), then lowers its scale; one of the two steps may be such a step."""
    rows = read_jsonl(run / "metrics.jsonl")
    assert len(rows) == 2
    assert all(math.isfinite(row["loss"]) for row in rows), rows
    finite_norms = [math.isfinite(row["grad_norm"]) for row in rows]
    assert all(finite_norms) or (scaler and any(finite_norms)), rows
    return rows


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
def test_a_quickstart_shaped_run_trains_two_steps_on_cuda(precision, tmp_path):
    """The quickstart (dsharp-mini, the shapes reward, full fine-tuning) for two steps on the
    GPU: finite losses, and the trained UNet saved in fp32 (mixed precision keeps fp32
    master weights; fp16 adds accelerate's gradient scaler)."""
    run = tmp_path / "run"
    overrides = [f"output_dir={run}", f"train.mixed_precision={precision}"]
    overrides += ["train.max_steps=2", "train.checkpoint_every=2", "train.batch_size=2"]
    trainer = _train(RECIPES / "quickstart.yaml", [*overrides, "method.n=2"])
    assert trainer.accelerator.device.type == "cuda"
    assert {p.device.type for p in trainer.model.unet.parameters()} == {"cuda"}
    _finite_rows(run, scaler=precision == "fp16")
    assert unet_file_dtypes(checkpoint_dir(run, 2)) == {"F32"}


@pytest.mark.parametrize("weight_dtype", ["fp32", "fp16"])
def test_an_sd_run_trains_under_fp16_autocast_with_its_vae_out_of_it(
    weight_dtype, tiny_sd_dir, tmp_path
):
    """fp16 autocast runs an fp32 VAE outside autocast (``_vae_precision``) and an fp16 one
    inside it; both decode finite images for the reward, and the losses stay finite."""
    run = tmp_path / "run"
    overrides = [f"model.pretrained={tiny_sd_dir}", f"output_dir={run}"]
    overrides += ["rewards.0.name=test_brightness", f"model.weight_dtype={weight_dtype}"]
    overrides += ["train.mixed_precision=fp16", "train.max_steps=2", "train.checkpoint_every=2"]
    trainer = _train(RECIPES / "tiny" / "sft_sharpening.yaml", overrides)
    assert trainer.model.vae.dtype == {"fp32": torch.float32, "fp16": torch.float16}[weight_dtype]
    _finite_rows(run, scaler=True)
    assert unet_file_dtypes(checkpoint_dir(run, 2)) == {"F32"}


def test_a_lora_over_fp16_weights_under_bf16_autocast_gets_no_fp16_gradients(tiny_sd_dir):
    """Preflight refuses a LoRA over fp16 weights unless ``train.mixed_precision`` is fp16,
    because without autocast its gradients pass through the fp16 UNet (checked on CPU in
    ``test_gpu_requests_on_cpu.py``). CUDA's bf16 autocast runs the convolutions, matmuls and
    attention in bf16 and the norms in fp32, so no tensor on the gradient path should be
    fp16: then the refusal is needless for bf16 on CUDA. The LoRA's gradients must also
    match those over fp32 base weights (same LoRA init, same autocast)."""
    from dsharp.models import load_model

    grads = {}
    for dtype in (torch.float32, torch.float16):
        torch.manual_seed(0)  # the same LoRA init over both bases
        model = load_model(str(tiny_sd_dir), device="cuda", lora_rank=4, weight_dtype=dtype)
        with HalfGradRecorder() as recorder, torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lora_noise_loss(model)
        loss.backward()
        assert not recorder.fp16_on_grad_path, dict(recorder.fp16_on_grad_path)
        grads[dtype] = lora_grads(model)
    over_fp16 = grads[torch.float16]
    assert torch.isfinite(over_fp16).all()
    assert over_fp16.count_nonzero() > 0
    similarity = torch.nn.functional.cosine_similarity(over_fp16, grads[torch.float32], dim=0)
    assert similarity > 0.99


def test_a_lora_over_fp16_weights_trains_two_steps_under_bf16_autocast(
    tiny_sd_dir, tmp_path, monkeypatch
):
    """The run preflight refuses, with the refusal taken out: if it trains (finite losses, a
    moved fp32 LoRA), the refusal can be narrowed to ``train.mixed_precision: no``."""
    from safetensors.torch import load_file

    from dsharp import preflight

    monkeypatch.setattr(preflight, "check_training_precision", lambda recipe: None)
    run = tmp_path / "run"
    overrides = [f"model.pretrained={tiny_sd_dir}", f"output_dir={run}"]
    overrides += ["rewards.0.name=test_brightness", "model.weight_dtype=fp16"]
    overrides += ["model.lora_rank=4", "train.mixed_precision=bf16", "train.lr=1e-3"]
    overrides += ["train.max_steps=2", "train.checkpoint_every=2"]
    _train(RECIPES / "tiny" / "sft_sharpening.yaml", overrides)
    _finite_rows(run)
    saved = load_file(str(next(checkpoint_dir(run, 2).rglob("pytorch_lora_weights.safetensors"))))
    assert {t.dtype for t in saved.values()} == {torch.float32}
    lora_b = [t for key, t in saved.items() if "lora_B" in key]
    assert any(t.abs().max() > 0 for t in lora_b)  # gaussian init starts B at zero


@contextlib.contextmanager
def _no_tf32():
    """Full fp32 convolutions and matmuls on the GPU, as on the CPU (cuDNN's default is TF32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _images(folder: Path, device: str, weight_dtype: torch.dtype = torch.float32):
    from dsharp.models import load_model
    from dsharp.sampling import sample

    torch.manual_seed(0)  # the same LoRA init on both devices
    model = load_model(str(folder), device=device, lora_rank=4, weight_dtype=weight_dtype)
    model.unet.eval()
    images = sample(model, ["a cat", "a red dog"], seeds=[0, 1], steps=4, guidance=5.0)
    assert images.device.type == torch.device(device).type
    return images.float().cpu()


@pytest.mark.parametrize("family", ["tiny_sd_dir", "tiny_sdxl_dir"])
def test_sampling_on_cuda_matches_the_cpu(family, request):
    """Same seeds, same weights: the CUDA images equal the CPU's within ``FP32_ATOL`` (TF32
    off), so the initial noise is drawn as on the CPU and nothing is left on the wrong
    device; with fp16 or bf16 base weights (a LoRA run's sampling) within ``HALF_ATOL``."""
    folder = request.getfixturevalue(family)
    cpu = _images(folder, "cpu")
    with _no_tf32():
        cuda = _images(folder, "cuda")
    assert (cuda - cpu).abs().max() < FP32_ATOL
    for dtype in (torch.float16, torch.bfloat16):
        half = _images(folder, "cuda", dtype)
        assert torch.isfinite(half).all()
        diff = (half - cpu).abs()
        assert diff.max() < HALF_ATOL[dtype], (dtype, float(diff.max()))
        assert diff.mean() < HALF_MEAN[dtype], (dtype, float(diff.mean()))
