"""The terminal judge: scores the saved final model on the hidden domain that training never touched.

``python -m sttrl.judge RUN_DIR`` loads ``RUN_DIR/final`` from disk (never a live object), checks
it against the run record, and writes ``RUN_DIR/judge.json``:
``{"wer", "cer", "score", "scored", "checks": {name: {"passed", "reason"}}, ...}`` with
``score = 100 * (1 - WER)`` clipped to [0, 100]. ``scored`` is true only when every check passed; the exit
status is 0 then, 1 when any check failed, 2 on an error. Checks: the run record's signature (or the
graph state's hashes), the final weights and config against it, weights changed, splits disjoint, the
hidden split untouched (the access log outside the run directory), every reward recomputed, and the number of
steps against the signed record's final block. The report holds no hidden text (no example transcripts): a later run
could read it from the run directory without a log entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sttrl.config import Config, config_from_dict, secret
from sttrl.data import load_hidden_split
from sttrl.data.dataset import data_fingerprint
from sttrl.data.hidden import judge_access
from sttrl.errors import IntegrityError, SttrlError
from sttrl.eval.engines import evaluate_with
from sttrl.eval.engines import names as engine_names
from sttrl.io import atomic_write_json, read_jsonl
from sttrl.judge.integrity import check_step_count, check_trajectory, hidden_access_check
from sttrl.keys import verify_record
from sttrl.quiet import quiet
from sttrl.rundir import JUDGE_REPORT, JUDGE_UTTERANCES, RUN_RECORD, TRAJECTORY, final_file_hashes
from sttrl.train.device import resolve_device
from sttrl.train.features import FeatureStore, feature_cache_dir
from sttrl.train.memory import limit_arenas, torch_thread
from sttrl.train.model import load_for_inference


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


def _evals(run_dir: Path) -> dict[int, float]:
    out = {}
    for path in (run_dir / "evals").glob("block-*.json"):
        try:
            out[int(path.stem.split("-")[1])] = float(json.loads(path.read_text())["wer"])
        except (ValueError, KeyError, OSError):
            continue
    return out


def _weight_checks(run_dir: Path, record: dict[str, Any], expected: dict[str, Any] | None) -> dict[str, Any]:
    """The final weights and config against the signed run record and, when given, the graph state's hashes."""
    checks: dict[str, Any] = {}
    ok, why = verify_record(record)
    if expected is not None:
        want = expected.get("final_sha256")
        got = (record.get("final") or {}).get("sha256")
        if want and got != want:
            ok, why = False, f"run.json's final hash {str(got)[:16]}… differs from the graph state's {want[:16]}…"
        elif want and ok:
            why += "; final hash equals the graph state's"
    checks["record_authentic"] = _check(ok, why)
    final = record.get("final")
    final_dir = run_dir / (final["path"] if final else "final")
    weights = final_dir / "model.safetensors"
    if not final or not weights.is_file():
        checks["checkpoint_present"] = _check(False, f"no final checkpoint at {final_dir}; the episode did not finish")
        return checks
    checks["checkpoint_present"] = _check(True, f"{final_dir} (block {final['block']}, step {final['global_step']})")
    recorded = dict(final.get("files") or {"model.safetensors": final["sha256"]})
    if expected is not None and expected.get("final_files"):
        recorded.update(expected["final_files"])
    if expected is not None and expected.get("final_sha256"):
        recorded["model.safetensors"] = expected["final_sha256"]
    actual = final_file_hashes(final_dir)
    bad = [n for n, h in recorded.items() if actual.get(n) != h]
    if bad:
        seen, want = actual.get(bad[0], "missing")[:16], recorded[bad[0]][:16]
        why = f"{', '.join(bad)} differ from the recorded sha256 ({seen}… vs {want}…)"
    else:
        why = f"{', '.join(sorted(recorded))} match the recorded sha256"
    checks["hash_matches_record"] = _check(not bad, why)
    initial = {record.get("initial_weights_sha256")}
    if expected is not None:
        initial |= {c["sha256"] for c in expected.get("checkpoints") or [] if c.get("block") == 0}
    changed = actual.get("model.safetensors") not in initial
    checks["weights_changed"] = _check(
        changed, "weights differ from the initial ones" if changed else "weights are identical to the initial ones"
    )
    return checks


