"""Experiment trackers (``run.tracker: wandb | mlflow``): each step's metrics, hyperparameters and transcript
samples, and the run's artifacts. Called only from the publishing thread (sttrl.outward.publish), so a slow or
failing tracker never blocks or fails the episode. Credentials (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN…) are read by
the libraries from the environment; nothing here logs them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

from sttrl import extras
from sttrl.errors import ConfigError
from sttrl.outward.sinks import ARTIFACTS
from sttrl.rundir import RUN_RECORD


class Tracker(Protocol):
    def log_step(self, record: dict[str, Any]) -> None: ...
    def log_artifacts(self, run_dir: Path) -> None: ...
    def finish(self) -> None: ...


def step_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one step record: reward, loss, WER, CER, hyperparameters after the action, timings."""
    out: dict[str, float] = {"reward": float(record["reward"])}
    obs, tr, ev = record.get("observation") or {}, record.get("train") or {}, record.get("eval") or {}
    for name, value in (
        ("train_loss", tr.get("mean_loss", obs.get("train_loss"))),
        ("wer", ev.get("wer", obs.get("wer"))),
        ("cer", ev.get("cer", obs.get("cer"))),
        ("samples_per_s", tr.get("samples_per_s")),
        ("peak_memory_gb", tr.get("peak_memory_gb")),
    ):
        if isinstance(value, (int, float)):
            out[name] = float(value)
    for k, v in (record.get("hp_after") or {}).items():
        out[f"hp/{k}"] = float(v)
    for k, v in (record.get("timings") or {}).items():
        out[f"time/{k}"] = float(v)
    return out


def samples_text(record: dict[str, Any]) -> str:
    ex = (record.get("eval") or {}).get("examples") or []
    return "\n".join(f"REF {e.get('reference', '')}\nHYP {e.get('hypothesis', '')}" for e in ex)


def _params(run_cfg_full: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)

    walk(run_cfg_full, "")
    return flat


class WandbTracker:
    """Weights & Biases: one run per sttrl run id (resumed, never duplicated); offline mode writes files only."""

    def __init__(self, run_cfg: dict[str, Any], run_id: str, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb  # the track extra: loaded only when run.tracker=wandb

        self.wandb = wandb
        directory = Path(run_cfg.get("tracker_uri") or run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=run_cfg.get("tracker_project") or "sttrl",
            id=run_id,
            name=run_id,
            dir=str(directory),
            mode=run_cfg.get("wandb_mode") or "offline",
            config=config,
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log_step(self, record: dict[str, Any]) -> None:
        data: dict[str, Any] = dict(step_metrics(record))
        data["action"] = record["action"]
        text = samples_text(record)
        if text:
            rows = [[e.get("id"), e.get("reference"), e.get("hypothesis")] for e in record["eval"]["examples"]]
            data["samples"] = self.wandb.Table(columns=["id", "reference", "hypothesis"], data=rows)
        self.run.log(data, step=int(record["step"]))

    def log_artifacts(self, run_dir: Path) -> None:
        art = self.wandb.Artifact(f"run-{self.run.id}", type="sttrl-run")
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                art.add_file(str(run_dir / name), name=name)
        self.run.log_artifact(art)

    def finish(self) -> None:
        self.run.finish()


class MlflowTracker:
    """MLflow through its client API: one run tagged ``sttrl.run_id`` (found again on resume)."""

    def __init__(self, run_cfg: dict[str, Any], run_id: str, run_dir: Path, config: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient  # the track extra: loaded only when run.tracker=mlflow

        self.client = MlflowClient(tracking_uri=run_cfg.get("tracker_uri") or None)
        name = run_cfg.get("tracker_project") or "sttrl"
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
        found = self.client.search_runs([exp_id], filter_string=f"tags.`sttrl.run_id` = '{run_id}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
        else:
            run = self.client.create_run(exp_id, run_name=run_id, tags={"sttrl.run_id": run_id})
            self.run_id = run.info.run_id
            params = _params(config)
            from mlflow.entities import Param  # the track extra (run.tracker=mlflow)

            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])

    def log_step(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric  # the track extra (run.tracker=mlflow)

        now, step = int(time.time() * 1000), int(record["step"])
        metrics = [Metric(k.replace("/", "."), v, now, step) for k, v in step_metrics(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        text = samples_text(record)
        if text:
            self.client.log_text(self.run_id, text, f"samples/step-{step:06d}.txt")

    def log_artifacts(self, run_dir: Path) -> None:
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)


def make_tracker(run_cfg: dict[str, Any], run_id: str, run_dir: Path) -> Tracker:
    """The tracker named by ``run.tracker``, with the run's resolved config as its parameters."""
    record_path = run_dir / RUN_RECORD
    config = json.loads(record_path.read_text()).get("config", {}) if record_path.is_file() else {}
    name = run_cfg.get("tracker") or "none"
    if name in ("wandb", "mlflow"):
        extras.require(name, extra="track", what=f"run.tracker={name}")
    if name == "wandb":
        return WandbTracker(run_cfg, run_id, run_dir, config)
    if name == "mlflow":
        return MlflowTracker(run_cfg, run_id, run_dir, config)
    raise ConfigError(f"run.tracker={name!r}: valid trackers are none, wandb, mlflow")
