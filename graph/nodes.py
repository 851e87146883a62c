"""The episode's nodes and routers. A node converts graph state to the arguments of one phase of the episode
(:class:`sttrl.env.episode.Episode`: start, decide, train, evaluate, reward, append, finish), calls it, and converts
its typed result back to a partial state; it also reports progress through LangGraph's stream writer as
``{"type": ...}`` dicts (custom stream mode). Routers return a ``Literal`` and raise on anything unexpected.

``configure → setup → observe → decide → train → evaluate → reward → observe …``; ``observe`` routes to ``judge``
when the budget is spent, ``decide`` routes to ``judge`` on ``stop``. Every node is safe to re-run from its start
after a crash: training and evaluation are idempotent per block, trajectory appends are idempotent per step, and the
final save and the judge overwrite their files atomically. ``configure`` records the thread's resolved config before
``setup`` builds anything, so a thread cut off in setup resumes with it.

Names: ``runtime`` is LangGraph's ``Runtime[EpisodeContext]``; sttrl's ``EpisodeRuntime`` of the thread is ``rt``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime, get_runtime

from graph import cancel, inputs, live
from graph.agents import DEFAULT_MODEL
from graph.plot import write_plot
from graph.state import EpisodeContext, EpisodeState
from sttrl.config import Config, config_from_dict, load_config
from sttrl.control.registry import episode_config, make_controller
from sttrl.env import episode
from sttrl.env.actions import REGISTRY, Action
from sttrl.env.decision import Controller
from sttrl.errors import CheckpointError
from sttrl.eval.result import EvalResult
from sttrl.judge.integrity import expected_from_state
from sttrl.outward.publish import publish_run, summary_line
from sttrl.rundir import PLOT, RUN_RECORD, new_run_id
from sttrl.train.blocks import BlockResult, StepInfo
from sttrl.train.memory import release_memory
from tools import evaluate as evaluate_tool
from tools import train_block as train_block_tool

JUDGE_SUMMARY_KEYS = (
    "run_id",
    "hidden_domain",
    "scored",
    "wer",
    "cer",
    "score",
    "n_utterances",
    "passed_all_checks",
    "checks",
)


# ----- state <-> episode -----------------------------------------------------------------------
def _ctx(runtime: Runtime[EpisodeContext] | None) -> EpisodeContext:
    ctx = getattr(runtime, "context", None)
    if isinstance(ctx, EpisodeContext):
        return ctx
    if isinstance(ctx, dict):  # Studio / the API server may hand the context over as a plain dict
        return EpisodeContext(**{k: v for k, v in ctx.items() if k in ("agent", "progress")})
    return EpisodeContext()


def _cfg(state: EpisodeState) -> Config:
    return config_from_dict(state["config"])


def _episode(state: EpisodeState, runtime: Runtime[EpisodeContext] | None) -> episode.Episode:
    """The thread's episode over its live runtime (rebuilt from the run directory after a restart)."""
    _guard(state)
    rt = live.episode_runtime(state["thread_id"], state["config"], state["run_dir"], progress=_ctx(runtime).progress)
    return episode.Episode(rt, episode.Progress.from_state(state) if state.get("step") is not None else None)


def _emit(event: dict[str, Any]) -> None:
    get_stream_writer()(event)


def resolve_config(state: EpisodeState) -> Config:
    """The episode's config from the input: a resolved ``config`` dict, else preset + file + overrides. On the server,
    a config file comes only from its config directory and every path must lie inside its roots (graph.inputs)."""
    if inputs.on_server():
        return inputs.resolve_input(state)
    if state.get("config"):
        return config_from_dict(state["config"])
    return load_config(
        state.get("preset") or "cpu", state.get("config_file") or None, list(state.get("overrides") or [])
    )


def _guard(state: EpisodeState) -> None:
    """On the server, refuse a state whose paths leave its roots (a state written through ``update_state``)."""
    if inputs.on_server():
        inputs.check_state(state)


