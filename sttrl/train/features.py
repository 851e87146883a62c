"""Log-mel features and label ids per utterance, computed once; the label collator.

With a ``cache_dir`` (what the runtime and the judge pass: ``<data.cache_dir>/features``) the features
live on disk, one ``.npy`` per utterance, content-addressed by the audio's sha256 under a key of the
feature extractor's settings: ``features/<extractor key>/<sha[:2]>/<sha>.npy``. A batch reads its rows
from the page cache (~1 ms per batch of 8 here), so the process holds no feature cache at all (it
grew by 2 MB a step in memory and fragmented the heap between activations), and later episodes,
resumed runs and the judge reuse the features instead of recomputing them. Files are written to a
temporary name and renamed; a file that does not load with the expected shape is recomputed.
Without ``cache_dir`` the features are kept in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sttrl.config import Config
from sttrl.data import Utterance, load_audio
from sttrl.train.model import LoadedModel

FEATURE_FORMAT = 1  # bump when the stored layout or dtype changes


def extractor_key(feature_extractor) -> str:
    """A short hash of everything that determines the features: the extractor's settings and our format."""
    settings = json.loads(feature_extractor.to_json_string())
    settings["sttrl_feature_format"] = FEATURE_FORMAT
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Batch:
    input_features: torch.Tensor  # (B, mels, frames)
    decoder_input_ids: torch.Tensor  # (B, T): prefix + text, padded with eot
    labels: torch.Tensor  # (B, T): text + eot, prefix and padding masked with -100
    label_positions: torch.Tensor | None = None  # (N,): flat indices into (B*T) of the labels that count
    label_targets: torch.Tensor | None = None  # (N,): the labels at those positions

    @classmethod
    def of(cls, input_features: torch.Tensor, decoder_input_ids: torch.Tensor, labels: torch.Tensor) -> Batch:
        """A batch with its labelled positions (labels != -100) found on the host."""
        flat = labels.reshape(-1)
        positions = (flat != -100).nonzero().squeeze(1)
        return cls(input_features, decoder_input_ids, labels, positions, flat.index_select(0, positions))

    @property
    def size(self) -> int:
        return int(self.input_features.shape[0])

    def to(self, device: torch.device) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Batch(
            *(
                move(t)
                for t in (
                    self.input_features,
                    self.decoder_input_ids,
                    self.labels,
                    self.label_positions,
                    self.label_targets,
                )
            )
        )


class FeatureStore:
    """Features and token ids of a list of utterances, by index; computed lazily, cached."""

    def __init__(
        self, loaded: LoadedModel, utterances: list[Utterance], max_tokens: int, cache_dir: str | Path | None = None
    ) -> None:
        self.loaded = loaded
        self.utterances = utterances
        self.max_tokens = max_tokens
        self._features: dict[int, np.ndarray] = {}  # in-memory mode only
        self._tokens: dict[int, list[int]] = {}
        tok = loaded.processor.tokenizer
        self.eot = int(tok.eos_token_id)
        fe = loaded.processor.feature_extractor
        self.shape = (int(fe.feature_size), int(fe.n_samples) // int(fe.hop_length))
        self.cache_dir = Path(cache_dir) / extractor_key(fe) if cache_dir is not None else None

    def __len__(self) -> int:
        return len(self.utterances)

    def _path(self, i: int) -> Path:
        sha = self.utterances[i].sha256
        return self.cache_dir / sha[:2] / f"{sha}.npy"

    def _load(self, i: int) -> np.ndarray | None:
        try:
            feat = np.load(self._path(i), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return feat if feat.shape == self.shape and feat.dtype == np.float32 else None

    def _store(self, i: int, feat: np.ndarray) -> None:
        path = self._path(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, feat, allow_pickle=False)
            os.replace(tmp, path)  # a cache: no fsync; a torn file fails _load's checks and is recomputed
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _compute(self, indices: list[int]) -> list[np.ndarray]:
        # One utterance per call: the extractor's batched path pads and stacks the whole batch first and
        # measured 2.5-3x slower here (0.15-0.21 s against 0.06 s for 64 utterances of 8 s); same values.
        fe = self.loaded.processor.feature_extractor
        out = []
        for i in indices:
            audio = load_audio(self.utterances[i].audio_path)
            feat = fe(audio, sampling_rate=fe.sampling_rate, return_tensors="np").input_features[0]
            out.append(feat.astype(np.float32, copy=False))
        return out

    def features(self, indices: list[int]) -> torch.Tensor:
        """``(len(indices), mels, frames)`` float32 log-mel features."""
        if self.cache_dir is None:
            missing = [i for i in dict.fromkeys(indices) if i not in self._features]
            if missing:
                self._features.update(zip(missing, self._compute(missing), strict=True))
            return torch.from_numpy(np.stack([self._features[i] for i in indices]))
        out = np.empty((len(indices), *self.shape), dtype=np.float32)
        missing: dict[int, list[int]] = {}  # utterance index -> rows of the batch
        for row, i in enumerate(indices):
            feat = self._load(i)
            if feat is None:
                missing.setdefault(i, []).append(row)
            else:
                out[row] = feat
        if missing:
            for i, feat in zip(missing, self._compute(list(missing)), strict=True):
                self._store(i, feat)
                out[missing[i]] = feat
        return torch.from_numpy(out)

    def text_ids(self, i: int) -> list[int]:
        if i not in self._tokens:
            ids = self.loaded.processor.tokenizer.encode(self.utterances[i].text, add_special_tokens=False)
            budget = self.max_tokens - len(self.loaded.prefix_ids)
            self._tokens[i] = ids[: max(budget, 1)]
        return self._tokens[i]

    def batch(self, indices: list[int]) -> Batch:
        """Collate: decoder input = prefix + text; labels = text + eot with the prefix and padding at -100."""
        prefix = self.loaded.prefix_ids
        n_prefix = len(prefix) - 1  # tokens after <|startoftranscript|> that are forced at decode time
        rows_in, rows_lab = [], []
        for i in indices:
            text = self.text_ids(i)
            rows_in.append(prefix + text)
            rows_lab.append([-100] * n_prefix + text + [self.eot])
        width = max(len(r) for r in rows_in)
        dec = torch.full((len(indices), width), self.eot, dtype=torch.long)
        lab = torch.full((len(indices), width), -100, dtype=torch.long)
        for r, (a, b) in enumerate(zip(rows_in, rows_lab, strict=True)):
            dec[r, : len(a)] = torch.tensor(a)
            lab[r, : len(b)] = torch.tensor(b)
        return Batch.of(self.features(indices), dec, lab)

    def longest_label(self) -> int:
        return max(len(self.text_ids(i)) for i in range(len(self.utterances))) + 1


def feature_cache_dir(cfg: Config) -> Path:
    """Where log-mel features are kept on disk (see sttrl.train.features), next to the audio they come from."""
    return Path(cfg.data.cache_dir) / "features"
