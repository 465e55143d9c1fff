"""`dsharp recipes validate` says what `dsharp train` would refuse before any model loads, and
`train` refuses it in one line before loading: method fields and options the method does
not take, reward options its reward does not take, prompts the rewards cannot score, an
output folder that cannot be made, infinite numbers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from dsharp.cli import app

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
DDPO = ROOT / "recipes" / "mini" / "ddpo.yaml"
SFT = ROOT / "recipes" / "mini" / "sft.yaml"
DIFFUSION_DPO = ROOT / "recipes" / "mini" / "diffusion_dpo.yaml"
D3PO = ROOT / "recipes" / "mini" / "d3po.yaml"
ITERPO = ROOT / "recipes" / "mini" / "iterpo.yaml"
DEMON = ROOT / "recipes" / "mini" / "demon.yaml"
INFERENCE_SCALING = ROOT / "recipes" / "mini" / "inference_scaling.yaml"


def _validate(recipe: Path, *overrides: str):
    return CliRunner().invoke(app, ["recipes", "validate", str(recipe), *overrides])


@pytest.mark.parametrize(
    ("recipe", "override", "expected"),
    [
        (
            QUICKSTART,
            "method.options.foo=1",
            "method.options.foo: unknown option of rlhf_sharpening",
        ),
        (QUICKSTART, "method.options.sampel_weight=1", "did you mean 'sample_weight'?"),
        (SFT, "method.beta=3", "method.beta: not used by sft_sharpening"),
        (DDPO, "method.m=5", "method.m: not used by ddpo"),
        (
            QUICKSTART,
            "rewards.0.options.bogus=1",
            "rewards.0.options: reward 'shapes': bad options",
        ),
        (
            QUICKSTART,
            "eval.prompts=[a photo of a cat]",
            "eval.prompts: reward 'shapes' cannot score",
        ),
        (QUICKSTART, "train.lr=.inf", "train.lr: expected a finite number"),
        (QUICKSTART, "sample.guidance=.inf", "sample.guidance: expected a finite number"),
        (QUICKSTART, 'output_dir=""', "output_dir:"),
        # option values the method refuses, checked without a model
        (QUICKSTART, "method.options.sample_from=referense", "unknown 'referense'"),
        (QUICKSTART, "method.options.error_space=v", "error_space: unknown 'v'"),
        (QUICKSTART, "method.options.sample_weight=2", "must be in [0, 1], got 2"),
        (QUICKSTART, "method.n=1", "needs n >= 2 trajectories per prompt"),
        (DDPO, "method.options.variant=foo", "variant: expected 'sf' or 'is'"),
        (DDPO, "method.eta=0", "method.eta: sampling with log-probs needs"),
        (DIFFUSION_DPO, "method.options.pairs=onlin", "pairs: expected 'offline' or 'online'"),
        (D3PO, "method.options.eps=2", "method.options.eps: must be < 1"),
        (ITERPO, "method.options.loss_scale=0", "loss_scale: must be > 0"),
        (QUICKSTART, "model.pretrained=dsharp-mni", "did you mean 'dsharp-mini'?"),
        (QUICKSTART, f"model.pretrained={QUICKSTART}", "a file, not a diffusers model folder"),
        (
            QUICKSTART,
            f"model.pretrained={QUICKSTART.parent}",
            "a folder without model_index.json, not a diffusers model folder",
        ),
        (QUICKSTART, "method.options.sample_weight=.nan", "must be in [0, 1], got nan"),
        (QUICKSTART, "method.options.decode_batch_size=0", "must be an integer >= 1, got 0"),
        (INFERENCE_SCALING, "sample.options.search=paths", "'paths' (search over denoising"),
        # reward option values the reward refuses when built, checked without building it
        (
            QUICKSTART,
            (
                "rewards.0.name=mllm",
                "rewards.0.options.model=x",
                "rewards.0.options.max_retries=-1",
            ),
            "rewards.0.options: mllm: option 'max_retries': expected an integer >= 0, got -1",
        ),
        (
            QUICKSTART,
            "rewards.0.options.binary=maybe",
            "rewards.0.options: shapes reward option 'binary' must be true or false",
        ),
        (ITERPO, "rewards.0.options.tau=abc", "shapes_soft reward option 'tau' must be a number"),
        (ITERPO, "rewards.0.options.judge_shapes=2", "'judge_shapes' must be true or false"),
        (
            QUICKSTART,
            ("train.optimizer=sgd", "train.adam_beta2=0.5"),
            "train.adam_beta2: only used with train.optimizer adamw or adamw8bit, not sgd",
        ),
        # a LoRA over an fp16 UNet without fp16's gradient scaler (bf16 autocast included)
        (
            QUICKSTART,
            ("model.lora_rank=4", "model.weight_dtype=fp16"),
            "model.weight_dtype: fp16 with LoRA needs train.mixed_precision: fp16 (CUDA)",
        ),
        (
            QUICKSTART,
            ("model.lora_rank=4", "model.weight_dtype=fp16", "train.mixed_precision=bf16"),
            "underflowing (it is bf16); or set model.weight_dtype: bf16",
        ),
        (DEMON, "sample.options.KK=3", "sample.options.KK: unknown option of method 'demon'"),
        (DEMON, "sample.options.weighting=boltzman", "expected one of 'tanh', 'boltzmann'"),
    ],
)
def test_validate_refuses_what_train_would(recipe: Path, override, expected: str):
    result = _validate(recipe, *([override] if isinstance(override, str) else override))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_output_folder_under_a_file_is_refused_by_validate_and_train(tmp_path: Path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    result = _validate(QUICKSTART, f"output_dir={blocker}/run")
    assert result.exit_code == 2
    assert f"output_dir: {blocker}/run: would be made inside {blocker}, a file" in result.stderr
    train = CliRunner().invoke(app, ["train", str(QUICKSTART), f"output_dir={blocker}"])
    assert train.exit_code == 2 and f"output_dir: {blocker}: is a file" in train.stderr


def test_train_refuses_an_unknown_sharpening_option_in_one_line_before_loading(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["train", str(QUICKSTART), "method.options.foo=1", f"output_dir={tmp_path / 'r'}"]
    )
    assert result.exit_code == 2, result.output
    assert "method.options.foo: unknown option" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_validate_notes_what_this_machine_would_refuse_and_stays_ok(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)  # the recipe's output_dir, runs/quickstart, is not there
    result = _validate(QUICKSTART, "train.mixed_precision=fp16")
    assert result.exit_code == 0 and result.stdout.startswith("ok: ")
    assert result.stderr.strip() == (
        "note: train would refuse it on this machine: train.mixed_precision: fp16 needs a "
        "CUDA GPU; use bf16 or no on CPU"
    )
    assert _validate(QUICKSTART, "train.mixed_precision=bf16").stderr == ""


def test_the_training_api_refuses_an_fp16_lora_without_fp16_mixed_precision_before_loading(
    monkeypatch, tmp_path
):
    import dsharp.engine
    from dsharp.config import load_recipe

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the precision was checked")

    monkeypatch.setattr(dsharp.engine, "build_model", no_load)
    overrides = ["model.lora_rank=4", "model.weight_dtype=fp16", f"output_dir={tmp_path / 'r'}"]
    recipe = load_recipe(QUICKSTART, overrides)
    with pytest.raises(ValueError, match=r"^model\.weight_dtype: fp16 with LoRA needs train\."):
        dsharp.engine.train(recipe, progress=False)


def test_precisions_that_train_without_trouble_pass(monkeypatch, tmp_path):
    """fp16 LoRA with fp16 autocast (on CUDA), and fp16 frozen parts under full
    fine-tuning (its UNet trains in fp32)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.chdir(tmp_path)
    for overrides in (
        ("model.lora_rank=4", "model.weight_dtype=fp16", "train.mixed_precision=fp16"),
        ("model.weight_dtype=fp16", "train.mixed_precision=no"),
        ("model.weight_dtype=fp16", "train.mixed_precision=bf16"),
        ("model.lora_rank=4", "model.weight_dtype=bf16", "train.mixed_precision=no"),
    ):
        result = _validate(QUICKSTART, *overrides)
        assert result.exit_code == 0 and result.stderr == "", (overrides, result.output)


