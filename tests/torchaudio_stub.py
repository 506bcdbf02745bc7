"""A torch-only stand-in for the one piece of torchaudio that transformers' GraniteSpeechFeatureExtractor uses.

The extractor (transformers 5.23) builds `torchaudio.transforms.MelSpectrogram(sample_rate, n_fft, win_length,
hop_length, n_mels)` and calls it on the padded waveforms; nothing else of torchaudio is touched. The registry's
torchaudio does not import beside this machine's CPU torch, so the Granite tests would skip. `MelSpectrogram` below
computes the same thing as torchaudio's with those arguments and its defaults (periodic Hann window, centred reflect
padding, power 2, an HTK mel filter bank without normalisation, triangles in Hz between mel-spaced points);
bench/gpu_check.py compares the two where torchaudio imports (the GPU image).

`granite_extractor_backend()` puts it in place only where torchaudio does not import, and undoes it on exit: the real
GraniteSpeechFeatureExtractor class (saved with its own name, reloaded by AutoProcessor) then runs on this machine.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Callable, Iterator

import torch
from torch import nn


def hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filter_bank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) triangles on HTK-mel-spaced centre frequencies, unnormalised (torchaudio's defaults)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    f_pts = mel_to_hz(torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class MelSpectrogram(nn.Module):
    """torchaudio.transforms.MelSpectrogram for the arguments Granite's extractor passes (others at its defaults)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, win_length: int | None = None,
                 hop_length: int | None = None, f_min: float = 0.0, f_max: float | None = None, n_mels: int = 128,
                 window_fn: Callable[..., torch.Tensor] = torch.hann_window, power: float = 2.0,
                 center: bool = True, pad_mode: str = "reflect") -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.power, self.center, self.pad_mode = power, center, pad_mode
        self.register_buffer("window", window_fn(self.win_length))
        f_max = float(sample_rate // 2) if f_max is None else f_max
        self.register_buffer("fb", mel_filter_bank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape
        spec = torch.stft(waveform.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.win_length,
                          self.window, self.center, self.pad_mode, normalized=False, onesided=True,
                          return_complex=True).abs().pow(self.power)
        mel = torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)
        return mel.reshape(*shape[:-1], *mel.shape[-2:])


def torchaudio_imports() -> bool:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # absent, or a build that does not match torch (CPU torch + the registry's CUDA torchaudio)
        return False
    return True


@contextlib.contextmanager
def granite_extractor_backend() -> Iterator[str]:
    """Inside the block GraniteSpeechFeatureExtractor works: with torchaudio where it imports ("torchaudio"), else
    with `MelSpectrogram` above ("stub"). Yields which."""
    if torchaudio_imports():
        yield "torchaudio"
        return
    from transformers.models.granite_speech import feature_extraction_granite_speech as fe
    from transformers.utils import import_utils

    stub = types.SimpleNamespace(transforms=types.SimpleNamespace(MelSpectrogram=MelSpectrogram))
    had_module = hasattr(fe, "torchaudio")
    before_module = getattr(fe, "torchaudio", None)
    before_backend = import_utils.BACKENDS_MAPPING["torchaudio"]
    fe.torchaudio = stub
    import_utils.BACKENDS_MAPPING["torchaudio"] = (lambda: True, before_backend[1])  # requires_backends asks this
    try:
        yield "stub"
    finally:
        import_utils.BACKENDS_MAPPING["torchaudio"] = before_backend
        if had_module:
            fe.torchaudio = before_module
        else:
            del fe.torchaudio
