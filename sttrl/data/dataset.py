"""The episode's data object and its builders. Only :func:`load_hidden_split` (the judge's) touches hidden audio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sttrl.config import DataConfig
from sttrl.data import hub, synthetic
from sttrl.data.corpus import lexicon_fingerprint
from sttrl.data.hidden import record_access
from sttrl.data.splits import (
    check_disjoint,
    config_fingerprint,
    hidden_part,
    manifest_path,
    read_manifest,
    write_manifest,
)
from sttrl.data.types import Utterance
from sttrl.errors import DataError, HiddenSplitAccessError, IntegrityError
from sttrl.io import atomic_write_json, sha256_text
from sttrl.keys import key_fingerprint

EPISODE_SPLITS = ("train", "validation")
SplitName = Literal["train", "validation"]


class SpeechData:
    """Train and validation utterances of one episode. The hidden split is not in here and cannot be opened."""

    def __init__(
        self,
        splits: dict[str, list[Utterance]],
        manifest_path: Path,
        stats: dict[str, Any],
        hidden_names: Sequence[str],
    ) -> None:
        self._splits = {name: list(splits[name]) for name in EPISODE_SPLITS}
        self.manifest_path = manifest_path
        self.stats = stats
        self.opened_splits: list[str] = []
        self.denied_requests: list[str] = []
        self._hidden_names = frozenset(hidden_names)

    def split(self, name: SplitName) -> list[Utterance]:
        """A copy of the split's utterances; the open is recorded in ``opened_splits``."""
        if name not in EPISODE_SPLITS:
            self.denied_requests.append(str(name))
            if name in self._hidden_names:
                raise HiddenSplitAccessError(
                    f"split {name!r} is the hidden test split: only the judge loads it (sttrl.data.load_hidden_split)"
                )
            raise DataError(f"unknown split {name!r}; valid: {', '.join(EPISODE_SPLITS)}")
        if name not in self.opened_splits:
            self.opened_splits.append(name)
        return list(self._splits[name])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(u)}" for n, u in self._splits.items())
        return f"SpeechData({sizes}, manifest={self.manifest_path})"


def data_fingerprint(cfg: DataConfig) -> str:
    """What decides the data's content; the synthetic hidden sentences depend on the judge key's fingerprint."""
    extra = {"lexicon": lexicon_fingerprint(), "judge_key": key_fingerprint()} if cfg.source == "synthetic" else {}
    return config_fingerprint(cfg, extra)


_fingerprint = data_fingerprint


def _rows(utterances: Sequence[Utterance]) -> list[dict[str, Any]]:
    return [
        {
            "id": u.uid,
            "domain": u.domain,
            "speaker": u.speaker,
            "duration": round(u.duration, 3),
            "text_sha256": sha256_text(u.text),
            "audio_sha256": u.sha256,
        }
        for u in utterances
    ]


def _summary(utterances: Sequence[Utterance]) -> dict[str, Any]:
    hours = sum(u.duration for u in utterances) / 3600
    domains: dict[str, int] = {}
    for u in utterances:
        domains[u.domain] = domains.get(u.domain, 0) + 1
    return {"count": len(utterances), "hours": round(hours, 4), "domains": domains}


def build_speech_data(cfg: DataConfig, progress: bool = True, token: str | None = None) -> SpeechData:
    """Build (or load from cache) train and validation; write the manifest. Never synthesizes, downloads or reads
    hidden audio.

    For the synthetic source the hidden domain's sentence ids and text hashes are computed (text only, in memory)
    so the manifest can list them and training sentences equal to a hidden one can be dropped.
    """
    fingerprint = _fingerprint(cfg)
    stats: dict[str, Any] = {"source": cfg.source, "fingerprint": fingerprint}
    if cfg.source == "synthetic":
        hidden_plan = synthetic.hidden_listing(cfg, fingerprint)
        plan = synthetic.plan_episode(cfg, {lower for _, _, lower in hidden_plan})
        splits: dict[str, list[Utterance]] = {}
        synth_stats = []
        for name in EPISODE_SPLITS:
            splits[name], s = synthetic.synthesize_planned(
                plan[name], cfg, cfg.voices, progress, f"synthesizing {name}"
            )
            synth_stats.append(s)
        hidden_section: dict[str, Any] = {
            "domain": cfg.hidden_domain,
            "listed": True,
            "note": "ids and text hashes before the duration filter; no text, no audio",
            "count": len(hidden_plan),
            "dev_fraction": cfg.hidden_dev_fraction,
            "utterances": [
                {"id": uid, "text_sha256": text_hash, "part": hidden_part(uid, cfg.hidden_dev_fraction)}
                for uid, text_hash, _ in hidden_plan
            ],
        }
        stats["synthesis"] = _merge_synth_stats(synth_stats)
        hidden_ids = [uid for uid, _, _ in hidden_plan]
        hidden_hashes = [lower for _, _, lower in hidden_plan]
    else:
        splits = {name: hub.load_hub_split(cfg, name, progress, token) for name in EPISODE_SPLITS}
        hidden_section = {
            "domain": cfg.hidden_domain,
            "listed": False,
            "note": "hub hidden split is read only by the judge (load_hidden_split)",
        }
        hidden_ids, hidden_hashes = [], []
    check_disjoint(
        {
            "train": [u.uid for u in splits["train"]],
            "validation": [u.uid for u in splits["validation"]],
            "hidden": hidden_ids,
        }
    )
    check_disjoint(
        {
            "train+validation": {sha256_text(u.text.lower()) for n in EPISODE_SPLITS for u in splits[n]},
            "hidden": set(hidden_hashes),
        },
        what="a sentence text",
    )
    for name in EPISODE_SPLITS:
        if not splits[name]:
            raise DataError(
                f"split {name!r} is empty: raise data.sentences_per_domain or widen data.min_seconds/max_seconds"
            )
        stats[name] = _summary(splits[name])
    path = manifest_path(cfg, fingerprint)
    sections = {name: {**_summary(splits[name]), "utterances": _rows(splits[name])} for name in EPISODE_SPLITS}
    extra = {"lexicon_sha256": lexicon_fingerprint()} if cfg.source == "synthetic" else {}
    write_manifest(path, fingerprint, cfg, {**sections, "hidden": hidden_section}, extra)
    hidden_names = {"test", "hidden", cfg.hidden_domain, cfg.hub.hidden_split}
    return SpeechData(splits, path, stats, sorted(hidden_names - set(EPISODE_SPLITS)))


