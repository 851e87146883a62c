"""The teacher-forced validation loss: one forward pass per batch over validation utterances, no decoding.

The decoder reads the reference transcript (teacher forcing) and the loss is the cross-entropy of every label
position, masked exactly as in training (the collator of :class:`~sttrl.train.features.FeatureStore`: the forced
prefix and the padding at -100; :func:`~sttrl.train.loss.label_loss`). The figure is the token-weighted mean
over all utterances (summed losses / labelled tokens), so it does not depend on the batch size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from sttrl.train.features import FeatureStore
from sttrl.train.loss import label_loss


@dataclass(frozen=True)
class LossResult:
    """A validation loss: the mean over labelled tokens, how many tokens and utterances, and the wall time."""

    loss: float
    tokens: int
    n: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def validation_loss(
    store: FeatureStore, device: torch.device, batch_size: int = 16, max_utterances: int | None = None
) -> LossResult:
    """Teacher-forced loss of ``store``'s model on its first ``max_utterances`` utterances (all by default).

    Batches hold utterances of similar label length (longest first), so little of the decoder's work is padding;
    the model is put in eval mode (no dropout) and restored afterwards."""
    n = len(store) if max_utterances is None else min(max_utterances, len(store))
    if n < 1:
        raise ValueError("the validation loss needs at least one utterance")
    model = store.loaded.model
    was_training = model.training
    model.eval()
    order = sorted(range(n), key=lambda i: -len(store.text_ids(i)))
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    start = time.perf_counter()
    try:
        for first in range(0, n, batch_size):
            batch = store.batch(order[first : first + batch_size])
            tokens += int(batch.label_targets.numel()) if batch.label_targets is not None else 0
            total += label_loss(model, batch.to(device), reduction="sum").double()
        loss = float(total)  # one host read for the whole set
    finally:
        model.train(was_training)
    return LossResult(loss / max(tokens, 1), tokens, n, time.perf_counter() - start)
