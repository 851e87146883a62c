"""Decisions as ``datasets`` rows: (prompt, decision JSON, measured outcome), from teacher trajectories
(:mod:`sttrl.control.teacher`, schema ``sttrl.teacher/1``) and ordinary episode trajectories (``trajectory.jsonl``,
schema ``sttrl.step/1``).

One row per (state, action):

- teacher rows: every probed action at a state, ``outcome`` its measured value (the lookahead criterion: lower
  is better; null when the probe failed), ``reward`` = -outcome (a failed probe: the state's worst reward minus
  ``policy.failed_probe_penalty``), ``best`` for the teacher's choice and for every action tied with it (a value
  within ``policy.tie_tolerance`` of the state's best: labels below their noise count as ties), ``ties`` the number
  of best actions at the state, ``instance`` the train instance (the held-out check holds out whole instances);
- episode rows: the logged action, ``outcome`` = ``reward`` = the discounted return-to-go from that step
  (``policy.gamma``), ``best`` = True (the logged behaviour); steps past ``policy.max_episode_length`` are dropped,
  and step 1 is left out (the starting observation is not in the records).

``prompt`` holds the chat turns the LLM controller renders for that state
(:func:`sttrl.control.prompting.decision_turns`). The decision's rationale is the state's own numbers (WER and loss
in the prompt), the same for every action at a state, so two decisions at one state differ only in their action
tokens. ``valid`` is False for a decision whose JSON is not a valid Decision for the enabled actions; stages filter
those rows out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sttrl.config import Config
from sttrl.control.prompting import decision_turns
from sttrl.errors import ConfigError
from sttrl.io import read_jsonl
from sttrl.policy.core import decision_text, finite, parse_decision

TEACHER_SCHEMA = "sttrl.teacher/1"
STEP_SCHEMA = "sttrl.step/1"
COLUMNS = (
    "state",
    "kind",
    "instance",
    "step",
    "prompt",
    "action",
    "decision",
    "outcome",
    "reward",
    "best",
    "ties",
    "valid",
)


def state_rationale(observation: dict[str, Any], max_chars: int) -> str:
    """A rationale from the numbers the prompt shows (validation WER, last block's loss, status)."""
    parts = []
    for key, label in (("wer", "WER"), ("train_loss", "loss")):
        value = finite(observation.get(key))
        if value is not None:
            parts.append(f"{label} {value:.3g}")
    status = observation.get("status")
    if status and status != "ok":
        parts.append(str(status))
    return (", ".join(parts) or "no measurement yet")[:max_chars]


def _row(
    cfg: Config,
    state: str,
    kind: str,
    step: int,
    turns: list[dict[str, str]],
    action: str,
    rationale: str,
    outcome: float | None,
    reward: float,
    best: bool,
    instance: int | None,
    ties: int = 1,
) -> dict[str, Any]:
    text = decision_text(action, rationale)
    return {
        "state": state,
        "kind": kind,
        "instance": instance,
        "ties": ties,
        "step": step,
        "prompt": turns,
        "action": action,
        "decision": text,
        "outcome": outcome,
        "reward": float(reward),
        "best": best,
        "valid": parse_decision(text, cfg.env.actions) is not None,
    }


def teacher_rows(records: list[dict[str, Any]], cfg: Config, source: str) -> list[dict[str, Any]]:

    p = cfg.policy
    out = []
    for rec in records:
        obs, probes = rec.get("observation"), rec.get("probes")
        if not isinstance(obs, dict) or not isinstance(probes, list) or not probes:
            raise ConfigError(f"data file {source}: teacher row of step {rec.get('step')} lacks observation/probes")
        turns = decision_turns(obs, rec.get("history") or [], cfg)
        rationale = state_rationale(obs, p.max_rationale_chars)
        values = [finite(pr.get("value")) for pr in probes]
        measured = [-v for v in values if v is not None]
        worst = min(measured) if measured else 0.0
        state = f"{rec.get('run_id', source)}/{rec.get('step')}"
        best = [
            pr.get("action") == rec.get("chosen") or (v is not None and -v >= max(measured) - p.tie_tolerance)
            for pr, v in zip(probes, values, strict=True)
        ]
        for pr, value, is_best in zip(probes, values, best, strict=True):
            reward = -value if value is not None else worst - p.failed_probe_penalty
            out.append(
                _row(
                    cfg,
                    state,
                    "teacher",
                    int(rec.get("step", 0)),
                    turns,
                    str(pr.get("action")),
                    rationale,
                    value,
                    reward,
                    is_best,
                    rec.get("instance_seed"),
                    sum(best),
                )
            )
    return out


def episode_rows(records: list[dict[str, Any]], cfg: Config, source: str) -> list[dict[str, Any]]:

    p = cfg.policy
    records = sorted(records, key=lambda r: r["step"])
    rewards = [float(r.get("reward") or 0.0) for r in records]
    returns, acc = [0.0] * len(records), 0.0
    for i in range(len(records) - 1, -1, -1):
        acc = rewards[i] + p.gamma * acc
        returns[i] = acc
    out = []
    for i in range(1, min(len(records), p.max_episode_length)):
        rec, obs = records[i], records[i - 1]["observation"]
        turns = decision_turns(obs, records[:i], cfg)
        out.append(
            _row(
                cfg,
                f"{rec.get('run_id', source)}/{rec['step']}",
                "episode",
                int(rec["step"]),
                turns,
                str(rec["action"]),
                state_rationale(obs, p.max_rationale_chars),
                returns[i],
                returns[i],
                True,
                (rec.get("instance") or {}).get("seed"),
            )
        )
    return out


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.glob("*.jsonl")) + sorted(path.glob("*/trajectory.jsonl"))
        if found:
            return found
        raise ConfigError(f"data directory {path} holds no .jsonl file and no run directory with trajectory.jsonl")
    raise ConfigError(f"data path {path} does not exist")


