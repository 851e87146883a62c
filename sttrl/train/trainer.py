"""Real training blocks: AdamW, warm-up and lr schedules (``train.lr_schedule``), gradient accumulation, layer
freezing, clipping, faults, checkpoints (written and read by :mod:`sttrl.train.checkpoint`).

A block trains ``n`` optimizer steps with the given hyperparameters. Faults are transitions, not
crashes: the model, optimizer and data cursor roll back to the block's start and the block ends
with a status:

- ``nan``: a non-finite loss or gradient norm.
- ``oom``: ``torch.OutOfMemoryError`` (real on CUDA) or, on CPU with ``train.memory_budget_gb``
  set, a measured training-memory peak above the budget.

Memory: on CUDA, ``torch.cuda.max_memory_allocated``. On CPU, the bytes of the tensors training holds
at its peak (after the forward pass): parameters, gradients, optimizer state and the activations
autograd saved for backward, counted through ``saved_tensors_hooks``. Unlike process RSS, this is
the same in a resumed process, so OOM transitions replay exactly.
- ``diverged``: the mean loss of the block's last quarter exceeds ``train.divergence_ratio`` times
  the reference loss: the previous good block's mean loss, or (first block) the starting loss measured
  at setup (``TrainerState.reference_loss``, saved in block 0's checkpoint so a resume decides the same).
- ``oom`` also covers a real allocation failure on CPU: torch's ``DefaultCPUAllocator`` error (a plain
  ``RuntimeError``; torch has no CPU out-of-memory type) or Python's ``MemoryError`` (see sttrl.train.faults).

Data order derives from (seed, cursor): epoch ``e`` is ``default_rng([seed, e]).permutation(N)``
and the cursor counts samples consumed, so a resumed run draws exactly the same batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from sttrl.config import TrainConfig
from sttrl.train.blocks import BlockResult, Hyperparams, StepInfo
from sttrl.train.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from sttrl.train.faults import allocation_message, is_allocation_failure
from sttrl.train.features import FeatureStore
from sttrl.train.loss import label_loss
from sttrl.train.memory import release_memory
from sttrl.train.model import LoadedModel, set_frozen_layers


class _MemoryBudgetExceeded(Exception):
    def __init__(self, message: str, peak: float) -> None:
        super().__init__(message)
        self.peak = peak


class Trainer:
    """Owns the model's training: optimizer, data cursor, rollback and checkpoints."""

    def __init__(
        self,
        loaded: LoadedModel,
        store: FeatureStore,
        cfg: TrainConfig,
        seed: int,
        device: torch.device,
        dtype: str = "float32",
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.store = store
        self.cfg = cfg
        self.seed = seed
        self.device = device
        self.autocast = dtype == "bfloat16" and device.type == "cuda"
        params = [p for p in self.model.parameters()]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            # fused on CPU too: one kernel over all parameters, no temporaries; measured on tiny.en with 2
            # threads, 17 ms per step against 86 ms for torch's default single-tensor loop
            fused=device.type in ("cuda", "cpu"),
        )
        self.state = TrainerState()
        self.horizon_steps: int | None = None  # lr_schedule linear/cosine: the episode's total optimizer steps
        self._process = psutil.Process()

    # ----- data order -------------------------------------------------------------------------
    def batch_indices(self, start: int, count: int) -> list[int]:
        """Training-set indices of ``count`` samples from cursor ``start`` (epoch-wise seeded permutations)."""
        n = len(self.store)
        out: list[int] = []
        pos = start
        while len(out) < count:
            epoch, offset = divmod(pos, n)
            perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            take = min(count - len(out), n - offset)
            out.extend(int(i) for i in perm[offset : offset + take])
            pos += take
        return out

    # ----- memory -----------------------------------------------------------------------------
    def _state_bytes(self) -> int:
        """Parameters, gradients and optimizer state, in bytes."""
        total = 0
        for p in self.model.parameters():
            total += p.numel() * p.element_size()
            if p.grad is not None:
                total += p.grad.numel() * p.grad.element_size()
        for st in self.optimizer.state.values():
            for v in st.values():
                if torch.is_tensor(v):
                    total += v.numel() * v.element_size()
        return total

    def memory_gb(self, activations: int = 0) -> float:
        """Training memory in GB: CUDA's peak allocation, or on CPU the state bytes plus ``activations``."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        return (self._state_bytes() + activations) / 2**30

    def rss_gb(self) -> float:
        return self._process.memory_info().rss / 2**30

    def _check_budget(self, peak: float) -> None:
        if self.device.type != "cuda" and self.cfg.memory_budget_gb is not None and peak > self.cfg.memory_budget_gb:
            raise _MemoryBudgetExceeded(
                f"training memory peak {peak:.3f} GB > memory budget {self.cfg.memory_budget_gb} GB", peak
            )

    # ----- one step ---------------------------------------------------------------------------
    def _lr_at(self, hp: Hyperparams, step: int) -> float:
        """The lr of global step ``step`` (0-based): ``hp.lr`` under ``train.lr_schedule`` (see
        :func:`scheduled_lr`)."""
        c = self.cfg
        if c.lr_schedule == "constant":
            if c.warmup_steps and step < c.warmup_steps:
                return hp.lr * (step + 1) / c.warmup_steps
            return hp.lr
        if not self.horizon_steps:
            raise ValueError(
                f"train.lr_schedule={c.lr_schedule} needs the horizon (Trainer.horizon_steps), set by the "
                "runtime from the budget"
            )
        return scheduled_lr(hp.lr, step, self.horizon_steps, c.lr_schedule, c.warmup_fraction, c.lr_final_fraction)

    def _loss(self, batch) -> torch.Tensor:
        """Mean cross-entropy over the labelled positions only (see :func:`sttrl.train.loss.label_loss`)."""
        return label_loss(self.model, batch)

    def _forward(self, batch) -> tuple[torch.Tensor, float]:
        """The loss of one micro-batch and the training-memory peak (GB) while its graph is alive."""
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                loss = self._loss(batch)
            return loss, self.memory_gb()
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            saved.setdefault(storage.data_ptr(), storage.nbytes())
            # detach: holding ``t`` itself would tie the graph into a cycle that only backward() breaks,
            # so a fault between forward and backward would leak every activation.
            return t.detach()

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self._loss(batch)
        return loss, self.memory_gb(sum(saved.values()))

    def _step(self, hp: Hyperparams) -> tuple[float, float, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (loss, grad norm, peak GB).

        One host read per step, after ``optimizer.step()``: a non-finite loss or gradient norm ends the
        block, and the whole block is rolled back, so checking before the update buys nothing.
        """
        lr = self._lr_at(hp, self.state.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        peak = 0.0
        for _ in range(hp.grad_accum):
            batch = self.store.batch(self.batch_indices(self.state.cursor, hp.batch_size)).to(self.device)
            loss, micro_peak = self._forward(batch)
            peak = max(peak, micro_peak)
            self._check_budget(peak)
            loss = loss / hp.grad_accum
            loss.backward()
            total += loss.detach().float()
            del loss
            self.state.cursor += hp.batch_size
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.cfg.grad_clip if self.cfg.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.optimizer.step()
        self.state.global_step += 1
        loss_value, norm_value = torch.stack([total, norm.float().to(total.device)]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            return float("nan"), norm_value, peak
        return loss_value, norm_value, peak

    # ----- a block ----------------------------------------------------------------------------
    def train_block(
        self,
        hp: Hyperparams,
        n_steps: int,
        on_step: Callable[[StepInfo], None] | None = None,
        *,
        rollback: Callable[[], None],
        done_losses: list[float] | None = None,
        on_checkpoint: Callable[[list[float]], None] | None = None,
        checkpoint_every: int = 0,
    ) -> BlockResult:
        """Train ``n_steps`` optimizer steps; on a fault, call ``rollback`` (reload the block's starting
        checkpoint from disk: model, optimizer, RNG and cursor).

        ``done_losses`` are the losses of steps already trained in this block before a restart;
        ``on_checkpoint(losses)`` is called every ``checkpoint_every`` steps to save progress.
        """
        self.model.train()
        set_frozen_layers(self.model, hp.freeze_layers)
        losses = list(done_losses or [])
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        peak = 0.0
        start = time.perf_counter()
        samples = 0
        norms: list[float] = []
        status, note = "ok", ""
        for k in range(len(losses), n_steps):
            t0 = time.perf_counter()
            try:
                loss, norm, step_peak = self._step(hp)
            except _MemoryBudgetExceeded as exc:
                status, note, peak = "oom", str(exc), max(peak, exc.peak)
                break
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
                if not is_allocation_failure(exc):
                    raise
                status, note = "oom", f"out of memory: {allocation_message(exc)}"
                peak = max(peak, self.memory_gb())
                break
            peak = max(peak, step_peak)
            if not math.isfinite(loss):
                status, note = "nan", f"non-finite loss or gradient at block step {k + 1}"
                break
            losses.append(loss)
            norms.append(norm)
            samples += hp.batch_size * hp.grad_accum
            if on_step is not None:
                self._report_step(on_step, hp, k, n_steps, loss, time.perf_counter() - t0)
            if on_checkpoint is not None and checkpoint_every and (k + 1) % checkpoint_every == 0 and k + 1 < n_steps:
                on_checkpoint(losses)
        if status == "ok" and (why := self._divergence(losses)):
            status, note = "diverged", why
        seconds = time.perf_counter() - start
        mean = float(np.mean(losses)) if losses else None
        if status != "ok":
            self._roll_back(rollback, collect=status == "oom")
        else:
            self.state.reference_loss = mean
        return BlockResult(
            status=status,
            steps=len(losses) if status == "ok" else 0,
            steps_attempted=len(losses) + (1 if status in ("nan", "oom") else 0),
            losses=losses,
            mean_loss=mean,
            samples=samples,
            seconds=seconds,
            samples_per_s=samples / seconds if seconds > 0 else 0.0,
            peak_memory_gb=peak,
            memory_device=self.device.type,
            global_step=self.state.global_step,
            note=note,
            grad_norms=norms,
        )

    def _report_step(
        self, on_step: Callable[[StepInfo], None], hp: Hyperparams, k: int, n_steps: int, loss: float, dt: float
    ) -> None:
        lr = self._lr_at(hp, self.state.global_step - 1)
        on_step(
            StepInfo(self.state.global_step, k + 1, n_steps, loss, lr, hp.batch_size * hp.grad_accum / max(dt, 1e-9))
        )

    def _divergence(self, losses: list[float]) -> str:
        """Why the block diverged (its last quarter's mean loss above ``divergence_ratio`` x the reference), or ""."""
        if not losses:
            return ""
        q = max(1, len(losses) // 4)
        # a trainer used without a runtime (benchmarks) has no starting loss: fall back to the first quarter
        ref = self.state.reference_loss if self.state.reference_loss is not None else float(np.mean(losses[:q]))
        tail = float(np.mean(losses[-q:]))
        if (len(losses) >= 2 or self.state.reference_loss is not None) and tail > self.cfg.divergence_ratio * ref:
            return f"last-quarter loss {tail:.3f} > {self.cfg.divergence_ratio} x reference {ref:.3f}"
        return ""

    def _roll_back(self, rollback: Callable[[], None], collect: bool) -> None:
        """After a fault: drop gradients, return the failed step's buffers, then reload the block's start."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        release_memory(collect=collect)  # a failed step's buffers go back before the reload allocates
        rollback()

    # ----- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path: Path, meta: dict) -> Path:
        """Write model, optimizer, RNG and trainer state to ``path`` atomically (:mod:`sttrl.train.checkpoint`)."""
        return save_checkpoint(path, self.model, self.optimizer, self.state, self.device, meta)

    def load_checkpoint(self, path: Path) -> dict:
        """Restore model, optimizer, RNG and cursor from ``path``; returns its ``meta``."""
        self.state, meta = load_checkpoint(path, self.model, self.optimizer, self.device)
        return meta


def scheduled_lr(
    peak: float, step: int, horizon: int, shape: str, warmup_fraction: float, final_fraction: float
) -> float:
    """The lr of 0-based global step ``step`` under a warm-up-then-decay schedule over ``horizon`` steps.

    ``W = round(warmup_fraction x horizon)`` warm-up steps: ``peak x (step + 1) / W`` (as ``warmup_steps``);
    then with ``p = (step - W) / (horizon - W)`` (clipped to [0, 1]): linear ``f = 1 - p``, cosine
    ``f = (1 + cos(pi p)) / 2``, and ``lr = peak x (final + (1 - final) f)``: the peak at step ``W``, the final
    value reached at step ``horizon`` (one past the last step, as transformers' schedules)."""
    warm = round(warmup_fraction * horizon)
    if step < warm:
        return peak * (step + 1) / warm
    p = min(1.0, max(0.0, (step - warm) / max(1, horizon - warm)))
    f = 1.0 - p if shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return peak * (final_fraction + (1.0 - final_fraction) * f)
