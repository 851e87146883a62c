"""Log-mel features and label ids per utterance, computed once and kept in memory; the label collator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sttrl.data import Utterance, load_audio
from sttrl.model import LoadedModel


@dataclass
class Batch:
    input_features: torch.Tensor  # (B, mels, frames)
    decoder_input_ids: torch.Tensor  # (B, T): prefix + text, padded with eot
    labels: torch.Tensor  # (B, T): text + eot, prefix and padding masked with -100

    @property
    def size(self) -> int:
        return int(self.input_features.shape[0])

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_features.to(device), self.decoder_input_ids.to(device), self.labels.to(device))


class FeatureStore:
    """Features and token ids of a list of utterances, by index; computed lazily, cached."""

    def __init__(self, loaded: LoadedModel, utterances: list[Utterance], max_tokens: int) -> None:
        self.loaded = loaded
        self.utterances = utterances
        self.max_tokens = max_tokens
        self._features: dict[int, np.ndarray] = {}
        self._tokens: dict[int, list[int]] = {}
        tok = loaded.processor.tokenizer
        self.eot = int(tok.eos_token_id)

    def __len__(self) -> int:
        return len(self.utterances)

    def features(self, indices: list[int]) -> torch.Tensor:
        missing = [i for i in indices if i not in self._features]
        if missing:
            fe = self.loaded.processor.feature_extractor
            audio = [load_audio(self.utterances[i].audio_path) for i in missing]
            out = fe(audio, sampling_rate=fe.sampling_rate, return_tensors="np").input_features
            for i, feat in zip(missing, out):
                self._features[i] = feat.astype(np.float32, copy=False)
        return torch.from_numpy(np.stack([self._features[i] for i in indices]))

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
        for r, (a, b) in enumerate(zip(rows_in, rows_lab)):
            dec[r, : len(a)] = torch.tensor(a)
            lab[r, : len(b)] = torch.tensor(b)
        return Batch(self.features(indices), dec, lab)

    def longest_label(self) -> int:
        return max(len(self.text_ids(i)) for i in range(len(self.utterances))) + 1
