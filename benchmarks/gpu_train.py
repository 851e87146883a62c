"""GPU training: sttrl's training block against a bare PyTorch loop on a whisper-small-sized model, then
batch growth until a real ``torch.OutOfMemoryError`` to show sttrl's OOM transition and rollback.

The model is whisper-small's shape (d_model 768, 12 + 12 layers, 12 heads, ffn 3072, vocabulary 51865,
30 s window = 3000 mel frames), randomly initialized (no hub here), trained in bf16 autocast with fp32
master weights (sttrl's ``run.dtype=bfloat16``). Inputs are synthetic: random log-mels of the right
shape and random label ids behind the multilingual prefix (``<|startoftranscript|><|sw|><|transcribe|>
<|notimestamps|>``), served by a store with FeatureStore's ``batch(indices)`` interface, so the training
itself goes through sttrl's ``Trainer`` unchanged. When the converted whisper-base directory is in the
cache (``sttrl.train.pretrained.ensure_pretrained("whisper-base", cache_dir)``) or ``--tokenizer-dir`` names
one, its tokenizer and a 30 s feature extractor make the processor, and the prefix ids come from it.

Part 1, speed (per batch size, default 16 and 32): interleaved rounds of one K-step block each of
- ``sttrl``: ``Trainer.train_block`` (rollback from a checkpoint on disk, per-step checks),
- ``bare``: batch -> autocast forward -> backward -> clip -> AdamW (PyTorch's default, foreach on CUDA),
- ``bare_forloop`` (CUDA only, a diagnostic): the same with ``AdamW(foreach=False)``, the optimizer
  setting sttrl's Trainer uses, to show how much of any gap the optimizer explains.
Reported: samples/s per block (wall time, synchronized) and per step, peak GPU memory above what was
allocated before the block, and the ratio sttrl ÷ bare.

Part 2, OOM (``--no-oom`` skips it): the bare models are freed, then sttrl trains blocks of
``--oom-steps`` steps with the batch doubling each block until a block ends with status ``oom``; the
weights are compared with a copy taken before that block (they must be equal: rollback), then one
more block at the last good batch size shows training goes on. On CPU (``--quick``) there is no real
OOM: sttrl's ``train.memory_budget_gb`` (measured RSS above a budget) stands in, and the JSON says so.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from _gpu_parts import QUICK, SMALL, SyntheticStore, build_model, build_processor, make_bare, make_sttrl, resident

NAME = "gpu_train"


def parse_args(argv: list[str] | None = None):
    p = common.base_parser(NAME, __doc__)
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument(
        "--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="training dtype (default bfloat16)"
    )
    p.add_argument(
        "--batches", default=None, help="comma-separated batch sizes to compare (default 16,32; 2,4 with --quick)"
    )
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per block (default 10; 3 with --quick)")
    p.add_argument("--reps", type=int, default=None, help="measured rounds per batch size (default 3; 2 with --quick)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds, excluded (default 1)")
    p.add_argument("--label-len", type=int, default=64, help="text tokens per label (default 64)")
    p.add_argument("--pool", type=int, default=64, help="distinct synthetic utterances (default 64)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate (default 1e-5, the whisper-small preset's)")
    p.add_argument("--no-oom", action="store_true", help="skip the batch-growth / OOM part")
    p.add_argument(
        "--oom-start", type=int, default=None, help="first batch of the growth (default: the largest of --batches)"
    )
    p.add_argument("--oom-steps", type=int, default=2, help="steps per growth block (default 2)")
    p.add_argument("--max-batch", type=int, default=4096, help="stop growing here if no OOM happened (default 4096)")
    p.add_argument(
        "--cpu-budget-gb",
        type=float,
        default=None,
        help="CPU only: the memory_budget_gb standing in for OOM (default: RSS at the start + 0.25 GB)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile one sttrl block and one bare block per batch size (torch.profiler + cProfile)",
    )
    p.add_argument(
        "--tokenizer-dir", type=Path, default=None, help="a Whisper tokenizer directory (multilingual, 51865 ids)"
    )
    return p.parse_args(argv)


# ----- OOM ---------------------------------------------------------------------------------------
def grow_until_oom(trainer: Any, args: Any, start: int, device: Any) -> dict[str, Any]:
    import torch

    from sttrl.train.blocks import Hyperparams

    log: list[dict[str, Any]] = []
    batch, last_ok = start, None
    result: dict[str, Any] = {"blocks": log}
    while batch <= args.max_batch:
        before = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
        allocated_before = common.gb(resident(device))
        state_before = (trainer.state.global_step, trainer.state.cursor)
        hp = Hyperparams(args.lr, batch, 1, 0)
        t0 = time.perf_counter()
        rollback = common.disk_rollback(trainer, Path(tempfile.mkdtemp(prefix="sttrl-oom-")) / "start")
        res = trainer.train_block(hp, args.oom_steps, rollback=rollback)
        dt = time.perf_counter() - t0
        entry = {
            "batch": batch,
            "status": res.status,
            "steps_kept": res.steps,
            "seconds": dt,
            "samples_per_s": res.samples_per_s,
            "peak_memory_gb": res.peak_memory_gb,
            "note": res.note,
            "allocated_before_gb": allocated_before,
            "allocated_after_gb": common.gb(resident(device)),
        }
        if res.status != "ok":
            after = trainer.model.state_dict()
            entry["weights_equal_to_before"] = all(torch.equal(before[k], after[k].cpu()) for k in before)
            entry["step_and_cursor_restored"] = (trainer.state.global_step, trainer.state.cursor) == state_before
        print(
            f"  growth batch {batch}: {res.status} in {dt:.1f} s, peak {res.peak_memory_gb:.2f} GB"
            + (
                f", weights equal to before: {entry['weights_equal_to_before']}, step+cursor restored: "
                f"{entry['step_and_cursor_restored']} ({res.note[:120]})"
                if res.status != "ok"
                else ""
            )
        )
        log.append(entry)
        del before
        gc.collect()
        if res.status == "oom":
            result["oom_batch"] = batch
            break
        if res.status != "ok":
            result["stopped"] = f"status {res.status} at batch {batch}"
            break
        last_ok = batch
        batch *= 2
    result["last_ok_batch"] = last_ok
    if "oom_batch" in result and last_ok is not None:
        gc.collect()
        allocated_before = common.gb(resident(device))
        rollback = common.disk_rollback(trainer, Path(tempfile.mkdtemp(prefix="sttrl-oom-")) / "start")
        res = trainer.train_block(Hyperparams(args.lr, last_ok, 1, 0), args.oom_steps, rollback=rollback)
        result["recovery"] = {
            "batch": last_ok,
            "status": res.status,
            "steps_kept": res.steps,
            "samples_per_s": res.samples_per_s,
            "peak_memory_gb": res.peak_memory_gb,
            "allocated_before_gb": allocated_before,
            "allocated_after_gb": common.gb(resident(device)),
            "note": res.note,
        }
        print(f"  recovery block at batch {last_ok}: {res.status}")
    return result


# ----- main --------------------------------------------------------------------------------------
def build_trainer(args: Any, device: Any, sizes: dict[str, int], batches: list[int]) -> dict[str, Any]:
    """sttrl's Trainer over the synthetic store, with the model, its size and the CPU memory budget."""
    from sttrl.config import TrainConfig
    from sttrl.train.model import LoadedModel, set_frozen_layers
    from sttrl.train.trainer import Trainer

    processor, prefix, tok_source = build_processor(args, sizes["window"])
    store = SyntheticStore(args.pool, sizes["window"] * 100, args.label_len, prefix, seed=0)
    model = build_model(sizes, device, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"  model: {n_params / 1e6:.1f} M parameters, {sizes}; tokenizer: {tok_source}; "
        f"labels {args.label_len} tokens + prefix {prefix}"
    )
    budget = None
    if device.type != "cuda":
        import psutil

        budget = args.cpu_budget_gb or round(psutil.Process().memory_info().rss / 2**30 + 0.25, 2)
    tcfg = TrainConfig(
        lr=args.lr,
        batch_size=batches[0],
        batch_max=max(args.max_batch, max(batches)),
        warmup_steps=0,
        memory_budget_gb=budget,
    )
    loaded = LoadedModel(model, processor, prefix, {"language": "sw", "task": "transcribe"}, Path("synthetic"))
    set_frozen_layers(model, 0)
    trainer = Trainer(loaded, store, tcfg, seed=0, device=device, dtype=args.dtype)
    return {
        "trainer": trainer,
        "model": model,
        "store": store,
        "n_params": n_params,
        "tok_source": tok_source,
        "prefix": prefix,
        "budget": budget,
    }


