"""Training throughput: sttrl's training block against a bare PyTorch loop and transformers' Seq2SeqTrainer.

All three train their own copy of the same model (same initial weights, same frozen layers) on the
same batches in the same order (sttrl's data order: ``Trainer.batch_indices``), with the same AdamW
implementation (torch's fused kernel, what sttrl uses on CPU and CUDA) at the same lr, weight decay and
gradient clipping, batch size and no evaluation or saving:

- ``sttrl``: ``Trainer.train_block(hp, K)``, the call an episode makes per action (it checks every loss
  and gradient norm and tracks memory; a fault reloads the block's start from a checkpoint on disk,
  written here once before the rounds, outside the timings).
- ``bare``: the shortest correct loop: batch -> ``model(..., labels=...).loss`` -> backward -> clip -> AdamW
  step. (sttrl's loss projects only the labelled decoder positions onto the vocabulary: the same
  value with less work; the difference is part of what the ratio measures.)
- ``hf``: ``Seq2SeqTrainer.train()`` with ``max_steps=K`` over a ``torch.utils.data.Dataset`` whose item
  ``j`` is the ``j``-th FeatureStore batch (per-device batch 1, a collator that unwraps it, sequential
  sampler), ``optim="adamw_torch_fused"``, ``report_to="none"``, no saving, no evaluation, constant lr.

One round = one block of K optimizer steps per contestant, in rotating order; warm-up rounds are
excluded; figures are medians over rounds. Two figures per contestant: ``block`` samples/s (wall time of
the whole call: HF's per-call setup included) and ``step`` samples/s (median time of one optimizer step
inside the block: the steady-state cost). sttrl's block overhead is the block wall time minus its
training loop (``BlockResult.seconds``), reported separately.

``--profile`` adds cProfile and torch.profiler tables of one sttrl block and one bare block
(``benchmarks/out/train_throughput-profile.txt``).
"""

from __future__ import annotations

import copy
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

NAME = "train_throughput"


def parse_args(argv: list[str] | None = None):
    p = common.base_parser(NAME, __doc__)
    common.add_preset_args(p)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps per block (default: env.steps_per_action; 3 with --quick)",
    )
    p.add_argument("--reps", type=int, default=None, help="measured rounds (default 5; 2 with --quick)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds, excluded (default 1)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: train.batch_size)")
    p.add_argument("--no-hf", action="store_true", help="skip Seq2SeqTrainer (needs the accelerate package)")
    p.add_argument("--profile", action="store_true", help="also profile one sttrl block and one bare block")
    return p.parse_args(argv)


