"""The heavy objects of one episode (data, model, trainer, feature stores) and their files on disk.

Everything the episode needs to go on after a crash lives under ``run_dir``:

    config.yaml            resolved config
    run.json               run record: ids, initial/final weight hashes, data manifest, splits opened
    processor/             the processor (feature extractor + tokenizer) the judge loads
    checkpoints/block-NNNN complete training checkpoints after block N (block-0000 = the start)
    checkpoints/partial    the last intra-block checkpoint of a block cut off mid-way
    evals/block-NNNN.json  validation result after block N (WER/CER, teacher-forced loss; see env.eval_every)
    final/                 the model the judge scores (save_pretrained layout)

``train_block`` and ``evaluate`` are idempotent by block index: a finished block is loaded, not
trained again; a block cut off mid-way continues from its last intra-block checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sttrl.config import Config, config_from_dict
from sttrl.data import SpeechData, build_speech_data
from sttrl.env.blockcache import RunCache, restore_rng, starts_block
from sttrl.env.evaluations import Evaluations
from sttrl.errors import CheckpointError, ConfigError
from sttrl.eval.engines import engine_label
from sttrl.io import atomic_replace_dir, atomic_write_json, sha256_file
from sttrl.keys import sign_record
from sttrl.rundir import CONFIG_FILE, RUN_RECORD, block_name, final_file_hashes, new_run_id
from sttrl.train.blocks import BlockResult, Hyperparams, StepInfo
from sttrl.train.checkpoint import read_checkpoint_record
from sttrl.train.device import deterministic, resolve_device, seed_everything
from sttrl.train.faults import ensure_writable_dir
from sttrl.train.features import FeatureStore, feature_cache_dir
from sttrl.train.memory import limit_arenas, torch_thread
from sttrl.train.model import LoadedModel, load_model
from sttrl.train.trainer import Trainer


class EpisodeRuntime(Evaluations):
    """Data, model and trainer of one run directory; restores the latest checkpoint when one exists."""

    @torch_thread  # all torch work of a process on one thread: see sttrl.train.memory
    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        progress: bool = True,
        data: SpeechData | None = None,
        run_id: str | None = None,
        hf_token: str | None = None,
    ) -> None:
        """``hf_token`` (resolved by the entry point, never stored) is needed for hub models and data only."""
        limit_arenas()  # before this run's threads allocate (see sttrl.train.memory); entry points call it earlier
        self.run_dir = ensure_writable_dir(Path(run_dir))  # one clear line when it is read-only or not a directory
        record_path = self.run_dir / RUN_RECORD
        if record_path.is_file():  # resume: the config the run started with wins
            record = json.loads(record_path.read_text())
            self.cfg = config_from_dict(record["config"])
            self.run_id = record["run_id"]
        else:
            self.cfg, self.run_id, record = cfg, run_id or new_run_id(), {}
        cfg = self.cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        deterministic(cfg.run.deterministic)  # bit-reproducible episodes (see sttrl.train.device)
        seed_everything(cfg.run.seed)
        self.device = resolve_device(cfg.run.device)
        self.progress = progress
        self.data = data if data is not None else build_speech_data(cfg.data, progress=progress, token=hf_token)
        self.loaded: LoadedModel = load_model(
            cfg.model, cfg.data.cache_dir, self.device, seed=cfg.run.seed, progress=progress, token=hf_token
        )
        max_tokens = cfg.model.max_target_tokens
        features = feature_cache_dir(cfg)
        self.train_store = FeatureStore(self.loaded, self.data.split("train"), max_tokens, features)
        val = self.data.split("validation")
        if cfg.train.max_eval_utterances:
            val = val[: cfg.train.max_eval_utterances]
        self.val_store = FeatureStore(self.loaded, val, max_tokens, features)
        if not len(self.train_store) or not len(self.val_store):
            raise ConfigError("the training or validation split is empty: raise data.sentences_per_domain")
        self.trainer = Trainer(self.loaded, self.train_store, cfg.train, cfg.run.seed, self.device, cfg.run.dtype)
        self.max_freeze = self.loaded.encoder_layers
        if cfg.train.lr_schedule != "constant":  # the schedule's horizon: the whole budget at the start's settings
            self.trainer.horizon_steps = cfg.env.max_actions * self.steps_for(self.initial_hp())
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.eval_dir = self.run_dir / "evals"
        self.cache = RunCache.for_run(cfg, self.device.type, self.ckpt_dir)  # cache.enabled (sttrl.env.blockcache)
        self.block = 0  # blocks whose checkpoint is loaded in the trainer
        if record:
            self.record = record
            self._record_opened_splits()
            self.restore_latest()
        else:
            self._start_record()

    # ----- run record -------------------------------------------------------------------------
    def _start_record(self) -> None:
        self.cfg.save(self.run_dir / CONFIG_FILE)
        self.loaded.processor.save_pretrained(self.run_dir / "processor")
        # a first block's divergence reference (sttrl.train.trainer)
        self.trainer.state.reference_loss = self.probe_loss()
        path = self._save_block_checkpoint(0, {"hp": self.initial_hp().to_dict(), "result": None})
        self.record = {
            "run_id": self.run_id,
            "created": time.time(),
            "config": self.cfg.to_dict(),
            "model_source": str(self.loaded.source_dir),
            "initial_weights_sha256": sha256_file(path / "model.safetensors"),
            "data_manifest": str(self.data.manifest_path),
            "opened_splits": [],
            "eval_engine": engine_label(self.cfg, self.device),
            "final": None,
        }
        self._record_opened_splits()

    def _record_opened_splits(self) -> None:
        self.record["opened_splits"] = sorted(set(self.record.get("opened_splits", [])) | set(self.data.opened_splits))
        self.write_record()

    def write_record(self) -> None:
        self.record["signature"] = sign_record(self.record)  # the judge verifies it with a key outside run_dir
        atomic_write_json(self.run_dir / RUN_RECORD, self.record)

    def initial_hp(self) -> Hyperparams:
        return Hyperparams.from_config(self.cfg.train, self.max_freeze)

    # ----- checkpoints ------------------------------------------------------------------------
    def _save_block_checkpoint(self, block: int, meta: dict) -> Path:
        path = self.trainer.save_checkpoint(self.ckpt_dir / block_name(block), {"block": block, **meta})
        self._prune_blocks()
        return path

    def _prune_blocks(self) -> None:
        """Drop a cut-off block's partial checkpoint and the blocks ``env.keep_checkpoints`` does not keep."""
        shutil.rmtree(self.ckpt_dir / "partial", ignore_errors=True)
        keep = self.cfg.env.keep_checkpoints
        blocks = sorted(self.completed_blocks())
        for old in blocks[:-keep] if keep else []:  # 0 keeps every block (forkable at any step)
            shutil.rmtree(self.ckpt_dir / block_name(old), ignore_errors=True)

    @torch_thread
    def adopt(self, checkpoint: str | Path) -> None:
        """Start this run from another run's training checkpoint (Population Based Training's exploit): its
        weights, optimizer and RNG state, data cursor and global step become this run's block 0, the point a
        faulted first block rolls back to. Only on a run that has trained nothing yet."""
        if self.completed_blocks() != [0]:
            raise CheckpointError(
                f"run {self.run_dir} has trained blocks {self.completed_blocks()}: adopt only at its start"
            )
        self.trainer.load_checkpoint(Path(checkpoint))
        self._save_block_checkpoint(
            0, {"hp": self.initial_hp().to_dict(), "result": None, "adopted_from": str(checkpoint)}
        )
        self.block = 0
        (self.eval_dir / f"{block_name(0)}.json").unlink(missing_ok=True)  # block 0 holds other weights now

    def completed_blocks(self) -> list[int]:
        if not self.ckpt_dir.is_dir():
            return []
        out = []
        for p in self.ckpt_dir.glob("block-*"):
            if (p / "state.json").is_file():
                out.append(int(p.name.split("-")[1]))
        return sorted(out)

    @torch_thread
    def restore_latest(self) -> int:
        blocks = self.completed_blocks()
        if not blocks:
            raise CheckpointError(f"run {self.run_dir} has a run record but no complete checkpoint")
        self.load_block(blocks[-1])
        return self.block

    @torch_thread
    def load_block(self, block: int) -> dict:
        """Load block ``block``'s complete checkpoint (model, optimizer, RNG, data cursor) into the trainer."""
        path = self.ckpt_dir / block_name(block)
        if not path.is_dir():
            k = self.cfg.env.keep_checkpoints
            raise CheckpointError(
                f"checkpoint {path} is missing (env.keep_checkpoints={k} keeps only the last {k} "
                "blocks; 0 keeps every block, needed to fork or time-travel to any step)"
            )
        meta = self.trainer.load_checkpoint(path)
        self.block = block
        return meta

    def checkpoint_info(self, block: int) -> dict:
        """``{block, path, sha256}`` of block ``block``'s complete checkpoint (sha256 of its weights)."""
        path = self.ckpt_dir / block_name(block)
        return {
            "block": block,
            "path": str(path),
            "sha256": read_checkpoint_record(path)["hashes"]["model.safetensors"],
        }

    def _block_hp(self, block: int) -> dict | None:
        path = self.ckpt_dir / block_name(block)
        return read_checkpoint_record(path)["meta"].get("hp") if (path / "state.json").is_file() else None

    def block_result(self, block: int) -> BlockResult | None:
        path = self.ckpt_dir / block_name(block)
        if not (path / "state.json").is_file():
            return None
        meta = read_checkpoint_record(path)["meta"]
        return BlockResult(**meta["result"]) if meta.get("result") else None

    # ----- training ---------------------------------------------------------------------------
    def steps_for(self, hp: Hyperparams) -> int:
        """Optimizer steps one action trains: ``env.steps_per_action``, or with ``env.budget_unit=samples`` as
        many as ``env.samples_per_action`` needs at this batch size (so no action changes the compute spent)."""
        return self.cfg.env.block_steps(hp.batch_size, hp.grad_accum)

    @torch_thread
    def train_block(
        self,
        block: int,
        hp: Hyperparams,
        steps: int | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        continue_from: Path | None = None,
    ) -> BlockResult:
        """Train block ``block`` (1-based) with ``hp``; idempotent (see module docstring). ``continue_from``: a probe's
        checkpoint (:meth:`probe`) of this block with these hyperparameters; its steps are not trained again. With
        ``cache.enabled`` a block already trained from the same state is taken from the block cache."""
        steps = steps or self.steps_for(hp)
        if block < 1:
            raise ValueError("blocks are numbered from 1")
        done = self.block_result(block)
        if done is not None and self._block_hp(block) == hp.to_dict():
            if self.block != block:
                self.load_block(block)
            return done
        if done is not None:  # trained with other hyperparameters (a different decision after a resume): redo
            for later in self.completed_blocks():
                if later >= block:
                    shutil.rmtree(self.ckpt_dir / block_name(later), ignore_errors=True)
                    (self.eval_dir / f"{block_name(later)}.json").unlink(missing_ok=True)
        partial = self.ckpt_dir / "partial"
        via = Path(continue_from) if continue_from and starts_block(Path(continue_from), block, hp) else None
        parent, addr, entry = self.ckpt_dir / block_name(block - 1), None, None
        if self.cache is not None:
            dest, meta = self.ckpt_dir / block_name(block), {"block": block, "hp": hp.to_dict()}
            hit, addr, entry = self.cache.cached(parent, hp, steps, self.trainer.horizon_steps, dest, meta, via=via)
            if hit is not None:
                self._prune_blocks()
                self.block = -1  # the trainer does not hold the block: the next block or evaluation loads it
                return hit
        self._start_from(block - 1)
        done_losses: list[float] = []
        used = None
        for start in (partial, via):  # a block cut off mid-way, else the probe it continues
            if start is not None and starts_block(start, block, hp):
                self.trainer.load_checkpoint(start)
                done_losses, used = list(read_checkpoint_record(start)["meta"]["losses"]), start
                break

        def rollback() -> None:  # the block's start is on disk: no in-memory copy of model and optimizer
            self.load_block(block - 1)

        def on_checkpoint(losses: list[float]) -> None:
            self.trainer.save_checkpoint(partial, {"block": block, "hp": hp.to_dict(), "losses": list(losses)})

        result = self.trainer.train_block(
            hp,
            steps,
            on_step=on_step,
            rollback=rollback,
            done_losses=done_losses,
            on_checkpoint=on_checkpoint,
            checkpoint_every=self.cfg.env.checkpoint_every,
        )
        path = self._save_block_checkpoint(block, {"hp": hp.to_dict(), "result": result.to_dict()})
        self.block = block
        if self.cache is not None and addr is not None and used in (None, via):  # not a resumed partial block
            self.cache.record(addr, hp, steps, result, path, entry)
        return result

    def _start_from(self, block: int) -> None:
        """Put block ``block``'s state in the trainer: its checkpoint, or (already loaded) its RNG state, so a block
        starts from what its parent checkpoint records whatever ran in the process since (a cache key's promise)."""
        if self.block != block:
            self.load_block(block)
        else:
            restore_rng(self.ckpt_dir / block_name(block), self.device)

    @torch_thread
    def probe(self, from_block: int, hp: Hyperparams, steps: int, save_to: Path | None = None) -> BlockResult:
        """Train ``steps`` optimizer steps with ``hp`` from block ``from_block``'s checkpoint without making a block of
        them (a lookahead probe); a fault rolls back to that checkpoint. ``save_to`` keeps a successful probe's end as
        a checkpoint that ``train_block(from_block + 1, hp, continue_from=save_to)`` continues; the trainer holds it.
        With ``cache.enabled`` a probe already trained from the same state is taken from the block cache."""
        parent, addr, entry = self.ckpt_dir / block_name(from_block), None, None
        if self.cache is not None:
            dest, meta = Path(save_to) if save_to else None, {"block": from_block + 1, "hp": hp.to_dict()}
            hit, addr, entry = self.cache.cached(parent, hp, steps, self.trainer.horizon_steps, dest, meta, probe=True)
            if hit is not None:
                if hit.status == "ok":  # as after training: the trainer holds the probe's end
                    self.trainer.load_checkpoint(Path(save_to))
                self.block = -1
                return hit
        self.load_block(from_block)
        result = self.trainer.train_block(hp, steps, rollback=lambda: self.load_block(from_block))
        self.block = -1  # the trainer holds a probe's weights, no block: the next block or evaluation reloads
        saved = None
        if save_to is not None and result.status == "ok":
            saved = self.trainer.save_checkpoint(
                Path(save_to), {"block": from_block + 1, "hp": hp.to_dict(), "losses": list(result.losses)}
            )
        if self.cache is not None and addr is not None and (saved is not None or result.status != "ok"):
            self.cache.record(addr, hp, steps, result, saved, entry)
        return result

    @torch_thread
    @torch.no_grad()
    def probe_loss(self) -> float:
        """Training loss of the current model on its next batch, without an update (the starting observation)."""
        hp = self.initial_hp()
        idx = self.trainer.batch_indices(self.trainer.state.cursor, hp.batch_size)
        batch = self.train_store.batch(idx).to(self.device)
        self.loaded.model.eval()
        out = self.loaded.model(
            input_features=batch.input_features, decoder_input_ids=batch.decoder_input_ids, labels=batch.labels
        )
        return float(out.loss)

    # ----- the end ----------------------------------------------------------------------------
    @torch_thread
    def save_final(self) -> dict:
        """Save the episode's last block (loaded first when the trainer holds another state) for the judge and record
        its hash in run.json."""
        head = self.completed_blocks()[-1]
        if self.block != head:
            self.load_block(head)
        final = self.run_dir / "final"
        tmp = self.run_dir / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.loaded.model.save_pretrained(tmp)
        atomic_replace_dir(tmp, final)
        info = {
            "path": "final",
            "sha256": sha256_file(final / "model.safetensors"),
            "block": self.block,
            "global_step": self.trainer.state.global_step,
            "files": final_file_hashes(final),  # config.json too: the judge loads it
            "saved": time.time(),  # ends the window in which a hidden-split access fails the judge
        }
        self.record["final"] = info
        self._record_opened_splits()
        return info
