"""How an episode's runtime scores its model: validation WER/CER and teacher-forced loss after each block (cached
on disk per block, and in the block cache by the weights' sha256), and the uncached scores of a probe's end that
lookahead ranks by. A mixin of :class:`sttrl.env.runtime.EpisodeRuntime`, which holds the attributes it reads."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sttrl.eval.engines import evaluate_with
from sttrl.eval.loss import LossResult, validation_loss
from sttrl.eval.result import EvalResult
from sttrl.io import atomic_write_json
from sttrl.rundir import block_name
from sttrl.train.features import FeatureStore, feature_cache_dir
from sttrl.train.memory import release_memory, torch_thread

if TYPE_CHECKING:  # annotations only: the runtime's attributes this mixin reads
    import torch

    from sttrl.config import Config
    from sttrl.env.blockcache import RunCache
    from sttrl.train.blocks import BlockResult
    from sttrl.train.model import LoadedModel


class Evaluations:
    """The runtime's scoring: ``evaluate`` (per block, cached), ``validation_loss`` and ``score_current`` (the model
    as it is in memory, not cached)."""

    cfg: Config
    device: torch.device
    block: int
    loaded: LoadedModel
    val_store: FeatureStore
    eval_dir: Path
    ckpt_dir: Path
    cache: RunCache | None

    def load_block(self, block: int) -> dict:  # pragma: no cover - EpisodeRuntime's
        raise NotImplementedError

    def block_result(self, block: int) -> BlockResult | None:  # pragma: no cover - EpisodeRuntime's
        raise NotImplementedError

    def _read_eval(self, block: int) -> EvalResult | None:
        path = self.eval_dir / f"{block_name(block)}.json"
        return EvalResult(**json.loads(path.read_text())) if block >= 0 and path.is_file() else None

    @torch_thread
    def evaluate(self, block: int | None = None, wer: bool = True) -> EvalResult:
        """Validation WER/CER and teacher-forced loss of the model after ``block`` (default: the current one); cached
        on disk per block (and in the block cache by the weights' sha256 when it is on). ``wer=False`` measures the
        loss only and carries the WER of the evaluation before (``EvalResult.wer_block`` names the block it was
        measured after; see ``env.eval_every``)."""
        block = self.block if block is None else block
        path = self.eval_dir / f"{block_name(block)}.json"
        cached = self._read_eval(block)
        if cached is not None and (not wer or cached.wer_block is None):
            return cached
        ckpt, t0 = self.ckpt_dir / block_name(block), time.perf_counter()
        hit = self.cache.evaluation(ckpt) if self.cache is not None and wer else None
        if hit is not None and hit.get("val_loss") is not None:  # these weights were scored before
            res = EvalResult(**{**hit, "seconds": time.perf_counter() - t0})
            atomic_write_json(path, res.to_dict())
            return res
        if block != self.block:
            self.load_block(block)
        previous = self._read_eval(block - 1)
        result = self.block_result(block)
        rolled_back = result is not None and result.status != "ok" and block > 0
        if previous is not None and rolled_back and (not wer or previous.wer_block is None):
            atomic_write_json(path, previous.to_dict())  # rolled back: the same weights as before the block
            return previous
        loss = self.validation_loss()
        if wer or previous is None:
            res = evaluate_with(self.cfg, self.val_store, self.device)  # engine: train.eval_engine
            release_memory()  # generation buffers go back to the OS
        else:
            res = replace(
                previous,
                seconds=0.0,
                utterances_per_s=0.0,
                convert_seconds=0.0,
                wer_block=previous.wer_measured_after(block - 1),
            )
        res = replace(res, val_loss=loss.loss, loss_seconds=loss.seconds)
        if self.cache is not None and res.wer_block is None:
            self.cache.put_evaluation(ckpt, res.to_dict())
        atomic_write_json(path, res.to_dict())
        return res

    @torch_thread
    def validation_loss(self, n_utterances: int | None = None) -> LossResult:
        """Teacher-forced validation loss of the model as it is in memory on the first ``n_utterances`` validation
        utterances (all that an evaluation scores by default); not cached (a probe's end is no block)."""
        return validation_loss(self.val_store, self.device, self.cfg.train.eval_batch_size, n_utterances)

    @torch_thread
    def score_current(self, n_utterances: int) -> EvalResult:
        """WER/CER of the model as it is in memory on the first ``n_utterances`` validation utterances (not cached:
        a probe's end is no block)."""
        store = FeatureStore(
            self.loaded,
            self.val_store.utterances[:n_utterances],
            self.cfg.model.max_target_tokens,
            feature_cache_dir(self.cfg),
        )
        return evaluate_with(self.cfg, store, self.device)
