"""Inference-time sample methods (Free2Guide, Demon, Inference Scaling) on a tiny SD model:
exact NFE counting, seeded reproducibility, search monotonicity, Demon's weights, the CLI."""

from __future__ import annotations

import importlib
import io
import json
import math
from pathlib import Path

import pytest
import torch

from cli_results import invoke
from dsharp.generate import SampleSettings, generate
from dsharp.inference import SAMPLE_METHODS, count_nfe
from dsharp.inference.demon import combine_noises, demon_weights
from dsharp.inference.free2guide import pick_candidate
from dsharp.models import load_model
from dsharp.rewards.base import RewardError
from dsharp.sampling import inference_timesteps, sample
from fake_rewards import NAME, brightness_registered
from spying import record_calls

ROOT = Path(__file__).resolve().parent.parent
STEPS = 3
SIDE = 64


@pytest.fixture(scope="module")
def model(tiny_sd_dir):
    return load_model(str(tiny_sd_dir))


@pytest.fixture
def brightness():
    with brightness_registered() as calls:
        yield calls


def _settings(method: str, guidance: float = 5.0, steps: int = STEPS, **options):
    return SampleSettings(method, steps, guidance, 0.0, SIDE, SIDE, options=options, reward=NAME)


def _prev_steps(model, steps: int) -> list[int]:
    """The timestep each DDIM step goes to: the schedule's next (-1 after the last: the
    final alpha)."""
    ts = [int(t) for t in inference_timesteps(model.scheduler, steps)]
    return [*ts[1:], -1]


def _expected_nfe(model, method: str, guidance: float, steps: int, opts: dict) -> int:
    """UNet forwards per image, from each method's cost model (not from the code under test)."""
    c = 2 if guidance > 1 else 1
    prevs = _prev_steps(model, steps)
    if method == "default":
        return c * steps
    if method == "free2guide":
        k, guided = opts.get("candidates", 4), opts.get("guided_steps", 5)
        look_aheads = sum(1 for i, s in enumerate(prevs) if i < guided and s >= 0)
        # each look-ahead costs K, and the chosen one's prediction replaces the next step's
        return c * (steps + look_aheads * (k - 1))
    if method == "demon":
        k, n = opts.get("K", 16), opts.get("rollout_steps", 4)
        per = 1 if opts.get("estimate", "ode") == "tweedie" else None
        return sum(c * (1 + (k * (per or min(n, s + 1)) if s >= 0 else 0)) for s in prevs)
    if method == "inference_scaling":
        n = opts.get("N", 4)
        samples = n if opts.get("search", "random") == "random" else 1 + opts["rounds"] * n
        return c * steps * samples
    raise AssertionError(method)


CASES = [
    ("default", 5.0, {}),
    ("default", 1.0, {}),
    ("free2guide", 5.0, {"candidates": 3, "guided_steps": 2}),
    ("free2guide", 1.0, {"candidates": 2, "guided_steps": 5, "weighting": "softmax"}),
    ("demon", 5.0, {"K": 3, "rollout_steps": 2}),
    ("demon", 1.0, {"K": 2, "estimate": "tweedie", "weighting": "boltzmann"}),
    ("inference_scaling", 5.0, {"N": 3}),
    ("inference_scaling", 5.0, {"search": "zero_order", "N": 2, "rounds": 2}),
]


@pytest.mark.parametrize(("method", "guidance", "opts"), CASES, ids=lambda v: str(v))
def test_each_method_generates_an_image_with_exactly_counted_nfe(
    model, brightness, method, guidance, opts
):
    result = generate(model, ["a red circle"], [7], _settings(method, guidance, **opts))
    assert result.images.shape == (1, 3, SIDE, SIDE)
    assert torch.isfinite(result.images).all()
    assert float(result.images.min()) >= 0.0 and float(result.images.max()) <= 1.0
    assert result.nfe_per_image == _expected_nfe(model, method, guidance, STEPS, opts)
    if method == "default":
        assert not brightness  # plain DDIM never calls a verifier
    else:
        assert brightness and all(m["seed"] == 7 for c in brightness for m in c["metadata"])