def test_bf16_autocast_over_fp16_weights_is_refused_on_cpu_before_loading(monkeypatch, tmp_path):
    """CPU autocast leaves layer norm a bf16 input and fp16 weights: torch raised "mixed
    dtype (CPU)" in the text encoder at the first step, after the model had loaded."""
    import torch

    import dsharp.engine

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the precision was checked")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dsharp.engine, "build_model", no_load)
    monkeypatch.chdir(tmp_path)
    overrides = ["model.weight_dtype=fp16", "train.mixed_precision=bf16"]
    why = (
        "train.mixed_precision: bf16 autocast over model.weight_dtype fp16 fails on CPU; "
        "set model.weight_dtype: bf16 (or fp32)"
    )
    result = _validate(QUICKSTART, *overrides)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"note: train would refuse it on this machine: {why}"
    run = tmp_path / "run"
    args = ["train", str(QUICKSTART), *overrides, f"output_dir={run}", "--no-progress"]
    train = CliRunner().invoke(app, args)
    assert train.exit_code == 1, train.output
    assert train.stderr.strip() == f"error: {why}"


def test_a_tracker_whose_package_is_missing_is_noted_by_validate_and_refused_before_loading(
    monkeypatch, tmp_path
):
    """accelerate drops a tracker it cannot import with a warning, and the run logs nothing
    to it: train refuses it before the model loads, as it does adamw8bit without
    bitsandbytes."""
    from accelerate import tracking

    import dsharp.engine

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the trackers were checked")

    monkeypatch.setattr(dsharp.engine, "build_model", no_load)
    monkeypatch.setattr(tracking, "get_available_trackers", lambda: [])  # none installed
    monkeypatch.chdir(tmp_path)
    why = (
        "train.trackers: wandb needs its package, which is not installed (pip install wandb); "
        "accelerate would log nothing to it"
    )
    result = _validate(QUICKSTART, "train.trackers=[wandb]")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"note: train would refuse it on this machine: {why}"
    run = tmp_path / "run"
    args = ["train", str(QUICKSTART), "train.trackers=[wandb]", f"output_dir={run}"]
    train = CliRunner().invoke(app, [*args, "--no-progress"])
    assert train.exit_code == 1, train.output
    assert train.stderr.strip() == f"error: {why}"
    assert not (run / "checkpoints").exists()
    assert _validate(QUICKSTART).stderr == ""  # no tracker asked for: nothing to say


