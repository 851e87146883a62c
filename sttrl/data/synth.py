"""Speech synthesis with espeak-ng: validated voices, per-utterance speed/pitch, 16 kHz WAVs cached by content hash."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from sttrl.data.audio import SAMPLE_RATE, to_mono_16k, wav_duration, write_wav
from sttrl.data.progress import progress_bar
from sttrl.errors import DataError, SystemDependencyError

INSTALL_HINT = "install it with `sudo apt-get install espeak-ng` (or `make setup`)"
SYNTH_VERSION = 1  # bump when the audio pipeline changes, so cached files are not reused


@dataclass(frozen=True)
class SynthSpec:
    """Everything that determines one synthesized file."""

    text: str
    voice: str
    speed: int
    pitch: int
    noise_snr_db: float | None
    seed: int

    @property
    def key(self) -> str:
        payload = json.dumps(
            [SYNTH_VERSION, self.text, self.voice, self.speed, self.pitch, self.noise_snr_db, self.seed]
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, cache_dir: Path) -> Path:
        k = self.key
        return cache_dir / "audio" / k[:2] / f"{k}.wav"


@dataclass(frozen=True)
class SynthResult:
    path: Path
    duration: float
    cached: bool


def espeak_binary() -> str:
    """Path of espeak-ng, or SystemDependencyError with the install command."""
    found = shutil.which("espeak-ng")
    if not found:
        raise SystemDependencyError(f"espeak-ng is not installed or not on PATH; {INSTALL_HINT}")
    return found


def _run(args: list[str], timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise SystemDependencyError(f"espeak-ng could not be started ({exc}); {INSTALL_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"espeak-ng timed out after {timeout:.0f} s: {' '.join(args[:6])}") from exc
    if done.returncode != 0:
        raise DataError(f"espeak-ng failed (exit {done.returncode}): {done.stderr.strip()[:300]}")
    return done.stdout


@lru_cache(maxsize=8)
def _voice_tables(binary: str, language: str) -> tuple[frozenset[str], frozenset[str]]:
    """Base voices for ``language`` (``--voices=<lang>``) and variant names (``--voices=variant``)."""
    bases: set[str] = set()
    for line in _run([binary, f"--voices={language}"]).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            bases.add(parts[1])  # the Language column: "sw"
    variants: set[str] = set()
    for line in _run([binary, "--voices=variant"]).splitlines()[1:]:
        match = re.search(r"!v/(\S+(?: \S+)*)", line)
        if match and " " not in match.group(1):
            variants.add(match.group(1))
    return frozenset(bases), frozenset(variants)


def validate_voices(voices: Sequence[str], language: str = "sw") -> None:
    """Raise DataError for a voice espeak-ng would silently replace (``sw`` or ``sw+<variant>`` are valid)."""
    if not voices:
        raise DataError("data.voices is empty; give at least one espeak-ng voice such as 'sw' or 'sw+f1'")
    bases, variants = _voice_tables(espeak_binary(), language)
    for voice in voices:
        base, _, variant = voice.partition("+")
        if base not in bases or ("+" in voice and variant not in variants):
            shown = ", ".join(sorted(variants)[:20])
            raise DataError(
                f"data.voices: unknown espeak-ng voice {voice!r}; valid: one of {sorted(bases)} optionally "
                f"followed by +<variant> with a variant from `espeak-ng --voices=variant` (e.g. {shown}, …)"
            )


def draw_params(
    uid: str, voices: Sequence[str], speed: tuple[int, int], pitch: tuple[int, int], seed: int
) -> tuple[str, int, int]:
    """Voice, speed (wpm) and pitch for one utterance, drawn deterministically from its id and the seed."""
    rng = random.Random(f"sttrl-voice:{seed}:{uid}")
    return rng.choice(list(voices)), rng.randint(*speed), rng.randint(*pitch)


def _add_noise(audio: np.ndarray, snr_db: float, key: str) -> np.ndarray:
    power = float(np.mean(audio**2)) if audio.size else 0.0
    if power <= 0.0:
        return audio
    rng = np.random.default_rng(int(key[:16], 16))
    noise = rng.standard_normal(audio.shape).astype(np.float32) * np.float32(np.sqrt(power / 10 ** (snr_db / 10)))
    return audio + noise


def synthesize(spec: SynthSpec, cache_dir: Path, binary: str | None = None) -> SynthResult:
    """Synthesize one utterance to ``cache_dir/audio/<k[:2]>/<k>.wav`` unless it is already there."""
    path = spec.path(cache_dir)
    if path.is_file():
        return SynthResult(path, wav_duration(path), cached=True)
    if not spec.text.strip():
        raise DataError("cannot synthesize an empty sentence")
    binary = binary or espeak_binary()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".espeak-", dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.wav"
        _run([binary, "-v", spec.voice, "-s", str(spec.speed), "-p", str(spec.pitch), "-w", str(raw), "--", spec.text])
        audio, rate = sf.read(raw, dtype="float32", always_2d=False)
    audio = to_mono_16k(audio, rate)
    if audio.size < SAMPLE_RATE // 10:
        raise DataError(f"espeak-ng produced no audio for {spec.text!r} (voice {spec.voice})")
    if spec.noise_snr_db is not None:
        audio = _add_noise(audio, spec.noise_snr_db, spec.key)
    write_wav(path, audio)
    return SynthResult(path, audio.size / SAMPLE_RATE, cached=False)


def synthesize_many(
    specs: Sequence[SynthSpec], cache_dir: Path, workers: int = 2, progress: bool = True, label: str = "synthesizing"
) -> tuple[list[SynthResult], dict[str, float]]:
    """Synthesize in ``workers`` threads (each drives an espeak-ng process); returns results and throughput stats."""
    binary = espeak_binary() if specs else None
    cache_dir = Path(cache_dir)
    start = time.perf_counter()
    results: list[SynthResult] = []
    with (
        progress_bar(label, total=len(specs), enabled=progress) as advance,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
    ):
        for result in pool.map(lambda s: synthesize(s, cache_dir, binary), specs):
            results.append(result)
            advance()
    seconds = time.perf_counter() - start
    made = sum(not r.cached for r in results)
    durations = [r.duration for r in results]
    stats = {
        "utterances": float(len(results)),
        "synthesized": float(made),
        "cached": float(len(results) - made),
        "seconds": round(seconds, 3),
        "utterances_per_s": round(made / seconds, 2) if made and seconds > 0 else 0.0,
        "audio_hours": round(sum(durations) / 3600, 4),
        "mean_duration_s": round(float(np.mean(durations)), 3) if durations else 0.0,
        "workers": float(workers),
    }
    return results, stats
