"""The ``transformers`` engine: greedy ``generate`` of the live model (:func:`sttrl.eval.decode.evaluate`)."""

from __future__ import annotations

import torch

from sttrl.config import Config
from sttrl.eval.decode import evaluate
from sttrl.eval.engines import Engine
from sttrl.eval.result import EvalResult
from sttrl.train.features import FeatureStore


def _evaluate(cfg: Config, store: FeatureStore, device: torch.device, per_utterance: bool = False) -> EvalResult:
    return evaluate(
        store,
        device,
        batch_size=cfg.train.eval_batch_size,
        n_examples=cfg.train.example_transcripts,
        per_utterance=per_utterance,
    )


ENGINE = Engine("transformers", "transformers generate(), greedy, on the training device", _evaluate)
