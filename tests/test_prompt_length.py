"""A prompt longer than the text encoder reads is cut off by the tokenizer (as the diffusers
pipelines cut it): `dsharp sample` and `eval` say so in one line instead of silently."""

from __future__ import annotations

from cli_results import invoke
from dsharp.prompt_length import Overlong, overlong_prompts
from fake_rewards import NAME, brightness_registered

LONG = " ".join(["a red circle and a blue square"] * 4)  # 28 words: over mini's 20 tokens


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "text encoder reads" in line]


def test_overlong_prompts_counts_the_tokens_of_each_distinct_long_prompt(sd_model):
    tokenizer = sd_model.tokenizer
    limit = tokenizer.model_max_length
    per_word = len(tokenizer("red").input_ids) - 2  # less the start and end tokens
    long = " ".join(["red"] * limit)
    tokens = limit * per_word + 2
    assert overlong_prompts(sd_model, ["a", long, long]) == [Overlong(long, tokens, limit)]
    fits = " ".join(["red"] * ((limit - 2) // per_word))
    assert overlong_prompts(sd_model, [fits]) == []


def test_sample_says_which_prompt_is_cut_off(tmp_path):
    args = ["sample", "--model", "dsharp-mini", "-p", LONG, "-p", "a red circle"]
    result = invoke(args + ["--steps", "1", "--out", tmp_path, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    shown = LONG[:57] + "..."
    assert _notes(result.stderr) == [
        f"note: prompt {shown!r} is 30 tokens, more than the 20 the text encoder reads: the "
        "rest is cut off and changes nothing"
    ]


def test_eval_says_how_many_prompts_are_cut_off(tmp_path):

    prompts = tmp_path / "p.txt"
    prompts.write_text(f"{LONG}\na red circle\n{LONG} and a green circle\n")
    args = ["eval", "--model", "dsharp-mini", "--prompts", prompts, "--reward", NAME]
    with brightness_registered():  # scores any prompt
        result = invoke(args + ["--seeds", "1", "--steps", "1", "--out", tmp_path / "e.json"])
    assert result.exit_code == 0, result.output
    [note] = _notes(result.stderr)
    assert note.startswith("note: 2 prompts are longer than the 20 tokens the text encoder ")


def test_t2i_compbench_says_which_prompt_is_cut_off_once(tmp_path, tiny_sd_dir):
    """The bench's prompts come from its files, not the command line: a long one there is
    cut off as well, and said once however many categories hold it."""
    from dsharp.testing.tiny_rewards import make_tiny_t2i_evaluators

    long = " and ".join(["a green bench on a red car"] * 5)  # 95 tokens: over tiny SD's 77
    data = tmp_path / "data"
    data.mkdir()
    for category in ("color", "shape"):
        (data / f"{category}_val.txt").write_text(f"{long}\na red book\n")
    options = make_tiny_t2i_evaluators(tmp_path / "evaluators")
    sets = [arg for k, v in options.items() for arg in ("--set", f"{k}={v}")]
    args = ["eval", "--model", tiny_sd_dir, "--bench", "t2i-compbench", "--data", data]
    args += ["--categories", "color,shape", "--images-per-prompt", "1", "--steps", "1"]
    result = invoke([*args, "--out", tmp_path / "t2i.json", "--json", *sets])
    assert result.exit_code == 0, result.output
    assert _notes(result.stderr) == [
        f"note: prompt {long[:57] + '...'!r} is 95 tokens, more than the 77 the text encoder "
        "reads: the rest is cut off and changes nothing"
    ]