def _controller(state: EpisodeState, cfg: Config, runtime: Runtime[EpisodeContext] | None) -> Controller:
    injected = _ctx(runtime).agent
    if injected is not None:
        return injected
    _guard(state)
    return live.controller(state["thread_id"], state.get("agent") or "rule", cfg, state.get("model") or None)


def _plot(state: EpisodeState, records: list[dict[str, Any]]) -> None:
    try:
        write_plot(Path(state["run_dir"]) / PLOT, records, start=state.get("start"))
    except Exception as exc:  # noqa: BLE001 - a plot must never end an episode
        _emit({"type": "warning", "message": f"plot not written: {type(exc).__name__}: {exc}"})


# ----- nodes -----------------------------------------------------------------------------------
def _has_progress(state: EpisodeState) -> bool:
    return bool(state.get("run_id")) and state.get("step") is not None


def configure(state: EpisodeState, config: RunnableConfig, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Resolve and record the thread's config, agent, model and run directory before any data or model is built (a
    thread whose setup is cut off resumes with them), and check the agent (its API key) first. An input sent again on
    a thread with progress keeps the config the run started with."""
    thread_id = (config.get("configurable") or {}).get("thread_id") or state.get("thread_id") or new_run_id()
    if _has_progress(state):
        _guard(state)
        record = Path(state["run_dir"]) / RUN_RECORD  # the config the run started with wins over a new input's
        return {"config": json.loads(record.read_text())["config"]} if record.is_file() else {}
    agent = state.get("agent") or "rule"
    cfg = episode_config(resolve_config(state), agent, state.get("instance"))
    model = state.get("model") or (DEFAULT_MODEL if agent == "llm" else "")
    run_dir = str(state.get("run_dir") or Path(cfg.run.out_dir) / thread_id)
    chosen: EpisodeState = {"thread_id": thread_id, "config": cfg.to_dict(), "agent": agent, "model": model}
    _controller({**chosen, "run_dir": run_dir}, cfg, runtime)  # checks the key (and, on the server, the paths)
    return {**chosen, "run_dir": run_dir}


def setup(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Build or restore the runtime and run the episode's start phase (the starting WER of block 0 and the loss on
    the next batch)."""
    thread_id, run_dir = state["thread_id"], state["run_dir"]
    if _has_progress(state):  # input sent again on a thread with progress
        done = {"step": state["step"], "finished": bool(state.get("judge"))}
        _emit({"type": "setup", "phase": "resumed", "thread_id": thread_id, "run_dir": run_dir, **done})
        return {"decision": None, "train": None, "eval": None}
    cfg = _cfg(state)
    _emit({"type": "setup", "phase": "start", "thread_id": thread_id, "run_dir": run_dir, "preset": cfg.preset})
    t0 = time.perf_counter()
    ep = _episode(state, runtime)
    if ep.rt.block != 0 or ep.rt.completed_blocks() != [0]:
        raise CheckpointError(
            f"run directory {run_dir} already holds trained blocks {ep.rt.completed_blocks()}: "
            "resume its own thread or choose a new run directory"
        )
    evaluate_tool.invoke({"block": 0, "episode": ep})  # through the tool, so traces show the first evaluation
    started = ep.start()
    _emit(
        {
            "type": "setup",
            "phase": "done",
            "thread_id": thread_id,
            "run_dir": run_dir,
            "run_id": ep.rt.run_id,
            **started.start,
            "seconds": time.perf_counter() - t0,
            "device": ep.rt.device.type,
            "max_actions": ep.cfg.env.max_actions,
        }
    )
    return {
        "run_id": ep.rt.run_id,
        "config": ep.cfg.to_dict(),
        **started.progress.to_state(),
        "start": started.start,
        "decision": None,
        "train": None,
        "eval": None,
        "records": [],
        "checkpoints": [ep.rt.checkpoint_info(0)],
        "final": None,
        "judge": None,
        "end_reason": None,
    }