def test_the_shipped_recipes_still_validate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a README user's runs/quickstart would add its own note
    for recipe, method in (
        (QUICKSTART, "rlhf_sharpening"),
        (DDPO, "ddpo"),
        (SFT, "sft_sharpening"),
    ):
        result = _validate(recipe)
        assert result.exit_code == 0, result.output
        assert (result.stdout, result.stderr) == (f"ok: {recipe} ({method}, dsharp-mini)\n", "")


@pytest.mark.parametrize(
    ("name", "fields", "options"),
    [
        ("ddpo", {"eta": 0.0}, {"variant": "foo"}),  # two bad values: the same one is named
        ("ddpo", {}, {"variant": "sf", "inner_epochs": 2}),
        ("d3po", {"eta": 0.0}, {"eps": 2.0}),
        ("rlhf_sharpening", {}, {"sample_weight": float("nan")}),
        ("diffusion_dpo", {}, {"pairs": "offline"}),  # no pairs file
    ],
)
def test_preflight_refuses_what_the_constructor_does_with_the_same_message(
    tiny_sd_dir, name: str, fields: dict, options: dict
):
    from dsharp.config import MethodConfig
    from dsharp.methods.factory import build_method, check_method_section
    from dsharp.models import load_model

    cfg = MethodConfig(name=name, options=options, **fields)
    with pytest.raises(ValueError) as preflight:
        check_method_section(cfg)
    model = load_model(str(tiny_sd_dir))
    with pytest.raises(ValueError) as constructor:
        build_method(cfg, model, None, 64, 64)
    assert str(preflight.value) == str(constructor.value)


NOTE_START = "note: method.options.inner_epochs: with DDPO-IS, "


@pytest.mark.parametrize(
    ("overrides", "noted"),
    [
        # one pass, a round lasts 1 call, a step after each call: every step between rounds
        ("method.options.inner_epochs=1", True),
        # two passes, a round lasts 2 calls, a step after each: one lands inside each round
        ("method.options.inner_epochs=2 train.grad_accum=1", False),
        # ... but with a step every 2 calls, every step falls between rounds
        ("method.options.inner_epochs=2 train.grad_accum=2", True),
        ("method.options.inner_epochs=1 method.options.variant=sf", False),
        # one pass of 3 calls (one of the 3 stochastic steps each: dsharp-mini's last step
        # draws no noise), a step every 2: inside the round
        (
            "method.options.inner_epochs=1 method.options.timesteps_per_step=1 "
            "method.options.train_timestep_fraction=1.0 method.infer_steps=4 "
            "train.grad_accum=2",
            False,
        ),
    ],
)
def test_a_ddpo_is_recipe_whose_ratios_stay_at_one_is_noted_not_refused(overrides: str, noted):
    result = _validate(DDPO, *overrides.split(" "))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(NOTE_START) == noted, result.stderr
    if noted:
        assert "every importance ratio is 1 and the clip never acts" in result.stderr


ONE_STEP_EACH = [
    "method.options.inner_epochs=1",
    "method.options.timesteps_per_step=1",
    "method.options.train_timestep_fraction=1.0",
    "method.infer_steps=10",
]


def _tiny_sd_with_scheduler(tiny_sd_dir: Path, folder: Path, **settings) -> Path:
    """A copy of the tiny SD folder whose scheduler config has ``settings``."""
    import json
    import shutil

    shutil.copytree(tiny_sd_dir, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))
    return folder