def _run_checks(
    run_dir: Path, record: dict[str, Any], cfg: Config, expected: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Every check of the run: weights and record, splits, the hidden split's access log, the trajectory's rewards."""
    checks = _weight_checks(run_dir, record, expected)
    checks["splits_disjoint"] = _manifest_checks(Path(record["data_manifest"]), cfg.data.hidden_domain)
    checks["hidden_split_untouched"] = hidden_access_check(record, cfg.data)
    start = _evals(run_dir).get(0)
    theirs = expected.get("records") if expected is not None else None
    if not (run_dir / TRAJECTORY).is_file():  # not an episode (a search trial): no rewards to verify
        checks["trajectory_consistent"] = _check(
            not theirs,
            "no trajectory.jsonl: the run has no step rewards (e.g. a search trial)"
            if not theirs
            else f"trajectory.jsonl is missing but the graph state holds {len(theirs)} step records",
        )
    elif start is None:
        checks["trajectory_consistent"] = _check(False, "evals/block-0000.json (the starting WER) is missing")
    else:
        # read only, positions kept: a torn line is reported by the check, not repaired here
        traj = read_jsonl(run_dir / TRAJECTORY, torn="empty")
        ok, why = check_trajectory(traj, start, cfg.env.reward, _evals(run_dir), theirs)
        if ok:  # every step adds up; now the count against what the judge key signed
            ok, counted = check_step_count(traj, record.get("final"))
            why = why if ok else counted
        checks["trajectory_consistent"] = _check(ok, why)
    return checks


def _score(
    run_dir: Path,
    record: dict[str, Any],
    cfg: Config,
    engine: str | None,
    progress: bool,
    hf_token: str | None,
    split: str,
) -> dict[str, Any]:
    """Measure the final model on the hidden ``split`` (the only load of it, recorded in the access log)."""
    final_dir = run_dir / record["final"]["path"]
    device = resolve_device(cfg.run.device)
    loaded = load_for_inference(final_dir, run_dir / "processor", cfg.model, device)
    with judge_access(record, data_fingerprint(cfg.data)):
        hidden = load_hidden_split(cfg.data, progress=progress, token=hf_token, split=split)
    if cfg.data.max_hidden_utterances:
        hidden = hidden[: cfg.data.max_hidden_utterances]
    store = FeatureStore(loaded, hidden, cfg.model.max_target_tokens, feature_cache_dir(cfg))
    t0 = time.perf_counter()
    res = evaluate_with(cfg, store, device, engine, per_utterance=True)
    return {
        "utterances": res.utterances,  # per-utterance errors: a file of their own, not the report
        "wer": res.wer,
        "cer": res.cer,
        "n_utterances": res.n,
        "seconds": time.perf_counter() - t0,
        "engine": res.engine,  # no example transcripts: hidden text would outlive the judge in the run directory
    }


@torch_thread  # the thread an episode trained on (see sttrl.train.memory)
def judge(
    run_dir: str | Path,
    progress: bool = True,
    write: bool = True,
    expected: dict[str, Any] | None = None,
    engine: str | None = None,
    hf_token: str | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Check and score ``run_dir``'s final model on the hidden split; returns (and writes) the report.

    ``expected`` holds what the run directory cannot rewrite (see sttrl.judge.integrity.expected_from_state): the
    final weights' sha256, the block checkpoints' hashes and the step records of the graph state.
    Without it, the signature of the run record (a key outside the run directory) is the reference.
    ``scored`` is true only when every check passed: only then is the WER trustworthy.
    ``engine`` (an engine of sttrl.eval.engines) overrides the run's ``train.eval_engine``; the report names the
    one used. ``hf_token`` (resolved by the entry point) is needed only for a hub dataset.
    ``split``: ``test`` (reported results; ``judge.json``) or ``dev`` (every tuning decision; ``judge-dev.json``).
    """
    if split not in ("dev", "test"):
        raise SttrlError(f"judge split {split!r} is not one of dev, test")
    run_dir = Path(run_dir)
    record_path = run_dir / RUN_RECORD
    if not record_path.is_file():
        raise SttrlError(f"{run_dir} is not a run directory: {RUN_RECORD} is missing")
    try:
        record = json.loads(record_path.read_text())
        cfg = config_from_dict(record["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{record_path} is not a valid run record: {exc}") from None
    checks = _run_checks(run_dir, record, cfg, expected)
    report: dict[str, Any] = {
        "run_id": record["run_id"],
        "hidden_domain": cfg.data.hidden_domain,
        "checks": checks,
        "scored": False,
        "wer": None,
        "cer": None,
        "score": 0.0,
    }
    verified = "hash_matches_record" in checks and all(
        checks[k]["passed"] for k in ("record_authentic", "checkpoint_present", "hash_matches_record")
    )
    passed_all = all(c["passed"] for c in checks.values())
    utterances = None
    if verified:  # the weights are the run's own: measure them (trusted only when every check passed)
        measured = _score(run_dir, record, cfg, engine, progress, hf_token, split)
        utterances = measured.pop("utterances")
        score = float(min(100.0, max(0.0, 100.0 * (1.0 - measured["wer"])))) if passed_all else 0.0
        report.update(scored=passed_all, score=score, **measured)
    report["split"] = split
    report["passed_all_checks"] = passed_all
    if write:
        atomic_write_json(run_dir / (JUDGE_REPORT if split == "test" else f"judge-{split}.json"), report)
        if utterances is not None:  # next to the report: two runs compare on the same utterances
            name = JUDGE_UTTERANCES if split == "test" else f"judge-utterances-{split}.json"
            atomic_write_json(run_dir / name, {"run_id": record["run_id"], "split": split, "utterances": utterances})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sttrl.judge", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding run.json and final/")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--split",
        choices=("dev", "test"),
        default="test",
        help="hidden split: test (reported results, judge.json) or dev (tuning, judge-dev.json)",
    )
    parser.add_argument(
        "--engine",
        choices=engine_names(),
        default=None,
        help="decoder for scoring (default: the run's train.eval_engine)",
    )
    args = parser.parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    if args.quiet:
        quiet()
    try:
        report = judge(
            args.run_dir, progress=not args.quiet, engine=args.engine, hf_token=secret("HF_TOKEN"), split=args.split
        )
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, c in report["checks"].items():
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {name}: {c['reason']}")
    if report["scored"]:
        print(
            f"hidden {report['hidden_domain']}: WER {report['wer']:.3f}  CER {report['cer']:.3f}  "
            f"score {report['score']:.1f}"
            f"  ({report['n_utterances']} utterances in {report['seconds']:.1f} s, {report['engine']})"
        )
        return 0
    failed = [n for n, c in report["checks"].items() if not c["passed"]]
    measured = f" (WER {report['wer']:.3f} measured, not trustworthy)" if report["wer"] is not None else ""
    print(f"not scored{measured}: failed {', '.join(failed)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