def observe(state: EpisodeState) -> dict[str, Any]:
    """Hand the latest observation (with the remaining budget) to the decision; clear the last step's results."""
    step, max_actions = state["step"], state["max_actions"]
    obs = {**state["observation"], "step": step, "steps_left": max_actions - step}
    _emit(
        {
            "type": "observation",
            "step": step,
            "steps_left": max_actions - step,
            "wer": obs["wer"],
            "train_loss": obs["train_loss"],
            "status": obs["status"],
        }
    )
    return {"observation": obs, "decision": None, "train": None, "eval": None}


def decide(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """The decide phase: the controller's ``Decided`` applied to the hyperparameters (pure). A failing or
    out-of-menu controller is replaced by the rule policy for this step; the episode goes on."""
    cfg = _cfg(state)
    pending = episode.decide(
        _controller(state, cfg, runtime),
        episode.Progress.from_state(state),
        list(state["records"]),
        cfg,
        fallback=make_controller("rule", cfg),
    )
    _emit(
        {
            "type": "decision",
            "step": pending.step,
            "action": pending.action,
            "source": pending.source,
            "rationale": pending.rationale,
            "note": pending.note,
            "clamped": pending.clamped,
        }
    )
    return {"decision": pending.to_dict(), "hp": pending.hp_after}


def train(state: EpisodeState) -> dict[str, Any]:
    """The train phase, through the ``train_block`` tool, streaming each optimizer step."""
    runtime = get_runtime(EpisodeContext)
    step = episode.Pending.from_dict(state["decision"])
    ep = _episode(state, runtime)
    writer = get_stream_writer()
    writer(
        {
            "type": "train_start",
            "block": step.step,
            "steps": ep.rt.steps_for(step.hp),
            "hp": step.hp_after,
            "global_step": ep.rt.trainer.state.global_step,
        }
    )

    def on_step(info: StepInfo) -> None:
        writer({"type": "train_step", "block": step.step, **asdict(info)})
        cancel.check(f"block {step.step} step {info.step_in_block}")

    try:
        out = train_block_tool.invoke({"step": step, "episode": ep, "on_step": on_step})
    except cancel.TrainingCancelled:
        # The in-memory model is part-way through the block: forget it, so the next run of this thread
        # rebuilds from the block's start (or its last intra-block checkpoint, env.checkpoint_every) on disk.
        live.drop_episode_runtime(state["thread_id"])
        release_memory(collect=True)
        raise
    res = out["result"]
    writer(
        {
            "type": "train_end",
            "block": step.step,
            **{k: res[k] for k in ("status", "mean_loss", "steps", "seconds", "samples_per_s", "global_step", "note")},
        }
    )
    kept = set(ep.rt.completed_blocks())  # env.keep_checkpoints deleted the others: the state lists what exists
    checkpoints = [c for c in state.get("checkpoints", []) if c["block"] != step.step and c["block"] in kept]
    return {"train": res, "checkpoints": [*checkpoints, out["checkpoint"]]}


async def atrain(state: EpisodeState) -> dict[str, Any]:
    """``train`` on the async path (the LangGraph server, Studio): cancellable mid-block (:mod:`graph.cancel`)."""
    return await cancel.run_cancellable(train, state)


def evaluate(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """The evaluate phase: validation WER/CER after the pending block, through the ``evaluate`` tool."""
    block = state["decision"]["step"]
    _emit({"type": "eval_start", "block": block})
    ev = evaluate_tool.invoke({"block": block, "episode": _episode(state, runtime)})
    _emit({"type": "eval", "block": block, "wer": ev["wer"], "cer": ev["cer"], "n": ev["n"], "seconds": ev["seconds"]})
    return {"eval": ev}


def reward(state: EpisodeState) -> dict[str, Any]:
    """The reward and append phases: the new observation and the step's record, appended once (also after a re-run)."""
    _guard(state)
    rewarded = episode.conclude(
        episode.Progress.from_state(state),
        episode.Pending.from_dict(state["decision"]),
        BlockResult(**state["train"]),
        EvalResult(**state["eval"]),
        _cfg(state),
        state["run_id"],
    )
    episode.sync_trajectory(state["run_dir"], list(state["records"]))  # repair a cut file before appending
    records = [*state["records"], episode.append(state["run_dir"], rewarded.record)]
    _plot(state, records)
    p = rewarded.progress
    _emit(
        {
            "type": "reward",
            "step": rewarded.record.step,
            "reward": rewarded.record.reward,
            "wer": p.previous_wer,
            "best_wer": p.best_wer,
            "status": rewarded.record.status,
        }
    )
    return {**p.to_state(), "records": records}


def judge(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """The finish phase (the ``stop`` step's record, the final model), then sttrl's judge on the hidden split
    (``judge.json``); the state keeps the report's summary."""
    from sttrl.judge.scoring import judge as run_judge  # torch: loaded when an episode ends, not at graph import

    records = list(state["records"])
    episode.sync_trajectory(state["run_dir"], records)
    d = state.get("decision")
    stop = (
        episode.Pending.from_dict(d)
        if d and d["action"] == Action.STOP.value and d["step"] == state["step"] + 1
        else None
    )
    ep = _episode(state, runtime)
    _emit({"type": "judge_start", "step": state["step"], "end_reason": "stop" if stop else "budget"})
    finished = ep.finish(episode.Progress.from_state(state), stop)
    if finished.record is not None:
        records.append(finished.record.model_dump(mode="json", by_alias=True))
    run_dir = ep.rt.run_dir
    # The judge loads the saved model from disk: free the episode's model, optimizer and features first,
    # so the process never holds both (a re-run after a crash rebuilds the runtime and saves the same weights).
    del ep
    live.drop_episode_runtime(state["thread_id"])
    live.drop_controller(state["thread_id"])
    release_memory(collect=True)
    # the judge checks the run directory against what it cannot rewrite: this state's hashes and records
    expected = expected_from_state({**state, "final": finished.final, "records": records})
    report = run_judge(run_dir, progress=_ctx(runtime).progress, expected=expected, hf_token=live.hf_token())
    _plot(state, records)
    if line := summary_line(publish_run(run_dir)):  # sink + tracker: the artifacts, the outcome in run.json
        _emit({"type": "warning" if "pending" in line or "failed" in line else "outward", "message": line})
    _emit({"type": "judge", **{k: report[k] for k in ("wer", "cer", "score", "scored", "passed_all_checks")}})
    return {
        "step": finished.progress.step,
        "observation": finished.progress.observation,
        "records": records,
        "final": finished.final,
        "judge": {k: report.get(k) for k in JUDGE_SUMMARY_KEYS},
        "end_reason": finished.end_reason,
    }


# ----- routers ---------------------------------------------------------------------------------
def route_after_setup(state: EpisodeState) -> Literal["observe", "__end__"]:
    """A thread whose judge has run ends here (its input was sent again); any other goes on."""
    return "__end__" if state.get("judge") else "observe"


def route_after_observe(state: EpisodeState) -> Literal["decide", "judge"]:
    """Budget spent → judge; otherwise decide the next step."""
    step, max_actions = state.get("step"), state.get("max_actions")
    if not isinstance(step, int) or not isinstance(max_actions, int) or step < 0:
        raise ValueError(f"observe: invalid step {step!r} / max_actions {max_actions!r} in state")
    return "judge" if step >= max_actions else "decide"


def route_after_decide(state: EpisodeState) -> Literal["train", "judge"]:
    """``stop`` → judge; any other registered action → train."""
    action = (state.get("decision") or {}).get("action")
    if action in REGISTRY:
        return "train" if REGISTRY[action].trains else "judge"
    raise ValueError(f"decide: unexpected action {action!r} in state")