# ----- contestants ------------------------------------------------------------------------------
def make_bare(model, trainer, store, hp, device, autocast: bool, clip: float | None):
    """The bare loop's state and its block function (same param groups and AdamW settings as sttrl)."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": trainer.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp.lr,
        fused=device.type in ("cuda", "cpu"),
    )
    state = {"cursor": 0}
    max_norm = clip if clip is not None else float("inf")

    def block(k_steps: int) -> dict[str, Any]:
        model.train()
        step_times = []
        losses = []
        common.sync(device)
        t_block = time.perf_counter()
        for _ in range(k_steps):
            t0 = time.perf_counter()
            idx = trainer.batch_indices(state["cursor"], hp.batch_size)
            state["cursor"] += hp.batch_size
            loss = common.bare_step(model, opt, store.batch(idx).to(device), device, autocast, max_norm)
            losses.append(loss.detach())
            if device.type == "cuda":
                common.sync(device)
            step_times.append(time.perf_counter() - t0)
        common.sync(device)
        wall = time.perf_counter() - t_block
        n = k_steps * hp.batch_size
        step = statistics.median(step_times)
        return {
            "wall_s": wall,
            "samples_per_s_block": n / wall,
            "step_s": step,
            "samples_per_s_step": hp.batch_size / step,
            "loss": float(torch.stack(losses).mean()),
        }

    return block


def make_sttrl(trainer, hp, device, rollback):
    def block(k_steps: int) -> dict[str, Any]:
        infos = []
        wall, res = common.timed(
            lambda: trainer.train_block(hp, k_steps, on_step=infos.append, rollback=rollback), device
        )
        steps = [hp.batch_size * hp.grad_accum / i.samples_per_s for i in infos]
        step = statistics.median(steps) if steps else float("nan")
        return {
            "wall_s": wall,
            "samples_per_s_block": res.samples / wall if wall else 0.0,
            "loop_s": res.seconds,
            "overhead_s": wall - res.seconds,
            "step_s": step,
            "samples_per_s_step": hp.batch_size * hp.grad_accum / step,
            "loss": res.mean_loss or float("nan"),
            "status": res.status,
        }

    return block


def make_hf(model, trainer, store, hp, device, dtype: str, clip: float | None, tmpdir: str):
    """Seq2SeqTrainer over datasets of whole FeatureStore batches, in sttrl's order."""
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class Batches(torch.utils.data.Dataset):
        def __init__(self, start: int, k_steps: int) -> None:
            self.idx = [trainer.batch_indices(start + j * hp.batch_size, hp.batch_size) for j in range(k_steps)]

        def __len__(self) -> int:
            return len(self.idx)

        def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
            b = store.batch(self.idx[j])
            return {"input_features": b.input_features, "decoder_input_ids": b.decoder_input_ids, "labels": b.labels}

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.begin: list[float] = []
            self.end: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            common.sync(device)
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            common.sync(device)
            self.end.append(time.perf_counter())

    def training_args(k_steps: int) -> Seq2SeqTrainingArguments:
        return Seq2SeqTrainingArguments(
            output_dir=tmpdir,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=hp.grad_accum,
            learning_rate=hp.lr,
            weight_decay=trainer.cfg.weight_decay,
            max_grad_norm=clip if clip is not None else 1e9,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_steps=k_steps,
            optim="adamw_torch_fused",
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            dataloader_pin_memory=device.type == "cuda",
            train_sampling_strategy="sequential",
            use_cpu=device.type != "cuda",
            bf16=dtype == "bfloat16" and device.type == "cuda",
            seed=0,
            predict_with_generate=False,
        )

    clock = StepClock()
    state = {"cursor": 0, "hf": None}

    def block(k_steps: int) -> dict[str, Any]:
        ds = Batches(state["cursor"], k_steps)
        state["cursor"] += k_steps * hp.batch_size * hp.grad_accum
        if state["hf"] is None:
            hf = Seq2SeqTrainer(
                model=model,
                args=training_args(k_steps),
                train_dataset=ds,
                data_collator=lambda items: items[0],
                callbacks=[clock],
            )
            for cb in (PrinterCallback, ProgressCallback):
                hf.remove_callback(cb)
            state["hf"] = hf
        hf = state["hf"]
        hf.train_dataset = ds
        hf.args.max_steps = k_steps
        clock.begin.clear()
        clock.end.clear()
        wall, out = common.timed(hf.train, device)
        steps = [e - b for b, e in zip(clock.begin, clock.end, strict=False)]  # a step cut short has no end
        step = statistics.median(steps) if steps else float("nan")
        n = k_steps * hp.batch_size * hp.grad_accum
        return {
            "wall_s": wall,
            "samples_per_s_block": n / wall,
            "step_s": step,
            "samples_per_s_step": hp.batch_size * hp.grad_accum / step,
            "loss": float(out.training_loss),
        }

    return block


