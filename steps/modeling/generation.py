"""Answers for (prompt, audio) pairs: batched by clip length, KV cache, greedy or sampled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steps.modeling.batches import encode_prompts, model_inputs, to_device
from steps.modeling.families import adapter_for


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    use_cache: bool = True


@torch.no_grad()
def generate(model: nn.Module, processor: Any, prompts: Sequence[str], audios: Sequence[Any],
             settings: GenerationSettings = GenerationSettings(), batch_size: int = 16,
             seed: int | None = None, progress: bool = False) -> list[str]:
    """Answers for (prompt, audio) pairs, batched (by length, to waste little padding), in input order."""
    adapter = adapter_for(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    order = sorted(range(len(prompts)), key=lambda i: len(audios[i]))
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "use_cache": settings.use_cache,
                              "do_sample": settings.do_sample}
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generate", unit="batch", leave=False)
    # A seeded call draws from its own RNG stream: validation during training must not reset the trainer's.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            for start in starts:
                idx = order[start:start + batch_size]
                batch = encode_prompts(processor, adapter, [prompts[i] for i in idx], [audios[i] for i in idx])
                batch = to_device(model_inputs(batch, adapter), device, dtype)
                out = model.generate(**batch, **kwargs)
                new_tokens = out[:, batch["input_ids"].shape[1]:]
                texts = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(idx, texts, strict=True):
                    answers[i] = text.strip()
        finally:
            model.train(was_training)
    return answers
