"""``python -m graph.bench``: controllers side by side on the same compute budget.

Does an agent steering the run beat a fixed schedule, random control and a classical optimizer? Every
controller gets the same budget, and the judge's WER on the hidden domain is the outcome.

Controllers
    ``static``  the preset's starting hyperparameters, ``keep`` every step (the fixed schedule);
    ``random``  a uniformly random action per step (never ``stop``), seeded with the run seed;
    ``rule``    sttrl's rule policy (repair faults, cool the lr on a plateau, stop when flat);
    ``llm``     an LLM through structured output (``--model``); skipped with one line when the
                provider's API key (e.g. ``GROQ_API_KEY``) or package is missing;
    ``optuna``  Optuna's TPE over static configurations (needs the ``bench`` extra: ``optuna``).

The four episode controllers run the real LangGraph episode, the code path of ``python -m graph.run``
(``graph.run.stream_episode``), checkpointed in ``DIR/checkpoints.sqlite`` under thread ids
``bench-<controller>-s<seed>``, with run directories ``DIR/runs/<thread id>``.

Equal budget
    An episode may spend ``env.max_actions x env.steps_per_action`` optimizer steps (one block per
    decision) and ``env.max_actions + 1`` validation evaluations (the starting model, then one after each
    block). ``stop`` ends an episode early and a fault rolls a block back, so the *actual* spend is
    recorded per run: ``train_steps`` counts optimizer steps attempted (a rolled-back block counts the
    steps it ran), ``evaluations`` the validation passes.

    Optuna gets the same training steps as a budget: ``K`` trials (``--optuna-trials``, default
    ``K = env.max_actions``), each a fresh model from the same starting weights (the run seed), trained
    ``floor(max_actions x steps_per_action / K)`` steps with one static configuration, then evaluated
    once on validation. With the default K it spends exactly the episode's training steps, each trial
    one block long, and ``K = max_actions`` evaluations: one fewer than an episode, which also measures
    its starting model. The trial with the lowest validation WER (earliest on ties) is saved and scored
    by the judge, which Optuna never sees.

    Search space: what an episode can reach from the preset's start within ``max_actions`` decisions,
    applying sttrl's own actions and bounds (``cfg.train``) per dimension: learning rate log-uniform
    between the lowest and highest reachable values (start x/÷ ``lr_factor^max_actions``, clipped to
    ``[lr_min, lr_max]``), batch size categorical over the reachable sizes, frozen encoder layers an
    integer range; gradient accumulation is fixed, as for the agents. Only the enabled actions move a
    dimension. The sampler is ``TPESampler(seed=seed * 1000 + i)`` for the ``i``-th trial, with
    ``n_startup_trials = clamp(K // 2, 2, 10)`` random trials before TPE models the history (Optuna's
    default of 10 would make a short study pure random search); a fresh seeded sampler per trial keeps
    a resumed study identical to an uninterrupted one.

Outcome and curves
    Hidden-domain WER/CER come from the judge (``judge.json``). The validation-WER curve of an episode
    is the starting WER and the WER after each block (``trajectory.jsonl``), with x = optimizer steps
    spent. Optuna's curve is the *best validation WER so far over its trials, in trial order*, at the
    steps spent so far (each trial starts again from the starting weights). Per controller,
    ``bench.png`` draws the mean over seeds and the min-max band on the union of the runs' x values; a
    run that stopped early is held at its last value (the model the judge scores).

Resume
    Run the same command again: finished threads are skipped (their numbers are read back from the
    thread state and run directory), an unfinished thread resumes where it stopped, and Optuna resumes
    from its SQLite storage (``DIR/optuna.sqlite``, one study per seed) plus one ``trial.json`` per
    finished trial: a finished trial is never trained again, an interrupted one continues in its run
    directory with the parameters it was given. ``DIR/bench.json`` is rewritten after every run.

Wall time
    Seconds each run was worked on, summed over the processes that worked on it; a process that was
    killed counts up to its last recorded progress (``DIR/wall/<run>.json``). It is reported, not
    matched: Optuna's includes building a runtime (model, features) for every trial, and the judge.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sttrl.actions import Action, Hyperparams, apply
from sttrl.config import Config, add_config_arguments, config_from_dict, load_config
from sttrl.errors import ConfigError, SttrlError
from sttrl.memory import limit_arenas, release_memory
from sttrl.io import atomic_write_json

SCHEMA = "sttrl.bench/1"
EPISODE_CONTROLLERS = ("static", "random", "rule", "llm")
CONTROLLERS = (*EPISODE_CONTROLLERS, "optuna")
DEFAULT_CONTROLLERS = "static,random,rule,llm,optuna"
FAULTS = ("oom", "nan", "diverged")
COLORS = {"static": "#7f7f7f", "random": "#ff7f0e", "rule": "#2ca02c", "llm": "#9467bd", "optuna": "#1f77b4"}
STYLES = {"static": "s--", "random": "^:", "rule": "o-", "llm": "D-.", "optuna": "v-"}  # tell overlapping lines apart
AgentFactory = Callable[[str, Config], Any]


# ----- budget and search space -------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """What one episode may spend, and how Optuna's trials share the same training steps."""

    max_actions: int
    steps_per_action: int
    optuna_trials: int

    @property
    def train_steps(self) -> int:
        return self.max_actions * self.steps_per_action

    @property
    def evaluations(self) -> int:
        return self.max_actions + 1

    @property
    def steps_per_trial(self) -> int:
        return self.train_steps // self.optuna_trials

    @property
    def n_startup_trials(self) -> int:
        return min(10, max(2, self.optuna_trials // 2))

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode": {"max_actions": self.max_actions, "steps_per_action": self.steps_per_action,
                        "train_steps": self.train_steps, "evaluations": self.evaluations},
            "optuna": {"trials": self.optuna_trials, "steps_per_trial": self.steps_per_trial,
                       "train_steps": self.steps_per_trial * self.optuna_trials, "evaluations": self.optuna_trials,
                       "n_startup_trials": self.n_startup_trials},
        }


