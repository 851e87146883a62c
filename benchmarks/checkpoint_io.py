"""Checkpoint I/O: time to write and to restore a training checkpoint, and its size.

Writes with ``Trainer.save_checkpoint`` (model via ``save_pretrained`` as safetensors + config,
optimizer and RNG state with ``torch.save``, sha256 of every file, ``state.json``, temp dir + rename)
and restores with ``Trainer.load_checkpoint`` (hash verification, safetensors into the live model,
optimizer state, RNG, cursor). The optimizer holds its AdamW moments (one training step is taken
first), so the checkpoint is as large as an episode's. Write and restore alternate in each round;
warm-up rounds are excluded; figures are medians.

A breakdown times the parts separately with the same library calls (benchmark code, not sttrl's):
``save_pretrained``, ``torch.save(optimizer)``, hashing, and on restore hash verification, the
safetensors load and the optimizer load.

Restores read files that were just written, so they come from the page cache: these are warm-cache
figures (the case of an episode restoring the block it wrote a moment before). Nothing is fsynced
except ``state.json`` (as in sttrl).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

NAME = "checkpoint_io"


def parse_args(argv: list[str] | None = None):
    p = common.base_parser(NAME, __doc__)
    common.add_preset_args(p)
    p.add_argument("--reps", type=int, default=None, help="measured rounds (default 5; 2 with --quick)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds, excluded (default 1)")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where checkpoints are written (default: a temp dir under benchmarks/out/, same disk as runs/)",
    )
    return p.parse_args(argv)


def dir_sizes(path: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from safetensors.torch import load_model as load_safetensors_model

    from sttrl.io import sha256_file
    from sttrl.train.blocks import Hyperparams
    from sttrl.train.checkpoint import CHECKPOINT_FILES
    from sttrl.train.model import count_parameters
    from sttrl.train.trainer import Trainer

    quick = args.quick
    reps = args.reps or (2 if quick else 5)
    st = common.load_stack(args)
    cfg, device, loaded = st["cfg"], st["device"], st["loaded"]
    store = st["stores"]["train"]
    trainer = Trainer(loaded, store, cfg.train, cfg.run.seed, device, cfg.run.dtype)
    hp = Hyperparams.from_config(cfg.train, loaded.encoder_layers)
    res = trainer.train_block(hp, 1, rollback=common.disk_rollback(trainer, Path(tempfile.mkdtemp()) / "start"))
    # one block fills the AdamW moments
    n_params, n_trainable = count_parameters(loaded.model)
    info = common.machine_info(device)
    print(
        f"{NAME}: preset {st['preset']}, {n_params / 1e6:.1f} M parameters, first block {res.status}; "
        f"{common.describe_machine(info)}"
    )

    base = args.dir or common.OUT_DIR
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ckpt-", dir=base))
    path = work / "block-0001"
    meta = {"block": 1, "hp": hp.to_dict(), "result": res.to_dict()}
    before = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}

    def save() -> dict[str, float]:
        wall, _ = common.timed(lambda: trainer.save_checkpoint(path, meta), device)
        return {"seconds": wall}

    def load() -> dict[str, float]:
        wall, _ = common.timed(lambda: trainer.load_checkpoint(path), device)
        return {"seconds": wall}

    try:
        results: dict[str, list[dict[str, float]]] = {"save": [], "load": []}
        for r in range(args.warmup + reps):
            s, lo = save(), load()
            tag = f"warm-up {r + 1}" if r < args.warmup else f"rep {r + 1 - args.warmup}"
            print(f"  {tag}: save {s['seconds']:.3f} s, load {lo['seconds']:.3f} s")
            if r >= args.warmup:
                results["save"].append(s)
                results["load"].append(lo)
        after = loaded.model.state_dict()
        same = all(torch.equal(before[k], after[k]) for k in before)
        sizes = dir_sizes(path)
        total = sum(sizes.values())

        # Breakdown of the same work, part by part.
        parts: dict[str, list[float]] = {
            k: []
            for k in (
                "save_pretrained",
                "torch.save optimizer",
                "sha256 of files",
                "verify hashes",
                "safetensors load",
                "optimizer load",
            )
        }
        scratch = work / "parts"
        for _ in range(reps):
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            t0 = time.perf_counter()
            loaded.model.save_pretrained(scratch)
            parts["save_pretrained"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch.save(trainer.optimizer.state_dict(), scratch / "optimizer.pt")
            parts["torch.save optimizer"].append(time.perf_counter() - t0)
            torch.save({"torch": torch.get_rng_state()}, scratch / "rng.pt")
            t0 = time.perf_counter()
            hashes = {name: sha256_file(scratch / name) for name in CHECKPOINT_FILES}
            parts["sha256 of files"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ok = all(sha256_file(scratch / name) == h for name, h in hashes.items())
            parts["verify hashes"].append(time.perf_counter() - t0)
            assert ok
            t0 = time.perf_counter()
            load_safetensors_model(loaded.model, str(scratch / "model.safetensors"), device=str(device))
            common.sync(device)
            parts["safetensors load"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            trainer.optimizer.load_state_dict(
                torch.load(scratch / "optimizer.pt", map_location=device, weights_only=False)
            )
            common.sync(device)
            parts["optimizer load"].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {k: common.summarize(common.column(v, "seconds")) for k, v in results.items()}
    part_summary = {k: common.summarize(v) for k, v in parts.items()}
    save_s, load_s = summary["save"]["median"], summary["load"]["median"]
    rows = [
        ["write (save_checkpoint)", save_s, total / save_s / 2**20],
        ["restore (load_checkpoint)", load_s, total / load_s / 2**20],
    ]
    table = common.markdown_table(["operation", "seconds (median)", "MB/s"], rows)
    table += "\n\n" + common.markdown_table(
        ["file", "MB"], [[name, size / 2**20] for name, size in sizes.items()] + [["total", total / 2**20]]
    )
    table += "\n\n" + common.markdown_table(
        ["part", "seconds (median)"], [[k, v["median"]] for k, v in part_summary.items()]
    )
    table += (
        f"\n\n{'QUICK (noisy) — ' if quick else ''}preset {st['preset']} ({n_params / 1e6:.1f} M parameters, "
        f"AdamW state filled), median of {reps} rounds after {args.warmup} warm-up, warm page cache; "
        f"weights after the last restore equal the saved ones: {same}; {common.describe_machine(info)}."
    )
    payload = {
        "machine": info,
        "preset": st["preset"],
        "device": str(device),
        "parameters": n_params,
        "trainable_parameters": n_trainable,
        "reps": reps,
        "warmup": args.warmup,
        "summary": summary,
        "parts": part_summary,
        "files_bytes": sizes,
        "total_bytes": total,
        "restored_weights_equal": same,
        "rounds": results,
    }
    common.report(NAME, args, payload, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
