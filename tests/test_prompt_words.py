"""dsharp-mini's tokenizer has a token for each shapes-world word only and splits any other
word into pieces without a word: `dsharp sample` and `eval` name such words in one line
instead of drawing them silently, and still draw."""

from __future__ import annotations

from cli_results import invoke
from dsharp.commands.output_notes import unknown_words_note
from dsharp.models.mini import unknown_words
from fake_rewards import NAME, brightness_registered

NOTE = (
    "note: dsharp-mini knows only the shapes world's words; its tokenizer splits others into "
    "pieces the model does not read as those words: "
)


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "shapes world's words" in line]


def test_unknown_words_are_each_distinct_word_outside_the_grammar():
    prompts = ["a photo of a cat", "A Red Circle.", "3 cats, and a cat", "two blue squares"]
    assert unknown_words(prompts) == ["photo", "cat", "3", "cats"]
    assert unknown_words(["a red circle to the left of three green triangles."]) == []


def test_sample_names_the_unknown_words_once_and_draws(tmp_path):
    args = ["sample", "--model", "dsharp-mini", "-p", "a photo of a cat", "-p", "a red circle"]
    result = invoke(args + ["-n", "2", "--steps", "1", "--out", tmp_path, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert _notes(result.stderr) == [NOTE + "'photo', 'cat'"]
    assert len(list(tmp_path.glob("*.png"))) == 5  # four images and the grid


def test_eval_names_at_most_five_unknown_words_once(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog on the grass near a big tree\na red circle\n")
    args = ["eval", "--model", "dsharp-mini", "--prompts", prompts, "--reward", NAME]
    with brightness_registered():  # scores any prompt
        result = invoke(args + ["--seeds", "2", "--steps", "1", "--out", tmp_path / "e.json"])
    assert result.exit_code == 0, result.output
    assert _notes(result.stderr) == [NOTE + "'dog', 'on', 'grass', 'near', 'big' and 1 more"]


def test_a_model_of_another_family_gets_no_such_note(sd_model, capsys):
    """Stable Diffusion's tokenizer knows far more words than the shapes world's."""
    unknown_words_note(sd_model, ["a photo of a cat"])
    assert capsys.readouterr().err == ""
