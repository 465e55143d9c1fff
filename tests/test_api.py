"""The Python API (``dsharp.load_recipe``, ``train``, ``load_model``, ``sample``,
``get_reward``, ``evaluate_model``): the README's CLI workflow from Python, with the same
numbers as the commands, errors raised (never SystemExit), and ``import dsharp`` light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import dsharp
from dsharp.cli import app

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
PROMPTS = ["a red circle", "two blue squares"]
#: A quickstart run cut to the bone: 2 steps of 1 prompt x 2 trajectories, no report.
TINY = ["train.max_steps=2", "train.batch_size=1", "method.n=2", "train.checkpoint_every=2"]


def _cli(args: list[object]) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api") / "run"
    recipe = dsharp.load_recipe(QUICKSTART, [*TINY, f"output_dir={out}", "eval.bench=null"])
    assert isinstance(recipe, dsharp.Recipe) and recipe.train.max_steps == 2
    return dsharp.train(recipe, progress=False)


@pytest.mark.slow
def test_the_readme_workflow_from_python_matches_the_commands(run, tmp_path):
    assert (run / "checkpoints" / "step-000002" / "model").is_dir()
    model = dsharp.load_model(run, device="cpu")
    base = dsharp.load_model("dsharp-mini", device="cpu")
    tuned_weights = dict(model.unet.named_parameters())
    changed = [n for n, p in base.unet.named_parameters() if not torch.equal(p, tuned_weights[n])]
    assert changed  # the run's checkpoint was loaded, not the base model

    out = dsharp.sample(model, PROMPTS, num_images=2, seed=3, steps=5)
    assert out.images.shape == (4, 3, 32, 32)
    assert out.images.min() >= 0 and out.images.max() <= 1
    # the same images as `dsharp sample`, PNG-rounded
    _cli(
        ["sample", "--checkpoint", run, *sum((["-p", p] for p in PROMPTS), [])]
        + ["-n", 2, "--seed", 3, "--steps", 5, "--out", tmp_path / "png", "--device", "cpu"]
    )
    from dsharp.rewards.base import RewardImages

    pngs = sorted((tmp_path / "png").glob("0*.png"))
    assert len(pngs) == 4
    from PIL import Image

    cli_images = RewardImages.from_pil([Image.open(p) for p in pngs]).tensor
    assert (cli_images - out.images).abs().max() <= 1 / 255 + 1e-6

    reward = dsharp.get_reward("shapes")
    prompts = [p for p in PROMPTS for _ in range(2)]
    scores, info = reward(dsharp.RewardImages(out.images), prompts, [{}] * 4)
    assert scores.shape == (4,) and all(0 <= s <= 1 for s in scores.tolist())
    assert len(info["strict"]) == 4 and len(info["constraints"]) == 4

    result = dsharp.evaluate_model(model, "shapes", limit=1, seeds=1, steps=5)
    assert result["bench"] == "shapes" and result["rewards"] == ["shapes"]
    assert result["n_images"] == result["n_scored"] == 5  # one val prompt per category
    assert 0 <= result["overall"] <= 1
    assert set(result["categories"]) == {"single", "color", "counting", "spatial", "complex"}
    args = ["eval", "--checkpoint", run, "--bench", "shapes", "--limit", 1, "--seeds", 1]
    cli = json.loads(_cli([*args, "--steps", 5, "--json", "--device", "cpu"]).stdout)
    assert result["overall"] == cli["overall"]
    assert result["images"] == cli["images"]
    assert result["categories"] == cli["categories"]


def test_import_dsharp_imports_no_torch_until_a_model_is_needed():
    code = (
        "import sys, dsharp\n"
        "assert 'torch' not in sys.modules, 'import dsharp'\n"
        f"recipe = dsharp.load_recipe({str(QUICKSTART)!r}, ['train.max_steps=3'])\n"
        "assert recipe.train.max_steps == 3\n"
        "assert 'torch' not in sys.modules, 'dsharp.load_recipe'\n"
        "assert sorted(dsharp.__all__) == sorted(['__version__', *dsharp._EXPORTS])\n"
        "assert all(hasattr(dsharp, name) for name in dsharp.__all__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_public_names_are_not_hidden_by_submodules():
    """A submodule imported by name (``dsharp.evaluate``) replaces the package attribute of
    that name: the public functions must not share a submodule's name."""
    import dsharp.evaluate  # noqa: F401
    import dsharp.generate  # noqa: F401

    for name in dsharp.__all__:
        assert not (ROOT / "src" / "dsharp" / f"{name}.py").exists(), name
        assert not (ROOT / "src" / "dsharp" / name).is_dir(), name
    assert callable(dsharp.evaluate_model) and callable(dsharp.sample)


