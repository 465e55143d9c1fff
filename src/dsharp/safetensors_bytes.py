"""safetensors files whose bytes depend only on what they hold, so that a checkpoint's
checksum is the same each time the same weights are saved (a resumed run compared with an
uninterrupted one, a file's sha256 recorded in a study).

safetensors keeps a file's metadata in a hash map whose order changes between saves (in
one process too), and writes the header in that order: the tensors were the same but the
files' checksums were not. The header is written again here with the metadata sorted; the
format is unchanged, so every reader (``load_file``, diffusers' ``load_lora_weights``) and
every file saved before this reads as before.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import torch

_LENGTH = struct.Struct("<Q")  # the header's length, before it


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The file ``safetensors.torch.save_file(tensors, metadata=metadata)`` writes, with its
    metadata in sorted order."""
    from safetensors.torch import save

    raw = save(dict(tensors), metadata=dict(metadata))
    (size,) = _LENGTH.unpack_from(raw)
    header = json.loads(raw[_LENGTH.size : _LENGTH.size + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the tensors' data starts 8-byte aligned, as safetensors'
    return _LENGTH.pack(len(text)) + text + raw[_LENGTH.size + size :]