def load_rows(paths: list[str | Path], cfg: Config) -> Any:
    """A ``datasets.Dataset`` of decision rows (columns :data:`COLUMNS`) from teacher files, trajectory files,
    run directories or folders of them. A file of another schema, or none, is a ConfigError naming it."""
    import datasets  # about 3 s to import (pyarrow): only loading rows needs it

    rows: list[dict[str, Any]] = []
    for path in paths:
        for file in _files(Path(path)):
            records = read_jsonl(file, torn="raise", error=ConfigError)
            if not records:
                continue
            schema = records[0].get("schema")
            if schema == TEACHER_SCHEMA:
                rows += teacher_rows(records, cfg, str(file))
            elif schema == STEP_SCHEMA:
                rows += episode_rows(records, cfg, str(file))
            else:
                raise ConfigError(
                    f"data file {file}: schema {schema!r} is neither {TEACHER_SCHEMA} (python -m "
                    f"sttrl.control.teacher) nor {STEP_SCHEMA} (an episode's trajectory.jsonl)"
                )
    if not rows:
        raise ConfigError(f"data {', '.join(map(str, paths))}: no decision rows")
    return datasets.Dataset.from_list(rows)


def states(ds: Any) -> dict[str, list[dict[str, Any]]]:
    """Valid rows grouped by state, in order of appearance."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in ds:
        if row["valid"]:
            out.setdefault(row["state"], []).append(row)
    return out


def dpo_pairs(ds: Any, min_gap: float = 0.0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(better, worse) pairs at the same state from teacher rows: every pair of distinct actions whose rewards
    differ by more than ``min_gap`` (at least by something)."""
    pairs = []
    for rows in states(ds).values():
        teach = [r for r in rows if r["kind"] == "teacher"]
        for i, a in enumerate(teach):
            for b in teach[i + 1 :]:
                if (
                    a["action"] == b["action"]
                    or abs(a["reward"] - b["reward"]) <= min_gap
                    or a["reward"] == b["reward"]
                ):
                    continue
                pairs.append((a, b) if a["reward"] > b["reward"] else (b, a))
    return pairs
