"""Model inputs from (prompt, audio) pairs: the processor called on chat-formatted text and audio.

`encode_prompts` for generation (left-padded); `encode_for_training` for the answer-only loss (prompt + answer + EOS,
right-padded, labels on the answer and EOS only). A clip longer than the model's audio window raises
`ClipTooLongError`: the processor would cut it silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from steps.modeling.families import AUDIO_MARKER, FamilyAdapter

IGNORE_INDEX = -100


class ClipTooLongError(ValueError):
    """A clip does not fit the model's audio window; we never truncate silently."""


def audio_extractor(processor: Any) -> Any:
    """The processor's audio feature extractor: `feature_extractor` (Qwen2-Audio), `audio_processor` (Granite)."""
    fe = getattr(processor, "feature_extractor", None) or getattr(processor, "audio_processor", None)
    if fe is None:
        raise ValueError(f"{type(processor).__name__} has no audio feature extractor (feature_extractor or "
                         "audio_processor): add how to find it in steps/modeling/batches.py")
    return fe


def audio_window_samples(processor: Any) -> int | None:
    """How many samples the processor's audio window holds (None: the family has no fixed window)."""
    fe = audio_extractor(processor)
    return int(fe.n_samples) if hasattr(fe, "n_samples") else None


def check_clips_fit(audios: Sequence[np.ndarray], processor: Any, ids: Sequence[str] | None = None) -> None:
    """Raise ClipTooLongError for any clip longer than the window (the processor would cut it silently)."""
    limit = audio_window_samples(processor)
    if limit is None:
        return
    rate = audio_extractor(processor).sampling_rate
    for i, audio in enumerate(audios):
        if len(audio) > limit:
            name = ids[i] if ids is not None else f"#{i}"
            raise ClipTooLongError(
                f"clip {name} lasts {len(audio) / rate:.2f} s but the model's audio window is {limit / rate:.0f} s; "
                "it would be truncated silently. Drop or split such clips in prepare (prepare.max_seconds), or, for "
                "the tiny preset, rebuild with a longer model.tiny.window_seconds")


def chat_prompt(processor: Any, adapter: FamilyAdapter, prompt: str) -> str:
    """The chat-formatted text for one user turn with audio, ending where the assistant's answer starts."""
    audio_token = getattr(processor, "audio_token", AUDIO_MARKER)
    messages = [{"role": "user", "content": adapter.user_content(prompt, audio_token)}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def as_float_arrays(audios: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float32) for a in audios]


def encode_prompts(processor: Any, adapter: FamilyAdapter, prompts: Sequence[str], audios: Sequence[Any],
                   ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Processor outputs (token ids, attention mask, audio features) for a batch of prompts, left-padded."""
    arrays = as_float_arrays(audios)
    check_clips_fit(arrays, processor, ids)
    texts = [chat_prompt(processor, adapter, p) for p in prompts]
    rate = audio_extractor(processor).sampling_rate
    batch = processor(text=texts, audio=arrays, sampling_rate=rate, return_tensors="pt", padding=True)
    return dict(batch)


def encode_for_training(processor: Any, adapter: FamilyAdapter, prompts: Sequence[str], answers: Sequence[str],
                        audios: Sequence[Any], ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Prompt + answer + EOS, right-padded, with labels on the answer and EOS only (answer-only loss)."""
    arrays = as_float_arrays(audios)
    check_clips_fit(arrays, processor, ids)
    tok = processor.tokenizer
    texts = [chat_prompt(processor, adapter, p) + a + tok.eos_token for p, a in zip(prompts, answers, strict=True)]
    rate = audio_extractor(processor).sampling_rate
    old_side = tok.padding_side
    tok.padding_side = "right"
    try:
        batch = dict(processor(text=texts, audio=arrays, sampling_rate=rate, return_tensors="pt", padding=True))
    finally:
        tok.padding_side = old_side
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    for row, answer in enumerate(answers):
        # Answer tokens = the tail of the real tokens; tokenising the answer alone gives their count.
        n_answer = len(tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"])
        n_real = int(batch["attention_mask"][row].sum())
        labels[row, : n_real - n_answer] = IGNORE_INDEX
    batch["labels"] = labels
    return batch


def to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        out[key] = value
    return out


def model_inputs(batch: dict[str, Any], adapter: FamilyAdapter) -> dict[str, Any]:
    """Only the keys the model's forward/generate takes (the processor adds bookkeeping such as num_audio_tokens)."""
    keep = ("input_ids", "attention_mask", "labels", *adapter.feature_keys)
    return {k: v for k, v in batch.items() if k in keep}