# ----- profiling --------------------------------------------------------------------------------
def profile_blocks(blocks: dict[str, Any], k_steps: int, path: Path) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    parts = []
    for name, fn in blocks.items():
        prof = cProfile.Profile()
        prof.enable()
        fn(k_steps)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        parts.append(f"===== cProfile: {name} block of {k_steps} steps (sorted by own time) =====\n{s.getvalue()}")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=acts) as tp:
            fn(k_steps)
        sorts = ["self_cpu_time_total"] + (["self_device_time_total"] if torch.cuda.is_available() else [])
        for sort in sorts:
            parts.append(
                f"===== torch.profiler: {name} block of {k_steps} steps, by {sort} =====\n"
                f"{tp.key_averages().table(sort_by=sort, row_limit=25)}"
            )
    text = "\n\n".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ----- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from sttrl.train.blocks import Hyperparams
    from sttrl.train.model import set_frozen_layers
    from sttrl.train.trainer import Trainer

    quick = args.quick
    reps = args.reps or (2 if quick else 5)
    st = common.load_stack(args)
    cfg, device, loaded = st["cfg"], st["device"], st["loaded"]
    store = st["stores"]["train"]
    k_steps = args.steps or (3 if quick else cfg.env.steps_per_action)
    hp = Hyperparams.from_config(cfg.train, loaded.encoder_layers)
    if args.batch:
        hp = Hyperparams(hp.lr, args.batch, hp.grad_accum, hp.freeze_layers)
    dtype = cfg.run.dtype
    autocast = dtype == "bfloat16" and device.type == "cuda"
    clip = cfg.train.grad_clip
    info = common.machine_info(device)
    print(f"{NAME}: preset {st['preset']}, {common.describe_machine(info)}")
    print(
        f"  batch {hp.batch_size} x accum {hp.grad_accum}, lr {hp.lr:g}, frozen {hp.freeze_layers}, "
        f"{k_steps} steps per block, {reps} rounds + {args.warmup} warm-up, device {device}, dtype {dtype}"
    )

    # All contestants start from the same weights with the same frozen layers.
    set_frozen_layers(loaded.model, hp.freeze_layers)
    bare_model = copy.deepcopy(loaded.model)
    hf_model = None if args.no_hf else copy.deepcopy(loaded.model)
    trainer = Trainer(loaded, store, cfg.train, cfg.run.seed, device, dtype)
    rounds = reps + args.warmup
    needed = trainer.batch_indices(0, rounds * k_steps * hp.batch_size * hp.grad_accum + hp.batch_size)
    t_feat = common.warm_features(store, needed)
    print(f"  features of {len(set(needed))} training utterances cached in {t_feat:.1f} s (outside the timings)")

    tmp = tempfile.TemporaryDirectory(prefix="sttrl-bench-hf-")
    rollback = common.disk_rollback(trainer, Path(tmp.name) / "sttrl-rollback")
    contestants = {
        "sttrl": make_sttrl(trainer, hp, device, rollback),
        "bare": make_bare(bare_model, trainer, store, hp, device, autocast, clip),
    }
    if hf_model is not None:
        contestants["hf"] = make_hf(hf_model, trainer, store, hp, device, dtype, clip, tmp.name)
    results = common.interleaved({n: (lambda f=f: f(k_steps)) for n, f in contestants.items()}, reps, args.warmup)

    summary: dict[str, Any] = {}
    for name, rows in results.items():
        summary[name] = {k: common.summarize(common.column(rows, k)) for k in rows[0] if k != "status"}
    ratios: dict[str, Any] = {}
    for other in [n for n in results if n != "sttrl"]:
        ratios[f"sttrl/{other}"] = {
            "block": common.paired_ratio(results["sttrl"], results[other], "samples_per_s_block"),
            "step": common.paired_ratio(results["sttrl"], results[other], "samples_per_s_step"),
        }
    statuses = [r.get("status") for r in results["sttrl"]]
    block_wall = summary["sttrl"]["wall_s"]["median"]
    overhead = summary["sttrl"]["overhead_s"]["median"]

    targets = {"sttrl/bare": 0.95, "sttrl/hf": 1.0}
    rows = []
    for name in results:
        s = summary[name]
        r = ratios.get(f"sttrl/{name}")
        rows.append(
            [
                name,
                s["samples_per_s_block"]["median"],
                s["samples_per_s_step"]["median"],
                s["step_s"]["median"],
                f"{r['block']['median']:.3f}" if r else "-",
                f"{r['step']['median']:.3f}" if r else "-",
                f"≥ {targets[f'sttrl/{name}']}" if r else "-",
            ]
        )
    table = common.markdown_table(
        [
            "contestant",
            "block samples/s",
            "step samples/s",
            "s/step",
            "sttrl ÷ this (block)",
            "sttrl ÷ this (step)",
            "target",
        ],
        rows,
    )
    table += (
        f"\n\nsttrl block overhead (wall − training loop: freezing, divergence check): {overhead:.3f} s per "
        f"{k_steps}-step block = {100 * overhead / block_wall:.1f} % of the block."
    )
    table += (
        f"\n\n{'QUICK (noisy) — ' if quick else ''}preset {st['preset']}, batch {hp.batch_size}, "
        f"{k_steps} steps/block, "
        f"median of {reps} interleaved rounds after {args.warmup} warm-up; {common.describe_machine(info)}."
    )
    if any(s != "ok" for s in statuses):
        table += f"\n\nWARNING: sttrl block statuses {statuses} (a rolled-back block trains nothing it keeps)."

    payload = {
        "machine": info,
        "preset": st["preset"],
        "device": str(device),
        "dtype": dtype,
        "hyperparams": hp.to_dict(),
        "steps_per_block": k_steps,
        "reps": reps,
        "warmup": args.warmup,
        "summary": summary,
        "ratios": ratios,
        "targets": targets,
        "sttrl_statuses": statuses,
        "sttrl_block_overhead_seconds": overhead,
        "sttrl_block_overhead_share": overhead / block_wall,
        "rounds": results,
    }
    if args.profile:
        ppath = common.out_path(args, NAME).with_name(f"{NAME}{'-quick' if quick else ''}-profile.txt")
        blocks = {"sttrl": contestants["sttrl"], "bare": contestants["bare"]}
        profile_blocks(blocks, k_steps, ppath)
        payload["profile_file"] = str(ppath)
        print(f"profile written to {ppath}")
    common.report(NAME, args, payload, table)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
