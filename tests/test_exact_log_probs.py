"""Log-probs of DDPO / D3PO under bf16 autocast: their value comes from a float32 UNet pass
(:mod:`dsharp.methods.exact_log_probs`), so that a ratio to the sampled (or reference)
log-prob moves with the weights, not with bf16 rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.io import read_jsonl
from dsharp.methods.base import Batch
from dsharp.methods.d3po import D3PO
from dsharp.methods.ddpo import DDPO, sample_round, transition_log_probs
from dsharp.methods.exact_log_probs import exact_noise, needs_float32_pass
from dsharp.models import load_model
from fake_rewards import brightness_registered

MINI = Path(__file__).resolve().parent.parent / "recipes" / "mini"
CLIP_RANGE = 1e-4  # recipes/mini/ddpo.yaml, the authors' value


def _run(recipe: str, tiny_sd_dir: Path, out: Path, precision: str, *extra: str) -> list[dict]:
    args = [
        f"model.pretrained={tiny_sd_dir}",
        "model.lora_rank=4",
        f"output_dir={out}",
        "rewards.0.name=test_brightness",
        "method.infer_steps=4",
        "train.batch_size=2",
        "train.checkpoint_every=0",
        "train.seed=1",
        f"train.mixed_precision={precision}",
        "--no-progress",
        *extra,
    ]
    with brightness_registered():
        result = CliRunner().invoke(app, ["train", str(MINI / f"{recipe}.yaml"), *args])
    assert result.exit_code == 0, result.output
    return read_jsonl(out / "metrics.jsonl")


def _ddpo_run(tiny_sd_dir: Path, out: Path, precision: str) -> list[dict]:
    """Two steps of DDPO-IS with LoRA: step 1 samples a round and updates the weights, step 2
    is the round's second inner epoch, whose ratio compares the updated weights with the
    sampled log-probs."""
    extra = ["method.n=2", "method.options.train_timestep_fraction=1.0", "train.max_steps=2"]
    return _run("ddpo", tiny_sd_dir, out, precision, *extra)


def test_ddpo_bf16_ratio_follows_the_weights_not_the_rounding(tiny_sd_dir, tmp_path):
    """Step 2's ratio compares weights one AdamW step (lr 3e-5) apart. In float32 that moves
    the log-probs by ~1e-4 (approx_kl 2.6e-8 on this model); a bf16 UNet output moved them by
    its rounding, amplified by 1/std at the small-std steps (approx_kl 8e-5, 15 of 16 ratios
    clipped). bf16's own update differs from float32's by its gradients' rounding (~1%), so
    its approx_kl stays within a factor 2 of float32's; rounding noise is >1000x above."""
    exact = _ddpo_run(tiny_sd_dir, tmp_path / "fp32", "no")
    rows = _ddpo_run(tiny_sd_dir, tmp_path / "bf16", "bf16")
    assert [r["new_round"] for r in rows] == [1.0, 0.0]
    # step 1: the sampling weights, every ratio 1 up to float32 noise (well inside the clip)
    assert rows[0]["approx_kl"] < 0.5 * CLIP_RANGE**2
    assert 0 < rows[1]["approx_kl"] < 2 * exact[1]["approx_kl"], (rows, exact)


def test_fp32_log_probs_false_keeps_the_autocast_pass_and_its_rounding(tiny_sd_dir, tmp_path):
    """The opt-out (``method.options.fp32_log_probs: false``) is the faster path without the
    float32 passes: its ratio carries bf16 rounding again, far above float32's (8e-5 against
    2.6e-8 on this model)."""
    extra = ["method.n=2", "method.options.train_timestep_fraction=1.0", "train.max_steps=2"]
    exact = _ddpo_run(tiny_sd_dir, tmp_path / "fp32", "no")
    off = ["method.options.fp32_log_probs=false", *extra]
    rows = _run("ddpo", tiny_sd_dir, tmp_path / "off", "bf16", *off)
    assert rows[1]["approx_kl"] > 100 * exact[1]["approx_kl"], (rows[1], exact[1])


