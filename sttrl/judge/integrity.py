"""What the judge trusts besides the signed run record (:mod:`sttrl.keys`): final-file hashes, the graph state's
record of the episode, and rewards recomputed from the trajectory.

- :func:`expected_from_state`: the hashes and step records the LangGraph state holds; the judge
  compares the run directory with them (``judge(..., expected=...)``).
- :func:`check_trajectory`: every step's reward recomputed from the recorded WERs and statuses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sttrl.config import DataConfig, RewardConfig
from sttrl.data.dataset import data_fingerprint
from sttrl.data.hidden import ACCESS_LOG, accesses
from sttrl.env.reward import reward
from sttrl.keys import sttrl_home

REWARD_TOLERANCE = 1e-9


def expected_from_state(values: Mapping[str, Any]) -> dict[str, Any]:
    """What the judge compares the run directory with, from a LangGraph episode state's values."""
    final = values.get("final") or {}
    return {
        "final_sha256": final.get("sha256"),
        "final_files": final.get("files"),
        "checkpoints": [{"block": c["block"], "sha256": c["sha256"]} for c in values.get("checkpoints") or []],
        "records": list(values.get("records") or []),
    }


# ----- trajectories --------------------------------------------------------------------------------
def _close(a: Any, b: Any) -> bool:
    return (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and math.isclose(a, b, rel_tol=0, abs_tol=REWARD_TOLERANCE)
    )


def check_trajectory(
    records: Sequence[Mapping[str, Any]],
    start_wer: float,
    reward_cfg: RewardConfig,
    evals: Mapping[int, float] | None = None,
    expected_records: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[bool, str]:
    """Recompute every step's reward from the recorded WERs and statuses (sttrl.env.reward) and compare it with the
    record, the evaluation file of its block (``evals``: block -> WER) and the graph state's records."""
    steps = [r.get("step") for r in records]
    if steps != list(range(1, len(records) + 1)):
        return False, f"steps are {steps}, expected 1..{len(records)} once each"
    previous = start_wer
    for r in records:
        step = r["step"]
        if r.get("action") == "stop":
            if r.get("reward") != 0.0:
                return False, f"step {step} (stop) has reward {r.get('reward')}, expected 0.0"
            continue
        ev = r.get("eval") or {}
        wer, status = ev.get("wer"), r.get("status")
        if not isinstance(wer, (int, float)):
            return False, f"step {step} holds no evaluated WER"
        if evals is not None and step in evals and not _close(evals[step], wer):
            return False, f"step {step}: WER {wer} differs from its evaluation file ({evals[step]})"
        try:
            want = reward(previous, wer, str(status), reward_cfg)
        except ValueError as exc:
            return False, f"step {step}: {exc}"
        if not _close(want, r.get("reward")):
            return False, f"step {step}: reward {r.get('reward')} but its WERs and status {status!r} give {want:.6f}"
        previous = wer
    if expected_records is not None:
        keys = ("step", "action", "status", "reward")
        mine = [tuple(r.get(k) for k in keys) for r in records]
        theirs = [tuple(r.get(k) for k in keys) for r in expected_records]
        if mine != theirs:
            padded = zip(mine + [None] * len(theirs), theirs + [None] * len(mine), strict=True)
            diff = next((a, b) for a, b in padded if a != b)
            return False, f"trajectory differs from the graph state's records: {diff[0]} vs {diff[1]}"
    return True, f"{len(records)} steps; every reward recomputes from its WERs and status"


def check_step_count(records: Sequence[Mapping[str, Any]], final: Mapping[str, Any] | None) -> tuple[bool, str]:
    """The trajectory against the signed record's final model: block ``n`` is trained at step ``n``, so the steps
    that trained must run up to the final block, and only a ``stop`` may follow it (as step final block + 1)."""
    if not final:
        return True, "no final model to count against"
    block = int(final.get("block", 0))
    trained = [r.get("step") for r in records if r.get("action") != "stop"]
    stops = [r.get("step") for r in records if r.get("action") == "stop"]
    if len(trained) != block or (trained and trained[-1] != block):
        return False, (
            f"the signed run record's final model is after block {block}, but trajectory.jsonl holds "
            f"{len(trained)} training steps (a step is missing or was added)"
        )
    if stops and stops != [block + 1]:
        return False, f"a stop is recorded as step {stops}, expected only step {block + 1} after block {block}"
    return True, f"{len(records)} steps, the last trained block is the signed final block {block}"


# ----- the hidden split ------------------------------------------------------------------------------
def hidden_access_check(record: Mapping[str, Any], cfg: DataConfig) -> dict[str, Any]:
    """The judge's ``hidden_split_untouched`` check for a run record."""
    opened = list(record.get("opened_splits", []))
    if "test" in opened or cfg.hidden_domain in opened or "hidden" in opened:
        return {"passed": False, "reason": f"the episode opened {opened}"}
    start = float(record.get("created") or 0.0)
    end = float((record.get("final") or {}).get("saved") or time.time())
    fingerprint = data_fingerprint(cfg)
    outside = [
        a
        for a in accesses()
        if not a.get("judge")
        and a.get("yields", "text") != "hashes"  # the manifest's listing: ids and hashes, no text
        and a.get("data_fingerprint") == fingerprint
        and start <= float(a.get("time", 0)) <= end
    ]
    if outside:
        first = outside[0]
        return {
            "passed": False,
            "reason": (
                f"{len(outside)} access(es) to the hidden split outside the judge while the run was live, first: "
                f"{first['what']} by pid {first['pid']} ({' '.join(first.get('argv') or [])}) "
                f"at {time.ctime(first['time'])}"
            ),
        }
    return {
        "passed": True,
        "reason": f"the episode opened only {opened}; no other access to the hidden split "
        f"was logged while the run was live ({sttrl_home() / ACCESS_LOG})",
    }
