"""Audio decoding, mixing, resampling and sanity checks.

soundfile (which bundles libsndfile: WAV, FLAC, OGG, MP3) decodes and soxr resamples: no torchaudio, no FFmpeg.
Every problem with a clip is an `AudioError` whose message names the file and the fix; callers decide whether it
skips the clip (data prep) or stops the run.

A clip may live inside an uncompressed ZIP archive: the path `corpus/audio.zip/clip.wav` names the member
`clip.wav` of `corpus/audio.zip` (the synth stage writes its corpus so: a DVC output of a few files instead of
thousands keeps a no-op `dvc repro` fast).
"""

from __future__ import annotations

import io
import threading
import zipfile
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


ARCHIVE_SUFFIX = ".zip"
_open_archives = threading.local()  # one handle per thread and archive: ZipFile reads share a file position


def archive_member(path: str | Path) -> tuple[Path, str] | None:
    """(archive, member) when `path` points into a ZIP archive (`a/audio.zip/x.wav`), else None."""
    text = str(path)
    cut = text.find(ARCHIVE_SUFFIX + "/")
    if cut < 0:
        return None
    return Path(text[: cut + len(ARCHIVE_SUFFIX)]), text[cut + len(ARCHIVE_SUFFIX) + 1:]


def _archive(archive: Path) -> zipfile.ZipFile:
    handles: dict[Path, zipfile.ZipFile] = _open_archives.__dict__.setdefault("handles", {})
    if archive not in handles:
        handles[archive] = zipfile.ZipFile(archive)
    return handles[archive]


def exists(path: str | Path) -> bool:
    """Whether a clip's file (or archive member) exists."""
    if Path(path).is_file():
        return True
    inside = archive_member(path)
    if inside is None or not inside[0].is_file():
        return False
    try:
        return inside[1] in _archive(inside[0]).NameToInfo
    except zipfile.BadZipFile:
        return True  # it exists; decoding reports the corrupt archive against each clip


def _read_member(archive: Path, member: str, name: str) -> bytes:
    try:
        return _archive(archive).read(member)
    except KeyError as exc:
        raise AudioError(f"missing file: {name} (no member {member!r} in {archive})") from exc
    except (zipfile.BadZipFile, OSError) as exc:  # a CRC mismatch is BadZipFile too
        raise AudioError(f"cannot read {name} (corrupt archive: {exc}); rerun the stage that wrote {archive}") from exc


def decode(path: str | Path | None = None, data: bytes | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file, an archive member or bytes (as datasets stores them) as float32, (frames,) or
    (frames, channels)."""
    name = str(path) if path is not None else "<in-memory audio>"
    if data is None and path is not None and not Path(path).is_file() and (inside := archive_member(path)):
        if not inside[0].is_file():
            raise AudioError(f"missing file: {name} (no archive {inside[0]})")
        data = _read_member(*inside, name)
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


def write_wav(path: str | Path, audio: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV."""
    sf.write(str(path), audio, rate, subtype="PCM_16")


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV, in memory."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def load_job(job: tuple[str | None, bytes | None, int, AudioLimits]) -> tuple[np.ndarray | None, str | None]:
    """Worker entry for a pool: (audio, None) or (None, reason)."""
    path, data, rate_out, limits = job
    try:
        return load(path, rate_out, limits, data=data), None
    except AudioError as exc:
        return None, str(exc)
