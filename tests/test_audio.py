from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from steps.data.audio import AudioError, AudioLimits, dbfs, load, resample
from tests.conftest import sine

LIMITS = AudioLimits(min_seconds=0.3, max_seconds=5.0, silence_dbfs=-60.0)


def dominant_frequency(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate_in", [22050, 44100, 8000])
def test_resampling_keeps_a_sines_frequency(rate_in: int):
    out = resample(sine(440.0, rate_in, seconds=1.0), rate_in, 16000)
    assert out.dtype == np.float32
    assert abs(out.size - 16000) <= 2
    assert dominant_frequency(out, 16000) == pytest.approx(440.0, abs=2.0)


def test_load_mixes_stereo_to_mono_and_resamples(tmp_path: Path):
    left, right = sine(300.0, 44100), sine(300.0, 44100) * 0.5
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    audio = load(path, 16000, LIMITS)
    assert audio.ndim == 1 and abs(audio.size - 16000) <= 2
    assert dominant_frequency(audio, 16000) == pytest.approx(300.0, abs=2.0)
    assert np.abs(audio).max() == pytest.approx(0.375, abs=0.02)   # mean of 0.5 and 0.25 amplitudes


@pytest.mark.parametrize(("fmt", "suffix"), [("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg"), ("MP3", ".mp3")])
def test_formats_decode(tmp_path: Path, fmt: str, suffix: str):
    path = tmp_path / f"clip{suffix}"
    sf.write(path, sine(500.0, 22050), 22050, format=fmt)
    audio = load(path, 16000, LIMITS)
    assert dominant_frequency(audio, 16000) == pytest.approx(500.0, abs=3.0)


def test_bad_clips_raise_with_file_and_reason(tmp_path: Path):
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match=r"cannot decode .*corrupt.mp3"):
        load(corrupt, 16000, LIMITS)
    with pytest.raises(AudioError, match=r"missing file: .*gone.wav"):
        load(tmp_path / "gone.wav", 16000, LIMITS)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match=r"silent .*silent.wav"):
        load(silent, 16000, LIMITS)
    short = tmp_path / "short.wav"
    sf.write(short, sine(440, 16000, 0.1), 16000)
    with pytest.raises(AudioError, match=r"too short \(0.10 s"):
        load(short, 16000, LIMITS)
    long = tmp_path / "long.wav"
    sf.write(long, sine(440, 16000, 6.0), 16000)
    with pytest.raises(AudioError, match=r"too long \(6.00 s > prepare.max_seconds=5.0\)"):
        load(long, 16000, LIMITS)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty audio"):
        load(empty, 16000, LIMITS)


def test_dbfs_of_full_scale_sine_is_about_minus_3():
    assert dbfs(sine(440, 16000, amp=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert dbfs(np.zeros(10, np.float32)) == float("-inf")
