"""Model-based built-in rewards on tiny random models of the real architectures.

Each tiny model is saved in the format its reward loads and loaded back through the reward's
own loading path; scores are checked for shape, dtype, range, batching, declared
differentiability and, where it can be restated independently, the value itself.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dsharp.config import RewardSpec
from dsharp.rewards import plugins
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.testing import tiny_rewards

# The T2I-CompBench prompt files live in shared/, beside the repository (CRLF line endings).
COMPBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2i-compbench"
MODEL_REWARDS = {
    "clip": True,
    "aesthetic": True,
    "pickscore": True,
    "hpsv2": True,
    "compositional": False,
    "imagereward": True,
}
PROMPTS = ["a green bench and a blue bowl", "a red apple", "a green bench and a blue bowl"]


@pytest.fixture(scope="module")
def built(tiny_reward_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each reward built through the registry, as a recipe would build it."""
    return {
        name: plugins.build_reward(RewardSpec(name=name, options=opts))
        for name, opts in tiny_reward_options.items()
    }


def _pixels(batch: int = 3, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Random images already on the 8-bit grid, so PIL round trips are exact."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, height, width, generator=g) * 255).round() / 255


# --------------------------------------------------------------------------- registry


def test_model_rewards_are_registered_lazily_with_declared_differentiability() -> None:
    registry = plugins.reward_registry()
    for name, differentiable in MODEL_REWARDS.items():
        info = registry[name].info
        assert registry[name].plugin == "builtin"
        assert info.differentiable is differentiable, name
        assert isinstance(info.factory, plugins.LazyFactory)
        assert info.description


def test_listing_rewards_imports_no_torch_open_clip_or_transformers() -> None:
    code = (
        "import sys\n"
        "from dsharp.rewards.plugins import reward_registry\n"
        "assert 'imagereward' in reward_registry()\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(MODEL_REWARDS))
def test_each_reward_scores_a_batch(name: str, built: dict[str, Any]) -> None:
    reward = built[name]
    assert reward.differentiable is MODEL_REWARDS[name]
    pixels = _pixels(3, 40, 48)  # not the model's size: resizing is exercised
    scores, info = reward(RewardImages(pixels), PROMPTS, [{}] * 3)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert scores.device == pixels.device and torch.isfinite(scores).all()
    assert not scores.requires_grad  # no graph when the pixels do not ask for one
    json.dumps(info, allow_nan=False)


@pytest.mark.parametrize("name", sorted(MODEL_REWARDS))
def test_batched_scores_equal_one_at_a_time(name: str, built: dict[str, Any]) -> None:
    reward = built[name]
    pixels = _pixels(3)
    batched, _ = reward(RewardImages(pixels), PROMPTS, [{}] * 3)
    single = torch.cat(
        [reward(RewardImages(pixels[i : i + 1]), [PROMPTS[i]], [{}])[0] for i in range(3)]
    )
    assert torch.allclose(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODEL_REWARDS))
def test_a_training_steps_autocast_leaves_the_scores_as_evaluation_gets_them(
    name: str, tiny_reward_options: dict[str, dict[str, Any]]
) -> None:
    """Training scores under train.mixed_precision's autocast: in bf16 the reward models'
    scores were rounded to about three digits, and the best and worst of near-identical
    samples (a method's trajectories) changed with the rounding."""
    from dsharp.rewards.combine import CombinedReward

    reward = CombinedReward([RewardSpec(name=name, options=tiny_reward_options[name])])
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    pixels = (_pixels(1) + 0.002 * noise).clamp(0, 1).requires_grad_(MODEL_REWARDS[name])
    prompts, metadata = [PROMPTS[0]] * 4, [{}] * 4
    expected, _ = reward(RewardImages(pixels), prompts, metadata)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores, _ = reward(RewardImages(pixels), prompts, metadata)
    assert torch.equal(scores, expected) and scores.dtype == torch.float32
    if MODEL_REWARDS[name]:  # IterPO back-propagates through it: the graph is still there
        (grad,) = torch.autograd.grad(scores.sum(), pixels)
        assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(n for n, d in MODEL_REWARDS.items() if d))
