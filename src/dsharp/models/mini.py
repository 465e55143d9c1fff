"""dsharp-mini: the untrained embedded text-to-image model, written as a diffusers folder.

The folder has the Stable Diffusion layout without a VAE, so :func:`dsharp.models.load_model`
loads it as the pixel-space ``"mini"`` family: a frozen CLIP text encoder (the engine trains
only the UNet, which learns to read the encoder's outputs), a CLIP tokenizer whose vocabulary
holds every word of the shapes grammar as one token, a ``UNet2DConditionModel`` on 32x32 RGB
pixels, and a DDIM scheduler (see :func:`make_scheduler` for its settings).

``model.pretrained: dsharp-mini-init`` resolves to :func:`ensure_mini_init`'s cached folder
(``dsharp-mini-init-binding``: the same with the binding text encoder, an experiment);
``recipes/mini/pretrain.yaml`` trains its UNet and ``scripts/ship_mini.py`` ships the result
as ``dsharp-mini``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dsharp.cache import cache_root
from dsharp.io import sync_tree
from dsharp.model_names import MINI_INIT_NAMES

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

MINI_INIT_VERSIONS = {"plain": "v3", "binding": "v1"}
"""Build version of each text-encoder kind's init folder. Bump one when its architecture or
init changes, so cached folders of an older build are not reused."""
TEXT_ENCODER_KINDS = tuple(MINI_INIT_NAMES)

RESOLUTION = 32
MAX_LENGTH = 20
"""Tokens per prompt: the longest shapes prompt (17 words) plus start and end tokens, padded."""
TEXT_HIDDEN = 128
TEXT_HEADS = 4
TEXT_PART = TEXT_HIDDEN // 4
"""The encoder's output at each word is four parts of this width: the word's own embedding,
the previous word's, the one before that, and the word's position (see
:func:`make_binding_text_encoder`)."""
TEXT_LAGS = (1, 2)
"""The earlier words each output carries: in the shapes grammar a shape word follows its
colour (lag 1) and its count or article (lag 2)."""
UNET_CHANNELS = (32, 64, 128)
UNET_LAYERS_PER_BLOCK = 1
UNET_HEAD_DIM = 32
UNET_NORM_GROUPS = 16


# -- tokenizer ------------------------------------------------------------------------------


def grammar_words() -> list[str]:
    """Every word a shapes-world prompt can contain, sorted."""
    from dsharp.shapes.grammar import _VOCABULARY

    return sorted(_VOCABULARY)


def unknown_words(prompts: Sequence[str]) -> list[str]:
    """The distinct words of ``prompts`` (lower case, first seen first; letters or digits,
    split as the CLIP tokenizer splits them) that are not shapes-world words. The tokenizer
    has a token for each grammar word only and splits any other into byte pieces without a
    word, so the commands name such words rather than let them pass for read."""
    known = set(grammar_words())
    words = (w for p in prompts for w in re.findall(r"[^\W\d_]+|\d", p.lower()))
    return [w for w in dict.fromkeys(words) if w not in known]


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE (GPT-2, CLIP) uses for raw bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _apply_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one word: characters with ``</w>`` on the last, then the best-ranked
    adjacent pair merged everywhere it occurs, until no ranked pair is left."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:], strict=False)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def build_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that turn each of ``words`` into a single ``word</w>`` token.

    Each round runs BPE with the merges so far and, for the first word still in several
    pieces, appends a merge of its first two pieces. Appending (lowest priority) never
    splits a word further, so the loop ends with every word whole.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    while True:
        pending = [(w, p) for w in words if len(p := _apply_bpe(w, ranks)) > 1]
        if not pending:
            return merges
        pair = tuple(pending[0][1][:2])
        ranks[pair] = len(merges)
        merges.append(pair)


def write_tokenizer_files(folder: Path) -> None:
    """``vocab.json`` and ``merges.txt`` of the dsharp-mini tokenizer into ``folder``: byte
    symbols (so any text tokenises), their end-of-word forms, every merge result (so each
    grammar word is one token) and CLIP's special tokens."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [a + "</w>" for a in alphabet]
    merges = build_merges(grammar_words())
    known = set(tokens)
    for a, b in merges:
        if a + b not in known:
            tokens.append(a + b)
            known.add(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_tokenizer() -> CLIPTokenizer:
    """The dsharp-mini ``CLIPTokenizer`` (``model_max_length`` = :data:`MAX_LENGTH`)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=MAX_LENGTH)


# -- networks -------------------------------------------------------------------------------


def _text_config(tokenizer, layers: int, hidden: int = TEXT_HIDDEN, heads: int = TEXT_HEADS):
    """The CLIP text config every encoder kind shares, with ``layers`` transformer layers
    (``hidden`` and ``heads``: a wider trial encoder, see
    ``scripts/build_mini_init_relation.py``)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def make_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A random CLIP text encoder of width 128 without transformer layers (the ``plain``
    kind): token plus position embeddings and the final layer norm, drawn from the global
    torch RNG.

    With random layers, causal attention mixed every earlier word into each output:
    "triangle" after "green" came out about as far from "triangle" after "red" (cosine 0.86)
    as "green" is from "red" (0.89), so every unseen colour-shape pair reached the UNet as a
    new input. Without layers a word reads the same in any context, and its position still
    tells which colour goes with which shape.
    """
    from transformers import CLIPTextModel

    return CLIPTextModel(_text_config(tokenizer, layers=0))


def make_binding_text_encoder(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPTextModel:
    """A CLIP text encoder of width 128 with one hand-set layer, frozen: each word's output is
    ``[own word | previous word | the word before | position]`` (layer-normed).

    So a shape word carries its own colour and count wherever its group stands in the prompt,
    as token merging does for Stable Diffusion's binding: "red triangle" reaches the UNet as
    one vector made of the parts of seen pairs, and the colour of the first and the second
    object no longer have to be told apart by position alone (a random CLIP layer mixes
    every earlier word into each output instead, see :func:`make_text_encoder`). Plural
    shape words share their singular's embedding. Word embeddings are random unit-scale vectors from
    ``seed``; the 20 position vectors are orthogonal, and each attention head looks exactly
    ``lag`` positions back (see :data:`TEXT_LAGS`). The global torch RNG is left untouched,
    so the UNet's init does not depend on this function.
    """
    from transformers import CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        model = CLIPTextModel(_text_config(tokenizer, layers=1))
    _set_binding_weights(model, tokenizer, torch.Generator().manual_seed(seed))
    return model.requires_grad_(False)


def _set_binding_weights(model, tokenizer, generator: torch.Generator) -> None:
    """Overwrite every weight of the one-layer ``model`` (see
    :func:`make_binding_text_encoder`)."""
    part, n_pos = TEXT_PART, MAX_LENGTH
    own, position = slice(0, part), slice(3 * part, 4 * part)
    vocab = tokenizer.get_vocab()
    with torch.no_grad():
        words = torch.randn(len(tokenizer), part, generator=generator)
        words = words / words.norm(dim=1, keepdim=True) * part**0.5
        for singular in ("circle", "square", "triangle"):
            words[vocab[f"{singular}s</w>"]] = words[vocab[f"{singular}</w>"]]
        table = model.embeddings.token_embedding.weight
        table.zero_()
        table[:, own] = words
        basis, _ = torch.linalg.qr(torch.randn(part, part, generator=generator))
        unit_positions = basis[:n_pos]  # orthonormal rows
        positions = model.embeddings.position_embedding.weight
        positions.zero_()
        positions[:, position] = unit_positions * part**0.5
        layer = model.encoder.layers[0]
        for norm in (layer.layer_norm1, layer.layer_norm2, model.final_layer_norm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        attention = layer.self_attn
        linears = (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj)
        for linear in (*linears, layer.mlp.fc1, layer.mlp.fc2):
            linear.weight.zero_()
            linear.bias.zero_()
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        # layer_norm1 scales the embeddings (two parts of norm sqrt(part) in 4 * part dims) by
        # about sqrt(2): values copy at 1 / sqrt(2) so that every output part has that norm.
        copy_scale, sharpness = 2**-0.5, 30.0
        for head, lag in enumerate(TEXT_LAGS):
            shift = torch.zeros(n_pos, n_pos)
            shift[torch.arange(n_pos - lag), torch.arange(lag, n_pos)] = 1.0
            # maps position i's unit vector to position (i - lag)'s: a query that matches
            # only that key, and the causal mask keeps every other key out of reach
            look_back = unit_positions.T @ shift @ unit_positions
            rows = slice(head * head_dim, (head + 1) * head_dim)
            attention.q_proj.weight[rows, position] = sharpness * look_back
            attention.k_proj.weight[rows, position] = torch.eye(part)
            attention.v_proj.weight[rows, own] = copy_scale * torch.eye(part)
            target = slice((1 + head) * part, (2 + head) * part)
            attention.out_proj.weight[target, rows] = torch.eye(part)


def make_unet(cross_attention_dim: int = TEXT_HIDDEN) -> UNet2DConditionModel:
    """The pixel-space UNet (~3.9M parameters): 32x32 RGB, three levels (32, 16, 8 px) of
    32, 64, 128 channels, attention to the text at 8x8 and in the middle block only, since
    attention at 16x16 costs several times more on a CPU; objects are 2-3 cells wide at
    8x8, enough to place and bind them. ``cross_attention_dim`` is the text encoder's width
    (a wider trial encoder, see ``scripts/build_mini_init_relation.py``)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=UNET_LAYERS_PER_BLOCK,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=UNET_NORM_GROUPS,
        attention_head_dim=UNET_HEAD_DIM,
        cross_attention_dim=cross_attention_dim,
    )