@pytest.mark.parametrize("spacing", ["leading", "linspace"])
def test_free2guide_predicts_at_every_timestep_of_the_schedule(
    model, brightness, monkeypatch, spacing
):
    """The chosen look-ahead's prediction stands for the next step's, and was made at that
    step's timestep, with ``linspace`` spacing too (where diffusers' DDIM rule would step
    from 999 to 857 at 7 steps, not to the schedule's 832)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config, timestep_spacing=spacing)
    monkeypatch.setattr(model, "scheduler", scheduler)
    steps = 7
    schedule = inference_timesteps(scheduler, steps).tolist()
    predicted_at: set[int] = set()
    real = model.predict_noise

    def recording(latents, timesteps, *args, **kwargs):
        predicted_at.update(int(t) for t in timesteps)
        return real(latents, timesteps, *args, **kwargs)

    monkeypatch.setattr(model, "predict_noise", recording)
    settings = _settings("free2guide", 1.0, steps, candidates=2, guided_steps=steps)
    generate(model, ["a red circle"], [0], settings)
    assert set(schedule) <= predicted_at, sorted(set(schedule) - predicted_at)


def test_default_nfe_is_steps_times_two_with_cfg_and_matches_the_trajectory(model):
    prompts, seeds = ["a", "b"], [0, 1]
    result = generate(model, prompts, seeds, SampleSettings(steps=4, height=SIDE, width=SIDE))
    assert result.nfe_per_image == 8
    with count_nfe(model) as counter:
        _, trajectory = sample(
            model, prompts, seeds=seeds, steps=4, height=SIDE, width=SIDE, return_trajectory=True
        )
    assert counter.per_image(2) == trajectory.nfe == 8
    assert "predict_noise" not in vars(model)  # the counter restored the bound method


def test_nfe_counter_counts_rows_nests_and_restores():
    class Fake:
        def predict_noise(self, latents, *args, **kwargs):
            return latents

    fake = Fake()
    with count_nfe(fake) as outer:
        fake.predict_noise(torch.zeros(4, 1))
        with count_nfe(fake) as inner:
            fake.predict_noise(torch.zeros(2, 1))
        fake.predict_noise(torch.zeros(1, 1))
    assert (outer.rows, outer.calls, inner.rows) == (7, 3, 2)
    assert outer.per_image(7) == 1.0
    assert "predict_noise" not in vars(fake)


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("free2guide", {"candidates": 2, "guided_steps": 2, "weighting": "softmax"}),
        ("demon", {"K": 2, "estimate": "tweedie"}),
        ("inference_scaling", {"search": "zero_order", "N": 2, "rounds": 1}),
    ],
)
def test_an_image_depends_on_its_seed_only(model, brightness, method, opts):
    settings = _settings(method, **opts)
    pair = generate(model, ["a red circle", "a blue square"], [3, 4], settings).images
    alone = generate(model, ["a blue square"], [4], settings).images
    again = generate(model, ["a red circle", "a blue square"], [3, 4], settings).images
    assert torch.allclose(pair[1], alone[0], atol=1e-5)
    assert torch.equal(pair, again)
    other = generate(model, ["a red circle"], [5], settings).images
    assert not torch.allclose(pair[0], other[0], atol=1e-3)


def test_random_search_of_one_noise_is_plain_ddim(model, brightness):
    prompts, seeds = ["a red circle", "two blue squares"], [11, 12]
    default = generate(model, prompts, seeds, _settings("default")).images
    searched = generate(model, prompts, seeds, _settings("inference_scaling", N=1)).images
    assert torch.allclose(default, searched, atol=1e-5)


def test_more_search_never_scores_lower_with_a_deterministic_verifier(model, brightness):
    prompts, seeds = ["a red circle", "a green triangle", "a blue square"], [0, 1, 2]

    def score(settings):  # the fake verifier: mean pixel value
        return generate(model, prompts, seeds, settings).images.mean(dim=(1, 2, 3))

    first = score(_settings("default"))
    previous = first
    for n in (2, 4):  # the first n noises of N=4 are those of N=n: best-of-N is monotone
        best = score(_settings("inference_scaling", N=n))
        assert (best >= previous - 1e-6).all()
        previous = best
    assert (previous > first).any()  # some search found a brighter image
    zero_order = score(_settings("inference_scaling", search="zero_order", N=2, rounds=2))
    assert (zero_order >= first - 1e-6).all()  # the pivot is the default noise


def test_with_step_noise_the_first_candidate_is_plain_sampling_and_search_never_loses(
    model, brightness
):
    """With sample.eta > 0 every candidate drew its step noise from the image's one
    generator, interleaved, so candidate 0 was not default's image and best-of-N could score
    below default. Candidate 0 now draws default's step noise too."""
    prompts = ["a red circle", "a green triangle", "a blue square", "two red squares"]
    seeds = [0, 1, 2, 3]

    def settings(method: str, **options):
        return SampleSettings(method, STEPS, 5.0, 1.0, SIDE, SIDE, options=options, reward=NAME)

    plain = generate(model, prompts, seeds, settings("default")).images.mean(dim=(1, 2, 3))
    brightness.clear()
    best = generate(model, prompts, seeds, settings("inference_scaling", N=3)).images
    first = {
        m["seed"]: float(c["scores"][k])
        for c in brightness
        for k, m in enumerate(c["metadata"])
        if m["candidate"] == 0
    }
    assert first == pytest.approx(dict(zip(seeds, plain.tolist(), strict=True)), abs=1e-5)
    assert (best.mean(dim=(1, 2, 3)) >= plain - 1e-6).all()
    more = generate(model, prompts, seeds, settings("inference_scaling", N=5)).images
    assert (more.mean(dim=(1, 2, 3)) >= best.mean(dim=(1, 2, 3)) - 1e-6).all()  # N=3's are in it


