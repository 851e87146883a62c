"""Running one benchmark episode: the real LangGraph episode (``graph.run.stream_episode``), checkpointed
under thread id ``bench-<controller>-s<seed>[-r<replicate>]``, resumed where it stopped, skipped when finished.
With ``env.instances`` the seed is a test instance's: its starting conditions are drawn into the config
(:func:`bench.common.run_config`) before the thread starts; the replicate sets the data-order seed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import WallClock, run_config
from bench.progress import BenchProgress
from bench.replicates import Slot
from bench.results import episode_result, result_line
from graph import live
from graph.run import episode_input, stream_episode, thread_status
from sttrl.config import Config
from sttrl.errors import SttrlError
from sttrl.train.memory import release_memory

AgentFactory = Callable[[str, Config], Any]


def run_episode(
    compiled: Any,
    cfg: Config,
    out: Path,
    controller: str,
    slot: Slot,
    model: str | None,
    agent_factory: AgentFactory | None,
    progress: BenchProgress,
) -> dict[str, Any]:
    """Run, resume or read back the episode of ``controller`` in ``slot``; returns its result dict."""
    seed, tid = slot.seed, slot.name(controller)
    unit = cfg.env.budget_unit
    cfg = run_config(cfg, seed, out, controller, slot.replicate)  # the instance and the data-order seed
    clock = WallClock(out / "wall" / f"{tid}.json")
    snap = compiled.get_state({"configurable": {"thread_id": tid}})
    values = snap.values or {}
    status = thread_status(values, snap.next)
    steps = cfg.env.max_actions * cfg.env.steps_per_action
    if status == "finished":
        progress.start_run(tid, steps, cfg.env.steps_per_action, "finished earlier: skipped")
        res = episode_result(controller, seed, values, clock.seconds, unit)
        progress.end_run(result_line(res))
        return {**res, "resumed": "skipped (finished earlier)"}
    if status == "new":
        inp = episode_input(cfg, controller, model if controller in ("llm", "learned") else None, out / "runs" / tid)
        note = "new episode"
    elif status == "ended":
        raise SttrlError(f"thread {tid} ended without a judge result; remove it from {out} to rerun it")
    else:
        inp, note = None, f"resumes at {', '.join(snap.next)} after step {values.get('step', 0)}"
    progress.start_run(tid, steps, cfg.env.steps_per_action, note)
    agent = agent_factory(controller, cfg) if agent_factory else None
    clock.start()
    try:
        values = stream_episode(
            compiled,
            tid,
            inp,
            cfg.env.max_actions,
            agent=agent,
            on_event=lambda ev: (clock.tick(), progress.episode_event(ev)),
            on_update=lambda _u: clock.tick(force=True),
        )
    finally:
        clock.tick(force=True)
        live.drop_episode_runtime(tid)
        live.drop_controller(tid)
        release_memory(collect=True)
    if not values.get("judge"):
        raise SttrlError(f"thread {tid} ended without a judge result")
    res = episode_result(controller, seed, values, clock.seconds, unit)
    progress.end_run(result_line(res))
    return {**res, "resumed": note}
