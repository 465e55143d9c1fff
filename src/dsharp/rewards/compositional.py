"""The ``compositional`` reward: T2I-CompBench's BLIP-VQA score (attribute binding).

For each noun phrase of the prompt (at most ``max_phrases``; see
:mod:`dsharp.rewards.noun_phrases`) BLIP-VQA is asked ``"{phrase}?"``; the answer decoder's
first-token distribution gives ``P(yes) = p("yes") / (p("yes") + p("no"))`` as in
T2I-CompBench, and the image's score is the product over its phrases (1 for a prompt with
none). Scores lie in ``[0, 1]``.

As in T2I-CompBench the question's first token is BLIP's ``[ENC]`` token when the tokenizer
has one (``[CLS]`` otherwise) and images are resized to a square without cropping.
T2I-CompBench ran BLIP at 480 px with interpolated position embeddings: ``image_size=480``
does that; the default is the processor's size. Not differentiable (declared so): it is an
evaluation metric and runs without gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dsharp.rewards._weights import (
    PROCESSOR_FILES,
    check_batch,
    check_choice,
    check_str,
    from_pretrained,
    locate,
    resolve_device,
)
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.rewards.clip import preprocess_pixels
from dsharp.rewards.noun_phrases import METHODS, noun_phrases, resolve_method

MODEL = "Salesforce/blip-vqa-capfilt-large"
MAX_QUESTION_TOKENS = 35


def _token_id(tokenizer: Any, token: str) -> int | None:
    vocab = tokenizer.get_vocab()
    return vocab.get(token)


class CompositionalReward:
    """Product over noun phrases of BLIP-VQA's P(yes) to ``"{phrase}?"``."""

    differentiable = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: dict[str, Any],
        method: str,
        max_phrases: int,
        device: torch.device,
        description: dict[str, Any],
    ):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.method, self.max_phrases, self.device = method, max_phrases, device
        self.description = {**description, "noun_phrases": method}
        self.yes = _token_id(tokenizer, "yes")
        self.no = _token_id(tokenizer, "no")
        if self.yes is None or self.no is None:
            raise RewardError("compositional reward: the tokenizer has no 'yes' or 'no' token")
        self.enc = _token_id(tokenizer, "[ENC]")
        self.bos = int(model.config.text_config.bos_token_id)

    def questions(self, prompt: str) -> list[str]:
        """One question per noun phrase, ``"{phrase}?"``, at most ``max_phrases``."""
        return [f"{p}?" for p in noun_phrases(prompt, self.method)[: self.max_phrases]]

    @torch.no_grad()
    def p_yes(self, pixels: torch.Tensor, questions: list[str], owner: list[int]) -> torch.Tensor:
        """P(yes) of each question about image ``owner[i]``."""
        s = self.settings
        x = preprocess_pixels(pixels.to(self.device), s["size"], s["mean"], s["std"], "squash")
        vision = self.model.vision_model(
            pixel_values=x, interpolate_pos_encoding=s["interpolate"]
        ).last_hidden_state
        tokens = self.tokenizer(
            questions,
            padding="longest",
            truncation=True,
            max_length=MAX_QUESTION_TOKENS,
            return_tensors="pt",
        ).to(self.device)
        ids = tokens["input_ids"].clone()
        if self.enc is not None:
            ids[:, 0] = self.enc
        image_embeds = vision[torch.tensor(owner, device=self.device)]
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        question_states = self.model.text_encoder(
            input_ids=ids,
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        start = torch.full((len(questions), 1), self.bos, dtype=torch.long, device=self.device)
        logits = self.model.text_decoder(
            input_ids=start,
            encoder_hidden_states=question_states,
            encoder_attention_mask=tokens["attention_mask"],
        ).logits[:, 0, :]
        return torch.softmax(logits[:, [self.yes, self.no]].float(), dim=-1)[:, 0]

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        prompts = check_batch("compositional", len(images), prompts)
        per_image = [self.questions(p) for p in prompts]
        questions = [q for qs in per_image for q in qs]
        owner = [i for i, qs in enumerate(per_image) for _ in qs]
        probs: list[float] = []
        if questions:
            probs = self.p_yes(images.tensor, questions, owner).cpu().tolist()
        answers: list[list[float]] = [[] for _ in prompts]
        for i, p in zip(owner, probs, strict=True):
            answers[i].append(p)
        scores = torch.tensor(
            [math.prod(a) for a in answers], dtype=torch.float32, device=images.tensor.device
        )
        info = {**self.description, "questions": per_image, "p_yes": answers}
        return scores, info


def _image_settings(processor: Any, model: Any, image_size: int | None) -> dict[str, Any]:
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        raise RewardError("compositional reward option 'processor': not a BLIP processor")
    size = getattr(image_processor, "size", None)
    side = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
    side = int(image_size or side or model.config.vision_config.image_size)
    return {
        "size": side,
        "mean": tuple(image_processor.image_mean),
        "std": tuple(image_processor.image_std),
        "interpolate": side != int(model.config.vision_config.image_size),
    }


def build_compositional_reward(
    *,
    model: str = MODEL,
    processor: str | None = None,
    noun_phrases: str = "auto",
    max_phrases: int = 8,
    image_size: int | None = None,
    device: str = "auto",
) -> CompositionalReward:
    """T2I-CompBench BLIP-VQA score.

    ``model``: a transformers ``BlipForQuestionAnswering`` folder or hub id (default
    ``Salesforce/blip-vqa-capfilt-large``, the BLIP VQA that T2I-CompBench uses);
    ``processor``: its ``BlipProcessor`` (default: same as ``model``); ``noun_phrases``:
    ``"auto"`` (spaCy when installed, else rules), ``"spacy"`` or ``"rules"``;
    ``max_phrases``: questions per prompt (T2I-CompBench: 8); ``image_size``: square side
    the image is resized to (default the processor's; T2I-CompBench used 480);
    ``device``: ``"auto"`` or a torch device.
    """
    check_choice("compositional", "noun_phrases", noun_phrases, METHODS)
    if isinstance(max_phrases, bool) or not isinstance(max_phrases, int) or max_phrases < 1:
        raise ValueError(
            "compositional reward option 'max_phrases' must be an integer >= 1, "
            f"got {max_phrases!r}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16
    ):
        raise ValueError(
            f"compositional reward option 'image_size' must be an integer >= 16, got {image_size!r}"
        )
    model = check_str("compositional", "model", model)
    processor = check_str("compositional", "processor", processor, allow_none=True) or model
    try:
        method = resolve_method(noun_phrases)
    except RuntimeError as e:
        raise RewardError(f"compositional reward option 'noun_phrases': {e}") from e
    dev = resolve_device("compositional", device)
    # both checked before transformers imports (seconds): a missing one fails at once
    model_source = locate("compositional", "model", model)  # first: the processor's default
    proc_source = locate("compositional", "processor", processor, files=PROCESSOR_FILES)
    from transformers import BlipForQuestionAnswering, BlipProcessor

    proc = from_pretrained("compositional", "processor", BlipProcessor.from_pretrained, proc_source)
    net = from_pretrained(
        "compositional", "model", BlipForQuestionAnswering.from_pretrained, model_source
    )
    net = net.to(dev).eval().requires_grad_(False)
    settings = _image_settings(proc, net, image_size)
    description = {"model": model, "image_size": settings["size"]}
    return CompositionalReward(net, proc.tokenizer, settings, method, max_phrases, dev, description)