@pytest.mark.parametrize(
    ("scheduler", "grad_accum", "calls"),
    [
        # dsharp-mini's last step lands on abar = 1 (set_alpha_to_one): 9 stochastic steps
        (None, 9, 9),
        (None, 10, None),
        # the tiny SD's schedule (leading, steps_offset 1, set_alpha_to_one false): all 10
        ({}, 10, 10),
        ({}, 9, None),
        # its copy with set_alpha_to_one true: 9 again
        ({"set_alpha_to_one": True}, 9, 9),
    ],
)
def test_the_ddpo_is_note_counts_the_stochastic_steps_of_the_model_scheduler(
    tiny_sd_dir, tmp_path, scheduler, grad_accum: int, calls
):
    """Read from the scheduler config without loading: the round the note counts is the one
    the method trains (`trainable_steps`), one call per stochastic step here."""
    model = "dsharp-mini"
    if scheduler is not None:
        model = str(_tiny_sd_with_scheduler(tiny_sd_dir, tmp_path / "sd", **scheduler))
    overrides = [*ONE_STEP_EACH, f"model.pretrained={model}", f"train.grad_accum={grad_accum}"]
    result = _validate(DDPO, *overrides)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(NOTE_START) == (calls is not None), result.stderr
    if calls is not None:
        assert f"1 pass over a round ({calls} engine calls)" in result.stderr


def test_a_schedule_without_a_noisy_step_is_refused_before_loading(tiny_sd_dir, tmp_path):
    """DDPO and D3PO train only the DDIM steps that draw noise. dsharp-mini's one step lands
    on abar = 1 (set_alpha_to_one), a one-step linspace schedule's goes from t = 0 to abar_0:
    neither has one. `validate`, `train` and `dsharp.train` read that from the scheduler
    config and refuse it in one line, before the model loads."""
    import dsharp
    from dsharp.recipe_errors import RecipeError

    linspace = _tiny_sd_with_scheduler(
        tiny_sd_dir, tmp_path / "sd", timestep_spacing="linspace", set_alpha_to_one=False
    )
    cases = [
        (DDPO, "dsharp-mini", "leading, set_alpha_to_one True"),
        (D3PO, str(linspace), "linspace, set_alpha_to_one False"),
    ]
    for recipe, model, schedule in cases:
        why = (
            f"method.infer_steps: all 1 DDIM step(s) of this scheduler (timestep_spacing "
            f"{schedule}) are deterministic, so there is nothing to train; use more steps"
        )
        overrides = [f"model.pretrained={model}", "method.infer_steps=1"]
        result = _validate(recipe, *overrides)
        assert result.exit_code == 2, result.output
        assert result.stderr == f"{recipe}: {why}\n"
        run = tmp_path / "run"
        train = CliRunner().invoke(app, ["train", str(recipe), *overrides, f"output_dir={run}"])
        assert train.exit_code == 2, train.output
        assert train.stderr == f"recipe error: {recipe}: {why}\n"
        with pytest.raises(RecipeError) as refused:
            dsharp.train(dsharp.load_recipe(recipe, [*overrides, f"output_dir={run}"]))
        assert (refused.value.field, refused.value.reason) == (
            "method.infer_steps",
            why.removeprefix("method.infer_steps: "),
        )
        assert not run.exists()
        assert _validate(recipe, overrides[0], "method.infer_steps=2").exit_code == 0


def test_the_schedule_check_gives_the_constructor_message(tiny_sd_dir, tmp_path):
    from dsharp.config import MethodConfig, ModelConfig
    from dsharp.methods.factory import build_method, check_method_schedule
    from dsharp.models import load_model
    from dsharp.scheduler_files import scheduler_without_weights

    folder = _tiny_sd_with_scheduler(tiny_sd_dir, tmp_path / "sd", timestep_spacing="linspace")
    cfg = MethodConfig(name="ddpo", infer_steps=1)
    with pytest.raises(ValueError) as preflight:
        check_method_schedule(cfg, scheduler_without_weights(ModelConfig(pretrained=str(folder))))
    with pytest.raises(ValueError) as constructor:
        build_method(cfg, load_model(str(folder)), None, 64, 64)
    assert str(preflight.value) == str(constructor.value)


def _cached_org_tiny(hub: Path, monkeypatch, subfolder: str) -> Path:
    """A hub cache at ``hub`` (made the cache in use) holding ``org/tiny``'s main snapshot,
    with ``subfolder`` made in it: the test writes the files it is to hold."""
    from huggingface_hub import constants

    repo = hub / "models--org--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    (snapshot / subfolder).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    return snapshot