def test_differentiable_rewards_pass_gradients_to_the_pixels(
    name: str, built: dict[str, Any]
) -> None:
    pixels = _pixels(2, 40, 36).requires_grad_(True)
    scores, _ = built[name](RewardImages(pixels), PROMPTS[:2], [{}] * 2)
    scores.sum().backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(MODEL_REWARDS))
def test_options_and_batch_errors(
    name: str, tiny_reward_options: dict[str, dict[str, Any]], built
) -> None:
    with pytest.raises(RewardError, match=r"bad options: .*'colour'"):
        plugins.build_reward(
            RewardSpec(name=name, options={**tiny_reward_options[name], "colour": 1})
        )
    # named once: "reward 'clip': clip reward option 'device'" said it twice
    with pytest.raises(RewardError, match=rf"^{name} reward option 'device' must be 'auto'"):
        plugins.build_reward(
            RewardSpec(name=name, options={**tiny_reward_options[name], "device": "gpu0"})
        )
    with pytest.raises(ValueError, match="got 2 images but 1 prompts"):
        built[name](RewardImages(_pixels(2)), ["a red apple"], [{}] * 2)


def test_device_auto_and_unavailable_cuda() -> None:
    from dsharp.rewards._weights import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("clip", "auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RewardError, match="CUDA is not available"):
            resolve_device("clip", "cuda")


# --------------------------------------------------------------------------- clip family


def _open_clip_from_files(options: dict[str, Any]):
    """The tiny open_clip model rebuilt by hand from its config and checkpoint."""
    import open_clip

    from dsharp.rewards.clip import open_clip_model_name

    model = open_clip.create_model(open_clip_model_name("test", "model", options["model"]))
    state = torch.load(options["pretrained"], map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), open_clip.get_tokenizer(open_clip_model_name("t", "m", options["model"]))


def test_clip_score_is_scaled_cosine_of_the_checkpoint(tiny_reward_options) -> None:
    import open_clip

    from dsharp.rewards.clip import build_clip_reward

    reward = build_clip_reward(**{**tiny_reward_options["clip"], "scale": 100.0})
    pixels = _pixels(2)
    scores, info = reward(RewardImages(pixels), PROMPTS[:2], [{}] * 2)
    model, tokenizer = _open_clip_from_files(tiny_reward_options["clip"])
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        image = model.encode_image((pixels - mean) / std, normalize=True)
        text = model.encode_text(tokenizer(PROMPTS[:2]), normalize=True)
    expected = 100.0 * (image * text).sum(-1)
    assert torch.allclose(scores, expected, atol=1e-4)
    assert (scores.abs() <= 100.0 + 1e-4).all()
    assert info["scale"] == 100.0


def test_clip_preprocessing_matches_open_clip_transforms() -> None:
    import open_clip
    from open_clip.transform import image_transform

    from dsharp.rewards.clip import preprocess_pixels

    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 10, 15), size=(100, 150))
    image = RewardImages(smooth).pil[0]
    for mode in ("shortest", "longest", "squash"):
        expected = image_transform(64, is_train=False, resize_mode=mode)(image).unsqueeze(0)
        got = preprocess_pixels(
            smooth, 64, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, mode
        )
        assert got.shape == expected.shape == (1, 3, 64, 64)
        assert (got - expected).abs().mean() < 0.01, mode  # 8-bit rounding apart


def test_clip_bad_weights_are_clear_errors(tiny_reward_options, tmp_path: Path) -> None:
    from dsharp.rewards.clip import build_clip_reward

    with pytest.raises(RewardError, match="option 'pretrained': file not found"):
        build_clip_reward(
            **{**tiny_reward_options["clip"], "pretrained": str(tmp_path / "nope.pt")}
        )
    with pytest.raises(RewardError, match=r"neither a checkpoint file nor a pretrained tag"):
        build_clip_reward(**{**tiny_reward_options["clip"], "pretrained": "no-such-tag"})
    with pytest.raises(ValueError, match="option 'scale' must be > 0"):
        build_clip_reward(**{**tiny_reward_options["clip"], "scale": 0})


