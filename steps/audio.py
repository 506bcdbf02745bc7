"""Audio decoding, mixing, resampling and sanity checks.

soundfile (which bundles libsndfile: WAV, FLAC, OGG, MP3) decodes and soxr resamples: no torchaudio, no FFmpeg.
Every problem with a clip is an `AudioError` whose message names the file and the fix; callers decide whether it
skips the clip (data prep) or stops the run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """A clip that cannot be used, with the reason in words."""


@dataclass(frozen=True)
class AudioLimits:
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    silence_dbfs: float = -60.0


def decode(path: str | Path | None = None, data: bytes | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (or its bytes, as datasets stores them) as float32, (frames,) or (frames, channels)."""
    name = str(path) if path is not None else "<in-memory audio>"
    if data is None:
        if path is None or not Path(path).is_file():
            raise AudioError(f"missing file: {name}")
        source: str | io.BytesIO = str(path)
    else:
        source = io.BytesIO(data)
    try:
        audio, rate = sf.read(source, dtype="float32")
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        # libsndfile says "does not exist or is not a regular file" for files it cannot parse: say what it means.
        detail = getattr(exc, "error_string", None) or str(exc)
        raise AudioError(f"cannot decode {name} (corrupt or unsupported format; libsndfile: {detail})") from exc
    return audio, rate


def to_mono(data: np.ndarray) -> np.ndarray:
    if data.ndim == 1:
        return data
    return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono float32 audio; soxr's default (HQ) quality."""
    if rate_in <= 0:
        raise AudioError(f"invalid sample rate {rate_in}")
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate_in, rate_out).astype(np.float32, copy=False)


def dbfs(audio: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def check(audio: np.ndarray, rate: int, limits: AudioLimits, name: str) -> None:
    """Raise AudioError when a decoded clip is empty, broken, silent, too short or too long."""
    if audio.size == 0:
        raise AudioError(f"empty audio (0 samples): {name}")
    energy = float(np.dot(audio, audio))  # one pass: a NaN or inf sample makes it non-finite, else it gives the level
    if not np.isfinite(energy):
        raise AudioError(f"audio contains NaN or infinite samples: {name}")
    seconds = audio.shape[0] / rate
    if seconds < limits.min_seconds:
        raise AudioError(f"too short ({seconds:.2f} s < prepare.min_seconds={limits.min_seconds}): {name}")
    if seconds > limits.max_seconds:
        raise AudioError(f"too long ({seconds:.2f} s > prepare.max_seconds={limits.max_seconds}): {name}")
    level = 10.0 * np.log10(energy / audio.size) if energy > 0 else float("-inf")
    if level < limits.silence_dbfs:
        raise AudioError(f"silent ({level:.1f} dBFS < prepare.silence_dbfs={limits.silence_dbfs}): {name}")


def load(path: str | Path | None, rate_out: int, limits: AudioLimits, data: bytes | None = None) -> np.ndarray:
    """Decode, mix to mono, resample to `rate_out` and check: the one call data prep makes per clip."""
    decoded, rate = decode(path, data)
    audio = resample(to_mono(decoded), rate, rate_out)
    check(audio, rate_out, limits, str(path) if path is not None else "<in-memory audio>")
    return audio


def from_array(array: np.ndarray, rate_in: int, rate_out: int, limits: AudioLimits, name: str) -> np.ndarray:
    """The same as `load` for audio that a dataset library already decoded."""
    audio = resample(to_mono(np.asarray(array, dtype=np.float32)), rate_in, rate_out)
    check(audio, rate_out, limits, name)
    return audio


def write_wav(path: str | Path, audio: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV."""
    sf.write(str(path), audio, rate, subtype="PCM_16")


def load_job(job: tuple[str | None, bytes | None, int, AudioLimits]) -> tuple[np.ndarray | None, str | None]:
    """Worker entry for a pool: (audio, None) or (None, reason)."""
    path, data, rate_out, limits = job
    try:
        return load(path, rate_out, limits, data=data), None
    except AudioError as exc:
        return None, str(exc)