def budget_of(cfg: Config, optuna_trials: int | None = None) -> Budget:
    trials = cfg.env.max_actions if optuna_trials is None else optuna_trials
    if trials < 1:
        raise ConfigError("--optuna-trials must be at least 1")
    b = Budget(cfg.env.max_actions, cfg.env.steps_per_action, trials)
    if b.steps_per_trial < 1:
        raise ConfigError(f"--optuna-trials {trials} leaves less than one training step per trial "
                          f"(budget {b.train_steps} steps)")
    return b


def _reachable(start: Hyperparams, actions: Sequence[Action], cfg: Config, max_freeze: int) -> list[Hyperparams]:
    seen, frontier = {start}, {start}
    for _ in range(cfg.env.max_actions):
        nxt = {apply(hp, a, cfg.train, max_freeze).hp for hp in frontier for a in actions}
        frontier = {_rounded(hp) for hp in nxt} - seen
        seen |= frontier
    return sorted(seen, key=lambda h: (h.lr, h.batch_size, h.freeze_layers))


def _rounded(hp: Hyperparams) -> Hyperparams:
    """``hp`` with its lr rounded to 12 significant digits (x1.5 then /1.5 must meet the start again)."""
    return Hyperparams(float(f"{hp.lr:.12g}"), hp.batch_size, hp.grad_accum, hp.freeze_layers)


def search_space(cfg: Config, max_freeze: int) -> dict[str, Any]:
    """The static configurations an episode can reach within its budget, per dimension:
    ``{"lr": (lo, hi), "batch_size": [sizes], "freeze_layers": (lo, hi)}`` (see the module docstring)."""
    start = Hyperparams.from_config(cfg.train, max_freeze)
    enabled = set(cfg.env.actions)

    def dim(*names: Action) -> list[Hyperparams]:
        return _reachable(start, [a for a in names if a.value in enabled], cfg, max_freeze)

    lrs = [h.lr for h in dim(Action.LR_UP, Action.LR_DOWN)]
    batches = sorted({h.batch_size for h in dim(Action.BATCH_UP, Action.BATCH_DOWN)})
    freezes = [h.freeze_layers for h in dim(Action.FREEZE_MORE, Action.FREEZE_LESS)]
    return {"lr": (min(lrs), max(lrs)), "batch_size": batches, "freeze_layers": (min(freezes), max(freezes)),
            "grad_accum": start.grad_accum}