def test_open_clip_log_lines_are_dropped_on_failure_and_passed_on_after_a_load(
    tiny_reward_options, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import open_clip

    from dsharp.rewards.clip import build_clip_reward

    real = open_clip.create_model

    def offline(*args: Any, **kwargs: Any) -> Any:
        logging.error("Failed to download weights for tag 'openai'")  # as open_clip does
        raise RuntimeError("Failed to download weights for tag 'openai'")

    def chatty(*args: Any, **kwargs: Any) -> Any:
        logging.warning("loaded with a note")
        return real(*args, **kwargs)

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RewardError, match="cannot load open_clip model .* Failed to download"):
        build_clip_reward(**tiny_reward_options["clip"])
    assert not [r for r in caplog.records if "Failed to download" in r.getMessage()]
    monkeypatch.setattr(open_clip, "create_model", chatty)
    build_clip_reward(**tiny_reward_options["clip"])
    assert "loaded with a note" in [r.getMessage() for r in caplog.records]


def test_aesthetic_is_the_mlp_of_the_normalised_embedding(tiny_reward_options) -> None:
    import open_clip

    from dsharp.rewards.aesthetic import LinearHead, build_aesthetic_reward

    options = tiny_reward_options["aesthetic"]
    reward = build_aesthetic_reward(**options)
    pixels = _pixels(2)
    scores, _ = reward(RewardImages(pixels), ["x", "y"], [{}] * 2)
    model, _ = _open_clip_from_files(options)
    head = LinearHead(tiny_rewards.TINY_EMBED)
    head.load_state_dict(torch.load(options["weights"], weights_only=True))
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = head.eval()(model.encode_image((pixels - mean) / std, normalize=True))
    assert torch.allclose(scores, expected.squeeze(-1), atol=1e-5)
    keys = sorted(head.state_dict())
    assert keys == [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("bias", "weight")]


def test_aesthetic_weights_errors(tiny_reward_options, tmp_path: Path) -> None:
    from dsharp.rewards.aesthetic import LinearHead, build_aesthetic_reward

    options = {k: v for k, v in tiny_reward_options["aesthetic"].items() if k != "weights"}
    with pytest.raises(RewardError, match="needs option 'weights'"):
        build_aesthetic_reward(**options)
    with pytest.raises(RewardError, match="option 'weights': file not found"):
        build_aesthetic_reward(**options, weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(LinearHead(8).state_dict(), wrong)
    with pytest.raises(RewardError, match="expect 8-d CLIP embeddings but model"):
        build_aesthetic_reward(**options, weights=str(wrong))


def test_hpsv2_loads_a_wrapped_checkpoint_and_scores_cosines(tiny_reward_options, built) -> None:
    # Same seed, same architecture: the HPS checkpoint holds the tiny CLIP's weights, wrapped
    # in {"state_dict": ...} with "module." prefixes; unwrapped, it must score like clip.
    pixels = _pixels(2)
    hps, info = built["hpsv2"](RewardImages(pixels), PROMPTS[:2], [{}] * 2)
    clip, _ = built["clip"](RewardImages(pixels), PROMPTS[:2], [{}] * 2)
    assert torch.allclose(hps, clip, atol=1e-5)
    assert (hps.abs() <= 1.0).all() and info["scale"] == 1.0


def test_hub_ids_honour_hf_hub_offline(
    tiny_reward_options, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsharp.rewards.hpsv2 import build_hpsv2_reward

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RewardError, match=r"option 'checkpoint'.*HF_HUB_OFFLINE"):
        build_hpsv2_reward(
            model=tiny_reward_options["hpsv2"]["model"], checkpoint="dsharp-test/not-cached"
        )
    with pytest.raises(RewardError, match=r"option 'checkpoint': file not found"):
        build_hpsv2_reward(
            model=tiny_reward_options["hpsv2"]["model"], checkpoint="./no/such/file.pt"
        )


def test_pickscore_is_logit_scale_times_cosine(tiny_reward_options, built) -> None:
    from transformers import CLIPModel, CLIPProcessor

    reward = built["pickscore"]
    pixels = _pixels(2)
    scores, info = reward(RewardImages(pixels), PROMPTS[:2], [{}] * 2)
    model = CLIPModel.from_pretrained(tiny_reward_options["pickscore"]["model"]).eval()
    processor = CLIPProcessor.from_pretrained(tiny_reward_options["pickscore"]["processor"])
    inputs = processor(
        text=PROMPTS[:2], images=RewardImages(pixels).pil, return_tensors="pt", padding=True
    )
    with torch.no_grad():
        image = model.visual_projection(
            model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
        )
        text = model.text_projection(
            model.text_model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            ).pooler_output
        )
        cosine = torch.nn.functional.cosine_similarity(image, text, dim=-1)
    logit_scale = model.logit_scale.exp().item()
    assert info["logit_scale"] == pytest.approx(logit_scale)
    assert torch.allclose(scores, logit_scale * cosine, atol=1e-4)
    assert (scores.abs() <= logit_scale + 1e-4).all()


