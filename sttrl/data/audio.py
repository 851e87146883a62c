"""Audio I/O: 16 kHz mono float32 arrays, atomic WAV writes, decoding of WAV/FLAC/Opus bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sttrl.errors import DataError
from sttrl.io import atomic_write_bytes

SAMPLE_RATE = 16_000


def to_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmix (frames x channels) to mono and resample to 16 kHz with soxr; float32 out."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """Read an audio file as float32 mono at 16 kHz (resampling if the file is at another rate)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} does not exist (rebuild the data cache)")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"audio file {path} is not readable audio: {exc}") from exc
    return to_mono_16k(audio, rate)


def write_wav(path: str | Path, audio: np.ndarray) -> Path:
    """Write 16 kHz mono PCM_16 WAV atomically (temp file + rename)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return atomic_write_bytes(path, buffer.getvalue())


def wav_duration(path: str | Path) -> float:
    """Duration in seconds from the file header."""
    info = sf.info(str(path))
    return info.frames / info.samplerate


def decode_with_av(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode any container/codec FFmpeg knows (webm/Opus, mp3, m4a…) to 16 kHz mono float32 via PyAV."""
    # PyAV maps the FFmpeg libraries (about 110 MB of address space, 20 MB resident, measured): only hub audio in
    # formats soundfile cannot read needs it, so an episode on WAV/FLAC audio never pays for it
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise DataError(f"{name}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono")
            rate = stream.codec_context.sample_rate or stream.rate
            for frame in container.decode(stream):
                rate = frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise DataError(f"{name}: could not decode audio with PyAV/FFmpeg: {exc}") from exc
    if not chunks or not rate:
        raise DataError(f"{name}: decoded to no samples")
    return to_mono_16k(np.concatenate(chunks), int(rate))


def decode_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode audio bytes: libsndfile first (WAV/FLAC/OGG), PyAV for everything else (webm/Opus, mp3)."""
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        return to_mono_16k(audio, rate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return decode_with_av(data, name)
