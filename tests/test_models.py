"""Model adapters on tiny random SD / SDXL folders saved and loaded like real ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsharp.models import Conditioning, DiffusionModel, load_model, loading
from spying import record_calls

PROMPTS = ["a red cube", "the cat on a mat"]


def _noise_inputs(model: DiffusionModel, batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *model.latent_shape(64, 64), generator=gen)
    t = torch.tensor([999, 400][:batch])
    return x, t, model.encode_prompt(PROMPTS[:batch], 64, 64)


def _eps(model: DiffusionModel, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.predict_noise(*inputs)


def _perturb(params, scale: float = 0.05, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen).to(p.dtype))


# -- loading ------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture,family", [("tiny_sd_dir", "sd"), ("tiny_sdxl_dir", "sdxl")])
def test_load_detects_family_and_geometry(request, fixture, family):
    model = load_model(str(request.getfixturevalue(fixture)))
    assert model.family == family
    assert model.default_resolution == 64
    assert model.latent_shape(64, 96) == (4, 8, 12)
    assert model.num_train_timesteps == 1000
    with pytest.raises(ValueError, match="multiple of 8"):
        model.latent_shape(60, 64)
    with pytest.raises(ValueError, match="not 'sdxl'|not 'sd'"):
        load_model(
            str(request.getfixturevalue(fixture)), family="sd" if family == "sdxl" else "sdxl"
        )


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        load_model(str(tmp_path))
    with pytest.raises(ValueError, match="family must be one of"):
        load_model(str(tmp_path), family="flux")
    monkeypatch.setattr(loading, "assets_dir", lambda: tmp_path / "assets")
    with pytest.raises(FileNotFoundError, match="embedded model 'dsharp-mini' is not built"):
        load_model("dsharp-mini")


def test_resolve_embedded_name(tmp_path, monkeypatch):
    folder = tmp_path / "assets" / "dsharp-mini"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    monkeypatch.setattr(loading, "assets_dir", lambda: tmp_path / "assets")
    assert loading.resolve_pretrained("dsharp-mini") == str(folder)
    assert loading.resolve_pretrained("org/some-model") == "org/some-model"


def test_sd_conditioning_matches_pipeline(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    model = load_model(str(tiny_sd_dir))
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    cond = model.encode_prompt(PROMPTS, 64, 64)
    neg = model.encode_negative(2, 64, 64)
    ref, ref_neg = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    assert cond.prompt_embeds.shape == (2, 77, 32) and cond.added == {}
    torch.testing.assert_close(cond.prompt_embeds, ref, rtol=0, atol=0)
    torch.testing.assert_close(neg.prompt_embeds, ref_neg)


def test_sdxl_conditioning_matches_pipeline(tiny_sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    model = load_model(str(tiny_sdxl_dir))
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, add_watermarker=False)
    cond = model.encode_prompt(PROMPTS, 64, 80)
    neg = model.encode_negative(2, 64, 80)
    embeds, neg_embeds, pooled, neg_pooled = pipe.encode_prompt(PROMPTS, device="cpu")
    assert cond.prompt_embeds.shape == (2, 77, 64)
    torch.testing.assert_close(cond.prompt_embeds, embeds, rtol=0, atol=0)
    torch.testing.assert_close(cond.added["text_embeds"], pooled, rtol=0, atol=0)
    assert cond.added["time_ids"].tolist() == [[64, 80, 0, 0, 64, 80]] * 2
    # force_zeros_for_empty_prompt: the pipeline's negative conditioning is all zeros
    assert pipe.config.force_zeros_for_empty_prompt
    torch.testing.assert_close(neg.prompt_embeds, neg_embeds, rtol=0, atol=0)
    torch.testing.assert_close(neg.added["text_embeds"], neg_pooled, rtol=0, atol=0)
    assert neg.added["time_ids"].tolist() == cond.added["time_ids"].tolist()


def test_sdxl_negative_without_force_zeros_encodes_empty(tiny_sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    model = load_model(str(tiny_sdxl_dir))
    model.pipeline_config["force_zeros_for_empty_prompt"] = False
    pipe = StableDiffusionXLPipeline.from_pretrained(
        tiny_sdxl_dir, add_watermarker=False, force_zeros_for_empty_prompt=False
    )
    neg = model.encode_negative(2, 64, 64)
    _, neg_embeds, _, neg_pooled = pipe.encode_prompt(PROMPTS, device="cpu")
    assert neg_embeds.abs().sum() > 0
    # one cached row of "" repeated vs the pipeline's batch of "": equal up to float rounding
    torch.testing.assert_close(neg.prompt_embeds, neg_embeds)
    torch.testing.assert_close(neg.added["text_embeds"], neg_pooled)


def test_vae_encode_decode_shapes(tiny_sd_dir):
    model = load_model(str(tiny_sd_dir))
    images = torch.rand(2, 3, 64, 64)
    latents = model.encode_images(images, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    decoded = model.decode(latents)
    assert decoded.shape == (2, 3, 64, 64)
    assert decoded.min() >= 0 and decoded.max() <= 1
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode_images(torch.rand(3, 64, 64))


def test_a_vae_kept_in_fp32_runs_in_fp32_under_a_training_steps_fp16_autocast(tiny_sdxl_dir):
    """Training steps run under train.mixed_precision's autocast; SDXL's VAE is kept fp32
    (force_upcast) because fp16 overflows in it. Latents far out of fp16's range stand in
    for that overflow: in fp32 they decode to finite images, in fp16 to NaN."""
    model = load_model(str(tiny_sdxl_dir), weight_dtype=torch.float16)
    assert model.vae.dtype == torch.float32 and model.text_encoder.dtype == torch.float16
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    outside = model.decode(latents), model.decode(latents * 1e6)
    encoded = model.encode_images(images, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.float16):
        inside = model.decode(latents), model.decode(latents * 1e6)
        again = model.encode_images(images, generator=torch.Generator().manual_seed(2))
    assert not outside[1].isnan().any() and not inside[1].isnan().any()
    assert torch.equal(inside[0], outside[0]) and torch.equal(inside[1], outside[1])
    assert torch.equal(again, encoded)


def test_predict_noise_checks_batch(tiny_sd_dir):
    model = load_model(str(tiny_sd_dir))
    x, t, cond = _noise_inputs(model)
    assert _eps(model, (x, t, cond)).shape == x.shape
    with pytest.raises(ValueError, match="batch mismatch"):
        model.predict_noise(x, t, cond.index(slice(0, 1)))


def _save_pixel_space_model(folder: Path) -> Path:
    """A diffusers folder without a VAE whose UNet works on pixels (the mini layout)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from dsharp.testing.tiny import _text_config, make_tiny_scheduler, make_tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
    )
    pipe = StableDiffusionPipeline(
        vae=None,
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def test_folder_without_vae_is_pixel_space_mini(tmp_path):
    model = load_model(str(_save_pixel_space_model(tmp_path / "mini")))
    assert model.family == "mini"
    assert model.default_resolution == 16
    assert model.latent_shape(16, 24) == (3, 16, 24)
    images = torch.rand(2, 3, 16, 16)
    pixels = model.encode_images(images)
    torch.testing.assert_close(pixels, images * 2 - 1)
    torch.testing.assert_close(model.decode(pixels), images)
    assert model.decode(torch.full((1, 3, 2, 2), 5.0)).max() == 1.0
    overshoot = torch.tensor([-1.8, -1.0, 0.3, 1.0, 1.45]).view(1, 1, 1, 5)
    torch.testing.assert_close(
        model.to_data_range(overshoot), torch.tensor([-1.0, -1.0, 0.3, 1.0, 1.0]).view(1, 1, 1, 5)
    )


def test_latent_models_keep_latents_outside_any_range(tiny_sd_dir):
    """Latents have no fixed range: only pixel-space models clamp their online samples."""
    model = load_model(str(tiny_sd_dir))
    latents = torch.tensor([-3.0, 0.5, 4.0]).view(1, 1, 1, 3)
    torch.testing.assert_close(model.to_data_range(latents), latents)


def test_online_samples_of_a_pixel_model_stay_in_the_pixel_range(tmp_path):
    """Guided few-step samples overshoot [-1, 1]; methods train on them as clean targets."""
    from dsharp.methods.online import generate_latents

    model = load_model(str(_save_pixel_space_model(tmp_path / "mini")))
    cond = model.encode_prompt(["a red circle"] * 4, 16, 16)
    x = generate_latents(
        model,
        cond,
        steps=3,
        guidance=7.0,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (4, 3, 16, 16)
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("spacing", [None, "leading", "trailing"])
def test_online_samples_follow_diffusers_ddim_with_the_given_spacing(tmp_path, spacing):
    """generate_latents equals diffusers' DDIM loop with the spacing it was given (None: the
    scheduler's own, leading), the last step landing on the clean sample. (Not linspace,
    where diffusers' step misses the schedule: see the test below.)"""
    from diffusers import DDIMScheduler

    from dsharp.methods.online import generate_latents

    model = load_model(str(_save_pixel_space_model(tmp_path / "mini")))
    cond = model.encode_prompt(["a red circle", "two blue squares"], 16, 16)
    ours = generate_latents(
        model,
        cond,
        steps=4,
        guidance=1.0,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(3),
        timestep_spacing=spacing,
    )
    overrides = {} if spacing is None else {"timestep_spacing": spacing}
    scheduler = DDIMScheduler.from_config(model.scheduler.config, **overrides)
    scheduler.set_timesteps(4)
    x = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = model.unet(x, t, encoder_hidden_states=cond.prompt_embeds).sample
            x = scheduler.step(out, t, x).prev_sample
    torch.testing.assert_close(ours, model.to_data_range(x), atol=1e-5, rtol=1e-4)
    first = scheduler.timesteps[0].item()
    assert first == (751 if spacing in (None, "leading") else 999)  # leading: 3 * 250 + 1
    with pytest.raises(ValueError, match="unknown timestep spacing 'sideways'"):
        generate_latents(
            model, cond, steps=4, guidance=1.0, height=16, width=16, timestep_spacing="sideways"
        )


@pytest.mark.parametrize(("spacing", "steps"), [("linspace", 4), ("trailing", 3)])
def test_online_samples_step_along_the_schedule(tmp_path, monkeypatch, spacing, steps):
    """Each DDIM step of the online samples goes to the schedule's next timestep and the last
    to the final alpha (-1), where diffusers' ``t - 1000 // steps`` would go elsewhere
    (linspace at 4 steps: 999 -> 749, not 666; trailing at 3: 666 -> 333, not 332)."""
    from dsharp.methods import online
    from dsharp.sampling import inference_timesteps

    model = load_model(str(_save_pixel_space_model(tmp_path / "mini")))
    cond = model.encode_prompt(["a red circle"], 16, 16)
    calls = record_calls(monkeypatch, online, "ddim_step")
    x = online.generate_latents(
        model, cond, steps=steps, guidance=1.0, height=16, width=16, timestep_spacing=spacing
    )
    pairs = [(int(c.args[3][0]), int(c.args[4][0])) for c in calls]  # (t, t_prev)
    schedule = [int(t) for t in inference_timesteps(model.scheduler, steps, spacing)]
    assert pairs == list(zip(schedule, [*schedule[1:], -1], strict=True))
    assert any(t - 1000 // steps != t_prev for t, t_prev in pairs[:-1])  # the rule would miss
    assert torch.isfinite(x).all()


@pytest.mark.parametrize(
    "refiner",
    [
        {"requires_aesthetics_score": True},
        {"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None]},
    ],
)
def test_an_sdxl_refiner_is_refused_at_load_not_at_the_first_unet_call(
    tiny_sdxl_dir, tmp_path, refiner
):
    """A refiner's UNet takes 5 time ids where the base's takes 6: it was taken for SDXL and
    failed at the first UNet call with a shape error."""
    folder = tmp_path / "refiner"
    folder.mkdir()
    index = json.loads((tiny_sdxl_dir / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, **refiner}))
    with pytest.raises(ValueError, match=r"refiner: this is an SDXL refiner .* give the SDXL base"):
        load_model(str(folder))


# -- LoRA, reference model, trained weights -----------------------------------------------


def test_lora_trains_only_lora(tiny_sd_dir):
    model = load_model(str(tiny_sd_dir), lora_rank=4, gradient_checkpointing=True)
    params = model.trainable_parameters()
    lora = {id(p) for n, p in model.unet.named_parameters() if "lora_" in n}
    assert params and {id(p) for p in params} == lora
    assert all(p.requires_grad and p.dtype == torch.float32 for p in params)
    frozen = [n for n, p in model.unet.named_parameters() if p.requires_grad and "lora_" not in n]
    assert frozen == []
    assert model.unet.is_gradient_checkpointing
    targets = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1]
        for n, _ in model.unet.named_parameters()
        if ".lora_A" in n
    }
    assert targets == {"to_q", "to_k", "to_v", "0"}  # to_out.0 ends in "0"


def test_full_finetuning_trains_whole_unet(tiny_sd_dir):
    model = load_model(str(tiny_sd_dir))
    assert len(model.trainable_parameters()) == len(list(model.unet.parameters()))
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert not any(p.requires_grad for p in model.vae.parameters())


def test_lora_reference_is_base_model(tiny_sd_dir):
    model = load_model(str(tiny_sd_dir), lora_rank=4)
    inputs = _noise_inputs(model)
    base = _eps(load_model(str(tiny_sd_dir)), inputs)
    torch.testing.assert_close(_eps(model, inputs), base)  # LoRA B starts at zero
    _perturb(model.trainable_parameters(), scale=0.2)
    trained = _eps(model, inputs)
    assert (trained - base).abs().max() > 1e-3
    with model.reference():
        torch.testing.assert_close(_eps(model, inputs), base)
        with model.reference():  # nesting keeps the adapters off
            torch.testing.assert_close(_eps(model, inputs), base)
        torch.testing.assert_close(_eps(model, inputs), base)
    torch.testing.assert_close(_eps(model, inputs), trained)
    assert all(p.requires_grad for p in model.trainable_parameters())


def test_full_reference_is_pretraining_copy(tiny_sd_dir):
    model = load_model(str(tiny_sd_dir))
    inputs = _noise_inputs(model)
    before = _eps(model, inputs)
    with model.reference():  # first use makes the frozen copy
        torch.testing.assert_close(_eps(model, inputs), before)
    _perturb(model.trainable_parameters())
    after = _eps(model, inputs)
    assert (after - before).abs().max() > 1e-3
    with model.reference():
        torch.testing.assert_close(_eps(model, inputs), before)
        # the reference ignores a passed (possibly DDP-wrapped) training UNet
        torch.testing.assert_close(model.predict_noise(*inputs, unet=model.unet).detach(), before)
    torch.testing.assert_close(_eps(model, inputs), after)


def test_full_reference_refuses_copy_after_update(tiny_sd_dir):
    model = load_model(str(tiny_sd_dir))
    _perturb(model.trainable_parameters())
    with pytest.raises(RuntimeError, match="prepare_reference"), model.reference():
        pass


@pytest.mark.parametrize("fixture", ["tiny_sd_dir", "tiny_sdxl_dir"])
def test_save_load_full_roundtrip(request, tmp_path, fixture):
    source = str(request.getfixturevalue(fixture))
    model = load_model(source)
    inputs = _noise_inputs(model)
    _perturb(model.trainable_parameters())
    trained = _eps(model, inputs)
    model.save_trained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "unet" / "config.json").is_file()

    fresh = load_model(source)
    assert (_eps(fresh, inputs) - trained).abs().max() > 1e-3
    fresh.load_trained(tmp_path / "ckpt")
    torch.testing.assert_close(_eps(fresh, inputs), trained)
    with pytest.raises(ValueError, match="load the model with lora_rank=0"):
        load_model(source, lora_rank=2).load_trained(tmp_path / "ckpt")
    # the weights gone (a partial copy): the file named, not the .bin diffusers falls back to
    weights = tmp_path / "ckpt" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=f"^{weights} is missing$"):
        fresh.load_trained(tmp_path / "ckpt")