def optuna_distributions(space: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions of the dimensions that can move (a fixed dimension is left out)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    lo, hi = space["lr"]
    if hi > lo:
        out["lr"] = FloatDistribution(lo, hi, log=True)
    if len(space["batch_size"]) > 1:
        out["batch_size"] = CategoricalDistribution(list(space["batch_size"]))
    lo_f, hi_f = space["freeze_layers"]
    if hi_f > lo_f:
        out["freeze_layers"] = IntDistribution(lo_f, hi_f)
    return out


def trial_hp(space: dict[str, Any], params: dict[str, Any]) -> Hyperparams:
    """The hyperparameters of a trial: its sampled params, the fixed dimensions from ``space``."""
    return Hyperparams(
        lr=float(params.get("lr", space["lr"][0])),
        batch_size=int(params.get("batch_size", space["batch_size"][0])),
        grad_accum=int(space["grad_accum"]),
        freeze_layers=int(params.get("freeze_layers", space["freeze_layers"][0])),
    )


def encoder_layers(cfg: Config) -> int:
    """Encoder layers of the configured model, read from its config (no weights are loaded)."""
    if cfg.model.source == "builtin":
        return cfg.model.encoder_layers
    from transformers import WhisperConfig

    from sttrl.model import resolve_model_dir

    src = resolve_model_dir(cfg.model, cfg.data.cache_dir, progress=False)
    from graph import live

    kw = {"revision": cfg.model.revision, "token": live.hf_token()} if cfg.model.source == "hub" else {}
    return int(WhisperConfig.from_pretrained(src, **kw).encoder_layers)


# ----- small helpers -----------------------------------------------------------------------------
def thread_id(controller: str, seed: int) -> str:
    return f"bench-{controller}-s{seed}"


def with_seed(cfg: Config, seed: int, out: Path) -> Config:
    """``cfg`` with ``run.seed = seed`` and run files under ``out/runs``."""
    data = cfg.to_dict()
    data["run"] = {**data["run"], "seed": seed, "out_dir": str(out / "runs")}
    return config_from_dict(data)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(a: dict[str, Any], b: dict[str, Any], ignore: Sequence[str] = ("run.seed", "run.out_dir")) -> list[str]:
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


def llm_unavailable(model: str) -> str | None:
    """Why the LLM controller cannot run (missing package or API key), or None."""
    from graph.agents import PROVIDERS, provider_of

    provider = provider_of(model)
    package, pip_name, key = PROVIDERS.get(provider, (None, None, None))
    if package and importlib.util.find_spec(package) is None:
        return f"the {pip_name} package is not installed (pip install {pip_name})"
    from graph import live

    if key and not live.resolve_once(f"api_key:{model}", key):
        return f"no {key} in the environment or .env (model {model})"
    return None


def optuna_unavailable() -> str | None:
    if importlib.util.find_spec("optuna") is None:
        return "optuna is not installed (pip install 'sttrl[bench]' or pip install 'optuna>=5,<6')"
    return None


class WallClock:
    """Seconds one run was worked on, across processes: a ``[start, last progress]`` segment per process,
    kept in a small JSON file, so a process killed mid-run counts up to its last recorded progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.segments: list[list[float]] = json.loads(path.read_text())["segments"] if path.is_file() else []
        self._written = 0.0

    def start(self) -> None:
        now = time.time()
        self.segments.append([now, now])
        self._write(now)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if self.segments:
            self.segments[-1][1] = now
            if force or now - self._written >= 1.0:
                self._write(now)

    def _write(self, now: float) -> None:
        atomic_write_json(self.path, {"segments": self.segments})
        self._written = now

    @property
    def seconds(self) -> float:
        return float(sum(end - start for start, end in self.segments))


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(vals), "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals)}


# ----- results of one run ------------------------------------------------------------------------
def episode_result(controller: str, seed: int, values: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """The numbers of a finished episode, from its thread state and its run directory's trajectory."""
    from sttrl.trajectory import Trajectory

    run_dir = Path(values["run_dir"])
    records = Trajectory(run_dir / "trajectory.jsonl").records()
    start = values["start"]
    spent, evals = 0, 1
    x, y = [0], [float(start["wer"])]
    faults: Counter[str] = Counter()
    for r in records:
        if r.get("train"):
            spent += int(r["train"]["steps_attempted"])
        if r.get("eval"):
            evals += 1
            x.append(spent)
            y.append(float(r["eval"]["wer"]))
        if r["status"] in FAULTS:
            faults[r["status"]] += 1
    judged = values.get("judge") or {}
    return {
        "controller": controller,
        "seed": seed,
        "thread_id": values["thread_id"],
        "run_dir": str(run_dir),
        "status": "finished",
        "hidden_wer": judged.get("wer"),
        "hidden_cer": judged.get("cer"),
        "score": judged.get("score"),
        "judge_passed_all_checks": judged.get("passed_all_checks"),
        "start_val_wer": float(start["wer"]),
        "best_val_wer": min(y[1:]) if len(y) > 1 else y[0],
        "final_val_wer": y[-1],
        "train_steps": spent,
        "train_steps_kept": int((values.get("final") or {}).get("global_step", 0)),
        "evaluations": evals,
        "decisions": len(records),
        "end_reason": values.get("end_reason"),
        "actions": [r["action"] for r in records],
        "sources": dict(Counter(r["source"] for r in records)),
        "faults": {k: faults.get(k, 0) for k in FAULTS},
        "final_sha256": (values.get("final") or {}).get("sha256"),
        "wall_s": wall_s,
        "curve": {"x": x, "y": y, "kind": "validation WER of the current model: start, then after each block"},
    }


def optuna_result(seed: int, name: str, run_dir: Path, trials: list[dict[str, Any]], best: dict[str, Any],
                  report: dict[str, Any], final: dict[str, Any], space: dict[str, Any], budget: Budget,
                  wall_s: float) -> dict[str, Any]:
    x, y, spent, best_so_far = [], [], 0, math.inf
    for t in trials:
        spent += t["steps_attempted"]
        best_so_far = min(best_so_far, t["val_wer"])
        x.append(spent)
        y.append(best_so_far)
    faults = Counter(t["status"] for t in trials if t["status"] in FAULTS)
    return {
        "controller": "optuna",
        "seed": seed,
        "thread_id": name,
        "optuna_study": name,
        "run_dir": str(run_dir),
        "judged_run_dir": best["run_dir"],
        "status": "finished",
        "hidden_wer": report.get("wer"),
        "hidden_cer": report.get("cer"),
        "score": report.get("score"),
        "judge_passed_all_checks": report.get("passed_all_checks"),
        "start_val_wer": None,
        "best_val_wer": best["val_wer"],
        "final_val_wer": best["val_wer"],
        "train_steps": spent,
        "train_steps_kept": sum(t["steps"] for t in trials),
        "evaluations": len(trials),
        "decisions": len(trials),
        "end_reason": "budget",
        "best_trial": best["number"],
        "trials": trials,
        "space": {"lr_log_uniform": list(space["lr"]), "batch_size": list(space["batch_size"]),
                  "freeze_layers": list(space["freeze_layers"]), "grad_accum": space["grad_accum"]},
        "sampler": {"name": "TPESampler", "seed": f"{seed} * 1000 + trial index",
                    "n_startup_trials": budget.n_startup_trials},
        "faults": {k: faults.get(k, 0) for k in FAULTS},
        "final_sha256": final.get("sha256"),
        "wall_s": wall_s,
        "curve": {"x": x, "y": y, "trial_wer": [t["val_wer"] for t in trials],
                  "kind": "best validation WER so far over trials, in trial order (each trial starts from the "
                          "starting weights)"},
    }


# ----- aggregation, table, plot ------------------------------------------------------------------
def curve_band(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and min-max of the runs' curves on the union of their x values; each run holds its last value
    after its end, and contributes nothing before its first point."""
    grid = sorted({x for r in runs for x in r["curve"]["x"]})
    mean, lo, hi, n = [], [], [], []
    for gx in grid:
        vals = []
        for r in runs:
            xs, ys = r["curve"]["x"], r["curve"]["y"]
            idx = [i for i, x in enumerate(xs) if x <= gx]
            if idx:
                vals.append(ys[idx[-1]])
        mean.append(statistics.fmean(vals))
        lo.append(min(vals))
        hi.append(max(vals))
        n.append(len(vals))
    return {"x": grid, "mean": mean, "min": lo, "max": hi, "n": n}


def summarize(runs: list[dict[str, Any]], controllers: Sequence[str]) -> dict[str, Any]:
    """Per controller: mean ± std over its finished runs, fault totals, and the curve band."""
    out: dict[str, Any] = {}
    for c in controllers:
        done = [r for r in runs if r["controller"] == c and r.get("status") == "finished"]
        if not done:
            continue
        out[c] = {
            "runs": len(done),
            "seeds": [r["seed"] for r in done],
            **{k: _mean_std([r[k] for r in done]) for k in ("hidden_wer", "hidden_cer", "best_val_wer",
                                                               "final_val_wer", "train_steps", "evaluations",
                                                               "wall_s")},
            "faults": {k: sum(r["faults"][k] for r in done) for k in FAULTS},
            "unscored": sum(1 for r in done if r.get("hidden_wer") is None),
            "curve": curve_band(done),
        }
    return out


def _pm(s: dict[str, Any], spec: str = ".3f") -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:{spec}} ± {s['std']:{spec}}"


def _count(s: dict[str, Any]) -> str:
    if not s or s.get("mean") is None:
        return "-"
    if s["min"] == s["max"]:
        return f"{s['mean']:.0f}"
    return f"{s['mean']:.1f} ({s['min']:.0f}-{s['max']:.0f})"


def markdown_table(summary: dict[str, Any]) -> str:
    head = ("controller", "runs", "hidden WER", "hidden CER", "best val WER", "train steps", "val evals", "wall s",
            "OOM/NaN/div")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for c, s in summary.items():
        f = s["faults"]
        lines.append("| " + " | ".join([
            c, str(s["runs"]), _pm(s["hidden_wer"]), _pm(s["hidden_cer"]), _pm(s["best_val_wer"]),
            _count(s["train_steps"]), _count(s["evaluations"]), _pm(s["wall_s"], ".1f"),
            f"{f['oom']}/{f['nan']}/{f['diverged']}",
        ]) + " |")
    return "\n".join(lines)


def write_bench_plot(path: Path, summary: dict[str, Any], title: str) -> Path:
    """``bench.png``: validation WER over training steps spent, mean line and min-max band per controller."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from graph.plot import save_figure

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for c, s in summary.items():
        cv = s["curve"]
        color = COLORS.get(c)
        label = f"{c} (n={s['runs']})"
        if c == "optuna":
            label += ": best so far over trials"
        ax.plot(cv["x"], cv["mean"], STYLES.get(c, "o-"), ms=4, color=color, label=label)
        ax.fill_between(cv["x"], cv["min"], cv["max"], color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("training steps spent")
    ax.set_ylabel("validation WER")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="line: mean over seeds; band: min-max", title_fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ----- progress ----------------------------------------------------------------------------------
class BenchProgress:
    """A rich bar for the benchmark and one for the current run's training steps on a terminal; plain
    lines for blocks, evaluations, trials and results everywhere (nothing with ``quiet``)."""

    def __init__(self, console: Console, total_runs: int, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet
        self.progress: Progress | None = None
        self.overall = self.current = None
        self.key, self.block_steps = "", 1
        if console.is_terminal and not quiet:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
            )
            self.progress.start()
            self.overall = self.progress.add_task("benchmark runs", total=total_runs, info="")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def start_run(self, index: int, total: int, key: str, steps: int, block_steps: int, note: str) -> None:
        self.key, self.block_steps = key, block_steps
        self.line(f"[{index}/{total}] {key}: {note}")
        if self.progress is not None:
            if self.current is not None:
                self.progress.remove_task(self.current)
            self.current = self.progress.add_task(f"{key} training steps", total=steps, info="")

    def steps(self, done: int, info: str = "") -> None:
        if self.progress is not None and self.current is not None:
            self.progress.update(self.current, completed=done, info=info)

    def end_run(self, text: str) -> None:
        self.line(f"  {self.key}: {text}")
        if self.progress is not None and self.overall is not None:
            self.progress.advance(self.overall)

    def episode_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "setup" and ev.get("phase") == "done":
            self.line(f"  {self.key}: start WER {ev['wer']:.3f} CER {ev['cer']:.3f} ({ev['seconds']:.1f} s setup)")
        elif kind == "decision":
            self.line(f"  {self.key} step {ev['step']}: {ev['action']} ({ev['source']})")
        elif kind == "train_step":
            done = (ev["block"] - 1) * self.block_steps + ev["step_in_block"]
            self.steps(done, f"block {ev['block']} loss {ev['loss']:.3f}")
        elif kind == "eval":
            self.line(f"  {self.key} block {ev['block']}: validation WER {ev['wer']:.3f} CER {ev['cer']:.3f}")
        elif kind == "train_end" and ev.get("status") != "ok":
            self.line(f"  {self.key} block {ev['block']}: {ev['status']} ({ev.get('note', '')})")
        elif kind == "judge":
            wer, cer = (("-" if v is None else f"{v:.3f}") for v in (ev["wer"], ev["cer"]))
            self.line(f"  {self.key}: judge WER {wer} CER {cer} on the hidden split")


# ----- the benchmark -----------------------------------------------------------------------------
class Bench:
    """One benchmark directory: plans the runs, runs or resumes each, and writes bench.json and bench.png."""

    def __init__(self, cfg: Config, controllers: Sequence[str], seeds: Sequence[int], out: str | Path, *,
                 model: str | None = None, optuna_trials: int | None = None,
                 agent_factory: AgentFactory | None = None, console: Console | None = None,
                 quiet: bool = False) -> None:
        from graph.agents import DEFAULT_MODEL

        unknown = [c for c in controllers if c not in CONTROLLERS]
        if unknown:
            raise ConfigError(f"unknown controllers {unknown}; valid: {', '.join(CONTROLLERS)}")
        if not seeds:
            raise ConfigError("at least one seed is needed")
        self.cfg, self.out = cfg, Path(out)
        self.model = model or DEFAULT_MODEL
        self.budget = budget_of(cfg, optuna_trials)
        self.agent_factory = agent_factory
        self.console = console or Console()
        self.quiet = quiet
        self.seeds = list(dict.fromkeys(seeds))
        self.skipped: dict[str, str] = {}
        self.controllers: list[str] = []
        for c in dict.fromkeys(controllers):
            why = None
            if c == "llm" and not self._injected("llm"):
                why = llm_unavailable(self.model)
            elif c == "optuna":
                why = optuna_unavailable()
            if why:
                self.skipped[c] = why
            else:
                self.controllers.append(c)
        self.runs: list[dict[str, Any]] = []
        self._space: dict[str, Any] | None = None

    def _injected(self, controller: str) -> bool:
        return self.agent_factory is not None and self.agent_factory(controller, self.cfg) is not None

    # ----- files ----------------------------------------------------------------------------------
    @property
    def json_path(self) -> Path:
        return self.out / "bench.json"

    def _check_existing(self) -> None:
        """An existing benchmark directory must hold the same config and Optuna budget."""
        if not self.json_path.is_file():
            return
        old = json.loads(self.json_path.read_text())
        diff = config_differences(old.get("config", {}), self.cfg.to_dict())
        if diff:
            raise ConfigError(f"{self.out} holds a benchmark with another config (differs in {', '.join(diff[:8])}); "
                              "choose another --out or the same options")
        old_trials = (old.get("budget") or {}).get("optuna", {}).get("trials")
        if old_trials is not None and old_trials != self.budget.optuna_trials:
            raise ConfigError(f"{self.out} holds a benchmark with --optuna-trials {old_trials}, not "
                              f"{self.budget.optuna_trials}; choose another --out or the same options")

    def document(self) -> dict[str, Any]:
        """bench.json: the plan, the budget, every run's numbers, and the per-controller summary."""
        import torch

        summary = summarize(self.runs, self.controllers)
        return {
            "schema": SCHEMA,
            "preset": self.cfg.preset,
            "controllers": self.controllers,
            "seeds": self.seeds,
            "skipped": self.skipped,
            "model": self.model if "llm" in self.controllers else None,
            "budget": self.budget.to_dict(),
            "config": self.cfg.to_dict(),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "logical_cores": os.cpu_count(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "runs": self.runs,
            "summary": summary,
            "table": markdown_table(summary),
        }

    def write(self) -> dict[str, Any]:
        doc = self.document()
        atomic_write_json(self.json_path, doc)
        if doc["summary"]:
            write_bench_plot(self.out / "bench.png", doc["summary"],
                             f"sttrl controllers, preset {self.cfg.preset}: validation WER over training steps "
                             f"(budget {self.budget.train_steps} steps)")
        return doc

    # ----- running --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume, or skip) every planned run; returns the bench.json document."""
        from graph.checkpointer import open_checkpointer
        from graph.graph import GRAPH_NAME, build_graph
        from graph.run import quiet_library_bars

        self._check_existing()
        self.out.mkdir(parents=True, exist_ok=True)
        for c, why in self.skipped.items():
            self.console.print(f"{c}: skipped ({why})", highlight=False, markup=False)
        plan = [(c, s) for s in self.seeds for c in self.controllers]
        self.runs = []
        self.write()
        quiet_library_bars()
        progress = BenchProgress(self.console, len(plan), self.quiet)
        try:
            with ExitStack() as stack:
                saver = stack.enter_context(open_checkpointer(str(self.out / "checkpoints.sqlite")))
                compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
                for i, (controller, seed) in enumerate(plan, 1):
                    try:
                        if controller == "optuna":
                            res = self._optuna(seed, progress, i, len(plan))
                        else:
                            res = self._episode(compiled, controller, seed, progress, i, len(plan))
                    except (SttrlError, RuntimeError, ValueError, OSError) as exc:
                        res = {"controller": controller, "seed": seed, "thread_id": thread_id(controller, seed),
                               "status": "error", "error": f"{type(exc).__name__}: {exc}"}
                        progress.end_run(f"error: {res['error']}")
                    self.runs.append(res)
                    self.write()
        finally:
            progress.close()
        return self.write()

    def _episode(self, compiled: Any, controller: str, seed: int, progress: BenchProgress, index: int,
                 total: int) -> dict[str, Any]:
        from graph.run import episode_input, stream_episode, thread_status

        tid = thread_id(controller, seed)
        cfg = with_seed(self.cfg, seed, self.out)
        clock = WallClock(self.out / "wall" / f"{tid}.json")
        snap = compiled.get_state({"configurable": {"thread_id": tid}})
        values = snap.values or {}
        status = thread_status(values, snap.next)
        steps = self.budget.train_steps
        if status == "finished":
            progress.start_run(index, total, tid, steps, cfg.env.steps_per_action, "finished earlier: skipped")
            res = episode_result(controller, seed, values, clock.seconds)
            progress.end_run(self._result_line(res))
            return {**res, "resumed": "skipped (finished earlier)"}
        if status == "new":
            inp = episode_input(cfg, controller, self.model if controller == "llm" else None,
                                self.out / "runs" / tid)
            note = "new episode"
        elif status == "ended":
            raise SttrlError(f"thread {tid} ended without a judge result; remove it from {self.out} to rerun it")
        else:
            inp, note = None, f"resumes at {', '.join(snap.next)} after step {values.get('step', 0)}"
        progress.start_run(index, total, tid, steps, cfg.env.steps_per_action, note)
        agent = self.agent_factory(controller, cfg) if self.agent_factory else None
        clock.start()
        try:
            values = stream_episode(compiled, tid, inp, cfg.env.max_actions, agent=agent,
                                    on_event=lambda ev: (clock.tick(), progress.episode_event(ev)),
                                    on_update=lambda _u: clock.tick(force=True))
        finally:
            clock.tick(force=True)
            from graph import live

            live.drop_episode_runtime(tid)
            live.drop_controller(tid)
            release_memory(collect=True)
        if not values.get("judge"):
            raise SttrlError(f"thread {tid} ended without a judge result")
        res = episode_result(controller, seed, values, clock.seconds)
        progress.end_run(self._result_line(res))
        return {**res, "resumed": note}

    @staticmethod
    def _result_line(res: dict[str, Any]) -> str:
        f = res["faults"]
        hw = "-" if res["hidden_wer"] is None else f"{res['hidden_wer']:.3f}"
        hc = "-" if res["hidden_cer"] is None else f"{res['hidden_cer']:.3f}"
        return (f"hidden WER {hw} CER {hc}, best validation WER {res['best_val_wer']:.3f}, "
                f"{res['train_steps']} steps, {res['evaluations']} evaluations, {res['wall_s']:.1f} s, "
                f"faults {f['oom']}/{f['nan']}/{f['diverged']}")

    # ----- Optuna ---------------------------------------------------------------------------------
    def space(self) -> dict[str, Any]:
        if self._space is None:
            self._space = search_space(self.cfg, encoder_layers(self.cfg))
        return self._space

    def _optuna(self, seed: int, progress: BenchProgress, index: int, total: int) -> dict[str, Any]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        name = thread_id("optuna", seed)
        run_dir = self.out / "runs" / name
        result_path = run_dir / "result.json"
        b = self.budget
        if result_path.is_file():
            progress.start_run(index, total, name, b.train_steps, b.steps_per_trial, "finished earlier: skipped")
            res = json.loads(result_path.read_text())
            res["wall_s"] = WallClock(self.out / "wall" / f"{name}.json").seconds
            progress.end_run(self._result_line(res))
            return {**res, "resumed": "skipped (finished earlier)"}
        cfg = with_seed(self.cfg, seed, self.out)
        space = self.space()
        dists = optuna_distributions(space)
        storage = f"sqlite:///{(self.out / 'optuna.sqlite').resolve()}"
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        note = f"resumes after {len(done)} of {b.optuna_trials} trials" if done else "new study"
        progress.start_run(index, total, name, b.steps_per_trial * b.optuna_trials, b.steps_per_trial, note)
        clock = WallClock(self.out / "wall" / f"{name}.json")
        clock.start()
        data: list[Any] = []  # built once, shared by the trials
        try:
            while True:
                trials = study.get_trials(deepcopy=False)
                complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
                if len(complete) >= b.optuna_trials:
                    break
                running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
                if running and set(running[0].params) != set(dists):  # killed while asking: ask again
                    study.tell(running[0].number, state=optuna.trial.TrialState.FAIL)
                    continue
                if running:
                    number, params = running[0].number, dict(running[0].params)
                else:
                    study.sampler = optuna.samplers.TPESampler(seed=seed * 1000 + len(complete),
                                                               n_startup_trials=b.n_startup_trials)
                    trial = study.ask(dists)
                    number, params = trial.number, dict(trial.params)
                rec = self._trial(cfg, run_dir, name, number, len(complete), params, space, data, progress, clock)
                study.tell(number, rec["val_wer"])
                clock.tick(force=True)
                self._prune_trial_files(run_dir)
            trials = self._trial_records(run_dir, study)
            best = min(trials, key=lambda t: (t["val_wer"], t["number"]))
            report, final = self._judge_best(Path(best["run_dir"]))
            clock.tick(force=True)
        finally:
            clock.tick(force=True)
            data.clear()
            release_memory(collect=True)
        res = optuna_result(seed, name, run_dir, trials, best, report, final, space, b, clock.seconds)
        atomic_write_json(result_path, res)
        progress.end_run(self._result_line(res) + f", best trial {best['number']} {best['hp']}")
        return {**res, "resumed": note}

    def _trial(self, cfg: Config, run_dir: Path, name: str, number: int, index: int, params: dict[str, Any],
               space: dict[str, Any], data: list[Any], progress: BenchProgress, clock: WallClock) -> dict[str, Any]:
        """Train and evaluate one trial in ``run_dir/trial-NNN`` (resumes there); writes ``trial.json``."""
        from sttrl.data import build_speech_data
        from sttrl.runtime import EpisodeRuntime

        tdir = run_dir / f"trial-{number:03d}"
        rec_path = tdir / "trial.json"
        if rec_path.is_file():
            return json.loads(rec_path.read_text())
        hp = trial_hp(space, params)
        b = self.budget
        data_cfg = cfg.to_dict()
        data_cfg["train"] = {**data_cfg["train"], "lr": hp.lr, "batch_size": hp.batch_size,
                             "freeze_layers": hp.freeze_layers}
        tcfg = config_from_dict(data_cfg)
        t0 = time.perf_counter()
        if not data:
            data.append(build_speech_data(tcfg.data, progress=False))
        rt = EpisodeRuntime(tcfg, tdir, progress=False, data=data[0], run_id=f"{name}-trial-{number:03d}")
        base = index * b.steps_per_trial

        def on_step(info: Any) -> None:
            clock.tick()
            progress.steps(base + info.step_in_block, f"trial {number} loss {info.loss:.3f}")

        hp_line = f"lr {hp.lr:.3g} batch {hp.batch_size} frozen {hp.freeze_layers}"
        progress.line(f"  {name} trial {number}: {hp_line}, {b.steps_per_trial} steps")
        res = rt.train_block(1, rt.initial_hp(), steps=b.steps_per_trial, on_step=on_step)
        ev = rt.evaluate(1)
        earlier = [json.loads(p.read_text())["val_wer"] for p in run_dir.glob("trial-*/trial.json")]
        if not earlier or ev.wer < min(earlier):
            rt.save_final()  # only the best trial so far keeps a model for the judge
        rec = {
            "number": number,
            "index": index,
            "params": params,
            "hp": rt.initial_hp().to_dict(),
            "status": res.status,
            "note": res.note,
            "steps": res.steps,
            "steps_attempted": res.steps_attempted,
            "mean_loss": res.mean_loss,
            "val_wer": ev.wer,
            "val_cer": ev.cer,
            "train_seconds": res.seconds,
            "eval_seconds": ev.seconds,
            "seconds": time.perf_counter() - t0,
            "run_dir": str(tdir),
        }
        atomic_write_json(rec_path, rec)
        progress.line(f"  {name} trial {number}: {res.status}, validation WER {ev.wer:.3f} CER {ev.cer:.3f}")
        del rt
        return rec

    @staticmethod
    def _trial_records(run_dir: Path, study: Any) -> list[dict[str, Any]]:
        import optuna

        numbers = [t.number for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        return [json.loads((run_dir / f"trial-{n:03d}" / "trial.json").read_text()) for n in sorted(numbers)]

    @staticmethod
    def _prune_trial_files(run_dir: Path) -> None:
        """Finished trials keep their records, evaluations and (the best one only) the final model; their
        training checkpoints are removed to save disk."""
        recs = [json.loads(p.read_text()) for p in sorted(run_dir.glob("trial-*/trial.json"))]
        if not recs:
            return
        best = min(recs, key=lambda t: (t["val_wer"], t["number"]))
        for r in recs:
            tdir = Path(r["run_dir"])
            shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
            if r["number"] != best["number"]:
                shutil.rmtree(tdir / "final", ignore_errors=True)

    @staticmethod
    def _judge_best(tdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        from sttrl.judge import judge

        record = json.loads((tdir / "run.json").read_text())
        if not record.get("final") or not (tdir / "final" / "model.safetensors").is_file():
            raise SttrlError(f"the best trial {tdir} has no saved final model")
        path = tdir / "judge.json"
        report = json.loads(path.read_text()) if path.is_file() else judge(tdir, progress=False)
        return report, record["final"]


def run_bench(cfg: Config, controllers: Sequence[str], seeds: Sequence[int], out: str | Path,
              **kwargs: Any) -> dict[str, Any]:
    """Run a benchmark (see :class:`Bench`); returns the bench.json document."""
    return Bench(cfg, controllers, seeds, out, **kwargs).run()


# ----- CLI ---------------------------------------------------------------------------------------
EXAMPLES = """examples:
  python -m graph.bench --preset debug --controllers static,random,rule,optuna --seeds 3 --out runs/bench-debug
  python -m graph.bench --preset cpu --seeds 3 --out runs/bench-cpu          all controllers (llm needs a key)
  python -m graph.bench --preset cpu --seeds 3 --out runs/bench-cpu          again: resumes, skips finished runs
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m graph.bench",
        description="Compare controllers (static, random, rule, llm, optuna) on the same training-step and\n"
        "evaluation budget; the judge's hidden-domain WER is the outcome. Writes DIR/bench.json and\n"
        "DIR/bench.png and prints a table. Run the same command again to resume.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument("--controllers", default=DEFAULT_CONTROLLERS,
                   help=f"comma-separated, from {', '.join(CONTROLLERS)} (default: {DEFAULT_CONTROLLERS})")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds per controller (default: 3)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S", help="seeds are S .. S+N-1 (default: 0)")
    p.add_argument("--out", type=Path, metavar="DIR", help="benchmark directory (default: <run.out_dir>/bench-<preset>)")
    p.add_argument("--model", metavar="PROVIDER:MODEL", help="chat model of the llm controller")
    p.add_argument("--optuna-trials", type=int, metavar="K",
                   help="Optuna trials sharing the episode's training steps (default: env.max_actions)")
    p.add_argument("--quiet", action="store_true", help="print only skipped controllers and the final table")
    return p


def main(argv: list[str] | None = None, agent_factory: AgentFactory | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.memory
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    try:
        cfg = load_config(args.preset, args.config, args.overrides)
        controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
        if args.seeds < 1:
            raise ConfigError("--seeds must be at least 1")
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        out = args.out or Path(cfg.run.out_dir) / f"bench-{cfg.preset}"
        bench = Bench(cfg, controllers, seeds, out, model=args.model, optuna_trials=args.optuna_trials,
                      agent_factory=agent_factory, console=console, quiet=args.quiet)
        doc = bench.run()
    except SttrlError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; run the same command again to resume (finished runs are skipped)",
                      highlight=False, markup=False)
        return 130
    console.print(doc["table"], highlight=False, markup=False)
    console.print(f"files: {Path(out) / 'bench.json'}, {Path(out) / 'bench.png'}", highlight=False, markup=False)
    failed = [r for r in doc["runs"] if r.get("status") != "finished"]
    for r in failed:
        console.print(f"run {r['thread_id']} failed: {r.get('error')}", highlight=False, markup=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
