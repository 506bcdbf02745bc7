"""Speech clips held in memory for pretraining: Whisper log-mel features cut to each clip's real frames, padding and
SpecAugment per batch, and length-sorted batches (little padding) of the ASR/AST mix."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steps.core.config import SpecAugmentConfig
from steps.data.splits import load_split
from steps.modeling.batches import ClipTooLongError
from steps.modeling.families import AUDIO_MARKER

# The pools whose text trains the tokenizer, in this order (BPE breaks ties between merges by first occurrence, so
# the order is part of the base model), and whose clips set the audio window.
TEXT_POOLS = ("pretrain", "ast", "sqa")


def longest_clip_seconds(data_dir: Path) -> float:
    """The longest clip over every prepared pool and split: the base model must hear all later tasks' audio."""
    longest = 0.0
    for pool in TEXT_POOLS:
        for split in ("train", "validation", "test"):
            path = data_dir / pool / split
            if path.is_dir():
                ds = load_split(data_dir, pool, split)
                if len(ds):
                    longest = max(longest, float(max(ds["duration"])))
    if longest <= 0:
        raise FileNotFoundError(f"no prepared clips under {data_dir}; run the prepare stage first")
    return longest


def corpus_texts(data_dir: Path) -> Iterator[str]:
    """Training text for the tokenizer: prompts (marker removed), references and transcripts of train/validation."""
    for pool in TEXT_POOLS:
        for split in ("train", "validation"):
            if not (data_dir / pool / split).is_dir():
                continue
            ds = load_split(data_dir, pool, split).select_columns(["prompt", "reference", "transcript"])
            for row in ds:
                yield row["prompt"].replace(AUDIO_MARKER, " ")
                yield row["reference"]
                if row["transcript"]:
                    yield row["transcript"]


@dataclass
class Clip:
    """One training clip in memory: its log-mel frames (real frames only) and its texts."""

    features: np.ndarray  # (mel bins, frames) float32
    floor: float  # the log-mel value of silence padding for this clip (Whisper clamps at max - 8)
    transcript: str
    task: str
    prompt: str
    reference: str
    # Set for AST clips: they serve ASR too (their transcript is known).
    translation: str = ""

    @property
    def frames(self) -> int:
        return self.features.shape[1]


def extract_features(processor: Any, audios: Sequence[np.ndarray], batch_size: int = 64
                     ) -> list[tuple[np.ndarray, float]]:
    """Whisper log-mel for each clip through the processor's own feature extractor, cut to its real frames.

    Chunks of similar length are padded to their longest clip only, not to the window: 3-4x less work, same values
    (Whisper's log-mel clamps each clip at its own max - 8, which silence padding never reaches). The silence value
    is therefore max - 2 after Whisper's (x + 4) / 4 scaling.
    """
    fe = processor.feature_extractor
    for i, a in enumerate(audios):
        if len(a) > fe.n_samples:
            raise ClipTooLongError(f"clip #{i} lasts {len(a) / fe.sampling_rate:.2f} s but the audio window is "
                                   f"{fe.chunk_length} s; rebuild with a longer model.tiny.window_seconds")
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    out: list[tuple[np.ndarray, float]] = [(np.empty(0, np.float32), 0.0)] * len(audios)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        chunk = [np.asarray(audios[i], dtype=np.float32) for i in idx]
        # A little padding past the longest clip so that its last frames exist too (the mask rounds up).
        width = min(fe.n_samples, max(len(a) for a in chunk) + 4 * fe.hop_length)
        feats = fe(chunk, sampling_rate=fe.sampling_rate, return_attention_mask=True, padding="max_length",
                   max_length=width, return_tensors="np")
        for i, mel, mask in zip(idx, feats["input_features"], feats["attention_mask"], strict=True):
            n = int(mask.sum())
            real = np.ascontiguousarray(mel[:, :n], dtype=np.float32)
            out[i] = (real, float(real.max()) - 2.0)
    return out


def load_clips(dataset: Any, processor: Any) -> list[Clip]:
    audios = list(dataset.with_format("numpy")["audio"])
    feats = extract_features(processor, audios)
    clips = []
    for row, (mel, floor) in zip(dataset.remove_columns(["audio"]), feats, strict=True):
        clips.append(Clip(features=mel, floor=floor, transcript=row["transcript"], task=row["task"],
                          prompt=row["prompt"], reference=row["reference"],
                          translation=row["reference"] if row["task"] == "ast" else ""))
    return clips


def pad_features(clips: Sequence[Clip], spec: SpecAugmentConfig | None, rng: np.random.Generator | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, mel, T) padded with each clip's silence value to the longest clip (+ slack, multiple of 4)."""
    frames = [c.frames for c in clips]
    length = int(math.ceil((max(frames) + 4) / 4) * 4)
    mel = clips[0].features.shape[0]
    batch = np.empty((len(clips), mel, length), dtype=np.float32)
    for i, c in enumerate(clips):
        batch[i, :, : c.frames] = c.features
        batch[i, :, c.frames:] = c.floor
        if spec is not None and rng is not None:
            spec_augment(batch[i], c.frames, c.floor, spec, rng)
    return torch.from_numpy(batch), torch.tensor(frames)


def spec_augment(mel: np.ndarray, frames: int, fill: float, spec: SpecAugmentConfig, rng: np.random.Generator) -> None:
    """In place: `freq_masks` bands of up to `freq_width` bins, and time masks of up to `time_width` frames."""
    bins = mel.shape[0]
    for _ in range(spec.freq_masks):
        width = int(rng.integers(0, spec.freq_width + 1))
        start = int(rng.integers(0, max(bins - width, 1)))
        mel[start:start + width, :frames] = fill
    for _ in range(round(spec.time_masks_per_second * frames / 100)):
        width = int(rng.integers(0, spec.time_width + 1))
        start = int(rng.integers(0, max(frames - width, 1)))
        mel[:, start:start + width] = fill


def length_sorted_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> Iterator[list[int]]:
    """Endless batches of similar-length items (little padding), in random order, reshuffled every epoch."""
    lengths = np.asarray(lengths, dtype=np.float64)
    while True:
        jitter = rng.uniform(0, 0.1 * lengths.mean(), size=len(lengths))  # vary batch members across epochs
        order = np.argsort(lengths + jitter, kind="stable")
        batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        for b in rng.permutation(len(batches)):
            yield batches[b]


@dataclass(frozen=True)
class Item:
    clip: int
    task: str  # "asr" | "ast"


def phase2_items(clips: Sequence[Clip], asr_fraction: float) -> list[Item]:
    """AST clips serve both tasks (their transcript is known); ASR clips serve ASR; weights follow asr_fraction."""
    asr = [Item(i, "asr") for i in range(len(clips))]
    ast = [Item(i, "ast") for i, c in enumerate(clips) if c.translation]
    if not ast or asr_fraction >= 1:
        return asr
    if asr_fraction <= 0:
        return ast
    # Repeat the smaller side so that the mix is about asr_fraction : 1 - asr_fraction.
    want_asr = asr_fraction / (1 - asr_fraction) * len(ast)
    ratio = len(asr) / want_asr  # > 1: more ASR items than wanted, so repeat the AST ones
    if ratio >= 1:
        return asr + ast * max(1, round(ratio))
    return asr * max(1, round(1 / ratio)) + ast
