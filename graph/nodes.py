"""The episode's nodes and routers. Each node returns a partial state; each router returns a ``Literal``
and raises on anything unexpected.

``setup → observe → decide → train → evaluate → reward → observe …``; ``observe`` routes to ``judge``
when the budget is spent, ``decide`` routes to ``judge`` on ``stop``. Every node is safe to re-run
from its start after a crash: training and evaluation are idempotent per block (sttrl), trajectory
appends are idempotent per step, and the final save and the judge overwrite their files atomically.
Progress goes out through LangGraph's stream writer as ``{"type": ...}`` dicts (custom stream mode).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from graph.agents import DEFAULT_MODEL, Decided, make_agent
from graph.runtimes import drop_runtime, get_runtime
from graph.state import EpisodeContext, EpisodeState
from sttrl.actions import Action, Hyperparams, apply
from sttrl.config import Config, config_from_dict, load_config
from sttrl.errors import CheckpointError
from sttrl.memory import release_memory
from sttrl.reward import reward as reward_fn
from sttrl.trajectory import StepRecord, Trajectory
from tools import evaluate as evaluate_tool
from tools import train_block as train_block_tool

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


def _rt(state: EpisodeState, runtime: Runtime[EpisodeContext] | None) -> Any:
    return get_runtime(state["thread_id"], state["config"], state["run_dir"], progress=_ctx(runtime).progress)


def _emit(event: dict[str, Any]) -> None:
    get_stream_writer()(event)


def resolve_config(state: EpisodeState) -> Config:
    """The episode's config from the input: a resolved ``config`` dict, else preset + file + overrides."""
    if state.get("config"):
        return config_from_dict(state["config"])
    return load_config(state.get("preset") or "cpu", state.get("config_file") or None, list(state.get("overrides") or []))


def _agent(state: EpisodeState, cfg: Config, runtime: Runtime[EpisodeContext] | None) -> Any:
    injected = _ctx(runtime).agent
    if injected is not None:
        return injected
    name = state.get("agent") or "rule"
    return make_agent(name, cfg, state.get("model") or DEFAULT_MODEL)


def _checkpoint_info(rt: Any, block: int) -> dict[str, Any]:
    from sttrl.runtime import block_name
    from sttrl.trainer import read_checkpoint_record

    path = rt.ckpt_dir / block_name(block)
    return {"block": block, "path": str(path), "sha256": read_checkpoint_record(path)["hashes"]["model.safetensors"]}


def _append(state: EpisodeState, record: StepRecord) -> dict[str, Any]:
    Trajectory(Path(state["run_dir"]) / "trajectory.jsonl").append(record)
    return record.model_dump(mode="json", by_alias=True)


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
    thread_id = (config.get("configurable") or {}).get("thread_id") or state.get("thread_id")
    if not thread_id:
        from sttrl.runtime import new_run_id

        thread_id = new_run_id()
    cfg = resolve_config(state)
    agent_name = state.get("agent") or "rule"
    model = state.get("model") or (DEFAULT_MODEL if agent_name == "llm" else None)
    _agent({**state, "agent": agent_name, "model": model or ""}, cfg, runtime)  # fails early on a missing key
    run_dir = str(state.get("run_dir") or Path(cfg.run.out_dir) / thread_id)
    _emit({"type": "setup", "phase": "start", "thread_id": thread_id, "run_dir": run_dir, "preset": cfg.preset})
    t0 = time.perf_counter()
    rt = get_runtime(thread_id, cfg.to_dict(), run_dir, progress=_ctx(runtime).progress)
    if rt.block != 0 or rt.completed_blocks() != [0]:
        raise CheckpointError(
            f"run directory {run_dir} already holds trained blocks {rt.completed_blocks()}: resume its own thread "
            "or choose a new run directory"
        )
    cfg = rt.cfg  # an existing run directory keeps the config it started with
    ev = evaluate_tool.invoke({"block": 0, "runtime": rt})
    loss = rt.probe_loss()
    hp = rt.initial_hp()
    from sttrl.env import observation_dict

    obs = observation_dict(hp, rt.max_freeze, loss, ev["wer"], ev["cer"], ev["wer"], ev["wer"], rt.trainer._memory_gb(),
                           rt.device.type, "ok", 0, cfg.env.max_actions, rt.trainer.state.global_step)
    _emit({"type": "setup", "phase": "done", "thread_id": thread_id, "run_dir": run_dir, "run_id": rt.run_id,
           "wer": ev["wer"], "cer": ev["cer"], "loss": loss, "seconds": time.perf_counter() - t0,
           "device": rt.device.type, "max_actions": cfg.env.max_actions})
    return {
        "thread_id": thread_id,
        "run_id": rt.run_id,
        "run_dir": run_dir,
        "config": cfg.to_dict(),
        "agent": agent_name,
        "model": model or "",
        "max_actions": cfg.env.max_actions,
        "step": 0,
        "hp": hp.to_dict(),
        "previous_wer": ev["wer"],
        "best_wer": ev["wer"],
        "start": {"wer": ev["wer"], "cer": ev["cer"], "loss": loss},
        "observation": obs,
        "decision": None,
        "train": None,
        "eval": None,
        "records": [],
        "checkpoints": [_checkpoint_info(rt, 0)],
        "final": None,
        "judge": None,
        "end_reason": None,
    }


