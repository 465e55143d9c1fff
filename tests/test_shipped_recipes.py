"""The recipes that ship with dsharp reach a user without a checkout: ``dsharp recipes copy``
writes them to ./recipes, and a missing ``recipes/...`` path says so.

(The installed wheel itself is checked in test_packaging.py; here the shipped folder is the
checkout's, which is where a source run finds it.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_results import invoke
from dsharp.recipe_listing import find_recipes_dir
from dsharp.shipped_recipes import copy_recipes, missing_recipe_hint, shipped_recipes_dir

ROOT = Path(__file__).resolve().parents[1]


def test_copy_writes_every_shipped_recipe_byte_for_byte(tmp_path: Path) -> None:
    written = copy_recipes(tmp_path / "recipes")
    source = shipped_recipes_dir()
    assert source is not None
    shipped = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path / "recipes") for p in written) == shipped
    for rel in (Path("quickstart.yaml"), Path("prompts/general.txt"), Path("mini/table1.yaml")):
        assert (tmp_path / "recipes" / rel).read_bytes() == (ROOT / "recipes" / rel).read_bytes()


def test_copy_never_overwrites_and_writes_nothing_when_one_file_exists(tmp_path: Path) -> None:
    dest = tmp_path / "recipes"
    (dest / "mini").mkdir(parents=True)
    (dest / "mini" / "sft.yaml").write_text("# mine\n")
    with pytest.raises(FileExistsError, match=r"mini/sft.yaml already exists"):
        copy_recipes(dest)
    assert (dest / "mini" / "sft.yaml").read_text() == "# mine\n"
    assert not (dest / "quickstart.yaml").exists()  # refused before writing anything


def test_recipes_copy_command_then_the_readme_command_reads_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = invoke(["recipes", "copy"])
    assert done.exit_code == 0, done.output
    assert "files in recipes" in done.output
    assert (tmp_path / "recipes" / "quickstart.yaml").is_file()
    valid = invoke(["recipes", "validate", "recipes/quickstart.yaml"])
    assert valid.exit_code == 0, valid.output
    again = invoke(["recipes", "copy"])
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_missing_shipped_recipe_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = invoke(["recipes", "validate", "recipes/quickstart.yaml"])
    assert done.exit_code == 2
    assert "recipes/quickstart.yaml: file not found" in done.output
    assert "`dsharp recipes copy`" in done.output
    # a name dsharp does not ship, or a folder that has its own recipes/: no such advice
    assert missing_recipe_hint(Path("recipes/nope.yaml")) == ""
    (tmp_path / "recipes").mkdir()
    assert missing_recipe_hint(Path("recipes/quickstart.yaml")) == ""


def test_listing_without_a_local_folder_shows_the_shipped_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_recipes_dir() == shipped_recipes_dir()
    done = invoke(["recipes", "list"])
    assert done.exit_code == 0, done.output
    assert "quickstart.yaml" in done.output
    assert "`dsharp recipes copy` writes them to ./recipes" in done.output
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text("# dsharp train recipes/a.yaml\nmethod: {}\n")
    local = invoke(["recipes", "list"])
    assert "recipes copy" not in local.output  # the user's own folder: nothing to copy


def test_missing_recipe_with_prompt_files_is_not_sent_to_the_installed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipped recipe that reads recipes/prompts/... runs only from a copy: the installed
    file, given from here, would fail on its prompts file next."""
    monkeypatch.chdir(tmp_path)
    shipped = shipped_recipes_dir()
    assert shipped is not None
    assert "prompts_file: recipes/prompts/" in (shipped / "paper" / "d3po.yaml").read_text()
    hint = missing_recipe_hint(Path("recipes/paper/d3po.yaml"))
    assert "`dsharp recipes copy`" in hint
    assert "installed file" not in hint
    # the installed file, as the other hint offers, is refused on its prompts file
    installed = invoke(["recipes", "validate", str(shipped / "paper" / "d3po.yaml")])
    assert installed.exit_code == 2
    assert "file not found: recipes/prompts/general.txt" in installed.output
    # one that names no such file still offers the installed file, which validates
    quick = missing_recipe_hint(Path("recipes/quickstart.yaml"))
    assert f"or give the installed file, {shipped / 'quickstart.yaml'}" in quick
    assert invoke(["recipes", "validate", str(shipped / "quickstart.yaml")]).exit_code == 0


def test_copy_elsewhere_says_which_recipes_read_prompts_from_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper recipes name recipes/prompts/general.txt, read from the current folder:
    copied to another FOLDER they fail on it, and the copy says so; to ./recipes they run."""
    monkeypatch.chdir(tmp_path)
    done = invoke(["recipes", "copy", "mine"])
    assert done.exit_code == 0, done.output
    [note] = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert "read their prompts file from recipes/prompts/ in the current folder" in note
    relying = int(note.split()[1])
    assert relying == sum(
        "recipes/prompts/" in p.read_text() for p in (tmp_path / "mine").rglob("*.yaml")
    )
    failing = invoke(["recipes", "validate", "mine/paper/d3po.yaml"])
    assert "file not found: recipes/prompts/general.txt" in failing.output
    local = invoke(["recipes", "copy"])
    assert local.exit_code == 0, local.output
    assert "note:" not in local.stderr
    assert invoke(["recipes", "validate", "recipes/paper/d3po.yaml"]).exit_code == 0


def test_copy_into_the_shipped_folder_itself_is_refused(tmp_path, monkeypatch):
    """In a checkout the shipped recipes are its recipes/: a copy into recipes/x would be
    listed, and copied again, as recipes of their own; a copy onto recipes/ itself is said
    to be that folder. (A stand-in shipped folder: a broken refusal writes nothing here.)"""
    import dsharp.shipped_recipes as shipped

    source = tmp_path / "recipes"
    source.mkdir()
    (source / "a.yaml").write_text("model: {pretrained: dsharp-mini}\n")
    monkeypatch.setattr(shipped, "shipped_recipes_dir", lambda: source)
    with pytest.raises(FileExistsError, match="inside the shipped recipes folder"):
        copy_recipes(source / "copy-of-recipes")
    assert not (source / "copy-of-recipes").exists()
    with pytest.raises(FileExistsError, match="is the shipped recipes folder"):
        copy_recipes(source)


def test_only_a_checkouts_recipes_folder_stands_for_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package folder on PYTHONPATH (~/lib/dsharp) is no checkout: the user's own
    ~/recipes beside lib/ is not dsharp's (copied as dsharp's, a copy into it refused)."""
    import dsharp.shipped_recipes as shipped

    home = tmp_path / "home"
    (home / "lib" / "dsharp").mkdir(parents=True)
    (home / "recipes").mkdir()
    (home / "recipes" / "mine.yaml").write_text("model: {pretrained: dsharp-mini}\n")
    monkeypatch.setattr(shipped, "_PACKAGE", home / "lib" / "dsharp")
    assert shipped_recipes_dir() is None
    with pytest.raises(FileNotFoundError, match="has no recipes folder"):
        copy_recipes(tmp_path / "copy")
    checkout = tmp_path / "checkout"
    (checkout / "src" / "dsharp").mkdir(parents=True)
    (checkout / "recipes").mkdir()
    (checkout / "pyproject.toml").write_text("[project]\nname = 'dsharp'\n")
    monkeypatch.setattr(shipped, "_PACKAGE", checkout / "src" / "dsharp")
    assert shipped_recipes_dir() == checkout / "recipes"