def test_the_scheduler_comes_from_the_hub_cache_without_a_download(
    tiny_sd_dir, tmp_path, monkeypatch
):

    from dsharp.config import ModelConfig
    from dsharp.scheduler_files import scheduler_without_weights

    snapshot = _cached_org_tiny(tmp_path / "hub", monkeypatch, "scheduler")
    name = "scheduler/scheduler_config.json"
    text = (tiny_sd_dir / name).read_text()
    assert '"leading"' in text
    (snapshot / name).write_text(text.replace('"leading"', '"trailing"'))
    cached = scheduler_without_weights(ModelConfig(pretrained="org/tiny"))
    assert cached.config.timestep_spacing == "trailing"
    assert scheduler_without_weights(ModelConfig(pretrained="org/not-cached")) is None
    mini = scheduler_without_weights(ModelConfig(pretrained="dsharp-mini"))
    assert (mini.config.set_alpha_to_one, mini.config.prediction_type) == (True, "v_prediction")


def test_validate_refuses_a_key_given_as_api_key_env_without_echoing_it():
    secret = "sk-SECRET123"
    mllm = ["rewards.0.name=mllm", "rewards.0.options.model=x"]
    result = _validate(QUICKSTART, *mllm, f"rewards.0.options.api_key_env={secret}")
    assert result.exit_code == 2
    assert "option 'api_key_env': not an environment variable name" in result.stderr
    assert secret not in result.output
    assert _validate(QUICKSTART, *mllm, "rewards.0.options.api_key_env=MY_KEY").exit_code == 0


TINY = ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def test_an_image_size_the_vae_cannot_draw_is_refused_before_loading(tiny_sd_dir, tmp_path):
    """The VAE's downsampling is read from the folder's config files, so `validate` refuses
    a size that `train` would only refuse after the model loaded."""
    model = f"model.pretrained={tiny_sd_dir}"
    result = _validate(TINY, model, "train.height=60")
    assert result.exit_code == 2, result.output
    assert f"train.height: 60 must be a multiple of 8 for {tiny_sd_dir}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _validate(TINY, model, "train.height=64", "sample.width=72").exit_code == 0
    run = tmp_path / "run"
    train = CliRunner().invoke(
        app, ["train", str(TINY), model, "sample.width=100", f"output_dir={run}"]
    )
    assert train.exit_code == 2 and "sample.width: 100 must be a multiple of 8" in train.stderr
    assert not run.exists()


def test_the_size_factor_comes_from_the_hub_cache_without_a_download(
    tiny_sd_dir, tmp_path, monkeypatch
):

    from dsharp.config import ModelConfig
    from dsharp.preflight import image_size_factor

    snapshot = _cached_org_tiny(tmp_path / "hub", monkeypatch, "vae")
    for name in ("model_index.json", "vae/config.json"):
        (snapshot / name).write_bytes((tiny_sd_dir / name).read_bytes())
    assert image_size_factor(ModelConfig(pretrained="org/tiny")) == 8
    assert image_size_factor(ModelConfig(pretrained="org/not-cached")) == 1  # the loader checks
    assert image_size_factor(ModelConfig(pretrained="dsharp-mini")) == 1  # pixel space


def test_eval_refuses_a_reward_option_value_before_loading_the_model(monkeypatch):
    import dsharp.commands.common

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the reward options were checked")

    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", no_load)
    args = ["eval", "--model", "dsharp-mini", "--bench", "shapes", "--limit", "1"]
    result = CliRunner().invoke(app, [*args, "--set", "binary=maybe"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: shapes reward option 'binary' must be true or false, got 'maybe'"
    )
    result = CliRunner().invoke(app, [*args, "--set", "binery=true"])
    assert result.exit_code == 2 and "reward 'shapes': bad options" in result.stderr


def test_a_reward_that_refuses_an_option_value_when_built_says_so_in_one_line():
    """A plugin without check_options may refuse a value only in its factory: that is a
    RewardError naming the reward (one line at the command line), not a TypeError."""
    from dsharp.config import RewardSpec
    from dsharp.rewards import plugins
    from dsharp.rewards.base import RewardError, RewardInfo
    from dsharp.rewards.hookspecs import hookimpl

    def factory(size: int = 1):
        raise TypeError(f"size must be an integer, got {size!r}")

    class Picky:
        @hookimpl
        def register_rewards(self, register):
            register(RewardInfo(name="picky", factory=factory, description="test"))

    plugins.load_plugins()
    plugins.pm.register(Picky(), name="picky-plugin")
    try:
        with pytest.raises(RewardError, match=r"^reward 'picky': size must be an integer"):
            plugins.build_reward(RewardSpec(name="picky", options={"size": "big"}))
    finally:
        plugins.pm.unregister(name="picky-plugin")


def test_a_missing_pairs_file_is_noted_by_validate_and_refused_by_train_before_loading(
    tmp_path: Path, monkeypatch
):
    """The shipped paper recipes name a pairs file the user is still to make: validate notes
    it and stays ok; train refuses it before loading the model, not after."""
    import dsharp.engine

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the pairs file was checked")

    monkeypatch.setattr(dsharp.engine, "build_model", no_load)
    missing = tmp_path / "pairs.jsonl"
    offline = ["method.options.pairs=offline", f"method.options.pairs_file={missing}"]
    result = _validate(DIFFUSION_DPO, *offline)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        f"note: train would refuse its data: method.options.pairs_file: file not found: {missing}"
    )
    run = tmp_path / "run"
    args = ["train", str(DIFFUSION_DPO), *offline, f"output_dir={run}"]
    train = CliRunner().invoke(app, args)
    assert train.exit_code == 2, train.output  # a path the recipe names, as the README says
    assert train.stderr.strip() == (  # as any recipe error, before the plan line
        f"recipe error: {DIFFUSION_DPO}: method.options.pairs_file: file not found: {missing}"
    )
    assert "training:" not in train.stdout
    assert not run.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_folder_where_nothing_can_be_written_is_refused_and_a_check_leaves_no_trace(
    tmp_path: Path,
):
    result = _validate(QUICKSTART, "output_dir=/proc/dsharp-run")
    assert result.exit_code == 2, result.output
    assert "output_dir: /proc/dsharp-run: cannot be written in /proc" in result.stderr
    assert _validate(QUICKSTART, f"output_dir={tmp_path}/run").exit_code == 0
    assert list(tmp_path.iterdir()) == []  # the write check's folder is gone again


