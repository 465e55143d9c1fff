"""An open-vocabulary object detector (OWLv2, through transformers) that finds the best box
of each named object in an image: T2I-CompBench's spatial score needs exactly that.

Why OWLv2: T2I-CompBench used UniDet (detectron2, a fixed label set), which has no
transformers port. ``Owlv2ForObjectDetection`` is in transformers, takes free-text queries,
and can be built at toy size from ``Owlv2Config`` (CLIP-style text and vision towers; a
``CLIPTokenizer``), so tests run the real class offline. Grounding DINO is also in
transformers, but a small config needs a separate backbone and a BERT tokenizer; OWLv2 is the
simpler faithful choice.

For each image and each query the detector keeps the patch with the highest query logit:
``score = sigmoid(logit)`` and its box (OWLv2 predicts one box per patch). OWLv2 pads an
image to a square at the bottom and right before resizing, so normalised boxes are scaled by
the longer side and clipped to the image. A best score below ``threshold`` means "not found".
UniDet kept detections with confidence >= 0.5; OWLv2's sigmoid scores run lower (its own
examples use 0.1), hence the default ``threshold=0.1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dsharp.bench.spatial import Detection
from dsharp.rewards._weights import (
    PROCESSOR_FILES,
    check_number,
    check_str,
    from_pretrained,
    locate,
    resolve_device,
)
from dsharp.rewards.base import RewardImages

DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
DEFAULT_QUERY = "a photo of a {}"
_WHAT = "owlv2"


class OpenVocabDetector:
    """Best box per text query, per image; see the module docstring."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: torch.device,
        threshold: float,
        query_template: str,
        description: dict[str, Any],
    ):
        self.model, self.processor, self.device = model, processor, device
        self.threshold, self.query_template = threshold, query_template
        self.description = description
        # Queries longer than the text tower's positions are cut (OWLv2: 16 tokens).
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def best_boxes(
        self, images: RewardImages, queries: Sequence[Sequence[str]], batch_size: int = 8
    ) -> list[list[Detection | None]]:
        """For image ``i`` and each object name in ``queries[i]``: its best :class:`Detection`
        in pixels of that image, or ``None`` when the best score is below the threshold."""
        if len(queries) != len(images):
            raise ValueError(f"{len(images)} images but {len(queries)} query lists")
        height, width = images.tensor.shape[-2:]
        side = float(max(height, width))
        out: list[list[Detection | None]] = []
        for start in range(0, len(images), batch_size):
            pil = images.pil[start : start + batch_size]
            names = [list(q) for q in queries[start : start + batch_size]]
            width_q = max(1, max(len(q) for q in names))
            texts = [
                [self.query_template.format(n) for n in q] + [" "] * (width_q - len(q))
                for q in names
            ]
            inputs = self.processor(
                text=texts,
                images=pil,
                return_tensors="pt",
                truncation=True,
                max_length=self.max_length,
            ).to(self.device)
            outputs = self.model(**inputs)
            logits = outputs.logits.float()  # (B, patches, queries)
            boxes = outputs.pred_boxes.float()  # (B, patches, 4) cx, cy, w, h in [0, 1]
            best_logit, best_patch = logits.max(dim=1)  # (B, queries)
            for b, q_names in enumerate(names):
                row: list[Detection | None] = []
                for q in range(len(q_names)):
                    score = float(torch.sigmoid(best_logit[b, q]))
                    if score < self.threshold:
                        row.append(None)
                        continue
                    cx, cy, w, h = (float(v) * side for v in boxes[b, best_patch[b, q]])
                    box = (
                        min(max(cx - w / 2, 0.0), float(width)),
                        min(max(cy - h / 2, 0.0), float(height)),
                        min(max(cx + w / 2, 0.0), float(width)),
                        min(max(cy + h / 2, 0.0), float(height)),
                    )
                    row.append(Detection(box, score))
                out.append(row)
        return out


def build_detector(
    *,
    model: str = DEFAULT_DETECTOR,
    processor: str | None = None,
    threshold: float = 0.1,
    query_template: str = DEFAULT_QUERY,
    device: str = "auto",
) -> OpenVocabDetector:
    """OWLv2 from a folder or hub id (``Owlv2ForObjectDetection`` + ``Owlv2Processor``).

    ``processor`` defaults to ``model``; ``threshold``: minimum best score for an object to
    count as found; ``query_template``: how an object noun becomes a text query (``"{}"``
    for the bare noun).
    """
    model = check_str(_WHAT, "detector_model", model)
    processor = check_str(_WHAT, "detector_processor", processor, allow_none=True) or model
    threshold = check_number(_WHAT, "detector_threshold", threshold)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"{_WHAT} option 'detector_threshold' must be in [0, 1), got {threshold}")
    query_template = check_str(_WHAT, "detector_query", query_template)
    if "{}" not in query_template:
        raise ValueError(
            f"{_WHAT} option 'detector_query' must contain '{{}}' for the object name, "
            f"got {query_template!r}"
        )
    dev = resolve_device(_WHAT, device)
    # both checked before transformers imports (seconds): a missing one fails at once
    model_source = locate(_WHAT, "detector_model", model)
    proc_source = locate(_WHAT, "detector_processor", processor, files=PROCESSOR_FILES)
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    net = from_pretrained(
        _WHAT, "detector_model", Owlv2ForObjectDetection.from_pretrained, model_source
    )
    proc = from_pretrained(_WHAT, "detector_processor", Owlv2Processor.from_pretrained, proc_source)
    net = net.to(dev).eval().requires_grad_(False)
    description = {
        "model": model,
        "architecture": "OWLv2 (Owlv2ForObjectDetection)",
        "threshold": threshold,
        "query_template": query_template,
    }
    return OpenVocabDetector(net, proc, dev, threshold, query_template, description)
