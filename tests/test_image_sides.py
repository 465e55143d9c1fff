"""`dsharp sample` and `eval` refuse an image side the model's VAE cannot draw from its
config files, before its weights (and diffusers) load: SDXL takes long to load on a CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_results import invoke
from dsharp.config import ModelConfig
from dsharp.preflight import check_image_sides

ROOT = Path(__file__).resolve().parents[1]

# runs the CLI and says which heavy modules it imported before it stopped
_CHECK_IMPORTS = """
import sys
try:
    from dsharp.cli import main
    sys.argv = ["dsharp", *sys.argv[1:]]
    main()
finally:
    heavy = [m for m in ("diffusers", "transformers") if m in sys.modules]
    print("heavy modules:", ",".join(heavy) or "none")
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _CHECK_IMPORTS, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("command", "extra", "given", "label"),
    [
        ("sample", ["-p", "a red circle"], ["--height", "60"], "--height 60"),
        ("sample", ["-p", "a red circle"], ["sample.width=36"], "sample.width 36"),
        ("eval", ["--prompts", "p.txt", "--reward", "shapes"], ["--width", "36"], "--width 36"),
    ],
)
def test_a_side_the_vae_cannot_draw_is_refused_before_the_model_loads(
    tiny_sdxl_dir, tmp_path, command, extra, given, label
):
    (tmp_path / "p.txt").write_text("a red circle\n")
    args = [command, "--model", str(tiny_sdxl_dir), *extra, *given, "--out", "o"]
    done = _run(args, tmp_path)
    assert done.returncode == 2, done.stderr  # a bad setting, as the model's own refusal
    factor = f"must be a multiple of 8 for {tiny_sdxl_dir} (its VAE's downsampling)"
    assert done.stderr.strip() == f"error: {label}: {factor}"
    assert done.stdout.strip().splitlines()[-1] == "heavy modules: none"
    assert not (tmp_path / "o").exists()


def test_sides_the_vae_draws_and_pixel_space_sides_pass(tiny_sd_dir):
    check_image_sides(ModelConfig(pretrained=str(tiny_sd_dir)), {"--height": 72, "--width": None})
    check_image_sides(ModelConfig(pretrained="dsharp-mini"), {"--height": 60, "--width": 31})
    with pytest.raises(ValueError, match=r"^--width 20: must be a multiple of 8 for "):
        check_image_sides(ModelConfig(pretrained=str(tiny_sd_dir)), {"--width": 20})


@pytest.mark.parametrize(
    ("given", "label"),
    [
        (["train.height=60"], "train.height 60"),  # eval draws at the training size
        (["train.height=64", "sample.height=60"], "sample.height 60"),
        (["train.width=36", "--width", "44"], "--width 44"),
    ],
)
def test_eval_of_a_recipe_names_the_field_a_side_came_from(tiny_sdxl_dir, tmp_path, given, label):
    """A side eval took from the recipe's ``train.height`` (no ``sample.height``) was named
    ``sample.height`` in the refusal, a field the recipe does not set."""
    (tmp_path / "p.txt").write_text("a red circle\n")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    args = ["eval", "--recipe", str(recipe), f"model.pretrained={tiny_sdxl_dir}", *given]
    done = _run([*args, "--prompts", "p.txt", "--out", "o"], tmp_path)
    assert done.returncode == 2, done.stderr
    factor = f"must be a multiple of 8 for {tiny_sdxl_dir} (its VAE's downsampling)"
    assert done.stderr.strip() == f"error: {label}: {factor}"
    assert not (tmp_path / "o").exists()


def _recipe(folder: Path, pretrained: str) -> Path:
    """A recipe of ``pretrained`` (the tiny smoke recipe, shapes reward: no weights)."""
    text = (ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml").read_text()
    path = folder / "r.yaml"
    path.write_text(text.replace("pretrained: dsharp-mini", f"pretrained: {pretrained}"))
    return path


def test_eval_checks_the_model_it_loads_not_the_recipes(tiny_sdxl_dir, tmp_path):
    """With --recipe, --model (or --checkpoint) is the model that loads: its VAE, not the
    recipe's model's, says which sides it draws."""
    (tmp_path / "p.txt").write_text("a red circle\n")
    recipe = _recipe(tmp_path, "dsharp-mini")
    args = ["eval", "--recipe", recipe, "--model", tiny_sdxl_dir, "--prompts", "p.txt"]
    done = _run([str(a) for a in args] + ["--height", "60", "--out", "o.json"], tmp_path)
    assert done.returncode == 2, done.stderr
    factor = f"must be a multiple of 8 for {tiny_sdxl_dir} (its VAE's downsampling)"
    assert done.stderr.strip() == f"error: --height 60: {factor}"
    assert done.stdout.strip().splitlines()[-1] == "heavy modules: none"


def test_eval_draws_a_side_the_given_model_draws_though_the_recipes_model_cannot(
    tiny_sd_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("a red circle\n")
    recipe = _recipe(tmp_path, str(tiny_sd_dir))
    args = ["eval", "--recipe", recipe, "--model", "dsharp-mini", "--prompts", "p.txt"]
    args += ["--reward", "shapes", "--height", "60", "--width", "60", "--seeds", "1"]
    done = invoke(args + ["--steps", "1", "--device", "cpu", "--out", tmp_path / "e.json"])
    assert done.exit_code == 0, done.output  # dsharp-mini is pixel space: 60 is drawn
    assert (tmp_path / "e.json").is_file()


def test_a_recipes_train_side_is_named_as_the_recipe_sets_it(tiny_sd_dir, tmp_path):
    """eval falls back to the recipe's train.height: the refusal names that field."""
    (tmp_path / "p.txt").write_text("a red circle\n")
    recipe = _recipe(tmp_path, str(tiny_sd_dir))
    args = ["eval", "--recipe", str(recipe), "train.height=60", "--prompts", "p.txt"]
    done = _run(args + ["--out", "o.json"], tmp_path)
    assert done.returncode == 2, done.stderr
    factor = f"must be a multiple of 8 for {tiny_sd_dir} (its VAE's downsampling)"
    assert done.stderr.strip() == f"error: train.height 60: {factor}"


def test_t2i_compbench_refuses_a_side_before_its_prompts_and_the_model(tiny_sdxl_dir, tmp_path):
    args = ["eval", "--bench", "t2i-compbench", "--model", str(tiny_sdxl_dir)]
    done = _run(args + ["--width", "36", "--data", "nowhere", "--out", "o.json"], tmp_path)
    assert done.returncode == 2, done.stderr
    factor = f"must be a multiple of 8 for {tiny_sdxl_dir} (its VAE's downsampling)"
    assert done.stderr.strip() == f"error: --width 36: {factor}"
    assert done.stdout.strip().splitlines()[-1] == "heavy modules: none"
