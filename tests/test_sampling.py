"""The vectorised DDIM sampler against diffusers' DDIMScheduler and pipelines."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from dsharp.models import load_model
from dsharp.sampling import (
    DDIMTables,
    add_noise,
    ddim_log_prob,
    ddim_step,
    eps_from_v,
    eps_from_x0,
    guided_noise,
    inference_timesteps,
    pred_x0_from_eps,
    previous_timesteps,
    sample,
    save_images,
    stochastic_steps,
    transition_std,
    v_target,
)
from dsharp.testing.tiny import make_tiny_scheduler
from spying import record_calls

PROMPTS = ["a photo of a red cube", "two cats on a blue sofa"]
SEED = 1234


def _scheduler(**overrides) -> DDIMScheduler:
    return DDIMScheduler.from_config(make_tiny_scheduler().config, **overrides)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- schedule -----------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 4, 7, 50])
def test_inference_timesteps_match_set_timesteps(spacing, steps):
    scheduler = _scheduler(timestep_spacing=spacing)
    ours = inference_timesteps(scheduler, steps)
    scheduler.set_timesteps(steps)
    assert ours.dtype == torch.long
    assert torch.equal(ours, scheduler.timesteps)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_inference_timesteps_with_another_spacing(spacing):
    """The override gives what a scheduler configured with that spacing gives, and leaves
    the caller's scheduler (leading) as it was."""
    scheduler = _scheduler()
    ours = inference_timesteps(scheduler, 7, spacing)
    other = _scheduler(timestep_spacing=spacing)
    other.set_timesteps(7)
    assert torch.equal(ours, other.timesteps)
    assert scheduler.config.timestep_spacing == "leading"
    with pytest.raises(ValueError, match="unknown timestep spacing 'sideways'"):
        inference_timesteps(scheduler, 7, "sideways")


def test_inference_timesteps_leaves_scheduler_alone():
    scheduler = _scheduler()
    inference_timesteps(scheduler, 10)
    assert scheduler.num_inference_steps is None
    with pytest.raises(ValueError, match="steps must be >= 1"):
        inference_timesteps(scheduler, 0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 4, 7, 13, 50, 600])