def contestants_of(built: dict[str, Any], args: Any, device: Any, autocast: bool) -> dict[str, Any]:
    """sttrl's block and the bare loops (each on its own copy of the model), each ``f(batch, k_steps)``."""
    import copy

    trainer = built["trainer"]
    rollback = common.disk_rollback(trainer, Path(tempfile.mkdtemp(prefix="sttrl-rollback-")) / "start")
    contestants = {"sttrl": make_sttrl(trainer, args.lr, device, rollback)}
    names = ["bare", "bare_forloop"] if device.type == "cuda" else ["bare"]
    for name in names:
        contestants[name] = make_bare(
            copy.deepcopy(built["model"]),
            built["store"],
            trainer.batch_indices,
            args.lr,
            device,
            autocast,
            foreach=False if name == "bare_forloop" else None,
        )
    return contestants


def speed_part(contestants: dict[str, Any], batches: list[int], k_steps: int, reps: int, args: Any) -> dict[str, Any]:
    """Part 1: interleaved rounds per batch size, summaries and sttrl ÷ bare ratios."""
    import torch

    speed: dict[str, Any] = {}
    for batch in batches:
        print(f"  batch {batch}: {k_steps} steps per block, {reps} rounds + {args.warmup} warm-up")
        try:
            rounds = common.interleaved(
                {n: (lambda f=f, b=batch: f(b, k_steps)) for n, f in contestants.items()}, reps, args.warmup
            )
        except torch.OutOfMemoryError as exc:  # the bare loops have no rollback: record and go on
            speed[str(batch)] = {"error": f"OutOfMemoryError in a bare loop: {str(exc).splitlines()[0][:160]}"}
            torch.cuda.empty_cache()
            continue
        summ = {
            n: {k: common.summarize(common.column(rs, k)) for k in rs[0] if k != "status"} for n, rs in rounds.items()
        }
        ratios = {
            f"sttrl/{o}": {
                "block": common.paired_ratio(rounds["sttrl"], rounds[o], "samples_per_s_block"),
                "step": common.paired_ratio(rounds["sttrl"], rounds[o], "samples_per_s_step"),
            }
            for o in rounds
            if o != "sttrl"
        }
        speed[str(batch)] = {
            "summary": summ,
            "ratios": ratios,
            "statuses": [r.get("status") for r in rounds["sttrl"]],
            "rounds": rounds,
        }
        if args.profile:
            from train_throughput import profile_blocks

            ppath = common.out_path(args, NAME).with_name(
                f"{NAME}{'-quick' if args.quick else ''}-profile-b{batch}.txt"
            )
            blocks = {n: (lambda k, f=contestants[n], b=batch: f(b, k)) for n in ("sttrl", "bare")}
            profile_blocks(blocks, k_steps, ppath)
            speed[str(batch)]["profile_file"] = str(ppath)
            print(f"  profile written to {ppath}")
    return speed


