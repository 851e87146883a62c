"""The terminal judge: scores the saved final model on the hidden domain that training never touched.

``python -m sttrl.judge RUN_DIR`` loads ``RUN_DIR/final`` from disk (never a live object), checks
it against the run record, and writes ``RUN_DIR/judge.json``:
``{"wer", "cer", "score", "scored", "checks": {name: {"passed", "reason"}}, ...}`` with
``score = 100 * (1 - WER)`` clipped to [0, 100]. A tampered or missing checkpoint is not scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sttrl.config import config_from_dict
from sttrl.data import load_hidden_split
from sttrl.errors import SttrlError
from sttrl.engines import ENGINES, evaluate_with
from sttrl.features import FeatureStore
from sttrl.io import atomic_write_json, sha256_file
from sttrl.memory import limit_arenas, torch_thread
from sttrl.model import load_for_inference
from sttrl.runtime import RUN_RECORD, feature_cache_dir, resolve_device


def _check(passed: bool, reason: str) -> dict[str, Any]:
    return {"passed": bool(passed), "reason": reason}


def _manifest_checks(manifest_path: Path, hidden_domain: str) -> dict[str, Any]:
    if not manifest_path.is_file():
        return _check(False, f"data manifest {manifest_path} is missing")
    manifest = json.loads(manifest_path.read_text())
    splits = manifest.get("splits", {})
    ids = {name: {u["id"] for u in split.get("utterances", [])} for name, split in splits.items()}
    names = sorted(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            overlap = ids[a] & ids[b]
            if overlap:
                return _check(False, f"splits {a} and {b} share {len(overlap)} ids, e.g. {sorted(overlap)[0]}")
    sizes = ", ".join(f"{n}={len(ids[n])}" for n in names)
    return _check(True, f"splits disjoint by id ({sizes}); hidden domain {hidden_domain}")


@torch_thread  # the thread an episode trained on (see sttrl.memory)
def judge(run_dir: str | Path, progress: bool = True, write: bool = True, engine: str | None = None,
          hf_token: str | None = None) -> dict[str, Any]:
    """Check and score ``run_dir``'s final model on the hidden split; returns (and writes) the report.

    ``engine`` (transformers | ct2) overrides the run's ``train.eval_engine``; the report names the one used.
    ``hf_token`` (resolved by the entry point) is needed only for a hub dataset."""
    run_dir = Path(run_dir)
    record_path = run_dir / RUN_RECORD
    if not record_path.is_file():
        raise SttrlError(f"{run_dir} is not a run directory: {RUN_RECORD} is missing")
    record = json.loads(record_path.read_text())
    cfg = config_from_dict(record["config"])
    hidden_name = "test"
    checks: dict[str, Any] = {}
    final = record.get("final")
    final_dir = run_dir / (final["path"] if final else "final")
    weights = final_dir / "model.safetensors"
    if not final or not weights.is_file():
        checks["checkpoint_present"] = _check(False, f"no final checkpoint at {final_dir}; the episode did not finish")
    else:
        checks["checkpoint_present"] = _check(True, f"{final_dir} (block {final['block']}, step {final['global_step']})")
        actual = sha256_file(weights)
        checks["hash_matches_record"] = _check(
            actual == final["sha256"],
            f"sha256 {actual[:16]}… {'matches' if actual == final['sha256'] else 'differs from'} the run record "
            f"{final['sha256'][:16]}…",
        )
        changed = actual != record["initial_weights_sha256"]
        checks["weights_changed"] = _check(
            changed, "weights differ from the initial ones" if changed else "weights are identical to the initial ones"
        )
    checks["splits_disjoint"] = _manifest_checks(Path(record["data_manifest"]), cfg.data.hidden_domain)
    opened = record.get("opened_splits", [])
    checks["hidden_split_untouched"] = _check(
        hidden_name not in opened and cfg.data.hidden_domain not in opened,
        f"the episode opened only {opened}",
    )
    report: dict[str, Any] = {
        "run_id": record["run_id"],
        "hidden_domain": cfg.data.hidden_domain,
        "checks": checks,
        "scored": False,
        "wer": None,
        "cer": None,
        "score": 0.0,
    }
    scorable = checks["checkpoint_present"]["passed"] and checks.get("hash_matches_record", {}).get("passed")
    if scorable:
        device = resolve_device(cfg.run.device)
        loaded = load_for_inference(final_dir, run_dir / "processor", cfg.model, device)
        hidden = load_hidden_split(cfg.data, progress=progress, token=hf_token)
        if cfg.data.max_hidden_utterances:
            hidden = hidden[: cfg.data.max_hidden_utterances]
        store = FeatureStore(loaded, hidden, cfg.model.max_target_tokens, feature_cache_dir(cfg))
        t0 = time.perf_counter()
        res = evaluate_with(cfg, store, device, engine)
        report.update(
            scored=True,
            wer=res.wer,
            cer=res.cer,
            score=float(min(100.0, max(0.0, 100.0 * (1.0 - res.wer)))),
            n_utterances=res.n,
            seconds=time.perf_counter() - t0,
            engine=res.engine,
            examples=res.examples,
        )
    report["passed_all_checks"] = all(c["passed"] for c in checks.values())
    if write:
        atomic_write_json(run_dir / "judge.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sttrl.judge", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding run.json and final/")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="decoder for scoring (default: the run's train.eval_engine)")
    args = parser.parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.memory
    try:
        from sttrl.config import secret

        report = judge(args.run_dir, progress=not args.quiet, engine=args.engine, hf_token=secret("HF_TOKEN"))
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, c in report["checks"].items():
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {name}: {c['reason']}")
    if report["scored"]:
        print(f"hidden {report['hidden_domain']}: WER {report['wer']:.3f}  CER {report['cer']:.3f}  score {report['score']:.1f}"
              f"  ({report['n_utterances']} utterances in {report['seconds']:.1f} s, {report['engine']})")
        return 0
    print("not scored: the final checkpoint failed its integrity checks", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
