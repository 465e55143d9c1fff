"""scripts/probe_relation_use.py and scripts/build_mini_init_relation.py: the relation probe's
reversed captions, and the trial encoder's relation part."""

from __future__ import annotations

import pytest
import torch

from dsharp.models import mini
from dsharp.shapes import parse


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("probe_relation_use")


@pytest.fixture(scope="module")
def builder(load_script):
    return load_script("build_mini_init_relation")


def test_reversed_relation_turns_only_the_first_relation_around(probe):
    assert probe.reversed_relation("a red circle to the left of a blue square") == (
        "a red circle to the right of a blue square"
    )
    reversed_ = parse(
        probe.reversed_relation("a blue square below a blue triangle above a white triangle")
    )
    assert [r.kind for r in reversed_.relations] == ["above", "above"]


def test_relation_encoder_carries_the_latest_relation_word_to_every_later_token(builder):
    torch.manual_seed(0)
    tokenizer = mini.make_tokenizer()
    encoder = builder.make_relation_text_encoder(tokenizer)
    assert builder.check_relation_part(encoder, tokenizer) == 0
    # the object after "left" and the one after "right" reach the UNet differently; the
    # object named first does not (the encoder is causal)
    part = slice(4 * mini.TEXT_PART, 5 * mini.TEXT_PART)
    ids = tokenizer(
        ["a red circle to the left of a blue square", "a red circle to the right of a blue square"],
        padding="max_length",
        max_length=mini.MAX_LENGTH,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        hidden = encoder(ids).last_hidden_state[..., part]
    square = ids[0].tolist().index(tokenizer.get_vocab()["square</w>"])
    circle = ids[0].tolist().index(tokenizer.get_vocab()["circle</w>"])
    assert torch.allclose(hidden[0, circle], hidden[1, circle])
    assert not torch.allclose(hidden[0, square], hidden[1, square], atol=0.1)


def test_a_sabotaged_relation_head_is_caught(builder):
    torch.manual_seed(0)
    tokenizer = mini.make_tokenizer()
    encoder = builder.make_relation_text_encoder(tokenizer)
    with torch.no_grad():
        encoder.encoder.layers[0].self_attn.q_proj.bias.zero_()  # attends evenly instead
    assert builder.check_relation_part(encoder, tokenizer) > 0
