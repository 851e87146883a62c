"""``hybrid``: an LLM inside successive halving, run as a trials controller.

The search is :mod:`bench.sha` (same trials, rungs, budget and continuation from block checkpoints); only the choice
after each rung changes hands. The method's default rule keeps the ``ceil(n / eta)`` trials with the lowest
validation WER, each at the same learning rate. Here a chat model sees the population's state (each member's
hyperparameters, validation WER at every rung so far, its rank; prompts ``prompts/hybrid_system.md`` and
``hybrid_step.md``) and answers with a ``PopulationChoice``: which members continue (the exploit choice) and, for
each, whether its lr for the next rung is lower, the same or higher by ``bench.hybrid_lr_factor`` (the explore
choice: the next setting of a member). The sample budget is the search's, whatever the LLM says.

The model is ``bench.hybrid_model``: ``local:smollm2-135m`` offline (JSON-schema-constrained decoding, so its
answer always parses) or any ``init_chat_model`` provider whose API key is in the environment. An answer that names
too few distinct members is completed from the default rule (``source: llm-partial``); no usable answer after
``agent.max_attempts`` leaves the default rule's choice (``fallback``). Each rung's choice is written to
``runs/<name>/choices/rung-I.json`` (read back on resume) with the default rule's choice beside it; the result
reports how often the LLM's choice differs from the rule (``differs_from_rule``).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from bench.budget import budget_of
from bench.progress import BenchProgress
from bench.sha import ShaController
from sttrl.config import Config
from sttrl.control.prompts import load_prompt
from sttrl.control.spec import ControllerSpec, register
from sttrl.io import atomic_write_json
from sttrl.train.blocks import Hyperparams

Move = Literal["lower", "same", "higher"]


def choice_schema(alive: list[int], size: int) -> type[BaseModel]:
    """The ``PopulationChoice`` answer for this rung: ``size`` members from ``alive`` with an lr move each."""
    member = create_model(
        "Member",
        trial=(Literal[tuple(alive)], Field(description="A trial number from the table.")),  # type: ignore[valid-type]
        lr=(Move, Field(description="The member's learning rate for the next rung: lower, same or higher.")),
    )
    return create_model(
        "PopulationChoice",
        __doc__="The members that continue to the next rung and their learning-rate moves.",
        members=(list[member], Field(min_length=size, max_length=size)),  # type: ignore[valid-type]
        rationale=(str, Field(description="One or two sentences that cite the numbers used.")),
    )


def population_table(ranked: list[int], records: list[dict[str, Any]], hps: list[Hyperparams]) -> str:
    """One line per member of the last rung, best first: trial, rank, lr, batch, frozen, WER per rung."""
    lines = ["trial | rank | lr | batch | frozen | validation WER per rung"]
    for rank, t in enumerate(ranked, 1):
        hp = hps[t]
        curve = " -> ".join(f"{r['val_wer']:.3f}" for r in sorted(records, key=lambda r: r["rung"]) if r["trial"] == t)
        lines.append(f"{t} | {rank} | {hp.lr:.3g} | {hp.batch_size} | {hp.freeze_layers} | {curve}")
    return "\n".join(lines)


def population_messages(cfg: Config, facts: dict[str, Any]) -> list[Any]:
    """The system and step messages from the prompt files (``facts``: the step prompt's fields)."""
    from langchain_core.messages import HumanMessage, SystemMessage  # the graph extra: only when a rung is decided

    t = cfg.train
    system = load_prompt("hybrid_system").format(lr_factor=cfg.bench.hybrid_lr_factor, lr_min=t.lr_min, lr_max=t.lr_max)
    return [SystemMessage(system), HumanMessage(load_prompt("hybrid_step").format(**facts))]


def reconcile(parsed: Any, ranked: list[int], size: int) -> tuple[list[int], dict[int, str], str]:
    """The members that continue, their lr moves and the source: the LLM's distinct valid members in its order,
    completed from the default rule when it named too few."""
    chosen: list[int] = []
    moves: dict[int, str] = {}
    for m in getattr(parsed, "members", None) or []:
        if m.trial in ranked and m.trial not in chosen and len(chosen) < size:
            chosen.append(int(m.trial))
            moves[int(m.trial)] = m.lr
    source = "llm" if len(chosen) == size else "llm-partial" if chosen else "fallback"
    for t in ranked:
        if len(chosen) == size:
            break
        if t not in chosen:
            chosen.append(t)
            moves[t] = "same"
    return chosen, moves, source


class HybridController(ShaController):
    """Successive halving whose rung choices an LLM makes; see the module docstring."""

    name = "hybrid"

    def __init__(self, cfg: Config, chat_model: Any = None) -> None:
        self.cfg, self.chat_model = cfg, chat_model
        self.model = cfg.bench.hybrid_model if chat_model is None else f"injected {type(chat_model).__name__}"

    def chat(self) -> Any:
        """The chat model: injected (tests), else ``bench.hybrid_model`` built once (its key resolved here)."""
        if self.chat_model is None:
            from graph import live  # the LLM stack and the key: only when a rung is decided
            from graph.agents import api_key_name, build_chat_model

            model = self.cfg.bench.hybrid_model
            key = live.resolve_once(f"api_key:{model}", api_key_name(model))
            self.chat_model = build_chat_model(model, key, self.cfg)
        return self.chat_model

    def ask(self, messages: list[Any], schema: type[BaseModel]) -> tuple[Any, list[str]]:
        """The parsed answer (or None) and the errors on the way; never raises."""
        errors: list[str] = []
        for _ in range(self.cfg.agent.max_attempts):
            try:
                out = self.chat().with_structured_output(schema, include_raw=True).invoke(messages)
            except Exception as exc:  # noqa: BLE001 - a failing LLM leaves the default rule's choice, never the run
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            if isinstance(out.get("parsed"), schema):
                return out["parsed"], errors
            errors.append(f"unusable answer: {str(out.get('parsing_error') or out.get('raw'))[:200]}")
        return None, errors

    def promote(
        self,
        cfg: Config,
        run_dir: Path,
        rung: int,
        ranked: list[int],
        sizes: list[int],
        records: list[dict[str, Any]],
        hps: list[Hyperparams],
        progress: BenchProgress,
    ) -> list[int]:
        path = run_dir / "choices" / f"rung-{rung}.json"
        if path.is_file():
            choice = json.loads(path.read_text())
        else:
            choice = self.decide(cfg, rung, ranked, sizes, records, hps)
            atomic_write_json(path, choice)
            progress.line(
                f"  {run_dir.name} rung {rung}: {choice['source']} keeps {choice['chosen']} (rule "
                f"{choice['default']}), lr moves {choice['moves']}"
            )
        t = cfg.train
        for trial, move in choice["moves"].items():
            factor = {"lower": 1 / cfg.bench.hybrid_lr_factor, "same": 1.0, "higher": cfg.bench.hybrid_lr_factor}[move]
            hp = hps[int(trial)]
            hps[int(trial)] = replace(hp, lr=min(max(hp.lr * factor, t.lr_min), t.lr_max))
        return [int(x) for x in choice["chosen"]]

    def decide(
        self,
        cfg: Config,
        rung: int,
        ranked: list[int],
        sizes: list[int],
        records: list[dict[str, Any]],
        hps: list[Hyperparams],
    ) -> dict[str, Any]:
        """Ask the LLM for this rung's choice and compare it with the default rule's."""
        b = budget_of(cfg)
        spent = sum(r["spent"] for r in records)
        size = sizes[rung + 1]
        facts = {
            "rung": rung + 1,
            "rungs": len(sizes),
            "alive": len(ranked),
            "keep": size,
            "next_rung": rung + 2,
            "left": b.total - spent,
            "total": b.total,
            "unit": b.unit,
            "table": population_table(ranked, [r for r in records if r["trial"] in ranked], hps),
            "default": ", ".join(map(str, ranked[:size])),
        }
        t0 = time.perf_counter()
        parsed, errors = self.ask(population_messages(cfg, facts), choice_schema(ranked, size))
        chosen, moves, source = reconcile(parsed, ranked, size)
        default = ranked[:size]
        return {
            "rung": rung,
            "ranked": ranked,
            "default": default,
            "chosen": chosen,
            "moves": {str(k): v for k, v in moves.items()},
            "source": source,
            "rationale": getattr(parsed, "rationale", "") if parsed is not None else "",
            "errors": errors,
            "differs_promote": sorted(chosen) != sorted(default),
            "differs_explore": any(v != "same" for v in moves.values()),
            "seconds": time.perf_counter() - t0,
        }

    def extra_result(self, run_dir: Path) -> dict[str, Any]:
        choices = [json.loads(p.read_text()) for p in sorted((run_dir / "choices").glob("rung-*.json"))]
        differs = sum(1 for c in choices if c["differs_promote"] or c["differs_explore"])
        return {
            "model": self.model,
            "choices": choices,
            "llm_choices": len(choices),
            "differs_from_rule": differs,
            "differs_share": differs / len(choices) if choices else None,
            "choice_sources": {
                s: sum(1 for c in choices if c["source"] == s) for s in ("llm", "llm-partial", "fallback")
            },
        }


def _hybrid(cfg: Config, chat_model: Any = None, **_: Any) -> HybridController:
    return HybridController(cfg, chat_model)


register(
    ControllerSpec(
        "hybrid",
        "trials",
        _hybrid,
        "successive halving whose rung choices (which trials continue, their next lr) an LLM makes "
        "(bench.hybrid_model; local:smollm2-135m offline)",
        packages=("langchain_core",),
        extra="graph",
        color="#8c564b",
    )
)