def make_scheduler() -> DDIMScheduler:
    """DDIM for 32x32 pixel diffusion.

    - ``squaredcos_cap_v2`` (the cosine schedule of Nichol & Dhariwal 2021, made for small
      pixel-space images) with ``v_prediction`` (Salimans & Ho 2022). Epsilon prediction
      was tried first with linear and scaled-linear betas: the clean-image estimate divides
      the noise error by ``sqrt(abar)``, so at the high-noise timesteps where layout and
      colour are decided a small UNet's error swamped the signal, and samples came out as
      oversized, colour-mixed blobs on grey (val shapes score 0.03 after 2500 steps), while
      the same models denoised clean shapes from t = 600. Predicting v keeps that estimate
      well conditioned at every noise level.
    - ``timestep_spacing="leading"`` with ``steps_offset=1``, as Stable Diffusion: inference
      timesteps sit on the exact grid ``k * (1000 // steps) + 1``, which the trajectory
      methods' stride assumes.
    - ``set_alpha_to_one=True``: the last DDIM step lands on the clean image (``abar = 1``)
      rather than on ``abar_0``, so no noise is left in the pixels.
    - no clipping or thresholding (dsharp's samplers refuse thresholding).
    """
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="v_prediction",
    )


def build_mini_init(folder: Path, seed: int = 0, text_encoder: str = "plain") -> Path:
    """Write the untrained dsharp-mini diffusers folder (weights drawn from ``seed``) with a
    text encoder of kind ``text_encoder`` (see :data:`MINI_INIT_NAMES`)."""
    _check_text_encoder(text_encoder)
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    if text_encoder == "plain":
        encoder = make_text_encoder(tokenizer)
    else:
        encoder = make_binding_text_encoder(tokenizer, seed=seed)
    save_mini_folder(folder, tokenizer, encoder, make_unet())
    return folder