@pytest.mark.parametrize("method", [DDPO, D3PO])
def test_fp32_log_probs_must_be_true_or_false(method):
    import inspect

    settings = {
        name: p.default
        for name, p in inspect.signature(method.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    method.check_settings(settings)  # the defaults pass
    with pytest.raises(ValueError, match=r"method\.options\.fp32_log_probs: expected true or"):
        method.check_settings({**settings, "fp32_log_probs": "yes"})


@pytest.fixture(scope="module")
def tiny_lora(tiny_sd_dir):
    return load_model(str(tiny_sd_dir), lora_rank=4)


def test_a_float32_pass_is_needed_only_under_reduced_precision_autocast(tiny_lora, tiny_sd_dir):
    assert not needs_float32_pass(tiny_lora)  # float32 as it is: the runs stay bit for bit
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert needs_float32_pass(tiny_lora)
        rounded = load_model(str(tiny_sd_dir), lora_rank=4, weight_dtype=torch.bfloat16)
        assert not needs_float32_pass(rounded)  # bf16 base weights: no float32 to recover


def _brightness(images, prompts, metadata):
    return images.tensor.float().mean((1, 2, 3)), {}


def _bf16_round(model):
    """A DDPO round of 2 prompts x 2 samples, 4 steps, sampled under bf16 autocast, and the
    (row, step) indices of its trainable transitions."""
    side = model.default_resolution
    method = DDPO(model, _brightness, side, side, infer_steps=4)
    prompts = ["a red square", "a blue circle"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rnd = sample_round(
            model,
            _brightness,
            Batch(prompts=prompts, cond_prompts=prompts),
            n=2,
            steps=4,
            guidance=5.0,
            eta=1.0,
            height=side,
            width=side,
            generator=torch.Generator().manual_seed(1),
        )
    steps = method.trainable_steps
    rows, step_idx = torch.arange(len(rnd)).repeat_interleave(len(steps)), steps.repeat(len(rnd))
    return method, rnd, rows, step_idx


def test_d3po_bf16_log_ratio_to_the_reference_is_float32_s(tiny_lora):
    """D3PO's ``log pi_theta - log pi_ref`` of trained LoRA weights (B ~1e-3) is at most
    ~6e-4 here in float32; bf16 passes put up to 3e-2 of rounding into it (the band is
    log 1.1 = 0.095; on dsharp-mini the rounding crossed it: clipfrac 1.0 and 0.5 where
    float32 has 0). Both log-probs are now float32 passes: equal to float32's up to the
    float32 noise of another batch layout (0 here)."""
    model = tiny_lora
    method, rnd, rows, step_idx = _bf16_round(model)
    generator = torch.Generator().manual_seed(0)
    trained = [p for n, p in model.unet.named_parameters() if "lora_B" in n]
    saved = [p.detach().clone() for p in trained]

    def log_ratio(precision: torch.dtype) -> torch.Tensor:
        kwargs = dict(guidance=5.0, eta=1.0)
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=precision, enabled=precision != torch.float32),
        ):
            policy = transition_log_probs(model, method.tables, rnd, rows, step_idx, **kwargs)
            with model.reference():
                ref = transition_log_probs(model, method.tables, rnd, rows, step_idx, **kwargs)
        return policy - ref

    try:
        with torch.no_grad():
            for p in trained:
                p.copy_(1e-3 * torch.randn(p.shape, generator=generator))
        exact = log_ratio(torch.float32)
        rounded = log_ratio(torch.bfloat16)
    finally:
        with torch.no_grad():
            for p, value in zip(trained, saved, strict=True):
                p.copy_(value)
    assert exact.abs().max() > 1e-4  # the trained weights do move the log-probs
    assert (rounded - exact).abs().max() < 1e-5


def test_bf16_log_prob_gradient_is_taken_at_the_float32_mean(tiny_lora):
    """d lp / d theta = mean((x_prev - mean) / std^2 * d mean / d theta): the coefficient is
    evaluated at the float32 pass's mean. At the bf16 mean its error is ~std at the small-std
    steps, as large as ``x_prev - mean`` itself: the gradient was off by 21% on this model
    (95% on dsharp-mini), against the bf16 Jacobian's own few percent (5%; 1.4%)."""
    model = tiny_lora
    method, rnd, rows, step_idx = _bf16_round(model)
    params = model.trainable_parameters()

    def gradient(precision: torch.dtype) -> torch.Tensor:
        for p in params:
            p.grad = None
        with torch.autocast("cpu", dtype=precision, enabled=precision != torch.float32):
            log_prob = transition_log_probs(
                model, method.tables, rnd, rows, step_idx, guidance=5.0, eta=1.0, unet=model.unet
            )
        log_prob.sum().backward()
        return torch.cat([p.grad.flatten() for p in params])

    exact = gradient(torch.float32)
    rounded = gradient(torch.bfloat16)
    for p in params:
        p.grad = None
    assert (rounded - exact).norm() < 0.1 * exact.norm()


def test_exact_noise_keeps_the_value_and_takes_the_gradient_of_the_rounded_pass():
    weight = torch.tensor([2.0, 3.0], requires_grad=True)
    value = torch.tensor([1.25, -0.5])
    rounded = weight * torch.tensor([10.0, 100.0])  # its value differs; only d/dweight counts
    out = exact_noise(value, rounded)
    assert torch.equal(out, value)
    out.sum().backward()
    assert torch.equal(weight.grad, torch.tensor([10.0, 100.0]))
    assert exact_noise(value, None) is value