def test_the_write_check_leaves_a_run_folders_modification_time_alone(tmp_path: Path):
    """`dsharp runs` orders run folders by modification time: validating a recipe whose
    run exists must not move that run to the top."""
    import os

    run = tmp_path / "run"
    run.mkdir()
    os.utime(run, ns=(1_000_000_000, 1_000_000_000))
    assert _validate(QUICKSTART, f"output_dir={run}").exit_code == 0
    assert run.stat().st_mtime_ns == 1_000_000_000


def test_the_write_check_passes_in_a_folder_whose_times_it_may_not_set(tmp_path, monkeypatch):
    """Only a folder's owner may set its times (/tmp, a shared project folder): the check
    still passes there; the folder just stays touched."""
    import os

    def not_owner(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "utime", not_owner)
    result = _validate(QUICKSTART, f"output_dir={tmp_path}/run")
    assert result.exit_code == 0, result.output


def test_validate_notes_a_run_folder_train_would_refuse_now(tmp_path: Path):
    """The run folder is state, not the recipe: validate says ok, and notes what train would
    refuse in the folder as it is now, saying whose run is there and what to do."""
    run = tmp_path / "run"
    state = run / "checkpoints" / "step-000040" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"step": 40}')
    note = f"note: train would refuse its run folder now: output_dir: {run} already holds "
    start_over = "choose another output_dir (or delete this one) to start over"

    def refused(*overrides: str) -> str:
        result = _validate(QUICKSTART, f"output_dir={run}", *overrides)
        assert result.exit_code == 0, result.output
        return result.stderr.strip()

    assert refused() == (
        f"{note}checkpoints (step 40) of a run without a readable recipe.yaml: {start_over}"
    )
    (run / "recipe.yaml").write_text(QUICKSTART.read_text())  # the quickstart's run, 50 steps
    assert refused() == (
        f"{note}this recipe's stopped run (step 40 of 50): set train.resume=latest to continue "
        f"it, or {start_over}"
    )
    assert refused("train.max_steps=40") == (
        f"{note}this recipe's stopped run (step 40 of 50): {start_over}, or raise "
        "train.max_steps with train.resume=latest to train it on"
    )
    assert refused("method.beta=1000") == (
        f"{note}checkpoints of another run (step 40; its method.beta is 100.0, this recipe's "
        f"1000.0): {start_over}"
    )
    (run / "recipe.yaml").write_text("method: ddpo\ntrain: 5\n")  # not a recipe any more
    assert refused() == (
        f"{note}checkpoints of another run (step 40; its method.name is 'ddpo', this recipe's "
        f"'rlhf_sharpening'): {start_over}"
    )
    for damaged in ('{"step": null}', '{"step": 1e400}', '{"step": -1}'):
        state.write_text(damaged)  # the folder is taken all the same
        assert refused() == f"{note}a run's checkpoints (step-000040): {start_over}"


@pytest.mark.parametrize(
    ("reward", "option", "kind"),
    [
        ("aesthetic", "weights", "file"),
        ("clip", "pretrained", "file"),
        ("hpsv2", "checkpoint", "file"),
        ("imagereward", "model", "file"),
        ("pickscore", "processor", "folder"),
        ("compositional", "model", "folder"),
    ],
)
def test_a_model_reward_naming_a_local_file_that_is_not_there_is_refused_by_validate(
    tmp_path, reward, option, kind
):
    """It passed `recipes validate` (a study's evaluation reward, after its rows had
    trained, was the first to find the file missing); a hub id is left to loading."""
    missing = tmp_path / "weights.pth"
    spec = f"eval.rewards=[{{name: {reward}, options: {{{option}: {missing}}}}}]"
    result = _validate(QUICKSTART, spec)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().endswith(
        f"eval.rewards.0.options: {reward} reward option {option!r}: {kind} not found: {missing}"
    )
    if kind == "folder":
        missing.mkdir()
    else:
        missing.touch()
    assert _validate(QUICKSTART, spec).exit_code == 0
    hub = f"eval.rewards=[{{name: {reward}, options: {{{option}: someone/weights}}}}]"
    assert _validate(QUICKSTART, hub).exit_code == 0