def test_each_step_goes_to_the_next_timestep_of_the_schedule(spacing, steps):
    """The last step goes where diffusers' ``t - 1000 // steps`` rule goes (-1: the final
    alpha, where that is below 0). Where the rule lands on the schedule (leading; trailing
    when steps divide 1000) the two agree, so sampling matches ``DDIMScheduler.step`` there;
    elsewhere the rule misses."""
    schedule = inference_timesteps(_scheduler(timestep_spacing=spacing), steps)
    nexts = previous_timesteps(schedule, 1000)
    rule = [int(t) - 1000 // steps for t in schedule]
    assert nexts.tolist() == [*schedule.tolist()[1:], max(rule[-1], -1)]
    agrees = [max(r, -1) == n for r, n in zip(rule, nexts.tolist(), strict=True)]
    if spacing == "leading" or (spacing == "trailing" and 1000 % steps == 0):
        assert all(agrees)
    elif steps > 1:
        assert not all(agrees)
    with pytest.raises(ValueError, match="at least one step"):
        previous_timesteps(schedule[:0], 1000)


# -- one step -----------------------------------------------------------------------------


@pytest.mark.parametrize("clip_sample", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_equals_scheduler_step(eta, clip_sample):
    scheduler = _scheduler(clip_sample=clip_sample)
    steps = 10
    scheduler.set_timesteps(steps)
    tables = DDIMTables.from_scheduler(scheduler)
    x = _randn(3, 4, 8, 8, seed=1) * 2
    eps = _randn(3, 4, 8, 8, seed=2)
    noise = _randn(3, 4, 8, 8, seed=3)
    t_nexts = previous_timesteps(scheduler.timesteps, 1000)
    for t, t_next in zip(scheduler.timesteps, t_nexts, strict=True):  # the last goes to -1
        t_vec = t.expand(3)
        t_prev = t_next.expand(3)
        out = ddim_step(tables, x, eps, t_vec, t_prev, eta=eta, noise=noise)
        ref = scheduler.step(eps, t, x, eta=eta, variance_noise=noise if eta else None)
        torch.testing.assert_close(out.prev_sample, ref.prev_sample, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.pred_x0, ref.pred_original_sample, rtol=0, atol=1e-6)
        assert (out.log_prob is None) == (eta == 0)


def test_ddim_step_mixed_timesteps_in_one_batch():
    scheduler = _scheduler()
    steps = 20
    scheduler.set_timesteps(steps)
    tables = DDIMTables.from_scheduler(scheduler)
    t = torch.tensor([951, 501, 1, 251])
    t_prev = torch.tensor([901, 451, -1, 201])  # where DDIMScheduler.step at 20 steps goes
    x, eps, noise = _randn(4, 4, 8, 8, seed=1), _randn(4, 4, 8, 8, seed=2), _randn(4, 4, 8, 8)
    out = ddim_step(tables, x, eps, t, t_prev, eta=1.0, noise=noise)
    for i in range(4):
        ref = scheduler.step(
            eps[i : i + 1], int(t[i]), x[i : i + 1], eta=1.0, variance_noise=noise[i : i + 1]
        )
        torch.testing.assert_close(out.prev_sample[i : i + 1], ref.prev_sample, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            out.pred_x0[i : i + 1], ref.pred_original_sample, rtol=0, atol=1e-6
        )


def test_log_prob_is_gaussian_density_averaged_over_pixels():
    tables = DDIMTables.from_scheduler(_scheduler())
    t, t_prev = torch.tensor([801, 401]), torch.tensor([751, 351])
    x, eps = _randn(2, 4, 8, 8, seed=1), _randn(2, 4, 8, 8, seed=2)
    out = ddim_step(tables, x, eps, t, t_prev, eta=1.0, generator=torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(out.mean, out.std).log_prob(out.prev_sample)
    torch.testing.assert_close(out.log_prob, expected.mean(dim=(1, 2, 3)))
    assert out.std.shape == (2, 1, 1, 1) and (out.std > 0).all()
    again = ddim_log_prob(tables, x, eps, t, t_prev, out.prev_sample, eta=1.0)
    torch.testing.assert_close(again, out.log_prob)
    # a different model prediction makes the same transition less likely
    other = ddim_log_prob(tables, x, eps + 0.5, t, t_prev, out.prev_sample, eta=1.0)
    assert (other < out.log_prob).all()
    with pytest.raises(ValueError, match="eta > 0"):
        ddim_log_prob(tables, x, eps, t, t_prev, out.prev_sample, eta=0.0)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # linspace ends on t = 0, which steps to the final alpha abar_0: std 0
        ({"timestep_spacing": "linspace"}, [True, True, False]),
        ({"timestep_spacing": "leading", "steps_offset": 0}, [True, True, False]),
        # leading with steps_offset 1 ends on t = 1 -> abar_0: noise remains
        ({}, [True, True, True]),
        # the step to alpha 1 has no variance left whatever t is
        ({"set_alpha_to_one": True}, [True, True, False]),
        ({"timestep_spacing": "trailing"}, [True, True, True]),
    ],
)
def test_stochastic_steps_flags_the_steps_without_noise(overrides, expected):
    scheduler = _scheduler(**overrides)
    tables = DDIMTables.from_scheduler(scheduler)
    timesteps = inference_timesteps(scheduler, 3)
    assert stochastic_steps(tables, timesteps, eta=1.0).tolist() == expected


def test_transition_std_matches_the_ddim_variance_by_hand():
    """sigma = eta sqrt((1 - a') / (1 - a) (1 - a / a')) (Song et al. eq. 16): at 500 -> 0
    by hand; at 0 -> final (a' = a = abar_0) exactly 0, so its log-prob is a constant."""
    tables = DDIMTables.from_scheduler(_scheduler(timestep_spacing="linspace"))
    a0, a500 = tables.alphas_cumprod[0].item(), tables.alphas_cumprod[500].item()
    by_hand = 0.5 * ((1 - a0) / (1 - a500) * (1 - a500 / a0)) ** 0.5
    std = transition_std(tables, torch.tensor([500, 0]), torch.tensor([0, -1]), eta=0.5)
    assert std[0].item() == pytest.approx(by_hand, rel=1e-5)
    assert std[1].item() == 0.0


def test_log_prob_gradient_flows_through_mean_only():
    tables = DDIMTables.from_scheduler(_scheduler())
    t, t_prev = torch.tensor([801]), torch.tensor([751])
    eps = _randn(1, 4, 8, 8, seed=2).requires_grad_()
    out = ddim_step(tables, _randn(1, 4, 8, 8), eps, t, t_prev, eta=1.0, noise=_randn(1, 4, 8, 8))
    out.log_prob.sum().backward()
    assert eps.grad is not None and eps.grad.abs().sum() > 0


def test_noise_relations_are_consistent():
    scheduler = _scheduler()
    tables = DDIMTables.from_scheduler(scheduler)
    x0, eps = _randn(3, 4, 8, 8, seed=1), _randn(3, 4, 8, 8, seed=2)
    t = torch.tensor([10, 500, 990])
    x_t = add_noise(tables, x0, eps, t)
    torch.testing.assert_close(x_t, scheduler.add_noise(x0, eps, t))
    torch.testing.assert_close(eps_from_x0(tables, x_t, x0, t), eps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pred_x0_from_eps(tables, x_t, eps, t), x0, rtol=1e-4, atol=1e-4)


def test_v_prediction_relations_are_consistent():
    tables = DDIMTables.from_scheduler(_scheduler(prediction_type="v_prediction"))
    x0, eps = _randn(3, 4, 8, 8, seed=1), _randn(3, 4, 8, 8, seed=2)
    t = torch.tensor([1, 500, 999])
    x_t = add_noise(tables, x0, eps, t)
    v = v_target(tables, x0, eps, t)
    # Hand-computed at t = 500: v = sqrt(abar) eps - sqrt(1 - abar) x0.
    abar = float(tables.alphas_cumprod[500])
    torch.testing.assert_close(v[1], abar**0.5 * eps[1] - (1 - abar) ** 0.5 * x0[1])
    torch.testing.assert_close(eps_from_v(tables, x_t, v, t), eps, rtol=1e-4, atol=1e-4)
    # The scheduler's own v target agrees.
    scheduler = _scheduler(prediction_type="v_prediction")
    torch.testing.assert_close(v, scheduler.get_velocity(x0, eps, t), rtol=1e-5, atol=1e-5)


def test_tables_reject_unsupported_schedulers():
    with pytest.raises(ValueError, match="prediction_type 'sample'"):
        DDIMTables.from_scheduler(_scheduler(prediction_type="sample"))
    zero_snr = _scheduler(rescale_betas_zero_snr=True)  # epsilon: no image where abar = 0
    assert float(zero_snr.alphas_cumprod[-1]) == 0.0
    with pytest.raises(ValueError, match="zero terminal SNR .* with prediction_type epsilon"):
        DDIMTables.from_scheduler(zero_snr)
    tables = DDIMTables.from_scheduler(_scheduler())
    with pytest.raises(ValueError, match="num_train_timesteps"):
        tables.abar(torch.tensor([1000]))


# -- guidance and full sampling -------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_model(tiny_sdxl_dir):
    return load_model(str(tiny_sdxl_dir))


def test_guided_noise_is_cfg(sd_model):
    x, t = _randn(2, 4, 8, 8), torch.tensor([700, 300])
    cond = sd_model.encode_prompt(PROMPTS, 64, 64)
    uncond = sd_model.encode_negative(2, 64, 64)
    with torch.no_grad():
        e_c = sd_model.predict_noise(x, t, cond)
        e_u = sd_model.predict_noise(x, t, uncond)
        torch.testing.assert_close(guided_noise(sd_model, x, t, cond, uncond, 1.0), e_c)
        guided = guided_noise(sd_model, x, t, cond, uncond, 4.0)
    torch.testing.assert_close(guided, e_u + 4.0 * (e_c - e_u), rtol=1e-4, atol=1e-5)


def _pipeline(family: str, folder):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sdxl":
        pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_images(pipe, guidance: float, eta: float = 0.0) -> torch.Tensor:
    return pipe(
        PROMPTS,
        generator=[torch.Generator().manual_seed(SEED + i) for i in range(len(PROMPTS))],
        num_inference_steps=4,
        guidance_scale=guidance,
        eta=eta,
        height=64,
        width=64,
        output_type="pt",
    ).images


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_sample_equals_diffusers_pipeline(family, request):
    """THE key test: our vectorised sampler reproduces the diffusers pipeline per pixel."""
    folder = request.getfixturevalue(f"tiny_{family}_dir")
    model = request.getfixturevalue(f"{family}_model")
    pipe = _pipeline(family, folder)
    seeds = [SEED, SEED + 1]
    results = {}
    for guidance in (5.0, 1.0):
        ours = sample(model, PROMPTS, seeds=seeds, steps=4, guidance=guidance, height=64, width=64)
        theirs = _pipeline_images(pipe, guidance)
        assert ours.shape == theirs.shape == (2, 3, 64, 64)
        assert (ours - theirs).abs().max() <= 2 / 255, f"guidance {guidance}"
        results[guidance] = ours
    # the comparison is sensitive: guidance visibly changes these tiny models' images
    assert (results[5.0] - results[1.0]).abs().max() > 10 / 255


def test_sample_with_eta_equals_pipeline(tiny_sd_dir, sd_model):
    """With eta > 0 the same per-image generators draw the step noise, as in the pipeline."""
    pipe = _pipeline("sd", tiny_sd_dir)
    ours = sample(
        sd_model,
        PROMPTS,
        seeds=[SEED, SEED + 1],
        steps=4,
        guidance=5.0,
        eta=1.0,
        height=64,
        width=64,
    )
    assert (ours - _pipeline_images(pipe, 5.0, eta=1.0)).abs().max() <= 2 / 255


def test_sample_steps_along_a_linspace_schedule(sd_model, monkeypatch):
    """With a linspace scheduler each step goes to the schedule's next timestep (7 steps:
    999 -> 832, where diffusers' rule goes to 857), the last to the final alpha."""
    import dsharp.sampling as sampling

    linspace = DDIMScheduler.from_config(sd_model.scheduler.config, timestep_spacing="linspace")
    monkeypatch.setattr(sd_model, "scheduler", linspace)
    steps = record_calls(monkeypatch, sampling, "ddim_step")
    images = sample(sd_model, PROMPTS, seeds=[1, 2], steps=7, guidance=1.0, height=64, width=64)
    pairs = [(int(c.args[3][0]), int(c.args[4][0])) for c in steps]  # (t, t_prev)
    schedule = inference_timesteps(linspace, 7).tolist()
    assert schedule[:2] == [999, 832]
    assert pairs == list(zip(schedule, [*schedule[1:], -1], strict=True))
    assert torch.isfinite(images).all()


def test_trajectory_shapes_and_callback(sdxl_model):
    seen = []
    images, traj = sample(
        sdxl_model,
        PROMPTS,
        seeds=[1, 2],
        steps=3,
        guidance=3.0,
        eta=1.0,
        height=64,
        width=64,
        return_trajectory=True,
        keep_pred_x0=True,
        callback=lambda i, info: seen.append((i, int(info["t"]))),
    )
    assert traj.latents.shape == (4, 2, 4, 8, 8)
    assert traj.timesteps.tolist() == [667, 334, 1]
    assert traj.log_probs.shape == (3, 2) and torch.isfinite(traj.log_probs).all()
    assert traj.pred_x0.shape == (3, 2, 4, 8, 8)
    assert traj.nfe == 6
    assert seen == [(0, 667), (1, 334), (2, 1)]
    with torch.no_grad():
        torch.testing.assert_close(sdxl_model.decode(traj.latents[-1]), images)

    _, plain = sample(
        sdxl_model,
        PROMPTS,
        seeds=[1, 2],
        steps=3,
        guidance=1.0,
        height=64,
        width=64,
        return_trajectory=True,
    )
    assert plain.log_probs is None and plain.pred_x0 is None and plain.nfe == 3


def test_sample_given_latents_and_bad_input(sd_model):
    latents = _randn(2, 4, 8, 8)
    a = sample(sd_model, PROMPTS, latents=latents, steps=2, guidance=2.0, height=64, width=64)
    b = sample(sd_model, PROMPTS, latents=latents, steps=2, guidance=2.0, height=64, width=64)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="either seeds or generator"):
        sample(sd_model, PROMPTS, seeds=[1, 2], generator=torch.Generator(), steps=1)
    with pytest.raises(ValueError, match="seeds has 1 entries for 2 prompts"):
        sample(sd_model, PROMPTS, seeds=[1], steps=1)
    with pytest.raises(ValueError, match="latents have shape"):
        sample(sd_model, PROMPTS, latents=_randn(2, 4, 4, 4), steps=1, height=64, width=64)