def test_a_unet_saved_in_shards_loads_and_a_missing_shard_is_named(tiny_sd_dir, tmp_path):
    """An SDXL UNet in fp32 is over diffusers' 10 GB shard size: its checkpoints hold shards
    and an index, not one weights file."""
    model = load_model(str(tiny_sd_dir))
    inputs = _noise_inputs(model)
    _perturb(model.trainable_parameters())
    trained = _eps(model, inputs)
    unet = tmp_path / "ckpt" / "unet"
    model.unet.save_pretrained(unet, max_shard_size="200KB")
    shards = sorted(unet.glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) > 1 and not (unet / "diffusion_pytorch_model.safetensors").exists()
    fresh = load_model(str(tiny_sd_dir))
    fresh.load_trained(tmp_path / "ckpt")
    torch.testing.assert_close(_eps(fresh, inputs), trained)
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=f"^{shards[-1]} is missing \\(a shard\\)$"):
        fresh.load_trained(tmp_path / "ckpt")


@pytest.mark.parametrize("fixture", ["tiny_sd_dir", "tiny_sdxl_dir"])
def test_save_load_lora_roundtrip(request, tmp_path, fixture):
    source = str(request.getfixturevalue(fixture))
    model = load_model(source, lora_rank=4, lora_alpha=8)
    inputs = _noise_inputs(model)
    _perturb(model.trainable_parameters(), scale=0.2)
    trained = _eps(model, inputs)
    model.save_trained(tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / "lora_config.json").read_text())
    assert config["rank"] == 4 and config["alpha"] == 8

    same_rank = load_model(source, lora_rank=4, lora_alpha=8)
    same_rank.load_trained(tmp_path / "lora")
    torch.testing.assert_close(_eps(same_rank, inputs), trained)
    plain = load_model(source)  # a LoRA folder adds its adapter to a plain model
    plain.load_trained(tmp_path / "lora")
    assert plain.lora_rank == 4
    torch.testing.assert_close(_eps(plain, inputs), trained)
    with pytest.raises(ValueError, match="differs from this model"):
        load_model(source, lora_rank=2).load_trained(tmp_path / "lora")
    with pytest.raises(FileNotFoundError, match="holds no trained weights"):
        plain.load_trained(tmp_path)


