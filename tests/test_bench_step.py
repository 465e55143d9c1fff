"""bench/sharpening_step.py's public-code arm computes what the paper's code computes (the
same conditioning as dsharp's arm), on a tiny SDXL folder on the CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from dsharp.methods.base import Batch
from dsharp.models import load_model
from spying import record_calls

BENCH = Path(__file__).resolve().parents[1] / "bench" / "sharpening_step.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("sharpening_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_public_code_arm_conditions_sdxl_on_the_image_size_and_leaves_backward_out(
    tiny_sdxl_dir, monkeypatch
):
    """It encoded prompts for a 0 x 0 image (SDXL's size conditioning zero, unlike dsharp's
    arm), and back-propagated inside the caller's autocast."""
    bench = _bench_module()
    model = load_model(str(tiny_sdxl_dir))
    calls = record_calls(monkeypatch, model, "encode_prompt")
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = Batch(prompts=["a cat"], cond_prompts=["a cat"], images=images)
    loss = bench.public_code_step(model, batch, 2, 2, 40, torch.Generator().manual_seed(0))
    assert [call.args[1:] for call in calls] == [(64, 64)]
    assert all(p.grad is None for p in model.unet.parameters())  # the caller's to run
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())


def test_timing_waits_for_the_chosen_cuda_device_and_leaves_the_resident_weights_out(
    monkeypatch,
):
    """Without a GPU the CUDA calls are recorded fakes. ``torch.cuda.synchronize()`` with no
    argument waits for the current device (cuda:0), not the ``--device cuda:1`` that runs the
    step; and the peak counted the weights resident in both arms (10 GiB here), which pulled
    the memory ratio toward 1."""
    bench = _bench_module()
    gib = 2**30
    seen: list[tuple[str, object]] = []

    def fake(name, value=None):
        def call(device=None):
            seen.append((name, device))
            return value

        return call

    monkeypatch.setattr(torch.cuda, "synchronize", fake("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", fake("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", fake("allocated", 10 * gib))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", fake("peak", 13 * gib))
    calls = []
    device = torch.device("cuda", 1)
    _, peak = bench.timed(lambda: calls.append(1), 2, device)
    assert len(calls) == 3  # one warm-up and two timed calls
    assert peak == 3.0
    assert {name for name, _ in seen} >= {"synchronize", "reset", "peak"}
    assert all(arg == device for _, arg in seen)