def test_library_functions_raise_on_bad_input(tmp_path):
    with pytest.raises(dsharp.RecipeError, match="file not found"):
        dsharp.load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(TypeError, match="expected a list of KEY=VALUE strings"):
        dsharp.load_recipe(QUICKSTART, "train.max_steps=2")  # was read as 't', 'r', ...
    with pytest.raises(dsharp.RewardError, match="unknown reward 'shapez'"):
        dsharp.get_reward("shapez")
    with pytest.raises(dsharp.RewardError, match="unexpected keyword argument 'colour'"):
        dsharp.get_reward("shapes", colour=True)
    with pytest.raises(FileNotFoundError, match="did you mean 'dsharp-mini'"):
        dsharp.load_model("dsharp-mni", device="cpu")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(QUICKSTART.read_text())
    with pytest.raises(FileNotFoundError, match=r"^source: no checkpoint found in "):
        dsharp.load_model(tmp_path / "run", device="cpu")
    fp16 = dsharp.load_recipe(QUICKSTART, ["train.mixed_precision=fp16", f"output_dir={tmp_path}"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
            dsharp.train(fp16, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 training runs on a GPU")
def test_train_checks_the_recipe_before_loading_and_warns_its_notes(tmp_path):
    """As `dsharp train`: a prompt the reward cannot score is refused before any folder is
    made or model loaded (engine.train alone found it at the first step), and a recipe's notes
    (`dsharp train` prints them) are warnings."""
    out = tmp_path / "run"
    data = ["data.generator=none", "data.balance=prompt", "data.prompts=[a pink circle]"]
    recipe = dsharp.load_recipe(QUICKSTART, [*data, f"output_dir={out}"])
    with pytest.raises(dsharp.RecipeError, match="unknown word 'pink'"):
        dsharp.train(recipe, progress=False)
    assert not out.exists()
    ddpo = ROOT / "recipes" / "mini" / "ddpo.yaml"
    overrides = ["method.options.inner_epochs=1", "train.mixed_precision=fp16"]
    recipe = dsharp.load_recipe(ddpo, [*overrides, f"output_dir={out}"])
    noted = pytest.warns(UserWarning, match="every importance ratio is 1")
    with noted, pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):  # stops it at once
        dsharp.train(recipe, progress=False)
    assert {w.filename for w in noted} == {__file__}  # at the line that called train


def test_sampling_and_evaluation_refuse_bad_settings_before_using_the_model():
    never_used = object()  # any use of the model would fail otherwise
    with pytest.raises(dsharp.RecipeError, match="sample.steps"):
        dsharp.sample(never_used, PROMPTS, steps=0)
    with pytest.raises(dsharp.RecipeError, match="unknown sample method 'demn'"):
        dsharp.sample(never_used, PROMPTS, method="demn")
    with pytest.raises(ValueError, match="needs a verifier reward"):
        dsharp.sample(never_used, PROMPTS, method="demon")
    with pytest.raises(ValueError, match="num_images: must be at least 1"):
        dsharp.sample(never_used, PROMPTS, num_images=0)
    with pytest.raises(ValueError, match="method 'default' uses no verifier"):
        dsharp.sample(never_used, PROMPTS, verifier="shapes")
    with pytest.raises(ValueError, match="method 'default' uses no verifier"):
        dsharp.evaluate_model(never_used, "shapes", verifier="shapes")
    with pytest.raises(ValueError, match="prompts: empty"):
        dsharp.sample(never_used, [])
    with pytest.raises(ValueError, match="give prompts or a bench"):
        dsharp.evaluate_model(never_used)
    with pytest.raises(ValueError, match="unknown bench 'shape'"):
        dsharp.evaluate_model(never_used, "shape")
    with pytest.raises(ValueError, match="t2i-compbench has its own runner"):
        dsharp.evaluate_model(never_used, "t2i-compbench")
    with pytest.raises(ValueError, match="give rewards"):
        dsharp.evaluate_model(never_used, prompts=PROMPTS)
    with pytest.raises(ValueError, match="unknown word 'pink'"):
        dsharp.evaluate_model(never_used, prompts=["a pink circle"], rewards=["shapes"])
    with pytest.raises(ValueError, match="seeds: must be at least 1"):
        dsharp.evaluate_model(never_used, "shapes", seeds=0)


@pytest.mark.slow
def test_train_writes_the_report_dsharp_train_writes(tmp_path):
    """`dsharp train` ends with the post-training report where the recipe's eval section
    names a bench; ``dsharp.train`` wrote none. Both now write the same files, with the same
    numbers (paths aside: each run has its own folder); ``report=False`` trains alone."""
    tiny = [*TINY, "eval.limit=1", "eval.seeds=1", "sample.steps=3"]
    cli_run, api_run, bare = (tmp_path / side / "run" for side in ("cli", "api", "bare"))
    _cli(["train", QUICKSTART, *tiny, f"output_dir={cli_run}", "--no-progress"])
    recipe = dsharp.load_recipe(QUICKSTART, [*tiny, f"output_dir={api_run}"])
    assert dsharp.train(recipe, progress=False) == api_run
    written = ["report.md", "eval-base.json", "eval-final.json", "samples_grid.png"]
    for name in written:
        assert (api_run / name).is_file(), name
    assert sorted(p.name for p in api_run.iterdir()) == sorted(p.name for p in cli_run.iterdir())
    for name in ("report.md", "eval-base.json", "eval-final.json"):
        cli_text = (cli_run / name).read_text().replace(str(cli_run), "RUN")
        assert (api_run / name).read_text().replace(str(api_run), "RUN") == cli_text, name
    assert json.loads((api_run / "eval-final.json").read_text())["step"] == 2
    from PIL import Image

    grids = [Image.open(run / "samples_grid.png").convert("RGB") for run in (cli_run, api_run)]
    assert grids[0].tobytes() == grids[1].tobytes()

    recipe = dsharp.load_recipe(QUICKSTART, [*tiny, f"output_dir={bare}"])
    dsharp.train(recipe, progress=False, report=False)
    assert (bare / "checkpoints").is_dir()
    assert not [name for name in written if (bare / name).exists()]
    # the final curves are drawn by training itself where no report follows to draw them
    assert (bare / "training_curves.png").read_bytes().startswith(b"\x89PNG")


def test_train_warns_what_the_metrics_say_and_keeps_the_run_when_its_report_fails(
    tmp_path, monkeypatch
):
    """`dsharp train` prints a run's training warnings and, when the report's reward cannot
    score an image, says that training is complete and where; ``dsharp.train`` said neither."""
    import dsharp.engine
    import dsharp.posttrain
    from dsharp.rewards.base import UnscoredError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "reward": NaN, "pairs": 0}\n')
    monkeypatch.setattr(dsharp.engine, "train", lambda recipe, progress, **kwargs: run_dir)
    reported = []
    monkeypatch.setattr(
        dsharp.posttrain, "post_train_report", lambda *a, **k: reported.append(a) or None
    )
    recipe = dsharp.load_recipe(QUICKSTART, [f"output_dir={run_dir}"])
    with pytest.warns(UserWarning) as said:
        assert dsharp.train(recipe, progress=False) == run_dir
    assert [str(w.message).split(":")[0] for w in said] == [
        "no logged step scored a sample",
        "no logged step had a usable best/worst pair (ties or missing scores)",
    ]
    assert {w.filename for w in said} == {__file__}  # at the line that called train
    assert len(reported) == 1  # the quickstart's eval section names a bench
    with pytest.warns(UserWarning) as said_again:
        dsharp.train(recipe, progress=False, report=False)
    assert [str(w.message) for w in said_again] == [str(w.message) for w in said]
    assert len(reported) == 1

    def unscored(*args, **kwargs):
        raise UnscoredError("reward 'shapes': shapes reward: cannot score", "shapes")

    monkeypatch.setattr(dsharp.posttrain, "post_train_report", unscored)
    with (
        pytest.warns(UserWarning) as said_last,
        pytest.raises(UnscoredError, match=f"training is complete in {run_dir}, but its re"),
    ):
        dsharp.train(recipe, progress=False)
    assert len(said_last) == 2


def _no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model load fails the test: what is refused must be refused before it."""
    import dsharp.engine

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the refusal")

    monkeypatch.setattr(dsharp.engine, "build_model", no_load)


def test_train_refuses_a_sampler_recipe_as_dsharp_train_does(tmp_path, monkeypatch):
    """recipes/mini/demon.yaml is for evaluation; dsharp.train started a run of the default
    method from it (`dsharp train` refuses it)."""
    _no_model_load(monkeypatch)
    recipe = dsharp.load_recipe(
        ROOT / "recipes" / "mini" / "demon.yaml", [f"output_dir={tmp_path}/r"]
    )
    with pytest.raises(dsharp.RecipeError) as refused:
        dsharp.train(recipe, progress=False)
    assert str(refused.value) == (
        "a sampler recipe (sample.method: demon; no method or train section): run it with "
        "dsharp eval --recipe FILE (to train with it anyway, set method.name)"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "overrides",
    [["method.beta=1000"], ["train.resume=latest", "method.beta=1000"], ["train.resume=nope"]],
    ids=["another-run", "resume-another-run", "no-such-checkpoint"],
)
def test_train_refuses_a_run_folder_as_dsharp_train_does(tmp_path, monkeypatch, overrides):
    """An output_dir holding another run's checkpoints (or a resume that names none) is the
    same RecipeError, at the same field, as `dsharp train`'s one line (the API raised a bare
    ValueError from inside the engine)."""
    from run_folders import run_folder_with_checkpoint

    _no_model_load(monkeypatch)
    run = run_folder_with_checkpoint(tmp_path / "run", QUICKSTART.read_text())
    args = [*overrides, f"output_dir={run}"]
    with pytest.raises(dsharp.RecipeError) as refused:
        dsharp.train(dsharp.load_recipe(QUICKSTART, args), progress=False)
    said = CliRunner().invoke(app, ["train", str(QUICKSTART), *args])
    assert said.exit_code == 2
    assert refused.value.source is None and refused.value.field
    assert said.stderr.strip() == f"recipe error: {QUICKSTART}: {refused.value}"


def test_train_refuses_a_folder_another_process_is_writing(tmp_path, monkeypatch):
    """Before the model loads and before the folder's checkpoints are read: the old API said
    the folder held this recipe's stopped run, to resume, while another process wrote it."""
    from folder_locks import another_process_holds
    from run_folders import run_folder_with_checkpoint

    _no_model_load(monkeypatch)
    run = run_folder_with_checkpoint(tmp_path / "run", QUICKSTART.read_text())
    recipe = dsharp.load_recipe(QUICKSTART, [f"output_dir={run}"])
    with another_process_holds(run), pytest.raises(dsharp.FolderInUseError) as refused:
        dsharp.train(recipe, progress=False)
    assert str(refused.value) == (
        f"output_dir {run}: another dsharp process is writing to it; wait for it to finish, "
        "or choose another folder"
    )
    assert isinstance(refused.value, RuntimeError)  # what the lock raised before