def test_a_lora_saved_again_is_the_same_bytes_and_older_files_still_load(tiny_sd_dir, tmp_path):
    """safetensors wrote the metadata (format, lora_adapter_metadata) in either order, from
    one save to the next: the same weights gave files with different checksums."""
    from safetensors import safe_open

    model = load_model(str(tiny_sd_dir), lora_rank=4, lora_alpha=8)
    inputs = _noise_inputs(model)
    _perturb(model.trainable_parameters(), scale=0.2)
    trained = _eps(model, inputs)
    for i in range(10):  # each save had even odds of either order
        model.save_trained(tmp_path / f"save{i}")
    files = {
        (tmp_path / f"save{i}" / "pytorch_lora_weights.safetensors").read_bytes() for i in range(10)
    }
    assert len(files) == 1
    weights = tmp_path / "save0" / "pytorch_lora_weights.safetensors"
    with safe_open(str(weights), framework="pt") as fh:
        assert fh.metadata() == model._lora_file_metadata()
    older = tmp_path / "older"  # as dsharp saved it before: safetensors' own save_file
    older.mkdir()
    (older / "lora_config.json").write_bytes((tmp_path / "save0" / "lora_config.json").read_bytes())
    tensors = load_file(str(weights))
    save_file(tensors, str(older / weights.name), metadata=model._lora_file_metadata())
    for folder in (tmp_path / "save0", older):
        fresh = load_model(str(tiny_sd_dir))
        fresh.load_trained(folder)
        torch.testing.assert_close(_eps(fresh, inputs), trained)


