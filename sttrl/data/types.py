"""The record every data source produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence: id, transcript, domain, a 16 kHz mono WAV, its duration and content hash."""

    uid: str
    text: str
    domain: str
    audio_path: Path
    duration: float
    sha256: str
    speaker: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["audio_path"] = str(self.audio_path)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Utterance:
        return cls(**{**data, "audio_path": Path(data["audio_path"]), "duration": float(data["duration"])})