def observe(state: EpisodeState) -> dict[str, Any]:
    """Hand the latest observation (with the remaining budget) to the decision; clear the last step's results."""
    step, max_actions = state["step"], state["max_actions"]
    obs = {**state["observation"], "step": step, "steps_left": max_actions - step}
    _emit({"type": "observation", "step": step, "steps_left": max_actions - step, "wer": obs["wer"],
           "train_loss": obs["train_loss"], "status": obs["status"]})
    return {"observation": obs, "decision": None, "train": None, "eval": None}


def decide(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Ask the agent for ``Decision(action, rationale)`` and apply it to the hyperparameters (pure).
    A failing or out-of-menu agent is replaced by the rule policy for this step; the episode goes on."""
    cfg = _cfg(state)
    step = state["step"] + 1
    t0 = time.perf_counter()
    try:
        decided: Decided = _agent(state, cfg, runtime).decide(state["observation"], list(state["records"]))
        if not isinstance(decided.action, Action) or decided.action.value not in cfg.env.actions:
            raise ValueError(f"action {decided.action!r} is not one of the enabled actions {cfg.env.actions}")
    except Exception as exc:  # noqa: BLE001 - the controller must never crash the episode
        from sttrl.policies import make_policy

        action, why = make_policy("rule", cfg.env.actions, seed=cfg.run.seed).decide(state["observation"], state["records"])
        decided = Decided(action, f"rule policy after the agent failed ({type(exc).__name__}: {exc}): {why}",
                          "fallback-rule", errors=[f"{type(exc).__name__}: {exc}"])
    before = Hyperparams(**state["hp"])
    if decided.action is Action.STOP:
        after, clamped, note = before, False, "stop"
    else:
        applied = apply(before, decided.action, cfg.train, int(state["observation"]["max_freeze_layers"]))
        after, clamped, note = applied.hp, applied.clamped, applied.note
    decision = {"step": step, **decided.to_dict(), "hp_before": before.to_dict(), "hp_after": after.to_dict(),
                "clamped": clamped, "note": note, "seconds": time.perf_counter() - t0}
    _emit({"type": "decision", "step": step, "action": decided.action.value, "source": decided.source,
           "rationale": decided.rationale, "note": note, "clamped": clamped})
    return {"decision": decision, "hp": after.to_dict()}


def train(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Train the pending step's block through the ``train_block`` tool, streaming each optimizer step."""
    d = state["decision"]
    block, hp = d["step"], d["hp_after"]
    rt = _rt(state, runtime)
    writer = get_stream_writer()
    steps = rt.cfg.env.steps_per_action
    writer({"type": "train_start", "block": block, "steps": steps, "hp": hp, "global_step": rt.trainer.state.global_step})

    def on_step(info: Any) -> None:
        writer({"type": "train_step", "block": block, **asdict(info)})

    out = train_block_tool.invoke({"block": block, **hp, "runtime": rt, "on_step": on_step})
    res = out["result"]
    writer({"type": "train_end", "block": block, "status": res["status"], "mean_loss": res["mean_loss"],
            "steps": res["steps"], "seconds": res["seconds"], "samples_per_s": res["samples_per_s"],
            "global_step": res["global_step"], "note": res["note"]})
    checkpoints = [c for c in state.get("checkpoints", []) if c["block"] != block] + [out["checkpoint"]]
    return {"train": res, "checkpoints": checkpoints}


def evaluate(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """Validation WER/CER of the model after the pending block, through the ``evaluate`` tool."""
    block = state["decision"]["step"]
    rt = _rt(state, runtime)
    _emit({"type": "eval_start", "block": block})
    ev = evaluate_tool.invoke({"block": block, "runtime": rt})
    _emit({"type": "eval", "block": block, "wer": ev["wer"], "cer": ev["cer"], "n": ev["n"], "seconds": ev["seconds"]})
    return {"eval": ev}


def reward(state: EpisodeState) -> dict[str, Any]:
    """Reward, new observation and the step's trajectory record (appended once, also after a re-run)."""
    cfg = _cfg(state)
    d, tr, ev = state["decision"], state["train"], state["eval"]
    step, max_actions = d["step"], state["max_actions"]
    r = reward_fn(state["previous_wer"], ev["wer"], tr["status"], cfg.env.reward)
    best = min(state["best_wer"], ev["wer"])
    from sttrl.env import observation_dict

    obs = observation_dict(Hyperparams(**d["hp_after"]), int(state["observation"]["max_freeze_layers"]), tr["mean_loss"],
                           ev["wer"], ev["cer"], best, state["previous_wer"], tr["peak_memory_gb"], tr["memory_device"],
                           tr["status"], step, max_actions - step, tr["global_step"])
    timings = {"decide_seconds": d["seconds"], "train_seconds": tr["seconds"], "eval_seconds": ev["seconds"]}
    timings["step_seconds"] = sum(timings.values())
    record = StepRecord(run_id=state["run_id"], step=step, action=d["action"], source=d["source"],
                        rationale=d["rationale"], clamped=d["clamped"], hp_before=d["hp_before"], hp_after=d["hp_after"],
                        status=tr["status"], reward=r, observation=obs, train=tr, eval=ev, timings=timings)
    records = list(state["records"]) + [_append(state, record)]
    _plot(state, records)
    _emit({"type": "reward", "step": step, "reward": r, "wer": ev["wer"], "best_wer": best, "status": tr["status"]})
    return {"step": step, "records": records, "previous_wer": ev["wer"], "best_wer": best, "observation": obs}


def judge(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict[str, Any]:
    """End of episode: record a ``stop`` step if that was the decision, save the final model, and score it
    on the hidden split with sttrl's judge (``judge.json``); the state keeps the report's summary."""
    from sttrl import judge as judge_mod

    step, records = state["step"], list(state["records"])
    d = state.get("decision")
    end_reason = "budget"
    if d and d["action"] == Action.STOP.value and d["step"] == step + 1:
        step += 1
        obs = {**state["observation"], "step": step, "steps_left": state["max_actions"] - step}
        record = StepRecord(run_id=state["run_id"], step=step, action="stop", source=d["source"],
                            rationale=d["rationale"], clamped=False, hp_before=d["hp_before"], hp_after=d["hp_after"],
                            status="ok", reward=0.0, observation=obs, timings={"decide_seconds": d["seconds"],
                                                                               "step_seconds": d["seconds"]})
        records.append(_append(state, record))
        end_reason = "stop"
    rt = _rt(state, runtime)
    _emit({"type": "judge_start", "step": step, "end_reason": end_reason})
    final = rt.save_final()
    run_dir = rt.run_dir
    # The judge loads the saved model from disk: free the episode's model, optimizer and features first,
    # so the process never holds both (a re-run after a crash rebuilds the runtime and saves the same weights).
    del rt
    drop_runtime(state["thread_id"])
    release_memory(collect=True)
    report = judge_mod.judge(run_dir, progress=_ctx(runtime).progress)
    _plot(state, records)
    _outward(run_dir)  # sink + tracker: send the artifacts, record the outcome in run.json
    summary = {k: report.get(k) for k in JUDGE_SUMMARY_KEYS}
    _emit({"type": "judge", "wer": report["wer"], "cer": report["cer"], "score": report["score"],
           "scored": report["scored"], "passed_all_checks": report["passed_all_checks"]})
    return {"step": step, "records": records, "final": final, "judge": summary, "end_reason": end_reason}


# ----- routers ---------------------------------------------------------------------------------
def route_after_observe(state: EpisodeState) -> Literal["decide", "judge"]:
    """Budget spent → judge; otherwise decide the next step."""
    step, max_actions = state.get("step"), state.get("max_actions")
    if not isinstance(step, int) or not isinstance(max_actions, int) or step < 0:
        raise ValueError(f"observe: invalid step {step!r} / max_actions {max_actions!r} in state")
    return "judge" if step >= max_actions else "decide"


def route_after_decide(state: EpisodeState) -> Literal["train", "judge"]:
    """``stop`` → judge; any other enabled action → train."""
    action = (state.get("decision") or {}).get("action")
    if action == Action.STOP.value:
        return "judge"
    if action in {a.value for a in Action}:
        return "train"
    raise ValueError(f"decide: unexpected action {action!r} in state")
