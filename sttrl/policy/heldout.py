"""The held-out check of a learned controller, run by ``python -m sttrl.learn`` before any episode: teacher states it
did not train on, the action it chooses at each (by scoring, as it decides episodes), its accuracy and its action
distribution, against the majority-class baseline.

The held-out states are whole train instances of the teacher data (``policy.holdout_fraction`` of them, drawn with
``policy.seed``); with one instance, every ``1 / holdout_fraction``-th state of it (states of one run are correlated:
the printout says so). A choice is right when it is one of the state's best actions (the teacher's choice and every
action tied with it, ``policy.tie_tolerance``). The majority class is the action that is best at the most *training*
states; its accuracy is scored on the held-out states the same way.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sttrl.config import Config
from sttrl.policy.data import states
from sttrl.train.exclusive import exclusive


@dataclass
class Split:
    """The rows to train on and the held-out teacher states (each a list of its rows), and how they were chosen."""

    train: Any
    heldout: list[list[dict[str, Any]]]
    how: str


def split(ds: Any, cfg: Config) -> Split:
    """Hold out teacher states (see the module docstring); all rows train when the fraction is 0 or nothing fits."""
    frac = cfg.policy.holdout_fraction
    teacher = {k: rows for k, rows in states(ds).items() if rows[0]["kind"] == "teacher"}
    if frac <= 0 or len(teacher) < 2:
        return Split(ds, [], "no held-out check (policy.holdout_fraction=0 or fewer than two teacher states)")
    instances = sorted({rows[0]["instance"] for rows in teacher.values()}, key=str)
    if len(instances) >= 2:
        k = min(len(instances) - 1, max(1, round(frac * len(instances))))
        out = set(random.Random(cfg.policy.seed).sample(instances, k))
        held = [key for key, rows in teacher.items() if rows[0]["instance"] in out]
        how = f"train instances {', '.join(map(str, sorted(out, key=str)))} held out"
    else:
        every = max(2, math.ceil(1 / frac))
        held = list(teacher)[every - 1 :: every]
        how = f"every {every}th state of the one train instance held out (states of one run are correlated)"
    out_states = set(held)
    train = ds.select([i for i, state in enumerate(ds["state"]) if state not in out_states]) if held else ds
    return Split(train, [teacher[k] for k in held], how)


def best_actions(rows: list[dict[str, Any]]) -> set[str]:
    return {r["action"] for r in rows if r["best"]}


def majority(train: Any) -> str | None:
    """The action that is best at the most training teacher states (the first in order of appearance on ties)."""
    counts: Counter[str] = Counter()
    for rows in states(train).values():
        if rows[0]["kind"] == "teacher":
            counts.update(best_actions(rows))
    return counts.most_common(1)[0][0] if counts else None


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def evaluate(learner: Any, heldout: list[list[dict[str, Any]]], baseline: str | None) -> dict[str, Any]:
    """The learner's choice at every held-out state: accuracy, predicted and best-action counts, the majority
    class's accuracy, the mean decision latency (seconds to score every enabled action)."""
    from sttrl.policy.scoring import choose  # torch: the learner's model is already loaded

    predicted: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    right, seconds = 0, []
    for rows in heldout:
        prompt = learner.prompt_ids(rows[0]["prompt"])
        choice = choose(learner.loaded, prompt, learner.cfg.env.actions, json.loads(rows[0]["decision"])["rationale"])
        best = best_actions(rows)
        predicted[choice.action] += 1
        labels.update(best)
        right += choice.action in best
        seconds.append(choice.seconds)
    n = len(heldout)
    return {
        "states": n,
        "accuracy": right / n if n else None,
        "predicted": dict(predicted.most_common()),
        "best_actions": dict(labels.most_common()),
        "majority": {
            "action": baseline,
            "accuracy": sum(baseline in best_actions(r) for r in heldout) / n if n and baseline else None,
        },
        "latency_s": statistics.fmean(seconds) if seconds else None,
    }


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{a} {k}" for a, k in c.items()) or "-"


def check(learner: Any, held: Split, train: Any, when: str, on_line: Callable[[str], Any]) -> dict[str, Any] | None:
    """Evaluate on the held-out states and print the lines of the check (None when nothing is held out)."""
    if not held.heldout:
        on_line(f"held-out check: {held.how}")  # said once: the check after training is not run
        return None
    res = evaluate(learner, held.heldout, majority(train))
    m = res["majority"]
    base = f"{m['action']} {m['accuracy']:.3f}" if m["accuracy"] is not None else "- (no training teacher state)"
    on_line(
        f"held-out teacher states ({when}): {res['states']} not trained on ({held.how}); accuracy "
        f"{res['accuracy']:.3f} (a tie counts any best action) vs majority class {base}; "
        f"decision latency {res['latency_s']:.3f} s"
    )
    on_line(f"  predicted: {_counts(res['predicted'])}; best actions: {_counts(res['best_actions'])}")
    return res
