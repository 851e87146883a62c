"""A training checkpoint on disk: a directory holding the model (``save_pretrained``: config + safetensors), the
optimizer, the RNG state and ``state.json`` (the trainer's step and data cursor, the caller's ``meta``, every
file's sha256 and a ``complete`` mark). It is written to a temp directory and renamed into place, so a crash never
leaves half a checkpoint under the final name."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_safetensors_model

from sttrl.errors import CheckpointError, IntegrityError
from sttrl.io import atomic_replace_dir, atomic_write_json, sha256_file
from sttrl.train.memory import release_memory

CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "rng.pt")


@dataclass
class TrainerState:
    global_step: int = 0
    cursor: int = 0  # training samples consumed
    reference_loss: float | None = None  # divergence rule: the last good block's mean loss, else the starting loss


def save_checkpoint(
    path: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    device: torch.device,
    meta: dict[str, Any],
) -> Path:
    """Write model, optimizer, RNG and ``state`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    release_memory()  # the block's freed activations go back to the OS before the writers allocate
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    torch.save(rng, tmp / "rng.pt")
    record = {
        "trainer": asdict(state),
        "meta": meta,
        "hashes": {name: sha256_file(tmp / name) for name in CHECKPOINT_FILES},
        "complete": True,
    }
    atomic_write_json(tmp / "state.json", record)
    return atomic_replace_dir(tmp, path)


def load_checkpoint(
    path: Path, model: Any, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[TrainerState, dict[str, Any]]:
    """Restore model, optimizer and RNG from ``path`` (every file's hash verified); its trainer state and ``meta``."""
    record = read_checkpoint_record(path, verify=True)
    load_safetensors_model(model, str(Path(path) / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(Path(path) / "optimizer.pt", map_location=device, weights_only=False))
    rng = torch.load(Path(path) / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    t = record["trainer"]
    return TrainerState(t["global_step"], t["cursor"], t["reference_loss"]), record["meta"]


def read_checkpoint_record(path: Path, verify: bool = False) -> dict:
    """The ``state.json`` of a complete checkpoint; optionally verify every file's hash."""
    path = Path(path)
    state = path / "state.json"
    if not state.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: no state.json")
    record = json.loads(state.read_text())
    if not record.get("complete"):
        raise CheckpointError(f"checkpoint {path} is not marked complete")
    if verify:
        for name, want in record["hashes"].items():
            got = sha256_file(path / name)
            if got != want:
                raise IntegrityError(f"checkpoint file {path / name}: sha256 {got[:12]}… != recorded {want[:12]}…")
    return record
