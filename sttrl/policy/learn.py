"""``python -m sttrl.learn``: train one stage of a learned controller and save it as a model directory.

    python -m sttrl.learn --stage sft  --data teacher.jsonl --model local:smollm2-135m --out runs/policy-sft
    python -m sttrl.learn --stage rloo --data teacher.jsonl --model runs/policy-sft --out runs/policy-rloo
    python -m sttrl.learn --stage episodes --model runs/policy-rloo --out runs/policy-episodes
    python -m sttrl.learn --stage grpo --model local:smollm2-135m --out runs/policy-grpo   (TRL, the trl extra)

``--data`` (repeatable): teacher files (python -m sttrl.teacher), episode trajectories or run directories (the
``episodes`` and ``grpo`` stages run their own episodes in the environment instead). Teacher states of
``policy.holdout_fraction`` of the instances are held out of training: before and after the stage it prints the
action accuracy and the action distribution on them against the majority-class baseline, and the decision latency
(sttrl.policy.heldout).
``--model``: ``local:NAME`` or a bare name/directory (sttrl.llm.local: smollm2-135m, a model directory, a .gguf).
The config (``--preset``, ``--policy-preset``, ``--config``, ``--set policy.x=y``) must match the episodes the
controller will decide (the prompt shows env and train settings). The directory is written under a temporary
name and renamed: it holds the model, its tokenizer and ``sttrl_policy.json`` (stage, resolved config, training
log). Bad input is one line naming the field or file, exit 2. Then: ``python -m graph.run --agent learned --model DIR``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sttrl.config import add_config_arguments, load_config
from sttrl.errors import ConfigError, SttrlError
from sttrl.llm.local import load_model, resolve_model, serializable
from sttrl.policy.controller import META_FILE
from sttrl.policy.settings import policy_presets
from sttrl.train.exclusive import exclusive


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sttrl.learn",
        description="Train a learned controller's stage (sft | rloo | dpo | episodes | grpo) into a model directory.",
    )
    add_config_arguments(p)
    p.add_argument("--policy-preset", choices=policy_presets(), help="policy section preset (sttrl/presets/policy)")
    p.add_argument("--stage", choices=ALL_STAGES, help="policy.stage (default: the config's)")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="PATH",
        help="teacher JSONL, trajectory.jsonl, run directory or folder of them (repeatable; "
        "the episodes and grpo stages run their own episodes and need none)",
    )
    p.add_argument("--model", required=True, metavar="local:NAME|DIR", help="the starting model")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the model directory to write (must not exist)"
    )
    p.add_argument("--quiet", action="store_true", help="no per-step lines")
    return p


ALL_STAGES = ("sft", "rloo", "dpo", "episodes", "grpo")
LIVE_STAGES = ("episodes", "grpo")  # run their own episodes: no --data


TRL_STAGES = {"dpo": "sttrl.policy.trl_dpo", "grpo": "sttrl.policy.grpo"}  # TRL's trainers: the trl extra


def stage_function(stage: str) -> Any:
    """The training function of ``stage``: ``sft`` and ``rloo`` (sttrl.policy.stages), ``episodes``
    (sttrl.policy.episodes), ``dpo`` and ``grpo`` through TRL (sttrl.policy.trl_dpo, sttrl.policy.grpo)."""
    from sttrl.policy.stages import STAGES  # torch: loaded once the command line is valid

    if stage in STAGES:
        return STAGES[stage]
    if stage == "episodes":
        from sttrl.policy.episodes import train_episodes  # torch, as above

        return train_episodes
    try:
        module = importlib.import_module(TRL_STAGES[stage])
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the {stage} stage trains with TRL and needs {exc.name}: pip install 'sttrl[trl]'") from None
    return getattr(module, f"train_{stage}")


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def learn(
    cfg: Any, data: list[str], model: str, out: Path, on_line: Any = print, on_check: Any = print
) -> dict[str, Any]:
    """Train ``cfg.policy.stage`` from ``data`` starting at ``model``; write ``out``; returns its metadata.
    ``on_line`` gets each step's numbers, ``on_check`` the held-out check's lines."""
    import torch  # torch and transformers: loaded when a stage runs, not for --help or a config error

    from sttrl.policy import heldout
    from sttrl.policy.core import train_top_layers
    from sttrl.policy.data import load_rows
    from sttrl.policy.stages import Learner, stage_items

    stage = cfg.policy.stage
    if out.exists():
        raise ConfigError(f"--out {out} already exists: choose a new directory")
    ds, held = None, None
    if stage not in LIVE_STAGES:
        if not data:
            raise ConfigError(f"stage {stage} needs --data (teacher files, trajectories or run directories)")
        held = heldout.split(load_rows(data, cfg), cfg)
        ds = held.train
        stage_items(stage, ds, cfg)  # nothing to train on: say so before loading any model
    train = stage_function(stage)  # a missing extra is one line before the model loads
    name = model.removeprefix("local:")
    torch.manual_seed(cfg.policy.seed)
    loaded = load_model(resolve_model(name), cache=False)  # a private copy: training changes it
    device = cfg.run.device if cfg.run.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    loaded.model.to(device)
    if cfg.policy.train_top_layers:
        try:
            n = train_top_layers(loaded.model, cfg.policy.train_top_layers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        on_line(f"training the top {cfg.policy.train_top_layers} decoder layers and the final norm: {n:,} parameters")
    learner = Learner(loaded, cfg)
    checks = {"before": heldout.check(learner, held, ds, "start model", on_check)} if held else {}
    t0 = time.perf_counter()
    train(learner, ds, on_step=lambda s: on_line(" ".join(f"{k} {v:.4g}" for k, v in s.items())))
    seconds = round(time.perf_counter() - t0, 2)
    if held and held.heldout:
        checks["after"] = heldout.check(learner, held, ds, f"after {stage}", on_check)
    meta = {
        "schema": "sttrl.policy/1",
        "stage": stage,
        "base_model": model,
        "data": [str(d) for d in data],
        "rows": len(ds) if ds is not None else 0,
        "seconds": seconds,
        "heldout": {"how": held.how, **checks} if held else None,
        "log": learner.log,
        "config": cfg.to_dict(),
    }
    _save(loaded, meta, out)
    return meta


def _save(loaded: Any, meta: dict[str, Any], out: Path) -> None:
    """The model directory: weights, tokenizer and ``sttrl_policy.json``, under a temporary name, then renamed."""
    tmp = out.parent / f".{out.name}.learn-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        serializable(loaded.model.to("cpu")).save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sttrl.quiet import library_bars_off, quiet  # keeps `--help` free of library imports

    quiet() if args.quiet else library_bars_off()  # stderr keeps one line per error
    try:
        overrides = list(args.overrides) + ([f"policy.stage={args.stage}"] if args.stage else [])
        cfg = load_config(args.preset, args.config, overrides, policy_preset=args.policy_preset)
        meta = learn(cfg, args.data, args.model, args.out, on_line=(lambda _: None) if args.quiet else print)
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{meta['stage']}: {meta['rows']} rows, {len(meta['log'])} steps in {meta['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