# --------------------------------------------------------------------------- weights


def test_demon_weights_match_hand_computed_values():
    r = torch.tensor([1.0, 2.0, 3.0])
    t1 = math.tanh(1.0)
    assert torch.allclose(demon_weights(r, "tanh", 1.0), torch.tensor([-t1, 0.0, t1]).double())
    t2 = math.tanh(2.0)  # tau 0.5 doubles the deviation
    assert torch.allclose(demon_weights(r, "tanh", 0.5), torch.tensor([-t2, 0.0, t2]).double())
    e = [math.exp(v) for v in (1.0, 2.0, 3.0)]
    soft = torch.tensor([v / sum(e) for v in e]).double()
    assert torch.allclose(demon_weights(r, "boltzmann", 1.0), soft)
    e2 = [math.exp(v / 2) for v in (1.0, 2.0, 3.0)]
    assert torch.allclose(
        demon_weights(r, "boltzmann", 2.0), torch.tensor([v / sum(e2) for v in e2]).double()
    )
    # an unscorable candidate gets weight 0 and stays out of the mean
    nan = torch.tensor([1.0, float("nan"), 3.0])
    assert torch.allclose(demon_weights(nan, "tanh", 1.0), torch.tensor([-t1, 0.0, t1]).double())
    w = demon_weights(nan, "boltzmann", 1.0)
    assert torch.allclose(w, torch.tensor([e[0], 0.0, e[2]]).double() / (e[0] + e[2]))
    with pytest.raises(RewardError, match="could not score any candidate"):
        demon_weights(torch.tensor([float("nan")] * 2), "tanh", 1.0)


def test_demon_noise_is_the_weighted_sum_renormalised_to_sqrt_dim():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 1, 2)
    out = combine_noises(z, torch.tensor([0.6, 0.8]))
    assert out.shape == (1, 1, 1, 2)
    assert torch.allclose(out.flatten(), torch.tensor([0.6, 0.8]) * math.sqrt(2))
    # weights that cancel (equal rewards under tanh) count every candidate equally
    assert torch.allclose(combine_noises(z, torch.zeros(2)).flatten(), torch.tensor([1.0, 1.0]))
    big = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mixed = combine_noises(big, torch.linspace(-1, 1, 16))
    assert float(mixed.norm()) == pytest.approx(math.sqrt(4 * 8 * 8), rel=1e-5)


