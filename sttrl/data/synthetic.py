"""The offline source: corpus sentences -> split plan -> espeak-ng audio -> Utterances."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sttrl.config import DataConfig
from sttrl.data.corpus import DOMAINS, EPISODE_DOMAINS, PRETRAIN_DOMAIN, generate_sentences
from sttrl.data.hidden import hidden_salt, record_access
from sttrl.data.splits import cache_root, cap, hash_order, is_validation, utterance_id
from sttrl.data.synth import SynthSpec, draw_params, synthesize_many, validate_voices
from sttrl.data.types import Utterance
from sttrl.errors import DataError
from sttrl.io import sha256_file, sha256_text


@dataclass(frozen=True)
class Planned:
    """A sentence placed in a split, before synthesis."""

    uid: str
    domain: str
    text: str


def check_domains(cfg: DataConfig) -> None:
    """The configured domains must be corpus domains; ``general`` is for pretraining only. A training-domain
    error lists the other training domains only, never the hidden one."""
    for field, domain in [
        *(("data.train_domains", d) for d in cfg.train_domains),
        ("data.hidden_domain", cfg.hidden_domain),
    ]:
        if domain not in EPISODE_DOMAINS:
            hint = " ('general' is for pretraining only)" if domain == PRETRAIN_DOMAIN else ""
            valid = [d for d in EPISODE_DOMAINS if field == "data.hidden_domain" or d != cfg.hidden_domain]
            raise DataError(f"{field}: unknown synthetic domain {domain!r}{hint}; valid: {', '.join(valid)}")


def _hidden_plan(cfg: DataConfig, fingerprint: str, yields: str) -> list[Planned]:
    """The hidden domain's sentences; the one place they are generated, and every call is logged (sttrl.data.hidden)."""
    check_domains(cfg)
    record_access(fingerprint, "hidden sentences generated" if yields == "text" else "hidden hashes listed", yields)
    n = cfg.hidden_sentences or cfg.sentences_per_domain
    texts = generate_sentences(cfg.hidden_domain, n, cfg.seed, salt=hidden_salt(cfg))
    items = [Planned(utterance_id(cfg.hidden_domain, t), cfg.hidden_domain, t) for t in texts]
    return cap(hash_order(items, key=lambda p: p.uid), cfg.max_hidden_utterances)


def plan_hidden(cfg: DataConfig, fingerprint: str) -> list[Planned]:
    """The hidden domain's sentences, hash-ordered and capped (text only); the generation is logged
    (sttrl.data.hidden: outside the judge it fails the run's ``hidden_split_untouched``)."""
    return _hidden_plan(cfg, fingerprint, "text")


def hidden_listing(cfg: DataConfig, fingerprint: str) -> list[tuple[str, str, str]]:
    """(id, sha256 of text, sha256 of lower-cased text) of each hidden sentence: what the manifest lists and
    what training sentences are checked against. No text leaves this function: logged as a ``hashes`` access."""
    return [(p.uid, sha256_text(p.text), sha256_text(p.text.lower())) for p in _hidden_plan(cfg, fingerprint, "hashes")]


def plan_episode(cfg: DataConfig, hidden_hashes: set[str]) -> dict[str, list[Planned]]:
    """Train/validation from the training domains, split by hash of id; repeated sentences and sentences whose
    lower-cased sha256 is in ``hidden_hashes`` are dropped."""
    check_domains(cfg)
    splits: dict[str, list[Planned]] = {"train": [], "validation": []}
    seen: set[str] = set()
    for domain in cfg.train_domains:
        for text in generate_sentences(domain, cfg.sentences_per_domain, cfg.seed):
            if text.lower() in seen or sha256_text(text.lower()) in hidden_hashes:
                continue
            seen.add(text.lower())
            uid = utterance_id(domain, text)
            splits["validation" if is_validation(uid, cfg.validation_fraction) else "train"].append(
                Planned(uid, domain, text)
            )
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
    for item, spec, result in zip(items, specs, results, strict=True):
        if cfg.min_seconds <= result.duration <= cfg.max_seconds:
            out.append(
                Utterance(
                    item.uid, item.text, item.domain, result.path, result.duration, sha256_file(result.path), spec.voice
                )
            )
    stats["dropped_by_duration"] = float(len(items) - len(out))
    return out, stats


def general_sentences(n: int, seed: int, exclude: set[str]) -> list[Planned]:
    """``n`` general-domain sentences for pretraining, none whose lower-cased sha256 is excluded (hidden)."""
    if PRETRAIN_DOMAIN not in DOMAINS:
        raise DataError("the corpus has no general domain")
    texts = generate_sentences(PRETRAIN_DOMAIN, n + len(exclude) // 50 + 5, seed)
    kept = [t for t in texts if sha256_text(t.lower()) not in exclude][:n]
    return [Planned(utterance_id(PRETRAIN_DOMAIN, t), PRETRAIN_DOMAIN, t) for t in kept]
