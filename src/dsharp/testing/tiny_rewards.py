"""Tiny random-initialised reward models of the real architectures, saved to disk.

Like :mod:`dsharp.testing.tiny`, these build the real classes (open_clip ``CLIP``,
transformers ``CLIPModel``, ``BlipForQuestionAnswering``, ImageReward's BLIP + MLP) at toy
sizes and save them in the format each reward loads, so tests exercise the whole loading path
with fake sizes only. Every builder returns what to pass as the reward's options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import BertTokenizer

TINY_IMAGE = 32
"""Image side (pixels) the tiny vision towers take (patch 8: 16 patches)."""

TINY_EMBED = 16
"""Joint embedding width of the tiny CLIP models (the aesthetic MLP's input)."""

TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": TINY_EMBED,
    "vision_cfg": {
        "image_size": TINY_IMAGE,
        "layers": 1,
        "width": 32,
        "head_width": 16,
        "patch_size": 8,
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""An open_clip model config at toy size; the vocabulary is open_clip's real BPE one, so its
bundled ``SimpleTokenizer`` works offline."""


def make_tiny_open_clip(folder: Path, name: str = "dsharp-tiny-clip", seed: int = 0) -> dict:
    """An open_clip model config ``{name}.json`` and a random checkpoint ``{name}.pt``.

    Returns ``{"model": config_path, "pretrained": checkpoint_path}``: the ``clip`` reward's
    options. The config is registered with open_clip under ``name`` as the reward would.
    """
    from dsharp.rewards.clip import open_clip_model_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG, indent=1), encoding="utf-8")
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(open_clip_model_name("test", "model", str(config)))
    checkpoint = folder / f"{name}.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"model": str(config), "pretrained": str(checkpoint)}


def make_tiny_aesthetic(folder: Path, input_dim: int = TINY_EMBED, seed: int = 0) -> dict:
    """A random LAION-v2-layout MLP saved as the published ``.pth`` is (a bare state dict),
    plus a tiny CLIP. Returns the ``aesthetic`` reward's options."""
    from dsharp.rewards.aesthetic import WEIGHTS_FILE, LinearHead

    folder = Path(folder)
    options = make_tiny_open_clip(folder, seed=seed)
    torch.manual_seed(seed + 1)
    head = LinearHead(input_dim)
    torch.save(head.state_dict(), folder / WEIGHTS_FILE)
    return {**options, "weights": str(folder / WEIGHTS_FILE)}


def make_tiny_hpsv2(folder: Path, seed: int = 0) -> dict:
    """A tiny open_clip model saved as HPSv2 checkpoints are (``{"state_dict": ...}`` with a
    DataParallel ``module.`` prefix). Returns the ``hpsv2`` reward's options."""
    folder = Path(folder)
    options = make_tiny_open_clip(folder, name="dsharp-tiny-hps", seed=seed)
    state = torch.load(options["pretrained"], map_location="cpu", weights_only=True)
    checkpoint = folder / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    return {"model": options["model"], "checkpoint": str(checkpoint)}


def make_tiny_pickscore(folder: Path, seed: int = 0) -> dict:
    """A tiny transformers ``CLIPModel`` and ``CLIPProcessor`` saved with ``save_pretrained``
    in one folder. Returns the ``pickscore`` reward's options."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from dsharp.testing.tiny import make_tiny_tokenizer

    folder = Path(folder)
    tokenizer = make_tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE,
            "patch_size": 8,
        },
        projection_dim=TINY_EMBED,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE}, crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return {"model": str(folder), "processor": str(folder)}


TINY_BERT_WORDS = (
    "a an the and with on in of next to near two yes no is are red green blue yellow brown "
    "black white pink purple orange gray grey silver gold wooden metallic glass plastic "
    "leather fluffy fabric rubber round square big small bench bowl cake horse vase book "
    "backpack apple suitcase car cup train bear giraffe cow sheep banana dog cat frog fly "
    "table chair box ball cube sphere photo of"
)
"""Words of the tiny BERT vocabulary: enough for the test prompts; others map to [UNK]."""


def make_tiny_bert_tokenizer(folder: Path) -> BertTokenizer:
    """A ``BertTokenizer`` over a small self-written vocabulary that also holds BLIP's extra
    tokens (``[DEC]``, the decoder's BOS, and ``[ENC]``), saved to ``folder`` and loaded back."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punctuation = ["?", ",", ".", "-", "'"]
    words = list(dict.fromkeys(TINY_BERT_WORDS.split()))
    vocab = [*special, *punctuation, *words, "[DEC]", "[ENC]"]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # from_pretrained over vocab.txt works across transformers versions (the constructor's
    # argument was renamed); [DEC] and [ENC] need only be in the vocabulary.
    tokenizer = BertTokenizer.from_pretrained(folder, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    return BertTokenizer.from_pretrained(folder)


def _tiny_blip_config(tokenizer: Any, **vision: Any):
    from transformers import BlipConfig

    vocab = tokenizer.get_vocab()
    return BlipConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE,
            "patch_size": 8,
            **vision,
        },
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "pad_token_id": vocab["[PAD]"],
            "bos_token_id": vocab["[DEC]"],
            "sep_token_id": vocab["[SEP]"],
        },
    )


def make_tiny_blip_vqa(folder: Path, seed: int = 0) -> dict:
    """A tiny ``BlipForQuestionAnswering`` and ``BlipProcessor`` (tiny BERT vocabulary) saved
    with ``save_pretrained`` in one folder. Returns the ``compositional`` reward's options."""
    from transformers import BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    folder = Path(folder)
    tokenizer = make_tiny_bert_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    BlipForQuestionAnswering(_tiny_blip_config(tokenizer)).save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": TINY_IMAGE, "width": TINY_IMAGE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return {"model": str(folder), "noun_phrases": "rules"}


def make_tiny_imagereward(folder: Path, seed: int = 0) -> dict:
    """A tiny ImageReward (BLIP vision + cross-attention text encoder + head) saved in dsharp's
    format. Returns the ``imagereward`` reward's options."""
    from dsharp.rewards.imagereward import ImageRewardModel, save_imagereward

    folder = Path(folder)
    tokenizer = make_tiny_bert_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    model = ImageRewardModel(_tiny_blip_config(tokenizer, layer_norm_eps=1e-6))
    save_imagereward(model, tokenizer, folder / "model")
    return {"model": str(folder / "model")}


def make_tiny_owlv2(folder: Path, seed: int = 0) -> dict:
    """A tiny ``Owlv2ForObjectDetection`` and ``Owlv2Processor`` (the tiny byte-level CLIP
    tokenizer, queries of at most 16 tokens as OWLv2's) saved with ``save_pretrained`` in one
    folder. Returns the T2I-CompBench evaluator options that select it."""
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    from dsharp.testing.tiny import make_tiny_tokenizer

    folder = Path(folder)
    tokenizer = make_tiny_tokenizer()
    tokenizer.model_max_length = 16
    hidden = 32
    config = Owlv2Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": hidden,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE,
            "patch_size": 8,
        },
        projection_dim=hidden,  # OWLv2's class head needs projection_dim == text hidden size
    )
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    image_processor = Owlv2ImageProcessor(size={"height": TINY_IMAGE, "width": TINY_IMAGE})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return {"detector_model": str(folder)}


def make_tiny_t2i_evaluators(folder: Path, seed: int = 0) -> dict:
    """Tiny BLIP-VQA, CLIP and OWLv2 models for T2I-CompBench, saved under ``folder``.
    Returns the ``evaluator_options`` of :func:`dsharp.bench.run_t2i_compbench` that select
    them (rule-based noun phrases, BLIP at the tiny image size, CPU)."""
    folder = Path(folder)
    blip = make_tiny_blip_vqa(folder / "blip", seed=seed)
    clip = make_tiny_open_clip(folder / "clip", seed=seed)
    detector = make_tiny_owlv2(folder / "owlv2", seed=seed)
    return {
        "blip_model": blip["model"],
        "blip_image_size": TINY_IMAGE,
        "noun_phrases": "rules",
        "clip_model": clip["model"],
        "clip_pretrained": clip["pretrained"],
        **detector,
        "device": "cpu",
    }
