"""scripts/ship_mini.py: the model card names the text encoder by the init the run used."""

from __future__ import annotations

import pytest

from dsharp.models.mini import MINI_INIT_NAMES


@pytest.fixture(scope="module")
def ship_mini(load_script):
    return load_script("ship_mini")


def test_text_encoder_kind_comes_from_the_init_not_the_layer_count(ship_mini):
    one_layer = {"num_hidden_layers": 1, "num_attention_heads": 2}
    binding = ship_mini._text_layers(one_layer, MINI_INIT_NAMES["binding"])
    assert "hand-set" in binding
    # A one-layer encoder from another init is described by its shape, not as hand-set.
    other = ship_mini._text_layers(one_layer, "some/other-init")
    assert "hand-set" not in other
    assert other == "1 layer, 2 heads"
    plain = ship_mini._text_layers({"num_hidden_layers": 0}, MINI_INIT_NAMES["plain"])
    assert plain.startswith("no transformer layers")