def test_save_images_writes_pngs_atomically(tmp_path):
    import numpy as np
    from PIL import Image

    images = torch.rand(2, 3, 8, 8)
    paths = save_images(images, tmp_path / "out", ["a", "b.png"])
    assert [p.name for p in paths] == ["a.png", "b.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    back = torch.from_numpy(np.array(Image.open(paths[0]))).float()
    expected = (images[0].permute(1, 2, 0) * 255).round()
    torch.testing.assert_close(back, expected)
    with pytest.raises(ValueError, match="1 names for 2 images"):
        save_images(images, tmp_path, ["a"])
    with pytest.raises(ValueError, match="plain file name"):
        save_images(images, tmp_path, ["a", "../b"])


@pytest.mark.parametrize("eta", [-0.1, 1.02])
def test_ddim_step_refuses_eta_outside_0_to_1(eta):
    """Above 1 the late steps' direction term sqrt(1 - abar_prev - std^2) is the root of a
    negative number: the step would return NaN where it now refuses."""
    tables = DDIMTables.from_scheduler(_scheduler())
    x, eps = _randn(1, 4, 8, 8, seed=1), _randn(1, 4, 8, 8, seed=2)
    t = torch.tensor([51])  # the last step of 20
    if eta > 1:  # the number the refusal stands in for
        variance = (
            (1 - tables.abar(t - 50))
            / (1 - tables.abar(t))
            * (1 - tables.abar(t) / tables.abar(t - 50))
        )
        assert float(1 - tables.abar(t - 50) - eta**2 * variance) < 0
    with pytest.raises(ValueError, match=r"DDIM eta must be in \[0, 1\]"):
        ddim_step(tables, x, eps, t, t - 50, eta=eta)


def test_a_zero_terminal_snr_v_model_steps_as_diffusers_does_from_its_last_timestep():
    """abar = 0 at t = 999: the tables floor it at 2**-24, so the epsilon form of v stays
    defined, and a step from there matches DDIMScheduler.step's (which uses v directly) to
    1e-3; elsewhere the tables are the scheduler's own."""
    scheduler = _scheduler(
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"
    )
    tables = DDIMTables.from_scheduler(scheduler)
    assert float(tables.alphas_cumprod[-1]) == 2.0**-24
    assert torch.equal(tables.alphas_cumprod[:-1], scheduler.alphas_cumprod[:-1])
    scheduler.set_timesteps(10)
    x, v = _randn(2, 4, 8, 8, seed=1), _randn(2, 4, 8, 8, seed=2)
    for t, tolerance in ((999, 1e-3), (899, 1e-5)):
        t_vec = torch.full((2,), t)
        ours = ddim_step(tables, x, eps_from_v(tables, x, v, t_vec), t_vec, t_vec - 100)
        theirs = scheduler.step(v, t, x)
        assert torch.isfinite(ours.prev_sample).all()
        torch.testing.assert_close(
            ours.pred_x0, theirs.pred_original_sample, rtol=0, atol=tolerance
        )
        torch.testing.assert_close(ours.prev_sample, theirs.prev_sample, rtol=0, atol=tolerance)