def test_free2guide_picks_the_best_or_samples_softmax_weights():
    generator = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.2, float("nan"), 0.9, 0.5]).double()
    assert pick_candidate(scores, "greedy", 1.0, generator) == 2
    assert pick_candidate(scores, "softmax", 1e-4, generator) == 2  # near the greedy limit
    draws = [
        pick_candidate(torch.tensor([0.0, math.log(3.0)]), "softmax", 1.0, generator)
        for _ in range(2000)
    ]
    assert sum(draws) / len(draws) == pytest.approx(0.75, abs=0.04)
    with pytest.raises(RewardError, match="could not score"):
        pick_candidate(torch.tensor([float("nan")]), "softmax", 1.0, generator)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "options", "reward", "error", "message"),
    [
        ("demon", {"KK": 2}, NAME, ValueError, "sample.options.KK: unknown option of method "
         "'demon', did you mean 'K'?"),
        ("demon", {"K": 0}, NAME, ValueError, "sample.options.K: must be >= 1, got 0"),
        ("demon", {"K": 2.5}, NAME, ValueError, "sample.options.K: expected an integer, got 2.5"),
        ("demon", {"weighting": "soft"}, NAME, ValueError, "expected one of 'tanh', 'boltzmann'"),
        ("free2guide", {"temperature": 0}, NAME, ValueError, "must be > 0"),
        ("free2guide", {"candidate_eta": 1.5}, NAME, ValueError,
         "sample.options.candidate_eta: must be <= 1 (DDIM eta), got 1.5"),
        ("demon", {"sde_eta": 0}, NAME, ValueError, "sample.options.sde_eta: must be > 0"),
        ("demon", {"sde_eta": 2.0}, NAME, ValueError, "sde_eta: must be <= 1 (DDIM eta)"),
        ("inference_scaling", {"search": "paths"}, NAME, NotImplementedError, "'paths'"),
        ("default", {"K": 2}, None, ValueError, "unknown option of method 'default'"),
        ("demon", {}, None, ValueError, "sample.method 'demon' needs a verifier reward"),
        ("demonn", {}, NAME, ValueError, "unknown sample method 'demonn', did you mean 'demon'?"),
    ],
)  # fmt: skip
def test_bad_settings_fail_in_one_line(brightness, method, options, reward, error, message):
    settings = SampleSettings(method, options=options, reward=reward)
    with pytest.raises(error) as info:
        settings.validate()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_method_is_registered_with_a_paper_docstring():
    assert set(SAMPLE_METHODS) == {"default", "free2guide", "demon", "inference_scaling"}
    for name, method in SAMPLE_METHODS.items():
        if method.run is not None:  # k-diffusion style: the docstring opens with the paper
            first = method.run.__doc__.splitlines()[0]
            assert " et al. 20" in first and "arXiv" in first, (name, first)


def test_settings_keep_the_verifier_as_json_and_redact_secrets():
    from dsharp.config import RewardSpec

    spec = RewardSpec(name="shapes", options={"api_key": "sk-123", "binary": True})
    settings = SampleSettings("demon", reward=[spec])
    json.dumps(vars(settings))  # evaluate() records vars(settings): it must stay JSON-able
    assert settings.reward[0]["options"]["api_key"] == "sk-123"  # the verifier needs it
    assert settings.as_dict()["reward"][0]["options"] == {"api_key": "<redacted>", "binary": True}


# --------------------------------------------------------------------------- CLI