def test_an_eval_bench_whose_reward_needs_options_is_refused_before_training(tmp_path: Path):
    """eval.bench: mllm scores with the bench's reward, built without options: the grader
    needs its model, which training used to find out after its last step."""
    run = tmp_path / "r"
    bench = ["eval.bench=mllm", "eval.limit=1", f"output_dir={run}"]
    result = CliRunner().invoke(app, ["train", str(QUICKSTART), *bench])
    assert result.exit_code == 2, result.output
    assert "eval.bench: mllm: option 'model': required" in result.stderr
    assert "in eval.rewards" in result.stderr and not run.exists()
    grader = "eval.rewards=[{name: mllm, options: {model: m}}]"
    assert _validate(QUICKSTART, *bench, grader).exit_code == 0
    assert _validate(QUICKSTART, "eval.bench=clip").exit_code == 0


def test_open_clip_local_dir_and_hf_hub_names_pass_the_local_file_check(tmp_path):
    """clip's own errors ask for a `local-dir:` folder; the check read it as a file path."""
    folder = tmp_path / "clip-model"
    folder.mkdir()
    for value in (f"local-dir:{folder}", "hf-hub:someone/model", "ViT-L-14"):
        spec = f"eval.rewards=[{{name: clip, options: {{model: '{value}'}}}}]"
        result = _validate(QUICKSTART, spec)
        assert result.exit_code == 0, (value, result.output)
    missing = tmp_path / "absent"
    spec = f"eval.rewards=[{{name: clip, options: {{model: 'local-dir:{missing}'}}}}]"
    result = _validate(QUICKSTART, spec)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        f"clip reward option 'model': folder not found: {missing}"
    )


@pytest.mark.parametrize("where", ["eval.bench=aesthetic", "eval.rewards=[{name: aesthetic}]"])
def test_an_aesthetic_evaluation_without_its_weights_is_refused_before_training(where):
    """It passed `recipes validate` and failed after training, when the report built it."""
    result = _validate(QUICKSTART, where)
    assert result.exit_code == 2, result.output
    assert "aesthetic reward needs option 'weights'" in result.stderr