def save_mini_folder(
    folder: Path,
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    unet: UNet2DConditionModel,
) -> None:
    """Write a dsharp-mini diffusers folder (Stable Diffusion layout, no VAE) from its parts."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=None,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


# -- the cached init folder ------------------------------------------------------------------


def _check_text_encoder(text_encoder: str) -> None:
    if text_encoder not in TEXT_ENCODER_KINDS:
        raise ValueError(
            f"unknown dsharp-mini text encoder {text_encoder!r}: expected one of "
            f"{', '.join(TEXT_ENCODER_KINDS)}"
        )


def mini_init_folder_name(text_encoder: str = "plain") -> str:
    """The cache folder name of the init with that text encoder, version included."""
    _check_text_encoder(text_encoder)
    return f"{MINI_INIT_NAMES[text_encoder]}-{MINI_INIT_VERSIONS[text_encoder]}"


def ensure_mini_init(root: Path | None = None, text_encoder: str = "plain") -> Path:
    """The cached ``dsharp-mini-init`` folder (``text_encoder="binding"``:
    ``dsharp-mini-init-binding``), built (seed 0) on first use.

    Built in a temporary folder beside the target and renamed into place, so a concurrent
    or interrupted build never leaves a half-written model where a loader would find it.
    """
    root = Path(root) if root is not None else cache_root()
    target = root / mini_init_folder_name(text_encoder)
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    try:
        build_mini_init(tmp / "model", text_encoder=text_encoder)
        sync_tree(tmp / "model")  # on disk before the rename makes it the cached model
        try:
            os.rename(tmp / "model", target)
        except OSError:
            if not (target / "model_index.json").is_file():  # not a concurrent winner
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