def test_sample_command_runs_demon_and_reports_nfe(model, tiny_sd_dir, tmp_path):
    out = tmp_path / "png"
    args = ["sample", "--model", tiny_sd_dir, "--prompt", "a red circle", "--method", "demon"]
    args += ["--option", "K=2", "--option", "estimate=tweedie", "--reward", "shapes"]
    args += ["--steps", STEPS, "--height", SIDE, "--width", SIDE, "--out", out, "--device", "cpu"]
    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["method"] == "demon"
    assert [Path(p).name for p in summary["images"]] == ["0000-seed0-a-red-circle.png"]
    assert (out / "0000-seed0-a-red-circle.png").is_file()
    opts = {"K": 2, "estimate": "tweedie"}
    assert summary["nfe_per_image"] == _expected_nfe(model, "demon", 5.0, STEPS, opts)


def test_sample_command_takes_positional_sample_overrides(model, tiny_sd_dir, tmp_path):
    args = ["sample", "--model", tiny_sd_dir, "--prompt", "a red circle", "--reward", "shapes"]
    args += ["sample.method=free2guide", "sample.options.candidates=2", "sample.steps=2"]
    args += ["--height", SIDE, "--width", SIDE, "--out", tmp_path, "--device", "cpu"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"1 image in {tmp_path} (free2guide, "
        f"{_expected_nfe(model, 'free2guide', 5.0, 2, {'candidates': 2}):g} network evaluations "
        "and 4 reward evaluations per image)"  # 2 candidates at each of 2 steps
    )
    result = invoke([*args, "--json"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    opts = {"candidates": 2}
    assert summary["nfe_per_image"] == _expected_nfe(model, "free2guide", 5.0, 2, opts)


@pytest.mark.parametrize(
    ("extra", "message", "status"),
    [
        (["--method", "demon"], "error: sample.method 'demon' needs a verifier reward", 2),
        (["--method", "demon", "--reward", "shapes", "--option", "K"], "expected KEY=VALUE", 2),
        (["sample.stesp=3"], "sample.stesp: unknown key, did you mean 'steps'?", 2),
        (["train.lr=1"], "only sample.* settings can be set here", 2),
        (["--steps", "2", "sample.steps=3"], "--steps also sets sample.steps; give one", 2),
        (["--steps", "2", "sample.steps"], "'sample.steps': expected KEY=VALUE", 2),  # no =
        (["--guidance", "5", "sample.guidance=5"], "--guidance also sets sample.guidance", 2),
        (
            ["--method", "demon", "--reward", "shapes", "--option", "K=4", "sample.options.K=5"],
            "--option K=... also sets sample.options.K; give one",
            2,
        ),
    ],
)
def test_sample_command_reports_bad_settings_before_loading_the_model(
    tmp_path, extra, message, status
):
    args = ["sample", "--model", tmp_path / "no-such-model", "--prompt", "a", *extra]
    result = invoke(args + ["--out", tmp_path])
    assert result.exit_code == status  # 2: a setting that does not parse, as in a recipe
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("method", ["default", "demon"])
def test_a_size_the_model_cannot_draw_is_a_setting_error_before_any_image(
    tiny_sd_dir, tmp_path, brightness, method, monkeypatch
):
    """Where the model's config could not be read before loading (a hub id not cached),
    the loaded model refuses the size (test_image_sides: the refusal before the load)."""
    import dsharp.preflight

    monkeypatch.setattr(dsharp.preflight, "image_size_factor", lambda model: 1)
    args = ["sample", "--model", str(tiny_sd_dir), "--prompt", "a", "--height", "60"]
    args += ["--method", method, "--steps", "1", "--out", str(tmp_path)]
    result = invoke(args + (["--reward", NAME] if method == "demon" else []))
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]  # after the loaders' own progress lines
    assert last == "error: height 60 must be a positive multiple of 8 for sd"
    assert "sample" not in result.stderr  # no progress bar was started
    assert not list(tmp_path.glob("*.png"))


def test_eval_with_a_recipe_refuses_a_flag_and_an_override_of_one_setting():
    recipe = ROOT / "recipes" / "mini" / "demon.yaml"
    result = invoke(["eval", "--recipe", recipe, "--steps", "2", "sample.steps=3"])
    assert result.exit_code == 2
    assert "--steps also sets sample.steps; give one" in result.stderr


def test_eval_refuses_a_flag_and_a_positional_override_of_one_setting(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    args = ["eval", "--model", tmp_path / "no-such-model", "--prompts", prompts, "--bench"]
    args += ["shapes", "--steps", "2"]
    result = invoke(args + ["sample.steps=3"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--steps also sets sample.steps; give one" in lines[0], lines


def test_eval_command_reports_nfe_and_the_verifier(tiny_sd_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    args = ["eval", "--model", tiny_sd_dir, "--prompts", prompts, "--reward", "shapes"]
    args += ["--method", "inference_scaling", "--option", "N=2", "--seeds", "1", "--steps", "2"]
    result = invoke(args + ["--height", SIDE, "--width", SIDE, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["nfe_per_image"] == 2 * 2 * 2  # N x steps x CFG
    assert data["sample"]["method"] == "inference_scaling"
    assert data["sample"]["options"] == {"N": 2}
    assert [r["name"] for r in data["sample"]["reward"]] == ["shapes"]


@pytest.mark.parametrize("name", ["free2guide", "demon", "inference_scaling"])
def test_eval_runs_the_mini_recipe(tiny_sd_dir, tmp_path, name):
    recipe = ROOT / "recipes" / "mini" / f"{name}.yaml"
    overrides = [f"model.pretrained={tiny_sd_dir}", "sample.steps=2", "eval.limit=1"]
    overrides += [f"sample.height={SIDE}", f"sample.width={SIDE}"]
    small = {"free2guide": "candidates=2", "demon": "K=2", "inference_scaling": "N=2"}
    args = ["eval", "--recipe", recipe, *overrides, "--option", small[name], "--seeds", "1"]
    result = invoke(args + ["--out", tmp_path / "e.json", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["recipe"] == str(recipe) and data["bench"] == "shapes"
    assert data["sample"]["method"] == name and data["nfe_per_image"] > 2 * 2
    assert data["n_images"] == len(data["categories"]) == 5  # one prompt per category
    # every val prompt names a held-out colour-shape pair; one spatial, one counting prompt
    assert list(data["groups"]["pairs"]) == ["held-out"]
    assert set(data["constraints"]) == {"count", "presence", "relation"}
    assert json.loads((tmp_path / "e.json").read_text())["nfe_per_image"] == data["nfe_per_image"]


def test_eval_keeps_the_recipes_limit_when_bench_is_named(tiny_sd_dir, tmp_path):
    """``--bench shapes`` beside a recipe whose eval section limits its prompts: the limit
    holds (it used to drop, running every val prompt)."""
    recipe = ROOT / "recipes" / "mini" / "inference_scaling.yaml"
    overrides = [f"model.pretrained={tiny_sd_dir}", "sample.steps=1", "eval.limit=1"]
    overrides += [f"sample.height={SIDE}", f"sample.width={SIDE}"]
    args = ["eval", "--recipe", recipe, *overrides, "--bench", "shapes", "--option", "N=1"]
    result = invoke(args + ["--seeds", "1", "--out", tmp_path / "e.json", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_images"] == 5  # one prompt per category


# --------------------------------------------------------------------------- search direction


def test_free2guide_continues_with_the_candidate_whose_look_ahead_scores_best(
    model, brightness, monkeypatch
):
    from dsharp.inference.base import ImageContext

    free2guide_module = importlib.import_module("dsharp.inference.free2guide")

    scored = record_calls(monkeypatch, ImageContext, "score")
    look_aheads = record_calls(monkeypatch, ImageContext, "x0")
    picks = record_calls(monkeypatch, free2guide_module, "pick_candidate")
    settings = _settings("free2guide", candidates=3, guided_steps=2)
    generate(model, ["a red circle"], [0], settings)
    assert len(picks) == len(scored) == len(look_aheads) == 2
    for score, pick, look_ahead in zip(scored, picks, look_aheads, strict=True):
        # score(self, x0): the look-ahead is what is scored ...
        torch.testing.assert_close(score.args[1], look_ahead.result)
        torch.testing.assert_close(pick.args[0], score.result)  # ... and what the pick ranks
        assert pick.result == int(torch.argmax(score.result))  # greedy: the best one


def test_demon_weighs_each_candidate_noise_up_with_its_score(model, brightness, monkeypatch):
    from dsharp.inference.base import ImageContext

    demon_module = importlib.import_module("dsharp.inference.demon")

    scored = record_calls(monkeypatch, ImageContext, "score")
    combined = record_calls(monkeypatch, demon_module, "combine_noises")
    settings = _settings("demon", K=3, estimate="tweedie", tau=0.5)
    generate(model, ["a red circle"], [0], settings)
    assert combined and len(combined) == len(scored)
    for score, combine in zip(scored, combined, strict=True):
        scores, weights = score.result, combine.args[1]  # combine_noises(noises, weights)
        torch.testing.assert_close(weights, demon_weights(scores, "tanh", 0.5))
        assert float((weights * (scores - scores.mean())).sum()) > 0  # better: weighs more


def test_zero_order_neighbours_are_unit_variance_noises(model, brightness, monkeypatch):
    from dsharp.inference.base import ImageContext

    denoised = record_calls(monkeypatch, ImageContext, "denoise")
    # distance 1: a neighbour left unscaled would have variance 2
    settings = _settings("inference_scaling", search="zero_order", N=8, rounds=1, distance=1.0)
    generate(model, ["a red circle"], [0], settings)
    pivot, neighbours = (call.args[1] for call in denoised)  # denoise(self, x, generators)
    assert neighbours.shape[0] == 8
    assert float(neighbours.std()) == pytest.approx(1.0, abs=0.08)
    correlation = float((neighbours * pivot).mean() / pivot.pow(2).mean())
    assert correlation == pytest.approx(1 / math.sqrt(2), abs=0.08)


def _progress_lines(monkeypatch, log_every_s: float) -> io.StringIO:
    """The progress bars' output, written off a terminal as a job's log gets it."""
    from rich.console import Console

    import dsharp.progress

    out = io.StringIO()
    monkeypatch.setattr(dsharp.progress, "console", Console(file=out, force_terminal=False))
    monkeypatch.setattr(dsharp.progress, "LOG_EVERY_S", log_every_s)
    return out


@pytest.mark.parametrize("method", ["inference_scaling", "demon"])
def test_an_inference_time_methods_progress_moves_within_an_image(
    model, brightness, monkeypatch, method
):
    """The bar counted images only: one image of a long search showed 0/1 until it ended,
    and off a terminal nothing was written until then. The network evaluations move it."""
    out = _progress_lines(monkeypatch, 0.0)  # a line at every update
    opts = {"N": 2} if method == "inference_scaling" else {"K": 2, "estimate": "tweedie"}
    result = generate(model, ["a red circle"], [7], _settings(method, **opts), progress=True)
    lines = [line.split(",")[0] for line in out.getvalue().splitlines() if ": " in line]
    nfe = int(result.nfe_per_image)
    head, done = lines[0].split(": ")  # the first UNet call's rows, before the image is done
    assert head == "sample network evaluations" and done.endswith("/?")
    assert 0 < int(done[:-2]) < nfe and lines.index("sample: 1/1") > 0
    assert f"sample network evaluations: {nfe}/{nfe}" in lines


def test_off_a_terminal_the_evaluations_counter_writes_its_line_once_at_the_end(
    model, brightness, monkeypatch
):
    """Lines wait for the interval: a quick run of three images writes each bar's last line
    only, not one per image (the counter's total, estimated from the first image, is met
    only at the end)."""
    out = _progress_lines(monkeypatch, 3600.0)
    settings = _settings("inference_scaling", N=2)
    result = generate(model, ["a", "b", "c"], [1, 2, 3], settings, progress=True)
    total = int(result.nfe_per_image * 3)
    lines = [line.split(",")[0] for line in out.getvalue().splitlines() if ": " in line]
    assert sorted(lines) == ["sample network evaluations: 36/36", "sample: 3/3"]
    assert total == 36  # 3 images of 2 candidates of 3 steps with CFG