@pytest.mark.parametrize("alpha", [None, 16.0])  # alpha 16 at rank 4: a scale of 4
def test_saved_lora_loads_in_diffusers_pipeline(tiny_sd_dir, tmp_path, alpha):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from dsharp.sampling import sample

    model = load_model(str(tiny_sd_dir), lora_rank=4, lora_alpha=alpha)
    _perturb(model.trainable_parameters(), scale=0.3)
    model.save_trained(tmp_path)
    ours = sample(model, ["a cat"], seeds=[1], steps=3, guidance=5.0, height=64, width=64)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(tmp_path)
    theirs = pipe(
        ["a cat"],
        generator=[torch.Generator().manual_seed(1)],
        num_inference_steps=3,
        guidance_scale=5.0,
        height=64,
        width=64,
        output_type="pt",
    ).images
    assert (ours - theirs).abs().max() <= 2 / 255


def test_conditioning_helpers():
    a = Conditioning(torch.zeros(2, 3, 4), {"k": torch.zeros(2, 5)})
    b = Conditioning(torch.ones(1, 3, 4), {"k": torch.ones(1, 5)})
    both = Conditioning.cat([a, b])
    assert len(both) == 3 and both.added["k"].shape == (3, 5)
    assert len(both.repeat_interleave(2)) == 6


