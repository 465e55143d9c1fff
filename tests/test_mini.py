"""dsharp-mini: the untrained init folder, its tokenizer, the cached ``dsharp-mini-init``, the
shapes data's caption noise, and the shipped ``dsharp-mini`` (when it is built)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from dsharp.models import load_model, loading, mini
from dsharp.shapes import parse, prompt_sets
from dsharp.shapes.prompts import in_split

SHIPPED = loading.assets_dir() / "dsharp-mini"
CARD_ROW = re.compile(r"^\| (\S+\.safetensors) \| (\d+) \| ([0-9a-f]{64}) \|$", re.M)


@pytest.fixture(scope="module")
def mini_init_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini.build_mini_init(tmp_path_factory.mktemp("mini") / "dsharp-mini-init")


# -- tokenizer --------------------------------------------------------------------------


def test_merges_make_every_grammar_word_one_piece():
    words = mini.grammar_words()
    assert {"red", "circles", "left", "three", "an"} <= set(words)
    merges = mini.build_merges(words)
    ranks = {pair: i for i, pair in enumerate(merges)}
    for word in words:
        assert mini._apply_bpe(word, ranks) == [word + "</w>"]
    assert merges == mini.build_merges(words)  # deterministic


def test_tokenizer_reads_every_prompt_word_as_one_known_token():
    tokenizer = mini.make_tokenizer()
    vocab = tokenizer.get_vocab()
    for word in mini.grammar_words():
        assert tokenizer.tokenize(word) == [word + "</w>"]
        assert word + "</w>" in vocab
    prompts = [p for split in ("train", "val") for g in prompt_sets(split).values() for p in g]
    for prompt in prompts:
        ids = tokenizer(prompt).input_ids
        words = prompt.split()
        assert len(ids) == len(words) + 2 <= mini.MAX_LENGTH, prompt
        assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == [w + "</w>" for w in words]
    # Any other text still tokenises (byte-level base symbols), just into more pieces.
    assert len(tokenizer("Hello, Wörld! 42").input_ids) > 4


# -- the init folder --------------------------------------------------------------------


def test_init_folder_loads_as_mini_pixel_model(mini_init_dir):
    model = load_model(str(mini_init_dir))
    assert model.family == "mini" and model.vae is None
    assert model.default_resolution == 32
    assert model.latent_shape(32, 32) == (3, 32, 32)
    config = model.scheduler.config
    assert (config.beta_schedule, config.prediction_type, config.clip_sample) == (
        "squaredcos_cap_v2",
        "v_prediction",
        False,
    )
    assert config.set_alpha_to_one and model.scheduler.final_alpha_cumprod == 1.0
    cond = model.encode_prompt(["a red circle above two blue squares", ""], 32, 32)
    assert cond.prompt_embeds.shape == (2, mini.MAX_LENGTH, mini.TEXT_HIDDEN)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999, 10])
    with torch.no_grad():
        eps = model.predict_noise(x, t, cond)
        v = model.predict_native(x, t, cond)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    # The adapter hands samplers epsilon: sqrt(1 - abar) x_t + sqrt(abar) v.
    abar = model.scheduler.alphas_cumprod[t].view(2, 1, 1, 1)
    torch.testing.assert_close(eps, (1 - abar) ** 0.5 * x + abar**0.5 * v)
    n_unet = sum(p.numel() for p in model.unet.parameters())
    assert 2_000_000 < n_unet < 5_000_000  # fp32 UNet + text encoder stay under 20 MB


def test_init_text_encoder_reads_each_word_out_of_context(mini_init_dir):
    """A shape word's embedding must not depend on its colour, or every unseen colour-shape
    pair reaches the UNet as a new representation."""
    model = load_model(str(mini_init_dir))
    red, green, red_circle = model.encode_prompt(
        ["a red triangle", "a green triangle", "a red circle"], 32, 32
    ).prompt_embeds
    # positions: 0 start, 1 "a", 2 colour, 3 shape, then end/padding
    torch.testing.assert_close(red[3], green[3])  # "triangle" after any colour
    torch.testing.assert_close(red[4:], green[4:])  # padding carries no prompt
    assert not torch.allclose(red[2], green[2])  # the words themselves differ
    assert not torch.allclose(red[3], red_circle[3])
    first = model.encode_prompt(["a red circle and a blue square"], 32, 32).prompt_embeds[0]
    assert not torch.allclose(first[2], first[6])  # "red" vs "blue" ...
    shifted = model.encode_prompt(["a blue circle and a red square"], 32, 32).prompt_embeds[0]
    assert not torch.allclose(first[2], shifted[6])  # ... and a word's position is kept


def _parts(embedding: torch.Tensor) -> list[torch.Tensor]:
    """An encoder output split into [own word | previous word | the one before | position]."""
    return list(embedding.split(mini.TEXT_PART))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def test_binding_text_encoder_gives_each_shape_word_its_own_group(tmp_path):
    """A shape word's output carries its own colour and count wherever its group stands, so
    an unseen colour-shape pair reaches the UNet as parts the UNet has seen."""
    folder = mini.build_mini_init(tmp_path / "binding", text_encoder="binding")
    model = load_model(str(folder))
    alone, second, green, plural = model.encode_prompt(
        [
            "a red triangle",
            "a blue circle and a red triangle",
            "a green triangle",
            "two red triangles",
        ],
        32,
        32,
    ).prompt_embeds
    # positions: 0 start, 1 "a"/"two", 2 colour, 3 shape; in `second` the group is at 5-7
    for own, other in zip(_parts(alone[3])[:3], _parts(second[7])[:3], strict=True):
        assert _cosine(own, other) > 0.99  # same word, colour and article ...
    assert abs(_cosine(_parts(alone[3])[3], _parts(second[7])[3])) < 0.2  # ... elsewhere
    own, colour, article, position = (
        _cosine(a, b) for a, b in zip(_parts(alone[3]), _parts(green[3]), strict=True)
    )
    assert own > 0.99 and article > 0.99 and position > 0.99
    assert colour < 0.5  # "red" and "green" are different random words
    assert _cosine(_parts(alone[3])[0], _parts(plural[3])[0]) > 0.99  # plural = singular
    assert _cosine(_parts(alone[3])[2], _parts(plural[3])[2]) < 0.5  # "a" vs "two"
    assert all(part.norm() > 1.0 for part in _parts(second[7]))  # no part is lost


def test_binding_text_encoder_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = mini.make_binding_text_encoder(mini.make_tokenizer(), seed=5)
    assert torch.equal(torch.rand(4), expected)
    again = mini.make_binding_text_encoder(mini.make_tokenizer(), seed=5)
    other = mini.make_binding_text_encoder(mini.make_tokenizer(), seed=6)
    weights = first.embeddings.token_embedding.weight
    assert torch.equal(weights, again.embeddings.token_embedding.weight)
    assert not torch.equal(weights, other.embeddings.token_embedding.weight)
    assert not any(p.requires_grad for p in first.parameters())


def test_init_folder_is_deterministic_in_seed(tmp_path, mini_init_dir):
    from safetensors.torch import load_file

    again = mini.build_mini_init(tmp_path / "again", seed=0)
    for part in ("text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        a, b = load_file(str(mini_init_dir / part)), load_file(str(again / part))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_mini_init_name_builds_once_in_the_cache(tmp_path, monkeypatch):
    built: list[Path] = []

    def fake_build(folder: Path, seed: int = 0, text_encoder: str = "plain") -> Path:
        built.append(Path(folder))
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
        return folder

    monkeypatch.setenv("DSHARP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mini, "build_mini_init", fake_build)
    first = loading.resolve_pretrained("dsharp-mini-init")
    plain = f"dsharp-mini-init-{mini.MINI_INIT_VERSIONS['plain']}"
    assert Path(first) == tmp_path / "cache" / plain
    assert loading.resolve_pretrained("dsharp-mini-init") == first
    assert len(built) == 1 and built[0].parent != Path(first).parent  # built aside, renamed
    binding = loading.resolve_pretrained("dsharp-mini-init-binding")
    assert Path(binding).name == f"dsharp-mini-init-binding-{mini.MINI_INIT_VERSIONS['binding']}"
    assert loading.resolve_pretrained("dsharp-mini-init-binding") == binding
    assert len(built) == 2
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [plain, Path(binding).name]
    )


def test_unknown_text_encoder_kind_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown dsharp-mini text encoder 'fancy'"):
        mini.build_mini_init(tmp_path / "x", text_encoder="fancy")
    assert not (tmp_path / "x").exists()


def test_mini_init_build_failure_leaves_no_folder(tmp_path, monkeypatch):
    def broken_build(folder: Path, seed: int = 0, text_encoder: str = "plain") -> Path:
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(mini, "build_mini_init", broken_build)
    with pytest.raises(RuntimeError, match="disk full"):
        mini.ensure_mini_init(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mini_init_is_on_disk_before_it_is_renamed_into_the_cache(tmp_path, monkeypatch):
    """save_pretrained writes without fsync: after a power cut the cache must not hold a
    dsharp-mini init whose weights never reached the disk (every later load would fail)."""
    events: list[str] = []

    def fake_build(folder: Path, seed: int = 0, text_encoder: str = "plain") -> Path:
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
        return folder

    monkeypatch.setattr(mini, "build_mini_init", fake_build)
    monkeypatch.setattr(mini, "sync_tree", lambda folder: events.append(f"sync {folder.name}"))
    real_rename = mini.os.rename
    monkeypatch.setattr(
        mini.os, "rename", lambda a, b: (events.append(f"rename {a.name}"), real_rename(a, b))
    )
    target = mini.ensure_mini_init(tmp_path)
    assert events == ["sync model", "rename model"]
    assert (target / "model_index.json").is_file()


# -- caption noise of the shapes generator -------------------------------------------------


def _shapes_data(noise: float):
    from dsharp.config import DataConfig
    from dsharp.data import TrainingData

    cfg = DataConfig(generator="shapes", caption_noise=noise)
    return TrainingData(cfg, "images", 32, 32, seed=3)


def test_caption_noise_perturbs_captions_within_the_train_split():
    clean = _shapes_data(0.0).batch(16, step=1, process=0, micro=0)
    noisy = _shapes_data(1.0).batch(16, step=1, process=0, micro=0)
    assert torch.equal(clean.images, noisy.images)  # the pictures do not change
    train = {p for group in prompt_sets("train").values() for p in group}
    assert set(clean.prompts) <= train
    changed = [a != b for a, b in zip(clean.prompts, noisy.prompts, strict=True)]
    assert sum(changed) >= 12  # a few single-group prompts have no applicable noise mode
    assert all(in_split(parse(p), "train") for p in noisy.prompts)
    assert noisy.cond_prompts == noisy.prompts


def test_caption_noise_needs_the_shapes_generator():
    from dsharp.config import RecipeError, recipe_from_dict

    base = {"model": {"pretrained": "dsharp-mini"}, "method": {"name": "finetune"}}
    recipe = recipe_from_dict({**base, "data": {"generator": "shapes", "caption_noise": 0.2}})
    assert recipe.data.caption_noise == 0.2
    with pytest.raises(RecipeError, match="data.caption_noise: only used with"):
        recipe_from_dict({**base, "data": {"dataset": "/tmp", "caption_noise": 0.2}})
    with pytest.raises(RecipeError, match="data.caption_noise: must be <= 1"):
        recipe_from_dict({**base, "data": {"generator": "shapes", "caption_noise": 1.5}})


def test_pretrain_recipe_is_valid():
    from dsharp.config import load_recipe

    path = Path(__file__).resolve().parents[1] / "recipes" / "mini" / "pretrain.yaml"
    assert path.read_text().startswith("# dsharp train recipes/mini/pretrain.yaml\n")
    recipe = load_recipe(path)
    assert recipe.model.pretrained == "dsharp-mini-init"
    assert recipe.method.name == "finetune" and recipe.data.generator == "shapes"
    assert recipe.train.log_every == 1  # ship_mini sums every step's time


# -- the shipped model -------------------------------------------------------------------

shipped = pytest.mark.skipif(
    not (SHIPPED / "model_index.json").is_file(),
    reason="dsharp-mini is not built yet (train recipes/mini/pretrain.yaml, then run "
    "scripts/ship_mini.py)",
)


@shipped
def test_shipped_weights_fit_and_match_the_model_card():
    card = (SHIPPED / "MODEL_CARD.md").read_text(encoding="utf-8")
    rows = {name: (int(size), digest) for name, size, digest in CARD_ROW.findall(card)}
    files = sorted(p for p in SHIPPED.rglob("*.safetensors"))
    assert files and sorted(rows) == [p.relative_to(SHIPPED).as_posix() for p in files]
    assert not list(SHIPPED.rglob("*.bin"))
    for path in files:
        size, digest = rows[path.relative_to(SHIPPED).as_posix()]
        assert path.stat().st_size == size
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sum(p.stat().st_size for p in files) <= 20 * 1024 * 1024
    for needed in ("overall", "strict", "Wall time", "Steps", "seed", "guidance"):
        assert needed in card


@shipped
def test_shipped_model_loads_and_samples():
    from dsharp.sampling import sample

    model = load_model("dsharp-mini")
    assert model.family == "mini" and model.default_resolution == 32
    assert next(model.unet.parameters()).dtype == torch.float32
    images = sample(model, ["a red circle", "two blue squares"], seeds=[0, 1], steps=5)
    assert images.shape == (2, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