def test_train_holds_the_folder_until_its_report_is_written(tmp_path, monkeypatch):
    """As `dsharp train`: the trainer lets go of the folder when training ends, and the API
    held nothing after it, so a second training could start there mid-report."""
    import dsharp.engine
    import dsharp.posttrain
    from folder_locks import free_to_another_process

    run_dir = tmp_path / "run"
    seen = []

    def trained(recipe, progress, **kwargs):
        run_dir.mkdir(exist_ok=True)  # as the trainer's own claim makes it
        (run_dir / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
        return run_dir

    monkeypatch.setattr(dsharp.engine, "train", trained)
    monkeypatch.setattr(
        dsharp.posttrain,
        "post_train_report",
        lambda *a, **k: seen.append(free_to_another_process(run_dir)),
    )
    dsharp.train(dsharp.load_recipe(QUICKSTART, [f"output_dir={run_dir}"]), progress=False)
    assert seen == [False]
    assert free_to_another_process(run_dir)  # let go once train returns


def test_evaluate_model_verifies_with_its_scoring_rewards_as_dsharp_eval_does():
    """An inference-time method with no ``verifier`` is verified by the rewards that score,
    as ``dsharp eval`` does (it was refused for want of a verifier)."""
    model = dsharp.load_model("dsharp-mini", device="cpu")
    settings = {"limit": 1, "seeds": 1, "steps": 2, "method": "demon", "options": {"K": 2}}
    result = dsharp.evaluate_model(model, "shapes", **settings)
    args = ["eval", "--model", "dsharp-mini", "--bench", "shapes", "--limit", 1, "--seeds", 1]
    args += ["--steps", 2, "--method", "demon", "--option", "K=2", "--json", "--device", "cpu"]
    cli = json.loads(_cli(args).stdout)
    assert result["n_scored"] == cli["n_scored"] == 5
    assert result["images"] == cli["images"] and result["overall"] == cli["overall"]


def test_train_warns_its_notes_once_for_a_launch(tmp_path, monkeypatch):
    """Under a launcher only the first process warns the recipe's notes, as `dsharp train`
    prints them once; every process still refuses what the checks refuse."""
    import warnings

    ddpo = ROOT / "recipes" / "mini" / "ddpo.yaml"
    overrides = ["method.options.inner_epochs=1", "train.mixed_precision=fp16"]
    recipe = dsharp.load_recipe(ddpo, [*overrides, f"output_dir={tmp_path / 'run'}"])
    monkeypatch.setenv("RANK", "1")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
            dsharp.train(recipe, progress=False)
    assert [str(w.message) for w in said if "importance ratio" in str(w.message)] == []


@pytest.fixture(scope="module")
def mini() -> object:
    return dsharp.load_model("dsharp-mini", device="cpu")


def test_sample_refuses_the_seeds_dsharp_sample_refuses():
    """``dsharp sample --seed`` takes 0 to 2**32 - 1 and refuses image seeds past it; the API
    drew from seed -1, floored 1.5 to seed 1, and overflowed inside torch past the range."""
    never_used = object()
    with pytest.raises(ValueError, match=r"^seed: must be from 0 to 2\*\*32 - 1, got -1$"):
        dsharp.sample(never_used, PROMPTS, seed=-1)
    with pytest.raises(ValueError, match=r"^seed: must be from 0 to 2\*\*32 - 1, got 4294967296"):
        dsharp.sample(never_used, PROMPTS, seed=2**32)
    with pytest.raises(TypeError, match=r"^seed: expected an integer, got 1\.5$"):
        dsharp.sample(never_used, PROMPTS, seed=1.5)
    with pytest.raises(TypeError, match=r"^seed: expected an integer, got True$"):
        dsharp.sample(never_used, PROMPTS, seed=True)
    with pytest.raises(ValueError) as past:
        dsharp.sample(never_used, PROMPTS, num_images=2, seed=2**32 - 2)
    assert str(past.value) == (
        "seed 4294967294: 4 images use seeds up to 4294967297 (image i: seed + i), past "
        "2**32 - 1; give seed 4294967292 or less"
    )


def test_a_name_or_path_where_a_model_or_recipe_belongs_is_a_type_error(tmp_path):
    """``dsharp.sample("dsharp-mini", ...)`` raised ``AttributeError: 'str' object has no
    attribute 'default_resolution'`` from inside the sampler; ``dsharp.train(path)`` one about
    ``eval``. Each now says what it expected and where to get it."""
    with pytest.raises(TypeError, match=r"^model: expected a model from dsharp.load_model, go"):
        dsharp.sample("dsharp-mini", PROMPTS, steps=1)
    with pytest.raises(TypeError, match=r"^model: expected a model from dsharp.load_model, go"):
        dsharp.evaluate_model("dsharp-mini", "shapes", limit=1, seeds=1, steps=1)
    with pytest.raises(TypeError, match=r"^recipe: expected a dsharp.Recipe \(from dsharp.loa"):
        dsharp.train(QUICKSTART)
    with pytest.raises(TypeError) as refused:
        dsharp.train({"output_dir": str(tmp_path / "run")})
    assert str(refused.value) == (
        "recipe: expected a dsharp.Recipe (from dsharp.load_recipe), got a dict"
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError) as refused:
        dsharp.sample(torch.nn.Linear(2, 2), PROMPTS, steps=1)  # a module's repr: many lines
    assert str(refused.value) == "model: expected a model from dsharp.load_model, got a Linear"


def test_evaluate_model_takes_one_reward_as_itself_not_its_letters(mini):
    """``rewards="shapes"`` was read letter by letter (``unknown reward 's'``) and a spec
    dict key by key; one name or dict is that one reward, as ``verifier`` takes one name."""
    settings = {"prompts": ["a red circle"], "seeds": 1, "steps": 1}
    listed = dsharp.evaluate_model(mini, rewards=["shapes"], **settings)
    one = dsharp.evaluate_model(mini, rewards="shapes", **settings)
    assert one["rewards"] == listed["rewards"] == ["shapes"]
    assert one["overall"] == listed["overall"] and one["images"] == listed["images"]
    spec = {"name": "shapes", "options": {"binary": True}}
    as_dict = dsharp.evaluate_model(mini, rewards=spec, **settings)
    assert as_dict["rewards"] == ["shapes"]
    as_list = dsharp.evaluate_model(mini, rewards=[spec], **settings)
    assert as_dict["reward_specs"] == as_list["reward_specs"]


def test_evaluate_model_takes_a_recipes_reward_spec_alone_or_listed(mini):
    """One ``RewardSpec`` (a recipe's ``rewards[0]``) was iterated as its fields: "dictionary
    update sequence element #0 has length 4"; a list of them was taken. A number was "'int'
    object is not iterable"; each is now a TypeError saying what is taken."""
    from dsharp.config import RewardSpec

    settings = {"prompts": ["a red circle"], "seeds": 1, "steps": 1}
    spec = RewardSpec(name="shapes", options={"binary": True})
    one = dsharp.evaluate_model(mini, rewards=spec, **settings)
    listed = dsharp.evaluate_model(mini, rewards=[spec], **settings)
    assert one["rewards"] == ["shapes"]
    assert one["reward_specs"] == listed["reward_specs"]
    assert one["reward_specs"]["shapes"]["options"] == {"binary": True}
    kinds = "a reward name, a spec dict or a dsharp.config.RewardSpec"
    with pytest.raises(TypeError) as refused:
        dsharp.evaluate_model(mini, rewards=3, **settings)
    assert str(refused.value) == f"rewards: expected {kinds}, or a list of them, got an int"
    with pytest.raises(TypeError) as refused:
        dsharp.evaluate_model(mini, rewards=["shapes", 3.0], **settings)
    assert str(refused.value) == f"rewards: expected {kinds} in the list, got a float"


def test_sample_and_evaluate_refuse_a_verifier_of_the_wrong_kind_in_one_line(mini):
    """``verifier=3`` was "'int' object is not iterable" from inside sampling, and
    ``verifier=[3]`` a ValueError; both are now the TypeError ``rewards=`` gives."""
    kinds = "a reward name, a spec dict or a dsharp.config.RewardSpec"
    scaling = {"method": "inference_scaling", "options": {"N": 2}, "steps": 1}
    with pytest.raises(TypeError) as refused:
        dsharp.sample(mini, "a red circle", verifier=3, **scaling)
    assert str(refused.value) == f"verifier: expected {kinds}, or a list of them, got an int"
    with pytest.raises(TypeError) as refused:
        dsharp.evaluate_model(
            mini, prompts=["a red circle"], rewards="shapes", verifier=[3], **scaling
        )
    assert str(refused.value) == f"verifier: expected {kinds} in the list, got an int"
    drawn = dsharp.sample(mini, "a red circle", verifier="shapes", **scaling)
    assert drawn.images.shape[0] == 1


# a one-step run of tied pairs: what its metrics say is beside this test's point
@pytest.mark.filterwarnings("ignore:no logged step had a usable best/worst pair")
def test_train_leaves_the_callers_random_streams_as_they_were(tmp_path):
    """Training seeds Python's, numpy's and torch's global generators from train.seed; after
    ``dsharp.train`` a notebook's own seeded draws came from train.seed's streams instead."""
    import random

    import numpy as np

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    def seeded() -> None:
        random.seed(7)
        np.random.seed(7)
        torch.manual_seed(7)

    seeded()
    expected = draws()
    seeded()
    tiny = [*TINY, "train.max_steps=1", "train.checkpoint_every=1", "eval.bench=null"]
    recipe = dsharp.load_recipe(QUICKSTART, [*tiny, f"output_dir={tmp_path / 'run'}"])
    dsharp.train(recipe, progress=False)
    assert draws() == expected


def test_sample_takes_a_numpy_integer_seed_as_its_value(mini):
    """A seed from ``np.arange`` or a numpy array drew as its value before the seed check;
    the check took only Python ints and refused it as 'expected an integer'."""
    import numpy as np

    expected = dsharp.sample(mini, "a red circle", seed=3, steps=1).images
    for seed in (np.int64(3), np.uint32(3)):
        assert torch.equal(dsharp.sample(mini, "a red circle", seed=seed, steps=1).images, expected)
    with pytest.raises(ValueError) as past:  # numpy's uint32 wrapped seed + 1 to 0
        dsharp.sample(mini, "a red circle", num_images=2, seed=np.uint32(2**32 - 1), steps=1)
    assert str(past.value).startswith("seed 4294967295: 2 images use seeds up to 4294967296")
    with pytest.raises(TypeError, match=r"^seed: expected an integer, got "):
        dsharp.sample(mini, "a red circle", seed=np.float64(3.0), steps=1)


def test_a_cuda_seed_only_queued_before_training_is_put_back(monkeypatch):
    """Before CUDA is in use ``torch.manual_seed`` only queues its seed for CUDA; a block that
    starts CUDA and reseeds it (training) left the caller's later GPU draws on the run's
    seed. Stand-ins for CUDA's state: no GPU here."""
    import torch

    from dsharp.global_rng import global_rngs_kept

    started = {"cuda": False}
    seeded = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: started["cuda"])
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    torch.manual_seed(1234)
    with global_rngs_kept():
        started["cuda"] = True  # the block's first CUDA use
        torch.manual_seed(99)  # training's seed (torch's own call reaches the stand-in too)
        seeded.clear()
    assert seeded == [1234]
    assert torch.initial_seed() == 1234  # the CPU generator as it was


def test_the_mps_generator_is_put_back_where_there_is_one(monkeypatch):
    """``torch.manual_seed`` (training's) seeds Apple's MPS generator at once, and
    ``fork_rng`` kept only the CPU's and CUDA's. Stand-ins for MPS's state: no Mac here."""
    import torch

    from dsharp.global_rng import global_rngs_kept

    state = {"mps": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: state["mps"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda new: state.update(mps=new))
    with global_rngs_kept():
        state["mps"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # training's seed
    assert state["mps"].tolist() == [1, 2, 3]


def test_without_mps_its_generator_is_not_touched(monkeypatch):
    import torch

    from dsharp.global_rng import global_rngs_kept

    def touched(*args: object) -> None:
        raise AssertionError("the MPS generator was touched on a machine without MPS")

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.mps, "get_rng_state", touched)
    monkeypatch.setattr(torch.mps, "set_rng_state", touched)
    torch.manual_seed(5)
    expected = torch.rand(())
    torch.manual_seed(5)
    with global_rngs_kept():
        torch.manual_seed(99)
    assert torch.equal(torch.rand(()), expected)
