"""The offline source: corpus sentences -> split plan -> espeak-ng audio -> Utterances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sttrl.config import DataConfig
from sttrl.data.corpus import DOMAINS, EPISODE_DOMAINS, PRETRAIN_DOMAIN, generate_sentences
from sttrl.data.splits import cache_root, cap, hash_order, is_validation, utterance_id
from sttrl.data.synth import SynthSpec, draw_params, synthesize_many, validate_voices
from sttrl.data.types import Utterance
from sttrl.errors import DataError
from sttrl.io import sha256_file


@dataclass(frozen=True)
class Planned:
    """A sentence placed in a split, before synthesis."""

    uid: str
    domain: str
    text: str


def check_domains(cfg: DataConfig) -> None:
    """The configured domains must be corpus domains; ``general`` is for pretraining only."""
    for field, domain in [*(("data.train_domains", d) for d in cfg.train_domains), ("data.hidden_domain", cfg.hidden_domain)]:
        if domain not in EPISODE_DOMAINS:
            hint = " ('general' is for pretraining only)" if domain == PRETRAIN_DOMAIN else ""
            raise DataError(f"{field}: unknown synthetic domain {domain!r}{hint}; valid: {', '.join(EPISODE_DOMAINS)}")


def plan_hidden(cfg: DataConfig) -> list[Planned]:
    """The hidden domain's sentences, hash-ordered and capped (text only: nothing is synthesized here)."""
    check_domains(cfg)
    texts = generate_sentences(cfg.hidden_domain, cfg.sentences_per_domain, cfg.seed)
    items = [Planned(utterance_id(cfg.hidden_domain, t), cfg.hidden_domain, t) for t in texts]
    return cap(hash_order(items, key=lambda p: p.uid), cfg.max_hidden_utterances)


def plan_episode(cfg: DataConfig, hidden_texts: set[str]) -> dict[str, list[Planned]]:
    """Train/validation from the training domains, split by hash of id; repeated or hidden sentences are dropped."""
    check_domains(cfg)
    splits: dict[str, list[Planned]] = {"train": [], "validation": []}
    seen = set(hidden_texts)
    for domain in cfg.train_domains:
        for text in generate_sentences(domain, cfg.sentences_per_domain, cfg.seed):
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            uid = utterance_id(domain, text)
            splits["validation" if is_validation(uid, cfg.validation_fraction) else "train"].append(Planned(uid, domain, text))
    limits = {"train": cfg.max_train_utterances, "validation": cfg.max_validation_utterances}
    return {name: cap(hash_order(items, key=lambda p: p.uid), limits[name]) for name, items in splits.items()}


def synthesize_planned(
    items: Sequence[Planned], cfg: DataConfig, voices: Sequence[str], progress: bool, label: str
) -> tuple[list[Utterance], dict[str, float]]:
    """Synthesize (or find cached) audio for ``items``; drop clips outside min/max_seconds."""
    validate_voices(voices)
    specs = []
    for item in items:
        voice, speed, pitch = draw_params(item.uid, voices, cfg.speed_wpm, cfg.pitch, cfg.seed)
        specs.append(SynthSpec(item.text, voice, speed, pitch, cfg.noise_snr_db, cfg.seed))
    results, stats = synthesize_many(specs, cache_root(cfg), cfg.workers, progress, label)
    out: list[Utterance] = []
    for item, spec, result in zip(items, specs, results):
        if cfg.min_seconds <= result.duration <= cfg.max_seconds:
            out.append(Utterance(item.uid, item.text, item.domain, result.path, result.duration, sha256_file(result.path), spec.voice))
    stats["dropped_by_duration"] = float(len(items) - len(out))
    return out, stats


def general_sentences(n: int, seed: int, exclude: set[str]) -> list[Planned]:
    """``n`` general-domain sentences for pretraining, none equal to an excluded (hidden) sentence."""
    if PRETRAIN_DOMAIN not in DOMAINS:
        raise DataError("the corpus has no general domain")
    texts = generate_sentences(PRETRAIN_DOMAIN, n + len(exclude) // 50 + 5, seed)
    kept = [t for t in texts if t.lower() not in exclude][:n]
    return [Planned(utterance_id(PRETRAIN_DOMAIN, t), PRETRAIN_DOMAIN, t) for t in kept]