# --------------------------------------------------------------------------- compositional


def test_compositional_is_the_product_of_p_yes_over_noun_phrases(built) -> None:
    reward = built["compositional"]
    prompts = ["a green bench and a blue bowl", "a red apple", "on the left"]
    scores, info = reward(RewardImages(_pixels(3)), prompts, [{}] * 3)
    assert info["questions"] == [["a green bench?", "a blue bowl?"], ["a red apple?"], []]
    assert info["noun_phrases"] == "rules"
    for score, probs in zip(scores.tolist(), info["p_yes"], strict=True):
        assert all(0.0 < p < 1.0 for p in probs)
        assert score == pytest.approx(math.prod(probs), rel=1e-5)
    assert scores[2].item() == 1.0  # no noun phrase: nothing to fail
    assert ((scores >= 0) & (scores <= 1)).all()
    assert reward.enc is not None  # questions start with BLIP's [ENC] token


def test_compositional_p_yes_is_yes_against_no_of_the_first_answer_token(built) -> None:
    from transformers import BlipForQuestionAnswering

    reward = built["compositional"]
    model: BlipForQuestionAnswering = reward.model
    pixels = _pixels(1)
    p = reward.p_yes(pixels, ["a red apple?"], [0]).item()
    # The same quantity through the model's own training forward: the decoder loss of the
    # one-token answers "yes" and "no" gives log p(first token) for each.
    tok = reward.tokenizer
    question = tok(["a red apple?"], return_tensors="pt")
    question["input_ids"][:, 0] = reward.enc
    x = (pixels - torch.tensor(reward.settings["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        reward.settings["std"]
    ).view(1, 3, 1, 1)
    log_p = {}
    for answer in ("yes", "no"):
        labels = torch.tensor([[reward.bos, tok.get_vocab()[answer]]])
        with torch.no_grad():
            image = model.vision_model(pixel_values=x).last_hidden_state
            q = model.text_encoder(
                input_ids=question["input_ids"],
                attention_mask=question["attention_mask"],
                encoder_hidden_states=image,
            ).last_hidden_state
            out = model.text_decoder(
                input_ids=labels,
                labels=labels,
                encoder_hidden_states=q,
                encoder_attention_mask=question["attention_mask"],
                reduction="none",
            )
        log_p[answer] = -out.loss.item()  # one predicted token: bos -> answer
    expected = 1.0 / (1.0 + math.exp(log_p["no"] - log_p["yes"]))
    assert p == pytest.approx(expected, abs=2e-3)  # label smoothing of the loss aside


def test_compositional_image_size_interpolates_positions(tiny_reward_options) -> None:
    from dsharp.rewards.compositional import build_compositional_reward

    reward = build_compositional_reward(
        **{**tiny_reward_options["compositional"], "image_size": 48}
    )
    scores, info = reward(RewardImages(_pixels(2)), PROMPTS[:2], [{}] * 2)
    assert info["image_size"] == 48 and ((scores > 0) & (scores < 1)).all()
    with pytest.raises(ValueError, match="option 'max_phrases'"):
        build_compositional_reward(**{**tiny_reward_options["compositional"], "max_phrases": 0})


# --------------------------------------------------------------------------- imagereward


def test_imagereward_applies_the_published_normalisation(tiny_reward_options, built) -> None:
    from dsharp.rewards.imagereward import MEAN, STD

    reward = built["imagereward"]
    pixels = _pixels(2)
    scores, info = reward(RewardImages(pixels), PROMPTS[:2], [{}] * 2)
    assert (MEAN, STD) == (0.16717362830052426, 1.0333394966054072)
    assert info["mean"] == MEAN and info["std"] == STD
    ids, mask = reward.tokens(PROMPTS[:2])
    assert ids.shape == (2, 35)  # padded to ImageReward's 35 tokens
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = reward.model((pixels - mean) / std, ids, mask)
    assert torch.allclose(scores, (raw - MEAN) / STD, atol=1e-5)


# The original BLIP names of ImageReward.pt for each renamed vision parameter, as the BLIP
# ViT (timm-style) names them; text-encoder and head names are unchanged.
_ORIGINAL_VISION = {
    "embeddings.class_embedding": "cls_token",
    "embeddings.position_embedding": "pos_embed",
    "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
    "post_layernorm.weight": "norm.weight",
    "post_layernorm.bias": "norm.bias",
}
_ORIGINAL_BLOCK = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.qkv": "attn.qkv",
    "self_attn.projection": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def _to_original_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith("vision_model."):
            name = key[len("vision_model.") :]
            if name in _ORIGINAL_VISION:
                name = _ORIGINAL_VISION[name]
            else:
                _, _, index, rest = name.split(".", 3)  # encoder.layers.{i}.{rest}
                module, param = rest.rsplit(".", 1)
                name = f"blocks.{index}.{_ORIGINAL_BLOCK[module]}.{param}"
            out[f"blip.visual_encoder.{name}"] = value
        elif key.startswith("text_encoder."):
            out[f"blip.{key}"] = value
        else:
            out[key] = value
    return out


def test_original_checkpoint_names_convert_to_the_same_model(tiny_reward_options, built) -> None:
    from dsharp.rewards.imagereward import ImageRewardModel, convert_original_state_dict

    reward = built["imagereward"]
    original = _to_original_names(reward.model.state_dict())
    original["blip.text_encoder.embeddings.position_ids"] = torch.arange(64)[None]
    original["blip.vision_proj.weight"] = torch.zeros(4, 32)  # unused by scoring
    converted, skipped = convert_original_state_dict(
        {f"module.{k}": v for k, v in original.items()}
    )
    assert sorted(skipped) == [
        "blip.text_encoder.embeddings.position_ids",
        "blip.vision_proj.weight",
    ]
    fresh = ImageRewardModel(reward.model.config)
    fresh.load_state_dict(converted, strict=True)
    pixels, (ids, mask) = _pixels(2), reward.tokens(PROMPTS[:2])
    with torch.no_grad():
        assert torch.equal(fresh.eval()(pixels, ids, mask), reward.model(pixels, ids, mask))
    with pytest.raises(RewardError, match="unknown keys blip.text_decoder.x"):
        convert_original_state_dict({**original, "blip.text_decoder.x": torch.zeros(1)})


def test_imagereward_v1_config_is_blip_large() -> None:
    from dsharp.rewards.imagereward import v1_config

    config = v1_config()
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (
        1024,
        24,
        16,
    )
    assert (vision.image_size, vision.patch_size, vision.layer_norm_eps) == (224, 16, 1e-6)
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers) == (30524, 768, 12)
    assert (text.num_attention_heads, text.encoder_hidden_size) == (12, 1024)


def test_imagereward_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    from dsharp.rewards.imagereward import build_imagereward_reward

    with pytest.raises(RewardError, match="option 'model'"):
        build_imagereward_reward(model=str(tmp_path / "nowhere" / "ImageReward.pt"), device="cpu")


def test_combined_model_rewards_stay_differentiable(tiny_reward_options, built) -> None:
    from dsharp.rewards.combine import CombinedReward

    specs = [RewardSpec(name="clip"), RewardSpec(name="aesthetic", weight=0.5)]
    combined = CombinedReward(specs, [built["clip"], built["aesthetic"]])
    assert combined.differentiable
    pixels = _pixels(2).requires_grad_(True)
    total, _ = combined(RewardImages(pixels), PROMPTS[:2], [{}] * 2)
    total.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


# --------------------------------------------------------------------------- noun phrases


@pytest.mark.skipif(not COMPBENCH.is_dir(), reason="shared/data/t2i-compbench not present")
def test_rule_noun_phrases_on_t2i_compbench_color_prompts() -> None:
    from dsharp.rewards.noun_phrases import rule_noun_phrases

    lines = [
        line.strip()
        for line in (COMPBENCH / "color_val.txt").read_text(encoding="utf-8").splitlines()
    ]
    assert lines[0] == "a green bench and a blue bowl"  # CRLF stripped
    assert rule_noun_phrases(lines[0]) == ["a green bench", "a blue bowl"]
    assert rule_noun_phrases(lines[4]) == ["a brown horse", "a blue vase"]
    simple = [line for line in lines[:40] if line.startswith("a ") and " and a " in line]
    assert len(simple) >= 20
    for line in simple:
        left, right = line.split(" and ", 1)
        assert rule_noun_phrases(line) == [left, right]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red apple and yellow bananas", ["a red apple", "yellow bananas"]),
        ("A black and white cat sits in a white sink.", ["A black and white cat", "a white sink"]),
        ("a cat on top of a table", ["a cat", "a table"]),
        ("a dog on the left of a car", ["a dog", "a car"]),
        ("A blue scooter is parked near a curb", ["A blue scooter", "a curb"]),
        (
            "two black sheep, a white goat in a field",
            ["two black sheep", "a white goat", "a field"],
        ),
        ("A traffic light with a green sign.", ["A traffic light", "a green sign"]),
        ("", []),
    ],
)
def test_rule_noun_phrases(prompt: str, expected: list[str]) -> None:
    from dsharp.rewards.noun_phrases import noun_phrases

    assert noun_phrases(prompt, "rules") == expected


