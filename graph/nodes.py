"""The episode's nodes and routers. Each node is a thin call into ``sttrl.episode`` (the one step
implementation the Gymnasium env shares) and returns a partial state; each router returns a
``Literal`` and raises on anything unexpected.

``setup → observe → decide → train → evaluate → reward → observe …``; ``observe`` routes to ``judge``
when the budget is spent, ``decide`` routes to ``judge`` on ``stop``. Every node is safe to re-run
from its start after a crash: training and evaluation are idempotent per block (sttrl), trajectory
appends are idempotent per step, and the final save and the judge overwrite their files atomically.
Progress goes out through LangGraph's stream writer as ``{"type": ...}`` dicts (custom stream mode).

Names: ``runtime`` is LangGraph's ``Runtime[EpisodeContext]`` (injected by that name); sttrl's
``EpisodeRuntime`` of the thread is ``ep``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextvars import ContextVar
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import run_in_executor
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from graph import live
from graph.agents import DEFAULT_MODEL
from graph.state import EpisodeContext, EpisodeState
from sttrl import controllers as controller_registry
from sttrl import episode
from sttrl.actions import REGISTRY, Action
from sttrl.config import Config, config_from_dict, load_config
from sttrl.controllers import Controller
from sttrl.errors import CheckpointError, ConfigError
from sttrl.memory import release_memory
from tools import evaluate as evaluate_tool
from tools import train_block as train_block_tool

if TYPE_CHECKING:  # torch loads with the first runtime, not when Studio imports the graph
    from sttrl.runtime import EpisodeRuntime
    from sttrl.trainer import StepInfo

JUDGE_SUMMARY_KEYS = ("run_id", "hidden_domain", "scored", "wer", "cer", "score", "n_utterances", "passed_all_checks",
                      "checks")


# ----- helpers ---------------------------------------------------------------------------------
def _ctx(runtime: Runtime[EpisodeContext] | None) -> EpisodeContext:
    ctx = getattr(runtime, "context", None)
    if isinstance(ctx, EpisodeContext):
        return ctx
    if isinstance(ctx, dict):  # Studio / the API server may hand the context over as a plain dict
        return EpisodeContext(**{k: v for k, v in ctx.items() if k in ("agent", "progress")})
    return EpisodeContext()


def _cfg(state: EpisodeState) -> Config:
    return config_from_dict(state["config"])


def _ep(state: EpisodeState, runtime: Runtime[EpisodeContext] | None) -> EpisodeRuntime:
    return live.episode_runtime(state["thread_id"], state["config"], state["run_dir"], progress=_ctx(runtime).progress)


def _emit(event: dict[str, Any]) -> None:
    get_stream_writer()(event)


def resolve_config(state: EpisodeState) -> Config:
    """The episode's config from the input: a resolved ``config`` dict, else preset + file + overrides."""
    if state.get("config"):
        return config_from_dict(state["config"])
    return load_config(state.get("preset") or "cpu", state.get("config_file") or None, list(state.get("overrides") or []))


def _controller(state: EpisodeState, cfg: Config, runtime: Runtime[EpisodeContext] | None) -> Controller:
    injected = _ctx(runtime).agent
    if injected is not None:
        return injected
    return live.controller(state["thread_id"], state.get("agent") or "rule", cfg, state.get("model") or None)


def _plot(state: EpisodeState, records: list[dict[str, Any]]) -> None:
    from graph.plot import write_plot

    try:
        write_plot(Path(state["run_dir"]) / "plot.png", records, start=state.get("start"))
    except Exception as exc:  # noqa: BLE001 - a plot must never end an episode
        _emit({"type": "warning", "message": f"plot not written: {type(exc).__name__}: {exc}"})


def _outward(run_dir: Path) -> None:
    from sttrl.publish import publish_run, summary_line

    line = summary_line(publish_run(run_dir))
    if line:
        _emit({"type": "warning" if "pending" in line or "failed" in line else "outward", "message": line})