def _merge_synth_stats(parts: list[dict[str, float]]) -> dict[str, float]:
    made = sum(p["synthesized"] for p in parts)
    seconds = sum(p["seconds"] for p in parts)
    count = sum(p["utterances"] for p in parts)
    mean = sum(p["mean_duration_s"] * p["utterances"] for p in parts) / count if count else 0.0
    return {
        "utterances": count,
        "synthesized": made,
        "cached": count - made,
        "seconds": round(seconds, 3),
        "utterances_per_s": round(made / seconds, 2) if made and seconds > 0 else 0.0,
        "mean_duration_s": round(mean, 3),
        "dropped_by_duration": sum(p["dropped_by_duration"] for p in parts),
        "workers": parts[0]["workers"] if parts else 0.0,
    }


def load_hidden_split(
    cfg: DataConfig, progress: bool = True, token: str | None = None, split: str = "test"
) -> list[Utterance]:
    """A hidden split (judge only): synthesizes or loads the hidden domain, checks it against the manifest, and
    returns its ``dev`` part (for every tuning decision), its ``test`` part (reported results only) or ``all``.
    ``token``: the HF token the entry point resolved (hub data only).

    Every call is logged beside the judge key (sttrl.data.hidden); outside ``judge_access`` it fails the
    judge's ``hidden_split_untouched`` for any run of the same data live at that moment."""
    fingerprint = _fingerprint(cfg)
    if cfg.source == "synthetic":
        plan = synthetic.plan_hidden(cfg, fingerprint)  # logged: see sttrl.data.hidden
        _verify_against_manifest(cfg, fingerprint, [(p.uid, sha256_text(p.text)) for p in plan])
        utterances, _ = synthetic.synthesize_planned(plan, cfg, cfg.voices, progress, "synthesizing hidden")
    else:
        record_access(fingerprint, "hidden split loaded")
        utterances = hub.load_hub_split(cfg, "hidden", progress, token)
        _verify_against_manifest(cfg, fingerprint, [(u.uid, sha256_text(u.text)) for u in utterances])
    if split not in ("dev", "test", "all"):
        raise DataError(f"hidden split {split!r} is not one of dev, test, all")
    record = manifest_path(cfg, fingerprint).with_suffix(".hidden.json")  # the whole hidden domain, with parts
    atomic_write_json(
        record,
        {
            "fingerprint": fingerprint,
            "domain": cfg.hidden_domain,
            "count": len(utterances),
            "utterances": [
                {
                    "id": u.uid,
                    "text_sha256": sha256_text(u.text),
                    "audio_sha256": u.sha256,
                    "part": hidden_part(u.uid, cfg.hidden_dev_fraction),
                }
                for u in utterances
            ],
        },
    )
    if split != "all":
        utterances = [u for u in utterances if hidden_part(u.uid, cfg.hidden_dev_fraction) == split]
    if not utterances:
        raise DataError(
            f"hidden {split} split ({cfg.hidden_domain}) is empty after the duration filter: raise "
            "data.hidden_sentences or change data.hidden_dev_fraction"
        )
    return utterances


def _verify_against_manifest(cfg: DataConfig, fingerprint: str, hidden: list[tuple[str, str]]) -> None:
    """If build_speech_data wrote a manifest, the hidden split must match what it listed and share nothing with
    train."""
    path = manifest_path(cfg, fingerprint)
    if not path.is_file():
        return
    manifest = read_manifest(path)
    listed = manifest["splits"].get("hidden", {})
    if listed.get("listed"):
        expected = {row["id"]: row["text_sha256"] for row in listed.get("utterances", [])}
        got = dict(hidden)
        if expected != got:
            changed = sorted(set(expected.items()) ^ set(got.items()))[:3]
            raise IntegrityError(f"hidden split differs from manifest {path} (e.g. {changed}); rebuild the data")
    episode_ids = [
        row["id"] for name in EPISODE_SPLITS for row in manifest["splits"].get(name, {}).get("utterances", [])
    ]
    check_disjoint({"train+validation": episode_ids, "hidden": [uid for uid, _ in hidden]})


def build_general_data(cfg: DataConfig, n: int, voices: list[str], progress: bool = True) -> list[Utterance]:
    """``n`` general-domain utterances (everyday speech) for pretraining a base model; never hidden sentences."""
    if n < 1:
        raise DataError(f"build_general_data: n must be >= 1, got {n}")
    listing = synthetic.hidden_listing(cfg, _fingerprint(cfg)) if cfg.source == "synthetic" else []
    hidden = {lower for _, _, lower in listing}
    plan = synthetic.general_sentences(n, cfg.seed, hidden)
    utterances, _ = synthetic.synthesize_planned(plan, cfg, voices, progress, "synthesizing general")
    return utterances