def speed_table(speed: dict[str, Any], cuda: bool) -> str:
    rows = []
    for batch, s in speed.items():
        if "error" in s:
            rows.append([batch, s["error"], "", "", "", "", ""])
            continue
        for name, v in s["summary"].items():
            r = s["ratios"].get(f"sttrl/{name}")
            rows.append(
                [
                    batch,
                    name,
                    v["samples_per_s_block"]["median"],
                    v["samples_per_s_step"]["median"],
                    v["peak_delta_gb"]["median"] if cuda else "-",
                    f"{r['block']['median']:.3f}" if r else "-",
                    f"{r['step']['median']:.3f}" if r else "-",
                ]
            )
    head = ["batch", "contestant", "block samples/s", "step samples/s", "peak GB above start"]
    return common.markdown_table(head + ["sttrl ÷ this (block)", "sttrl ÷ this (step)"], rows)


def oom_table(oom: dict[str, Any], cuda: bool) -> str:
    mem = "GPU allocated" if cuda else "process RSS"
    orows = [
        [
            b["batch"],
            b["status"],
            b["peak_memory_gb"],
            b.get("weights_equal_to_before", "-"),
            b.get("step_and_cursor_restored", "-"),
            b["allocated_before_gb"],
            b["allocated_after_gb"],
        ]
        for b in oom["blocks"]
    ]
    if "recovery" in oom:
        rec = oom["recovery"]
        orows.append(
            [
                f"{rec['batch']} (after the OOM)",
                rec["status"],
                rec["peak_memory_gb"],
                "-",
                "-",
                rec["allocated_before_gb"],
                rec["allocated_after_gb"],
            ]
        )
    head = ["growth batch", "status", "peak GB (BlockResult)", "weights equal to before", "step + cursor restored"]
    table = common.markdown_table(head + [f"{mem} before block (GB)", f"{mem} after block (GB)"], orows)
    return table + f"\n\nOOM: {oom['kind']}."


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    quick = args.quick
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    common.set_threads(args.threads)
    sizes = QUICK if quick else SMALL
    batches = [int(b) for b in (args.batches or ("2,4" if quick else "16,32")).split(",")]
    k_steps = args.steps or (3 if quick else 10)
    reps = args.reps or (2 if quick else 3)
    autocast = args.dtype == "bfloat16" and cuda
    info = common.machine_info(device)
    print(
        f"{NAME}: {common.describe_machine(info)}; device {device}, dtype {args.dtype}"
        + ("" if cuda else " (bf16 autocast only on CUDA: CPU trains in float32)")
    )
    built = build_trainer(args, device, sizes, batches)
    contestants = contestants_of(built, args, device, autocast)
    speed = speed_part(contestants, batches, k_steps, reps, args)
    oom = None
    if not args.no_oom:
        contestants.clear()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        start = args.oom_start or max(batches)
        budget = built["budget"]
        print(
            f"  batch growth from {start} (x2 per block of {args.oom_steps} steps) until OOM"
            + ("" if cuda else f" (CPU: memory_budget_gb={budget} stands in for OOM)")
        )
        oom = grow_until_oom(built["trainer"], args, start, device)
        oom["kind"] = "torch.OutOfMemoryError" if cuda else f"simulated: train.memory_budget_gb={budget}"
    n_params = built["n_params"]
    table = speed_table(speed, cuda) + ("" if oom is None else "\n\n" + oom_table(oom, cuda))
    table += (
        f"\n\n{'QUICK (tiny sizes, CPU) — ' if quick else ''}{n_params / 1e6:.1f} M-parameter Whisper "
        f"({sizes['d_model']}, {sizes['layers']}+{sizes['layers']} layers, {sizes['window']} s), "
        f"{args.dtype if cuda else 'float32 (CPU)'}, "
        f"{k_steps} steps/block, median of {reps} interleaved rounds after {args.warmup} warm-up; "
        f"{common.describe_machine(info)}."
    )
    payload = {
        "machine": info,
        "device": str(device),
        "dtype": args.dtype,
        "sizes": sizes,
        "parameters": n_params,
        "tokenizer": built["tok_source"],
        "prefix": built["prefix"],
        "label_len": args.label_len,
        "steps_per_block": k_steps,
        "reps": reps,
        "warmup": args.warmup,
        "speed": speed,
        "oom": oom,
    }
    common.report(NAME, args, payload, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