# ----- nodes -----------------------------------------------------------------------------------
def setup(state: EpisodeState, config: RunnableConfig, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Resolve the config, check the agent (API key) before any training, build or restore the runtime,
    and measure the starting WER (block 0) and the loss on the next batch."""
    from sttrl.runtime import new_run_id

    thread_id = (config.get("configurable") or {}).get("thread_id") or state.get("thread_id") or new_run_id()
    if state.get("run_id") and state.get("step") is not None:  # input sent again on a thread with progress
        _emit({"type": "setup", "phase": "resumed", "thread_id": thread_id, "run_dir": state.get("run_dir"),
               "step": state["step"], "finished": bool(state.get("judge"))})
        import json

        from sttrl.runtime import RUN_RECORD

        record = Path(state["run_dir"]) / RUN_RECORD  # the config the run started with wins over a new input's
        kept = {"config": json.loads(record.read_text())["config"]} if record.is_file() else {}
        return {**kept, "decision": None, "train": None, "eval": None}
    cfg = resolve_config(state)
    if state.get("instance") is not None:  # draw the instance (env.instances) from its seed
        from sttrl.instances import apply as apply_instance

        if cfg.env.instances is None:
            raise ConfigError("input 'instance' needs env.instances in the config (the distribution to draw from)")
        cfg = apply_instance(cfg, int(state["instance"]))
    agent_name = state.get("agent") or "rule"
    spec = controller_registry.REGISTRY.get(agent_name) if agent_name in controller_registry.names() else None
    if spec is not None and spec.configure is not None:  # e.g. schedule: the trainer's lr schedule (idempotent)
        cfg = spec.configure(cfg)
    model = state.get("model") or (DEFAULT_MODEL if agent_name == "llm" else None)
    _controller({**state, "thread_id": thread_id, "agent": agent_name, "model": model or ""}, cfg, runtime)
    run_dir = str(state.get("run_dir") or Path(cfg.run.out_dir) / thread_id)
    _emit({"type": "setup", "phase": "start", "thread_id": thread_id, "run_dir": run_dir, "preset": cfg.preset})
    t0 = time.perf_counter()
    ep = live.episode_runtime(thread_id, cfg.to_dict(), run_dir, progress=_ctx(runtime).progress)
    if ep.block != 0 or ep.completed_blocks() != [0]:
        raise CheckpointError(
            f"run directory {run_dir} already holds trained blocks {ep.completed_blocks()}: resume its own thread "
            "or choose a new run directory"
        )
    cfg = ep.cfg  # an existing run directory keeps the config it started with
    evaluate_tool.invoke({"block": 0, "episode": ep})  # through the tool, so traces show the first evaluation
    progress, start, _ = episode.start(ep)
    _emit({"type": "setup", "phase": "done", "thread_id": thread_id, "run_dir": run_dir, "run_id": ep.run_id,
           "wer": start["wer"], "cer": start["cer"], "loss": start["loss"], "seconds": time.perf_counter() - t0,
           "device": ep.device.type, "max_actions": cfg.env.max_actions})
    return {
        "thread_id": thread_id, "run_id": ep.run_id, "run_dir": run_dir, "config": cfg.to_dict(),
        "agent": agent_name, "model": model or "", **progress.to_state(), "start": start,
        "decision": None, "train": None, "eval": None, "records": [], "checkpoints": [ep.checkpoint_info(0)],
        "final": None, "judge": None, "end_reason": None,
    }


def observe(state: EpisodeState) -> dict[str, Any]:
    """Hand the latest observation (with the remaining budget) to the decision; clear the last step's results."""
    step, max_actions = state["step"], state["max_actions"]
    obs = {**state["observation"], "step": step, "steps_left": max_actions - step}
    _emit({"type": "observation", "step": step, "steps_left": max_actions - step, "wer": obs["wer"],
           "train_loss": obs["train_loss"], "status": obs["status"]})
    return {"observation": obs, "decision": None, "train": None, "eval": None}


def decide(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Ask the controller for ``Decided(action, rationale)`` and apply it to the hyperparameters (pure).
    A failing or out-of-menu controller is replaced by the rule policy for this step; the episode goes on."""
    cfg = _cfg(state)
    pending = episode.decide(_controller(state, cfg, runtime), episode.Progress.from_state(state),
                             list(state["records"]), cfg)
    _emit({"type": "decision", "step": pending.step, "action": pending.action, "source": pending.source,
           "rationale": pending.rationale, "note": pending.note, "clamped": pending.clamped})
    return {"decision": pending.to_dict(), "hp": pending.hp_after}


class TrainingCancelled(Exception):
    """The run was cancelled (``runs.cancel``) while its block trained: raised at the next optimizer step."""


# Set by ``atrain`` (the server's path) for the worker thread that runs ``train``; None on the CLI's sync path.
_CANCEL: ContextVar[threading.Event | None] = ContextVar("sttrl_train_cancel", default=None)


def train(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Train the pending step's block through the ``train_block`` tool, streaming each optimizer step."""
    pending = episode.Pending.from_dict(state["decision"])
    block = pending.step
    ep = _ep(state, runtime)
    writer = get_stream_writer()
    writer({"type": "train_start", "block": block, "steps": ep.steps_for(pending.hp), "hp": pending.hp_after,
            "global_step": ep.trainer.state.global_step})
    cancel = _CANCEL.get()

    def on_step(info: StepInfo) -> None:
        writer({"type": "train_step", "block": block, **asdict(info)})
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(f"run cancelled at block {block} step {info.step_in_block}")

    try:
        out = train_block_tool.invoke({"block": block, **pending.hp_after, "episode": ep, "on_step": on_step})
    except TrainingCancelled:
        # The in-memory model is part-way through the block: forget it, so the next run of this thread
        # rebuilds from the block's start (or its last intra-block checkpoint, env.checkpoint_every) on disk.
        live.drop_episode_runtime(state["thread_id"])
        release_memory(collect=True)
        raise
    res = out["result"]
    writer({"type": "train_end", "block": block, "status": res["status"], "mean_loss": res["mean_loss"],
            "steps": res["steps"], "seconds": res["seconds"], "samples_per_s": res["samples_per_s"],
            "global_step": res["global_step"], "note": res["note"]})
    kept = set(ep.completed_blocks())  # env.keep_checkpoints deleted the others: the state lists what exists
    checkpoints = [c for c in state.get("checkpoints", []) if c["block"] != block and c["block"] in kept]
    checkpoints.append(out["checkpoint"])
    return {"train": res, "checkpoints": checkpoints}


async def atrain(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """``train`` on the async path (the LangGraph server, Studio): in a worker thread, as LangGraph runs any
    sync node, but a cancelled run (``runs.cancel``) also stops the block: the cancellation sets a flag that
    the next optimizer step reads, and the node waits for the worker to let go of the model before it
    re-raises. Without this, the cancelled run's block kept training inside the server."""
    stop = threading.Event()
    token = _CANCEL.set(stop)
    try:  # the task copies this context (with the flag) and run_in_executor copies it into the thread
        task = asyncio.ensure_future(run_in_executor(None, train, state, runtime))
    finally:
        _CANCEL.reset(token)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        try:
            await task
        except BaseException:  # TrainingCancelled, or whatever ended the block first
            pass
        raise


def evaluate(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Validation WER/CER of the model after the pending block, through the ``evaluate`` tool."""
    block = state["decision"]["step"]
    _emit({"type": "eval_start", "block": block})
    ev = evaluate_tool.invoke({"block": block, "episode": _ep(state, runtime)})
    _emit({"type": "eval", "block": block, "wer": ev["wer"], "cer": ev["cer"], "n": ev["n"], "seconds": ev["seconds"]})
    return {"eval": ev}


def reward(state: EpisodeState) -> dict[str, Any]:
    """Reward, new observation and the step's trajectory record (appended once, also after a re-run)."""
    record, progress = episode.conclude(episode.Progress.from_state(state), episode.Pending.from_dict(state["decision"]),
                                        state["train"], state["eval"], _cfg(state), state["run_id"])
    episode.sync_trajectory(state["run_dir"], list(state["records"]))  # repair a cut file before appending
    records = list(state["records"]) + [episode.append(state["run_dir"], record)]
    _plot(state, records)
    _emit({"type": "reward", "step": record.step, "reward": record.reward, "wer": progress.previous_wer,
           "best_wer": progress.best_wer, "status": record.status})
    return {**progress.to_state(), "records": records}


def judge(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """End of episode: record a ``stop`` step if that was the decision, save the final model, and score it
    on the hidden split with sttrl's judge (``judge.json``); the state keeps the report's summary."""
    from sttrl import judge as judge_mod

    progress, records = episode.Progress.from_state(state), list(state["records"])
    episode.sync_trajectory(state["run_dir"], records)
    d = state.get("decision")
    end_reason = "budget"
    if d and d["action"] == Action.STOP.value and d["step"] == progress.step + 1:
        record, progress = episode.conclude_stop(progress, episode.Pending.from_dict(d), state["run_id"],
                                                 _cfg(state).env.instance)
        records.append(episode.append(state["run_dir"], record))
        end_reason = "stop"
    ep = _ep(state, runtime)
    _emit({"type": "judge_start", "step": progress.step, "end_reason": end_reason})
    final = ep.save_final()
    run_dir = ep.run_dir
    # The judge loads the saved model from disk: free the episode's model, optimizer and features first,
    # so the process never holds both (a re-run after a crash rebuilds the runtime and saves the same weights).
    del ep
    live.drop_episode_runtime(state["thread_id"])
    live.drop_controller(state["thread_id"])
    release_memory(collect=True)
    from sttrl.integrity import expected_from_state

    # the judge checks the run directory against what it cannot rewrite: this state's hashes and records
    expected = expected_from_state({**state, "final": final, "records": records})
    report = judge_mod.judge(run_dir, progress=_ctx(runtime).progress, expected=expected, hf_token=live.hf_token())
    _plot(state, records)
    _outward(run_dir)  # sink + tracker: send the artifacts, record the outcome in run.json
    summary = {k: report.get(k) for k in JUDGE_SUMMARY_KEYS}
    _emit({"type": "judge", "wer": report["wer"], "cer": report["cer"], "score": report["score"],
           "scored": report["scored"], "passed_all_checks": report["passed_all_checks"]})
    return {"step": progress.step, "observation": progress.observation, "records": records, "final": final,
            "judge": summary, "end_reason": end_reason}


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
