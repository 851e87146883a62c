"""What a human tuner would look at besides the current observation, as extra lines of the step prompt.

Every line is computed from the episode's own records (``history``: one trajectory record per step)
and the config; a fact that is not recorded is left out rather than guessed. The wording lives in
``prompts/facts.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import yaml

from sttrl.config import Config
from sttrl.control.prompts import load_prompt


@lru_cache(maxsize=1)
def _templates() -> dict[str, str]:
    return dict(yaml.safe_load(load_prompt("facts.yaml")))


def _g(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, ... (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def trend_word(values: Sequence[float], tolerance: float = 0.01) -> str:
    """falling / rising / flat: the slope's total change over the block relative to the mean level."""
    if len(values) < 2:
        return "flat"
    mean = sum(values) / len(values)
    change = slope(values) * (len(values) - 1) / (abs(mean) or 1.0)
    return "falling" if change < -tolerance else "rising" if change > tolerance else "flat"


def facts(observation: dict[str, Any], history: Sequence[dict[str, Any]], cfg: Config) -> list[str]:
    """The extra prompt lines for this step (see the module docstring)."""
    t = _templates()
    out: list[str] = []
    rows = list(history)
    if rows:
        first = rows[0]
        hp = first.get("hp_before") or {}
        start_wer = (first.get("observation") or {}).get("previous_wer")
        if start_wer is not None and hp:
            out.append(
                t["start"].format(
                    wer=_g(start_wer), lr=_g(hp.get("lr")), batch=hp.get("batch_size"), frozen=hp.get("freeze_layers")
                )
            )
    last = rows[-1] if rows else {}
    train = last.get("train") or {}
    losses = [float(x) for x in train.get("losses") or []]
    if losses:
        out.append(
            t["loss_trend"].format(
                n=len(losses),
                first=_g(losses[0]),
                last=_g(losses[-1]),
                min=_g(min(losses)),
                max=_g(max(losses)),
                slope=f"{slope(losses):+.3g}",
                trend=trend_word(losses),
            )
        )
    norms = [float(x) for x in train.get("grad_norms") or []]
    if norms:
        out.append(t["grad_norm"].format(first=_g(norms[0]), last=_g(norms[-1]), max=_g(max(norms))))
    peak = observation.get("memory_gb")
    if peak is not None:
        budget = cfg.train.memory_budget_gb
        if budget is not None:
            out.append(
                t["memory_budget"].format(peak=f"{peak:.3g}", budget=_g(budget), headroom=f"{budget - peak:.3g}")
            )
        else:
            out.append(t["memory"].format(peak=f"{peak:.3g}"))
    samples = sum(int((r.get("train") or {}).get("samples") or 0) for r in rows)
    batch, accum = int(observation.get("batch_size") or 0), int(observation.get("grad_accum") or 1)
    block_steps = cfg.env.block_steps(batch, accum) if batch else cfg.env.steps_per_action
    template = "samples_fixed" if cfg.env.budget_unit == "samples" else "samples"
    out.append(
        t[template].format(
            samples=samples,
            steps=observation.get("global_step", 0),
            per_block=block_steps * batch * accum,
            block_steps=block_steps,
        )
    )
    n_val = (last.get("eval") or {}).get("n")
    if n_val:
        out.append(t["validation"].format(n=n_val))
    clamped = [str(r.get("step")) + f" ({r.get('action')})" for r in rows if r.get("clamped")]
    if clamped:
        out.append(t["clamped"].format(steps=", ".join(clamped)))
    left = observation.get("steps_left", cfg.env.max_actions - len(rows))
    if cfg.env.budget_unit == "samples":
        out.append(t["budget_samples"].format(left=left, samples_per_action=cfg.env.samples_per_action))
    else:
        out.append(t["budget"].format(left=left, steps_per_action=cfg.env.steps_per_action))
    return [f"- {line}" for line in out]


def render_facts(observation: dict[str, Any], history: Sequence[dict[str, Any]], cfg: Config) -> str:
    return "\n".join(facts(observation, history, cfg))