def test_a_hub_id_that_is_not_cached_offline_says_so_not_that_the_id_is_wrong():
    from dsharp.models.loading import read_model_index

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: tests never reach the hub
    with pytest.raises(ValueError) as caught:
        read_model_index("dsharp-test-org/not-a-cached-model")
    message = str(caught.value)
    assert "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" in message
    assert "model_index.json" not in message


def test_a_hub_id_that_is_not_cached_offline_fails_before_diffusers_is_imported(tmp_path):
    """diffusers (with transformers) takes seconds to import and cannot load it anyway: the
    one line comes first. In a fresh interpreter, whose imports are its own."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from dsharp.models.loading import read_model_index\n"
        "try:\n"
        "    read_model_index('dsharp-test-org/not-a-cached-model')\n"
        "except ValueError as e:\n"
        "    print(e)\n"
        "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "dsharp-test-org/not-a-cached-model: not in the local Hugging Face cache, and "
        "HF_HUB_OFFLINE is set; download it where there is network (it is then cached) or "
        "give a local diffusers folder",
        "[]",
    ]


def test_eval_and_sample_refuse_an_offline_uncached_hub_id_before_rewards_are_built(
    tmp_path, monkeypatch
):
    """`dsharp eval` builds its rewards (weights) before the model, and `dsharp sample` its
    verifier: a hub id that cannot load offline is refused first, in the load's own line."""
    import huggingface_hub
    from typer.testing import CliRunner

    import dsharp.inference.base
    import dsharp.rewards.combine
    from dsharp.cli import app

    def not_built(*args, **kwargs):
        pytest.fail("a reward was built")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(dsharp.rewards.combine, "CombinedReward", not_built)
    monkeypatch.setattr(dsharp.inference.base, "Verifier", not_built)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    model = "dsharp-test-org/not-a-cached-model"
    line = (
        f"error: {model}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; "
        "download it where there is network (it is then cached) or give a local diffusers "
        "folder\n"
    )
    out = ["--out", str(tmp_path / "out")]
    evaluate = ["eval", "--model", model, "--prompts", str(prompts), "--reward", "shapes"]
    sample = [
        "sample",
        "--model",
        model,
        "--prompt",
        "a red circle",
        "--method",
        "inference_scaling",
    ]
    for args in ([*evaluate, *out], [*sample, "--reward", "shapes", *out]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert result.stderr == line


def test_eval_and_sample_refuse_a_run_whose_base_is_an_offline_uncached_hub_id_first(
    tmp_path, monkeypatch
):
    """`--checkpoint RUN` loads the run's base model (its recipe's model.pretrained): an
    uncached hub id offline is refused before any reward or verifier is built, naming the
    recipe the id comes from."""
    import huggingface_hub
    from typer.testing import CliRunner

    import dsharp.inference.base
    import dsharp.rewards.combine
    from dsharp.cli import app

    def not_built(*args, **kwargs):
        pytest.fail("a reward was built")

    model = "dsharp-test-org/not-a-cached-model"
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "checkpoints" / "step-000001" / "trainer_state.json").write_text('{"step": 1}')
    (run / "recipe.yaml").write_text(f"model:\n  pretrained: {model}\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(dsharp.rewards.combine, "CombinedReward", not_built)
    monkeypatch.setattr(dsharp.inference.base, "Verifier", not_built)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    out = ["--out", str(tmp_path / "out")]
    evaluate = ["eval", "--checkpoint", str(run), "--prompts", str(prompts), "--reward", "shapes"]
    sample = ["sample", "--checkpoint", str(run), "--prompt", "a red circle"]
    sample += ["--method", "inference_scaling", "--reward", "shapes"]
    for args in ([*evaluate, *out], [*sample, *out]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: {model}: not in the local Hugging Face cache")
        assert f"(model.pretrained of {run / 'recipe.yaml'})" in result.stderr


def test_a_hub_id_that_is_not_cached_without_network_fails_at_once(monkeypatch):
    """No network and HF_HUB_OFFLINE unset: one request finds the hub unreachable, and the
    line says so before diffusers' loader (and the hub client's ~25 s of retries) runs."""
    import httpx2
    import huggingface_hub
    from diffusers import DiffusionPipeline

    from dsharp.models.loading import read_model_index

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    asked: list[str] = []

    def no_dns(url: str, *args, **kwargs):
        asked.append(url)
        raise httpx2.ConnectError("[Errno -2] Name or service not known")

    def not_called(*args, **kwargs):
        pytest.fail("diffusers' loader was called: it retries for about 25 s")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_dns)
    monkeypatch.setattr(DiffusionPipeline, "load_config", not_called)
    with pytest.raises(ValueError) as caught:
        read_model_index("dsharp-test-org/not-a-cached-model")
    assert str(caught.value) == (
        "dsharp-test-org/not-a-cached-model: not in the local Hugging Face cache, and the hub "
        "could not be reached (ConnectError: [Errno -2] Name or service not known); download "
        "it where there is network (it is then cached) or give a local diffusers folder"
    )
    assert len(asked) == 1 and asked[0].endswith("/resolve/main/model_index.json")


def test_a_near_miss_of_a_built_in_model_name_suggests_it():
    from dsharp.models.loading import resolve_pretrained

    with pytest.raises(FileNotFoundError, match="did you mean 'dsharp-mini'"):
        resolve_pretrained("dsharp-mni")
    with pytest.raises(FileNotFoundError, match="did you mean 'dsharp-mini-init'"):
        resolve_pretrained("dsharp-mini-int")
    assert resolve_pretrained("some-org/some-model") == "some-org/some-model"  # a hub id


def test_a_runs_relative_model_path_that_is_not_found_names_the_runs_recipe(tmp_path):
    from dsharp.builders import load_run_model
    from run_folders import run_folder_with_checkpoint

    recipe = "model: {pretrained: ./tiny-sd-elsewhere}\nmethod: {name: finetune}\n"
    run = run_folder_with_checkpoint(tmp_path / "run", recipe + "data: {generator: shapes}\n")
    with pytest.raises(FileNotFoundError) as err:
        load_run_model(run)
    assert str(err.value) == (
        f"model folder not found: ./tiny-sd-elsewhere (model.pretrained of {run}/recipe.yaml, "
        "a path relative to the folder the run was trained from)"
    )


def test_a_zero_terminal_snr_scheduler_is_refused_before_the_weights_load(tmp_path, tiny_sd_dir):
    import shutil

    folder = tmp_path / "zero-snr"
    shutil.copytree(tiny_sd_dir, folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config.update(prediction_type="epsilon", rescale_betas_zero_snr=True)
    config_file.write_text(json.dumps(config))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # never reached
    with pytest.raises(ValueError, match=r"zero-snr: scheduler has zero terminal SNR"):
        load_model(str(folder))


@pytest.mark.parametrize(
    "component", ["tokenizer", "tokenizer_2", "text_encoder_2", "vae", "unet", "scheduler"]
)
def test_a_model_folder_missing_a_component_names_it(tmp_path, tiny_sdxl_dir, component):
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(tiny_sdxl_dir, folder)
    shutil.rmtree(folder / component)
    # a missing tokenizer loaded as an empty one and failed at the first prompt (OverflowError)
    with pytest.raises(FileNotFoundError) as caught:
        load_model(str(folder)).encode_prompt(PROMPTS, 64, 64)
    assert str(caught.value) == (
        f"{folder}: the model folder has no {component}/ (model_index.json lists it)"
    )


def _with_variant(folder, components, variant="fp16"):
    """Give each weight file of ``components`` a ``variant`` copy (``model.fp16.safetensors``)."""
    import shutil

    for component in components:
        for path in list((folder / component).glob("*.safetensors")):
            shutil.copy(path, path.with_name(f"{path.stem}.{variant}{path.suffix}"))


def test_a_weight_variant_loads_when_every_weighted_component_has_it(tmp_path, tiny_sd_dir):
    import shutil

    folder = tmp_path / "variant"
    shutil.copytree(tiny_sd_dir, folder)
    _with_variant(folder, ["text_encoder", "vae", "unet"])
    # the variant's weights differ from the default ones, so only they can match below
    variant_weights = {}
    for component in ("text_encoder", "vae", "unet"):
        (path,) = (folder / component).glob("*.fp16.safetensors")
        shifted = {k: v + 0.5 if v.is_floating_point() else v for k, v in load_file(path).items()}
        save_file(shifted, path)
        variant_weights[component] = shifted
    model = load_model(str(folder), variant="fp16")
    for component, expected in variant_weights.items():
        loaded = getattr(model, component).state_dict()
        assert set(expected) <= set(loaded), component
        for key, value in expected.items():
            torch.testing.assert_close(loaded[key].float(), value.float(), msg=key)
    assert model.encode_prompt(PROMPTS, 64, 64).prompt_embeds.shape == (2, 77, 32)


@pytest.mark.parametrize("missing", ["text_encoder", "vae", "unet"])
def test_a_missing_weight_variant_names_the_component(tmp_path, tiny_sd_dir, missing):
    import shutil

    folder = tmp_path / "variant"
    shutil.copytree(tiny_sd_dir, folder)
    _with_variant(folder, {"text_encoder", "vae", "unet"} - {missing})
    # transformers and diffusers named only the model folder, as if it lacked the weights
    with pytest.raises(FileNotFoundError) as caught:
        load_model(str(folder), variant="fp16")
    assert str(caught.value) == (
        f"{folder}: {missing}/ has no 'fp16' variant of its weights (model.variant: fp16); "
        "leave model.variant unset to load the default weights"
    )


def test_a_tokenizer_folder_without_its_files_is_refused_at_load(tmp_path, tiny_sd_dir):
    import shutil

    folder = tmp_path / "no-vocab"
    shutil.copytree(tiny_sd_dir, folder)
    for path in (folder / "tokenizer").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"no-vocab: tokenizer/ holds no CLIP tokenizer files$"):
        load_model(str(folder))


def test_a_scheduler_saved_by_a_class_that_never_clips_is_not_clipped(tmp_path, tiny_sd_dir):
    import shutil

    from diffusers import EulerDiscreteScheduler

    from dsharp.sampling import DDIMTables

    folder = tmp_path / "euler"
    shutil.copytree(tiny_sd_dir, folder)
    shutil.rmtree(folder / "scheduler")
    config = load_model(str(tiny_sd_dir)).scheduler.config
    euler = EulerDiscreteScheduler(
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        steps_offset=config.steps_offset,
    )
    euler.save_pretrained(folder / "scheduler")
    assert "clip_sample" not in (folder / "scheduler" / "scheduler_config.json").read_text()
    model = load_model(str(folder))
    # DDIM's own default (clip_sample=True) clamped every predicted x0 of a latent model
    assert model.scheduler.config.clip_sample is False
    assert DDIMTables.from_scheduler(model.scheduler).clip_sample is False
    torch.testing.assert_close(model.scheduler.alphas_cumprod, euler.alphas_cumprod)


def test_a_run_whose_base_is_a_missing_relative_folder_is_not_called_uncached_offline(
    tmp_path, monkeypatch
):
    """A run's recipe naming a local folder relative to where it was trained (./models/x),
    used from elsewhere with HF_HUB_OFFLINE set: the folder is not found, said as such with
    where the path is relative to, not as a hub id missing from the cache."""
    from typer.testing import CliRunner

    from dsharp.cli import app
    from dsharp.config import load_recipe
    from dsharp.recipe_io import recipe_to_yaml

    model = "./models-not-here/tiny-sd"
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "checkpoints" / "step-000001" / "trainer_state.json").write_text('{"step": 1}')
    tiny = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    saved = recipe_to_yaml(load_recipe(tiny)).replace(
        "pretrained: dsharp-mini", f"pretrained: {model}"
    )
    (run / "recipe.yaml").write_text(saved)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["sample", "--checkpoint", str(run), "--prompt", "a red circle"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: model folder not found: {model} "), result.stderr
    assert "a path relative to the folder the run was trained from" in result.stderr
