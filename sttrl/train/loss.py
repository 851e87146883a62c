"""The training objective of one batch: cross-entropy over the labelled positions only (one definition for the
trainer's loss and the teacher-forced validation loss of :mod:`sttrl.eval.loss`)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from sttrl.train.features import Batch


def label_loss(model: torch.nn.Module, batch: Batch, reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
    """Cross-entropy of ``model`` on ``batch`` over the positions that carry a label (labels != -100).

    Whisper's own ``forward(labels=...)`` projects every decoder position (the forced prefix and the
    padding too) onto the vocabulary and masks them afterwards; projecting only the positions that carry
    a label gives the same loss with less work and fewer saved activations. The positions come from the
    collator (computed on the host: no device sync). ``reduction="sum"`` gives the summed loss, for a
    token-weighted mean over many batches."""
    if hasattr(model, "proj_out") and batch.label_positions is not None:
        hidden = model.model(  # type: ignore[operator]
            input_features=batch.input_features, decoder_input_ids=batch.decoder_input_ids, use_cache=False
        ).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.label_positions)
        logits = model.proj_out(hidden)  # type: ignore[operator]
        return F.cross_entropy(logits.float(), batch.label_targets, reduction=reduction)
    logits = model(input_features=batch.input_features, decoder_input_ids=batch.decoder_input_ids).logits
    flat = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(flat, batch.labels.reshape(-1), ignore_index=-100, reduction=reduction)