def test_noun_phrase_method_resolution() -> None:
    from dsharp.rewards.noun_phrases import resolve_method, spacy_available

    assert resolve_method("rules") == "rules"
    assert resolve_method("auto") == ("spacy" if spacy_available() else "rules")
    with pytest.raises(ValueError, match="must be one of"):
        resolve_method("nltk")
    if not spacy_available():
        with pytest.raises(RuntimeError, match="needs spaCy with en_core_web_sm"):
            resolve_method("spacy")


def test_a_reward_device_index_the_machine_lacks_is_refused_when_the_reward_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``device: cuda:3`` on a one-GPU machine passed, and failed only at the first image
    moved there, after the reward's weights had loaded; ``--device`` was refused at once."""
    from dsharp.rewards._weights import check_device, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RewardError) as caught:
        resolve_device("clip", "cuda:3")
    assert str(caught.value) == (
        "clip reward option 'device' cuda:3: this machine has 1 CUDA device(s), cuda:0"
    )
    assert resolve_device("clip", "cuda:0") == torch.device("cuda", 0)
    # a recipe's check stays machine-independent: it may run where training does not
    assert check_device("clip", "cuda:3") == torch.device("cuda", 3)


@pytest.mark.parametrize("name", sorted(MODEL_REWARDS))
def test_building_a_reward_on_a_cuda_index_the_machine_lacks_is_one_line(
    name: str, tiny_reward_options: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RewardError) as caught:
        plugins.build_reward(
            RewardSpec(name=name, options={**tiny_reward_options[name], "device": "cuda:2"})
        )
    assert str(caught.value) == (
        f"{name} reward option 'device' cuda:2: this machine has 2 CUDA device(s), cuda:0 to cuda:1"
    )
