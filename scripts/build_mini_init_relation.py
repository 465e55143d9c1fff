"""Build a trial dsharp-mini init whose text encoder tells each word which relation came before
it (the notes' "Relations" trials; not a shipped model).

dsharp-mini's own encoder reads each word on its own, so a relation reaches the UNet only as a
word somewhere in the prompt, and "a red circle to the left of a blue square" differs from
"... to the right of ..." in that one token. This init keeps the binding encoder's four parts
(own word, previous word, the word before, position; see
``dsharp.models.mini.make_binding_text_encoder``) and adds a fifth: a hand-set attention head
copies the most recent relation word at or before each token (else the start token), so the
object named after "to the left of" reaches the UNet as "the one on the right". The CLIP text
model is causal, so the object named before the relation cannot carry it. The build checks
that every token of the train prompts carries the relation it should and refuses to write the
folder otherwise.

    python scripts/build_mini_init_relation.py OUT_FOLDER
    dsharp train recipes/mini/pretrain.yaml model.pretrained=OUT_FOLDER ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dsharp.commands.errors import run_script
from dsharp.models import mini
from dsharp.shapes.prompts import prompt_sets

PARTS = 5
HIDDEN = PARTS * mini.TEXT_PART
RELATION_WORDS = ("left", "right", "above", "below")
SHARPNESS = 300.0
"""Attention logit per unit of the key score: relation word 1, start token 0.5, 0.2 * the
token's position / 20 as a recency tie-break, so the latest relation word wins by far."""


def _key_functional(encoder, tokenizer) -> torch.Tensor:
    """A linear read-out of ``layer_norm1``'s output (plus bias) that scores a token by the
    key score of :data:`SHARPNESS`, fitted by least squares over every grammar token at
    every position."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[f"{w}</w>"] for w in mini.grammar_words()]
    ids += [tokenizer.bos_token_id, tokenizer.eos_token_id]
    relation_ids = {vocab[f"{w}</w>"] for w in RELATION_WORDS}
    n = mini.MAX_LENGTH
    emb = encoder.embeddings
    x = emb.token_embedding.weight[ids][:, None, :] + emb.position_embedding.weight[None, :n]
    z = encoder.encoder.layers[0].layer_norm1(x).reshape(-1, HIDDEN)
    is_relation = torch.tensor([float(i in relation_ids) for i in ids])[:, None]
    is_start = torch.tensor([float(i == tokenizer.bos_token_id) for i in ids])[:, None]
    position = torch.arange(n, dtype=torch.float32)[None, :] / n
    score = (is_relation + 0.5 * is_start + 0.2 * position).reshape(-1, 1)
    features = torch.cat([z, torch.ones(len(z), 1)], dim=1)
    return torch.linalg.lstsq(features, score).solution[:, 0]


def make_relation_text_encoder(tokenizer, seed: int = 0):
    """The binding encoder at width 5 x 32 with the relation head in the fifth part, frozen."""
    from transformers import CLIPTextModel

    config = mini._text_config(tokenizer, layers=1, hidden=HIDDEN, heads=PARTS)
    with torch.random.fork_rng(devices=[]):
        encoder = CLIPTextModel(config)
    mini._set_binding_weights(encoder, tokenizer, torch.Generator().manual_seed(seed))
    part = mini.TEXT_PART
    rows, own = slice(4 * part, 5 * part), slice(0, part)
    attention = encoder.encoder.layers[0].self_attn
    with torch.no_grad():
        key = _key_functional(encoder, tokenizer)
        # a constant query on one dimension (the bias), a key that scores the token there;
        # the head's 1/sqrt(head_dim) scaling is undone so that the logit is SHARPNESS * score
        attention.q_proj.bias[rows] = 0.0
        attention.q_proj.bias[4 * part] = SHARPNESS * part**0.5
        attention.k_proj.weight[4 * part] = key[:HIDDEN]
        attention.k_proj.bias[4 * part] = key[HIDDEN]
        attention.v_proj.weight[rows, own] = 2**-0.5 * torch.eye(part)
        attention.out_proj.weight[rows, rows] = torch.eye(part)
    return encoder.requires_grad_(False)


def check_relation_part(encoder, tokenizer) -> int:
    """Tokens of the train prompts whose fifth part is not the relation word (or start token)
    they should carry; 0 for a correct build."""
    vocab = tokenizer.get_vocab()
    relation_ids = [vocab[f"{w}</w>"] for w in RELATION_WORDS]
    candidates = [*relation_ids, tokenizer.bos_token_id]
    part = mini.TEXT_PART
    table = encoder.embeddings.token_embedding.weight[candidates][:, :part]
    table = torch.nn.functional.normalize(table, dim=1)
    wrong = 0
    with torch.no_grad():
        for prompts in prompt_sets("train").values():
            tokens = tokenizer(prompts, padding="max_length", max_length=mini.MAX_LENGTH)
            ids = torch.tensor(tokens["input_ids"])
            relation_part = encoder(ids).last_hidden_state[..., 4 * part :]
            for row, hidden in zip(ids.tolist(), relation_part, strict=True):
                expected = tokenizer.bos_token_id
                for i, token in enumerate(row):
                    if token in relation_ids:
                        expected = token
                    wrong += candidates[int((table @ hidden[i]).argmax())] != expected
    return wrong


def build(folder: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokenizer = mini.make_tokenizer()
    encoder = make_relation_text_encoder(tokenizer, seed)
    wrong = check_relation_part(encoder, tokenizer)
    if wrong:
        raise SystemExit(f"relation part wrong at {wrong} tokens of the train prompts")
    mini.save_mini_folder(folder, tokenizer, encoder, mini.make_unet(cross_attention_dim=HIDDEN))
    print(f"relation part right at every token of the train prompts; wrote {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write the diffusers folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    args = parser.parse_args()
    if args.folder.exists():
        raise FileExistsError(f"{args.folder}: exists; choose a new folder")
    build(args.folder, args.seed)


if __name__ == "__main__":
    run_script(main)
