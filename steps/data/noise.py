"""Additive noise at a signal-to-noise ratio: white, pink (1/f power) or brown (1/f^2 power).

Used by the synth stage for noisy training clips (`synth.train_noise`) and by the evaluation for the test's noisy
conditions (`evaluate.conditions`). The SNR is measured over the whole clip; the noise is shaped in the frequency
domain and rescaled to the exact power the SNR asks for, so every colour has the same loudness at the same SNR.

    >>> noisy = add_noise(audio, 20.0, np.random.default_rng(0), colour="pink")
"""

from __future__ import annotations

import hashlib

import numpy as np

COLOURS: tuple[str, ...] = ("white", "pink", "brown")
# Power falls as 1/f^k: k = 0 white, 1 pink, 2 brown. The amplitude is shaped by f^(-k/2).
_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of zero-mean, unit-variance noise of `colour`."""
    if colour not in _EXPONENT:
        raise ValueError(f"unknown noise colour {colour!r}; use one of {list(COLOURS)}")
    white = rng.standard_normal(n)
    if colour == "white" or n < 2:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    freqs[0] = 1.0  # no DC boost: the 0 Hz bin keeps the white gain
    spectrum *= freqs ** (-_EXPONENT[colour] / 2.0)
    shaped = np.fft.irfft(spectrum, n)
    shaped -= shaped.mean()
    std = shaped.std()
    return shaped / std if std > 0 else shaped


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """`audio` (float, [-1, 1]) plus `colour` noise at `snr_db` dB below the clip's mean power, clipped to [-1, 1].

    A silent clip comes back unchanged: it has no power to set the noise level from."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    if power == 0.0:
        return audio
    noise = coloured_noise(audio.shape[0], colour, rng) * np.sqrt(power / (10.0 ** (snr_db / 10.0)))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from `parts` (e.g. seed, example id, SNR) the same way in every process and run."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