def test_checks_read_no_scheduler_for_a_method_that_does_not_use_one(tmp_path):
    """Only DDPO/D3PO look at the model's DDIM schedule before loading; for any other method
    the checks and notes import no diffusers (reading the schedule doubled `recipes validate`'s
    time for every recipe)."""
    import subprocess
    import sys

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    code = (
        "import sys\n"
        "from dsharp.recipe_io import load_recipe\n"
        "from dsharp.preflight import check_before_loading, recipe_notes\n"
        f"recipe = load_recipe({str(quickstart)!r}, ['output_dir={tmp_path / 'run'}'])\n"
        "check_before_loading(recipe, evaluation=False)\n"
        "recipe_notes(recipe)\n"
        "assert 'diffusers' not in sys.modules, 'diffusers imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def hub_scheduler(tiny_sd_dir, tmp_path, monkeypatch):
    """A hub id ``org/tiny`` that is not cached, online, whose scheduler config (a one-step
    linspace schedule: no noisy step) the hub would give: every download is recorded."""
    import huggingface_hub

    config = _tiny_sd_with_scheduler(
        tiny_sd_dir, tmp_path / "sd", timestep_spacing="linspace", set_alpha_to_one=False
    )
    calls: list[tuple] = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(config / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: None)  # answers
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_train_fetches_an_uncached_hub_models_scheduler_config_alone_to_refuse_it(
    hub_scheduler, tmp_path, monkeypatch
):
    """A hub model not in the cache: `train` and `dsharp.train` fetch its scheduler config
    alone (not the model) and refuse a schedule with no noisy step before the model
    downloads; `validate` downloads nothing (it cannot tell, and says ok)."""
    import dsharp
    import dsharp.models
    from dsharp.recipe_errors import RecipeError

    def not_loaded(*args, **kwargs):
        pytest.fail("the model was loaded")

    monkeypatch.setattr(dsharp.models, "load_model", not_loaded)
    why = (
        "method.infer_steps: all 1 DDIM step(s) of this scheduler (timestep_spacing linspace, "
        "set_alpha_to_one False) are deterministic, so there is nothing to train; use more steps"
    )
    overrides = ["model.pretrained=org/tiny", "model.revision=abc", "method.infer_steps=1"]
    run = tmp_path / "run"
    assert _validate(D3PO, *overrides).exit_code == 0 and hub_scheduler == []
    train = CliRunner().invoke(app, ["train", str(D3PO), *overrides, f"output_dir={run}"])
    assert train.exit_code == 2, train.output
    assert train.stderr == f"recipe error: {D3PO}: {why}\n"
    assert hub_scheduler == [
        ("org/tiny", "scheduler/scheduler_config.json", {"revision": "abc", "etag_timeout": 5.0})
    ]
    with pytest.raises(RecipeError) as refused:
        dsharp.train(dsharp.load_recipe(D3PO, [*overrides, f"output_dir={run}"]))
    assert refused.value.reason == why.removeprefix("method.infer_steps: ")
    assert not run.exists()


def _refused(*args, **kwargs):
    import httpx2 as httpx

    raise httpx.ConnectError("[Errno 111] Connection refused")


def test_a_hub_that_times_out_is_asked_once_for_the_scheduler_config(hub_scheduler, monkeypatch):
    """The fetch is only a head start on the loader's: before, a timeout was taken as "may
    pass" and hf_hub_download then retried for about 25 s before the failure was dropped."""
    import httpx2 as httpx
    import huggingface_hub

    from dsharp.hub import QUICK_TIMEOUT
    from dsharp.scheduler_files import fetch_scheduler_config

    probes = []

    def times_out(url, **kwargs):
        probes.append(kwargs.get("timeout"))
        raise httpx.ReadTimeout("timed out")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", times_out)
    hub = SimpleNamespace(pretrained="org/tiny", revision=None)
    assert fetch_scheduler_config(hub) is None
    assert probes == [QUICK_TIMEOUT] and hub_scheduler == []  # one short request, no download


def test_the_scheduler_config_is_not_fetched_offline_unreachable_or_for_a_path(
    hub_scheduler, monkeypatch
):
    """Fetched only where the hub can be asked: with HF_HUB_OFFLINE set an uncached hub id
    already fails at once; where the hub cannot be reached the loader says so; a failed fetch
    is left to the loader too."""
    import types

    import huggingface_hub

    import dsharp.hub
    from dsharp.config import ModelConfig
    from dsharp.scheduler_files import fetch_scheduler_config, scheduler_without_weights

    hub = ModelConfig(pretrained="org/tiny")
    assert scheduler_without_weights(hub) is None and hub_scheduler == []  # fetch not asked
    assert scheduler_without_weights(hub, fetch=True).config.timestep_spacing == "linspace"
    hub_scheduler.clear()
    path = types.SimpleNamespace(pretrained="./no/such/folder", revision=None)  # not valid
    assert fetch_scheduler_config(path) is None
    with monkeypatch.context() as offline:
        offline.setenv("HF_HUB_OFFLINE", "1")
        assert fetch_scheduler_config(hub) is None
    with monkeypatch.context() as unreachable:
        unreachable.setattr(dsharp.hub, "hub_unreachable", lambda *a: "ConnectError: refused")
        unreachable.setattr(huggingface_hub, "get_hf_file_metadata", _refused)
        assert fetch_scheduler_config(hub) is None
    assert hub_scheduler == []

    def missing(*args, **kwargs):
        raise huggingface_hub.errors.EntryNotFoundError("404 scheduler/scheduler_config.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    assert scheduler_without_weights(hub, fetch=True) is None


def test_a_seed_a_launchs_later_process_cannot_take_is_refused_before_training(monkeypatch):
    """accelerate seeds process i with train.seed + i, and numpy refuses 2**32: under a
    launch of 4 processes train.seed 2**32 - 3 failed in process 3 only, after the launch
    ("Seed must be between 0 and 2**32 - 1"), though the field's own range took it."""
    import numpy as np

    from dsharp.config import load_recipe
    from dsharp.preflight import check_runtime

    with pytest.raises(ValueError, match="Seed must be between 0 and 2"):
        np.random.seed(2**32)  # what the later process ran into
    monkeypatch.setenv("WORLD_SIZE", "4")
    recipe = load_recipe(QUICKSTART, [f"train.seed={2**32 - 3}"])
    with pytest.raises(ValueError) as error:
        check_runtime(recipe)
    assert str(error.value) == (
        f"train.seed: {2**32 - 3} with 4 processes: process i seeds with train.seed + i, up "
        f"to 2**32 - 1 (numpy's limit); give train.seed {2**32 - 4} or less"
    )
    check_runtime(load_recipe(QUICKSTART, [f"train.seed={2**32 - 4}"]))
    monkeypatch.delenv("WORLD_SIZE")
    check_runtime(load_recipe(QUICKSTART, [f"train.seed={2**32 - 1}"]))  # one process
