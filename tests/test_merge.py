"""`dsharp merge`: base + scale x the mean weight change of full fine-tuning runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.config import load_recipe, save_recipe
from dsharp.merge import UNET_WEIGHTS, merged_state

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def _fake_run(folder: Path, model_dir: Path, seed: int, step: int = 2, lora_rank: int = 0):
    """A run folder as `dsharp train` leaves it: recipe.yaml and one checkpoint whose UNet is
    the base model's plus a random change (seeded), written by the adapter's save_trained."""
    from dsharp.builders import build_model
    from dsharp.checkpoints import checkpoint_dir
    from dsharp.io import atomic_write_json

    overrides = [f"model.pretrained={model_dir}", f"model.lora_rank={lora_rank}"]
    recipe = load_recipe(RECIPE, overrides=overrides)
    folder.mkdir(parents=True)
    save_recipe(recipe, folder / "recipe.yaml")
    model = build_model(recipe.model, "cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator))
    ckpt = checkpoint_dir(folder, step)
    model.save_trained(ckpt / "model")
    atomic_write_json(ckpt / "trainer_state.json", {"step": step, "seed": seed})
    return folder


@pytest.fixture(scope="module")
def runs(tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("merge-runs")
    return [_fake_run(root / f"run{s}", tiny_sd_dir, seed=s) for s in range(3)]


def _unet(run: Path) -> dict[str, torch.Tensor]:
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    return load_file(str(ckpt / UNET_WEIGHTS))


def test_merged_state_is_base_plus_scale_times_the_mean_change() -> None:
    base = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    runs = [{"w": torch.tensor([2.0, 2.0]), "b": torch.tensor([1.0])},
            {"w": torch.tensor([1.0, 4.0]), "b": torch.tensor([-3.0])}]  # fmt: skip
    out = merged_state(base, runs, scale=2.0)
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0]))  # mean change (0.5, 1) x 2
    assert torch.equal(out["b"], torch.tensor([-2.0]))  # mean change -1 x 2
    assert torch.equal(merged_state(base, runs, scale=0.0)["w"], base["w"])
    assert torch.equal(merged_state(base, iter(runs), scale=2.0)["w"], out["w"])  # one at a time
    with pytest.raises(ValueError, match="no run to merge"):
        merged_state(base, [], scale=1.0)


def test_merge_writes_a_run_folder_that_eval_and_sample_can_load(
    runs: list[Path], tiny_sd_dir: Path, tmp_path: Path
) -> None:
    from dsharp.builders import build_model, load_run_model

    out = tmp_path / "merged"
    args = ["merge", *map(str, runs), "--out", str(out), "--scale", "1.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"merged 3 runs at scale 1.5: {out}"
    assert not list(tmp_path.glob(".*.tmp"))

    base_model = build_model(load_recipe(runs[0] / "recipe.yaml").model, "cpu")
    base = base_model.unet.state_dict()
    changes = [_unet(r) for r in runs]
    merged = _unet(out)
    for key in ("conv_in.weight", "conv_out.bias"):
        mean_change = sum(c[key] - base[key] for c in changes) / 3
        torch.testing.assert_close(merged[key], base[key] + 1.5 * mean_change)

    model, recipe = load_run_model(out)  # what --checkpoint OUT does
    assert recipe.model.pretrained == str(tiny_sd_dir)
    assert recipe.output_dir == str(out)  # its own folder, not the first run's
    loaded = model.unet.state_dict()
    assert all(torch.equal(loaded[k], merged[k]) for k in merged)
    record = json.loads((out / "merge.json").read_text())
    assert record["scale"] == 1.5 and [r["step"] for r in record["runs"]] == [2, 2, 2]
    state = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["step"] == 2 and len(state["merged_from"]) == 3
    from dsharp.runs import summarise_run

    assert summarise_run(out).status == "merged (3 runs, scale 1.5)"  # in `dsharp runs`


def _sharded_copy(run: Path, to: Path) -> Path:
    """``run`` with its UNet saved in shards, as save_pretrained writes a UNet over its shard
    size (10 GB: an SDXL UNet in fp32, fully fine-tuned)."""
    import shutil

    from diffusers import UNet2DConditionModel

    shutil.copytree(run, to)
    unet_folder = sorted((to / "checkpoints").iterdir())[-1] / UNET_WEIGHTS.parent
    unet = UNet2DConditionModel.from_pretrained(unet_folder)
    shutil.rmtree(unet_folder)
    unet.save_pretrained(unet_folder, max_shard_size="100KB")
    assert not (unet_folder / UNET_WEIGHTS.name).exists()
    assert len(list(unet_folder.glob("*.safetensors"))) > 1
    return to


def test_merge_reads_a_unet_saved_in_shards(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsharp.builders import load_run_model

    monkeypatch.chdir(tmp_path)
    sharded = [_sharded_copy(r, tmp_path / f"sharded{i}") for i, r in enumerate(runs[:2])]
    whole, in_shards = tmp_path / "whole", tmp_path / "in-shards"
    for sources, out in (
        ([*map(str, runs[:2])], whole),
        ([str(sharded[0]), "sharded1"], in_shards),
    ):
        result = CliRunner().invoke(app, ["merge", *sources, "--out", str(out), "--scale", "2"])
        assert result.exit_code == 0, result.output
    expected, merged = _unet(whole), load_run_model(in_shards)[0].unet.state_dict()
    assert merged.keys() == expected.keys()
    assert all(torch.equal(merged[k], expected[k]) for k in expected)

    unet_folder = sorted((sharded[1] / "checkpoints").iterdir())[-1] / UNET_WEIGHTS.parent
    shard = sorted(unet_folder.glob("*.safetensors"))[-1]
    shard.unlink()  # a partial copy
    result = CliRunner().invoke(app, ["merge", str(sharded[0]), "sharded1", "--out", "x"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: sharded1: {Path('sharded1') / shard.relative_to(sharded[1])} is missing (a "
        "shard that diffusion_pytorch_model.safetensors.index.json lists)"
    )
    assert not (tmp_path / "x").exists()


def test_merge_refuses_bad_input_in_one_line_and_writes_nothing(
    runs: list[Path], tiny_sd_dir: Path, tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    other_base = _fake_run(tmp_path / "sdxl-run", tiny_sdxl_dir, seed=0)
    lora = _fake_run(tmp_path / "lora-run", tiny_sd_dir, seed=0, lora_rank=2)
    damaged = _fake_run(tmp_path / "damaged-run", tiny_sd_dir, seed=1)
    weights = sorted((damaged / "checkpoints").iterdir())[-1] / UNET_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as by a full disk
    (tmp_path / "taken").mkdir()
    (tmp_path / "no-run").mkdir()
    cases = {
        f"{weights}: cannot read weights (": [str(runs[0]), str(damaged)],
        "another base model": [str(runs[0]), str(other_base)],
        "a LoRA run (model.lora_rank: 2)": [str(lora)],
        f"{tmp_path / 'missing'}: no such folder": [str(tmp_path / "missing")],
        "no checkpoint found": [str(tmp_path / "no-run")],
    }
    for expected, sources in cases.items():
        out = tmp_path / f"out-{len(expected)}"
        result = CliRunner().invoke(app, ["merge", *sources, "--out", str(out)])
        assert result.exit_code == 1, result.output
        # (the loaders' own progress lines aside) one line
        lines = [x for x in result.stderr.strip().splitlines() if "Loading weights" not in x]
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert not out.exists()
    taken = CliRunner().invoke(app, ["merge", str(runs[0]), "--out", str(tmp_path / "taken")])
    assert taken.exit_code == 1 and "exists; merge writes a new run folder" in taken.stderr
    for value in ("nan", "inf"):  # a bad flag value: exit 2
        args = ["merge", str(runs[0]), "--out", str(tmp_path / "x"), "--scale", value]
        bad = CliRunner().invoke(app, args)
        assert bad.exit_code == 2 and "--scale must be a finite number" in bad.stderr
    checkpoint = sorted((runs[0] / "checkpoints").iterdir())[-1]
    for sources in ([runs[0], runs[1], runs[0]], [runs[0], checkpoint]):  # a doubled input: 2
        args = ["merge", *map(str, sources), "--out", str(tmp_path / "x")]
        twice = CliRunner().invoke(app, args)
        assert twice.exit_code == 2, twice.output
        assert twice.stderr.strip() == (
            f"error: {sources[-1]}: the same checkpoint as {runs[0]}: give each run once"
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.usefixtures("model_must_not_load")
def test_merge_refuses_a_damaged_run_or_a_missing_base_before_the_model_loads(
    runs: list[Path], tiny_sd_dir: Path, tmp_path: Path
) -> None:
    """A run's weights file cut short (wherever it stands among the runs) and a base model
    that is not there are read from files: one line naming the run, no model loaded."""
    import shutil

    damaged = shutil.copytree(runs[1], tmp_path / "damaged")
    weights = sorted((damaged / "checkpoints").iterdir())[-1] / UNET_WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    no_base = shutil.copytree(runs[0], tmp_path / "no-base")
    gone = tmp_path / "gone"
    text = (no_base / "recipe.yaml").read_text()
    (no_base / "recipe.yaml").write_text(text.replace(str(tiny_sd_dir), str(gone)))
    cut_short = f"{damaged}: {weights}: cannot read weights ("
    cases = [
        ([damaged, runs[0]], cut_short),
        ([runs[0], damaged], cut_short),
        ([no_base], f"{no_base}: model.pretrained: model folder not found: {gone}"),
    ]
    for sources, expected in cases:
        out = tmp_path / "out"
        result = CliRunner().invoke(app, ["merge", *map(str, sources), "--out", str(out)])
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.stderr
        assert not out.exists()


def test_merge_checks_that_out_can_be_written_before_loading_weights(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    import dsharp.builders

    read_only = tmp_path / "ro"
    read_only.mkdir()
    make_folder = tempfile.mkdtemp

    def refuse_in_read_only(*args, **kwargs):  # chmod does not stop root: refuse by hand
        if Path(kwargs.get("dir", "")) == read_only:
            raise PermissionError(13, "Permission denied")
        return make_folder(*args, **kwargs)

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse_in_read_only)
    monkeypatch.setattr(dsharp.builders, "build_model", no_loading)
    out = read_only / "m"
    result = CliRunner().invoke(app, ["merge", str(runs[0]), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: --out {out}: cannot be written in {read_only} (Permission denied)"
    )


def test_merge_notes_a_run_that_stopped_before_its_last_step(
    runs: list[Path], tiny_sd_dir: Path, tmp_path: Path
) -> None:
    stopped = _fake_run(tmp_path / "stopped", tiny_sd_dir, seed=5, step=1)
    max_steps = load_recipe(stopped / "recipe.yaml").train.max_steps
    args = ["merge", str(runs[0]), str(stopped), "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {stopped} is at step 1 of its {max_steps}; merged as it is"]


def test_a_run_saved_with_a_relative_model_folder_merges_with_one_saved_absolute(
    runs: list[Path], tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs saved before run folders named their model absolutely name it as it was given;
    the same folder is one base model to `dsharp merge`, and the merged run names it
    absolutely."""
    import shutil

    from dsharp.runs import summarise_run

    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    monkeypatch.chdir(tiny_sd_dir.parent)
    text = (old / "recipe.yaml").read_text()
    (old / "recipe.yaml").write_text(text.replace(str(tiny_sd_dir), f"./{tiny_sd_dir.name}"))
    assert f"./{tiny_sd_dir.name}" in (old / "recipe.yaml").read_text()
    merged = tmp_path / "m"
    result = CliRunner().invoke(app, ["merge", str(old), str(runs[1]), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    # the merged run names its base absolutely, as new runs do, so it loads from anywhere
    assert summarise_run(merged).model == str(tiny_sd_dir)
    assert json.loads((merged / "merge.json").read_text())["base_model"] == str(tiny_sd_dir)
    monkeypatch.chdir(tmp_path)
    from dsharp.builders import load_run_model

    assert load_run_model(merged)[0].family == "sd"


def test_a_merged_folder_records_its_runs_absolutely_and_is_no_run_to_resume(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It holds merged weights without optimizer or scheduler state: resuming it (or branching
    from it) is refused before any model loads, saying how to train from its weights."""
    import dsharp.engine

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.chdir(runs[0].parent)
    result = CliRunner().invoke(app, ["merge", runs[0].name, runs[1].name, "--out", "m"])
    assert result.exit_code == 0, result.output
    out = runs[0].parent / "m"
    try:
        checkpoints = [str(r.resolve() / "checkpoints" / "step-000002") for r in runs[:2]]
        record = json.loads((out / "merge.json").read_text())
        assert [r["checkpoint"] for r in record["runs"]] == checkpoints
        state = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
        assert state["merged_from"] == checkpoints

        monkeypatch.setattr(dsharp.engine, "build_model", no_load)
        recipe = load_recipe(out / "recipe.yaml")  # the merged runs' own recipe
        save_recipe(recipe, tmp_path / "recipe.yaml")
        train = ["train", str(tmp_path / "recipe.yaml"), "--no-progress"]
        merged = Path("m") / "checkpoints" / "step-000002"
        why = (
            f"train.resume: {merged} holds merged weights only (dsharp merge wrote it, without "
            "the optimizer and scheduler state a run continues from): to train from them, copy "
            f"the base model's diffusers folder, put {merged / 'model' / 'unet'} in place of its "
            "unet folder, and start a new run with model.pretrained set to that copy"
        )
        for extra in (
            ["output_dir=m", "train.resume=latest", "train.max_steps=6"],
            [f"output_dir={tmp_path / 'branch'}", f"train.resume={merged}"],
        ):
            result = CliRunner().invoke(app, [*train, *extra])
            assert result.exit_code == 2, result.output
            lines = result.stderr.strip().splitlines()
            assert lines == [f"recipe error: {tmp_path / 'recipe.yaml'}: {why}"], result.stderr
        result = CliRunner().invoke(app, [*train, "output_dir=m", "train.max_steps=6"])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().endswith(
            "output_dir: m holds a merged model (dsharp merge), not a run to train on: choose "
            "another output_dir (or delete this one) to start over"
        )
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    finally:
        import shutil

        shutil.rmtree(out)  # the runs fixture's folder is shared by the module's tests


def test_merge_json_prints_the_folder_the_runs_and_the_scale_alone_on_stdout(
    runs: list[Path], tiny_sd_dir: Path, tmp_path: Path
) -> None:
    stopped = _fake_run(tmp_path / "stopped", tiny_sd_dir, seed=6, step=1)
    out = tmp_path / "merged"
    args = ["merge", str(runs[0]), str(stopped), "--out", str(out), "--scale", "0.5", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["out"], doc["scale"]) == (str(out), 0.5)
    assert [(r["run"], r["step"]) for r in doc["runs"]] == [(str(runs[0]), 2), (str(stopped), 1)]
    assert [Path(r["checkpoint"]).name for r in doc["runs"]] == ["step-000002", "step-000001"]
    max_steps = load_recipe(stopped / "recipe.yaml").train.max_steps
    note = f"{stopped} is at step 1 of its {max_steps}; merged as it is"
    assert doc["notes"] == [note]
    assert f"note: {note}" in result.stderr  # said on stderr as without --json
    assert (out / "merge.json").is_file()


def test_runs_of_a_hub_base_at_a_revision_cached_alone_merge_offline(
    runs: list[Path], tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model: {pretrained: org/tiny, revision: v1}``, only v1 in the hub cache and
    HF_HUB_OFFLINE set: the base loads from the cache, so the runs merge (as at 092c8a5). The
    check before the load looked for main and refused them as "not in the local Hugging
    Face cache"; a revision that is not cached is still refused before the load."""
    import shutil

    from huggingface_hub import constants

    from dsharp.merge import read_sources

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    shutil.copytree(tiny_sd_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def hub_runs(revision: str) -> list[Path]:
        copies = []
        for i, run in enumerate(runs[:2]):
            copy = shutil.copytree(run, tmp_path / f"{revision}-run{i}")
            text = (copy / "recipe.yaml").read_text().replace(str(tiny_sd_dir), "org/tiny")
            (copy / "recipe.yaml").write_text(
                text.replace("revision: null", f"revision: {revision}")
            )
            copies.append(copy)
        return copies

    sources = read_sources(hub_runs("v1"))
    assert [s.recipe.model.revision for s in sources] == ["v1", "v1"]
    with pytest.raises(ValueError, match="org/tiny: not in the local Hugging Face cache"):
        read_sources(hub_runs("v2"))
