"""Config sections of the model: `model` (which SALLM, what of it trains) and `pretrain` (the tiny preset's base)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from steps.core.config.loader import above, at_least, within


@dataclasses.dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the offline `tiny` preset, a random-initialised Qwen2-Audio-architecture SALLM (modeling/tiny.py)."""

    vocab_size: int = at_least(300, 600, " (byte-level BPE: 256 bytes + special tokens)")
    num_mel_bins: int = at_least(1, 80)
    encoder_layers: int = at_least(1, 4)
    encoder_dim: int = at_least(1, 192)
    encoder_heads: int = at_least(1, 4)
    encoder_ffn_dim: int = at_least(1, 768)
    llm_layers: int = at_least(1, 3)
    llm_dim: int = at_least(1, 192)
    llm_heads: int = at_least(1, 4)
    llm_kv_heads: int = at_least(1, 4)
    llm_ffn_dim: int = at_least(1, 512)
    max_position_embeddings: int = at_least(1, 1024)
    # The encoder's input window in whole seconds; null derives it from the longest clip in the prepared data.
    window_seconds: int | None = within(1, 30, None, note=" or null")

    def problems(self) -> list[str]:
        out = []
        if self.encoder_dim % max(self.encoder_heads, 1):
            out.append(f"encoder_dim: {self.encoder_dim} must be divisible by encoder_heads={self.encoder_heads}")
        if self.llm_dim % max(self.llm_heads, 1):
            out.append(f"llm_dim: {self.llm_dim} must be divisible by llm_heads={self.llm_heads}")
        if self.llm_heads % max(self.llm_kv_heads, 1):
            out.append(f"llm_kv_heads: llm_heads={self.llm_heads} must be a multiple of it, got {self.llm_kv_heads}")
        return out


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LLM's linear layers (peft); `target_modules` are module names inside the LLM only."""

    r: int = at_least(1, 16)
    alpha: int = above(0, 32)
    dropout: float = within(0, 1, 0.05, "[)")
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def problems(self) -> list[str]:
        if not self.target_modules:
            return ["target_modules: list at least one module name, e.g. [q_proj, v_proj]"]
        return []


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which SALLM the pipeline trains and what of it trains (steps/modeling/loading.py).

    `name_or_path` is `tiny` (the offline preset, built and pretrained by the pretrain stage), a local folder or a
    hub id (Granite Speech, Qwen2-Audio). `finetune: lora` trains LoRA adapters on the LLM; the freeze switches say
    whether the audio encoder / projector / LLM base weights train (in LoRA mode the LLM base is always frozen);
    `freeze_audio_encoder_layers: N` freezes the encoder's lower part only (steps/modeling/loading.py).
    """

    name_or_path: str = "tiny"
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    finetune: Literal["full", "lora"] = "full"
    freeze_audio_encoder: bool = False
    # The encoder's input stem (convolutions, positions) and its first N layers frozen, the layers above trained.
    freeze_audio_encoder_layers: int | None = at_least(0, None, " (frozen lower layers) or null (none)")
    freeze_projector: bool = False
    freeze_llm: bool = False
    lora: LoraSettings = LoraSettings()
    tiny: TinyModelConfig = TinyModelConfig()

    def problems(self) -> list[str]:
        out = []
        if not self.name_or_path:
            out.append("name_or_path: empty; use 'tiny', a local model folder or a hub id")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            out.append(f"device: expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.finetune == "lora" and self.freeze_audio_encoder_layers is not None:
            out.append("freeze_audio_encoder_layers: for finetune: full only (LoRA trains the whole encoder or none)")
        if self.freeze_audio_encoder and self.freeze_audio_encoder_layers is not None:
            out.append("freeze_audio_encoder_layers: the whole encoder is frozen (freeze_audio_encoder: true); set "
                       "one of the two")
        if self.finetune == "full" and self.freeze_audio_encoder and self.freeze_projector and self.freeze_llm:
            out.append("freeze_*: everything is frozen and finetune is 'full': nothing would train; "
                       "unfreeze a part or use finetune: lora")
        return out


@dataclasses.dataclass(frozen=True)
class CtcPhaseConfig:
    """Pretrain phase 1: the audio encoder alone, CTC over characters on its pooled output (what the LLM sees)."""

    steps: int = at_least(0, 1200)
    batch_size: int = at_least(1, 16)
    lr: float = above(0, 2e-3)
    warmup_steps: int = at_least(0, 100)


@dataclasses.dataclass(frozen=True)
class SallmPhaseConfig:
    """Pretrain phase 2: the whole SALLM, answer-only LM loss on an ASR/AST mix plus `ctc_weight` x the CTC loss."""

    steps: int = at_least(0, 1000)
    batch_size: int = at_least(1, 16)
    llm_lr: float = above(0, 2e-3)
    encoder_lr: float = at_least(0, 1e-3)
    warmup_steps: int = at_least(0, 50)
    ctc_weight: float = at_least(0, 0.3)
    asr_fraction: float = within(0, 1, 0.5)


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    """Masking of the log-mel input during pretraining (SpecAugment-style); widths in mel bins / frames (10 ms)."""

    freq_masks: int = at_least(0, 2)
    freq_width: int = at_least(0, 10)
    time_masks_per_second: float = at_least(0, 1.0)
    time_width: int = at_least(0, 10)


THREADS_NOTE = " (0 = torch's default)"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """The pretrain stage (steps/training/pretraining.py): trains the tiny preset into a base that listens.

    The budget is in optimiser steps (deterministic); the wall time it takes is measured and reported.
    """

    ctc: CtcPhaseConfig = CtcPhaseConfig()
    sallm: SallmPhaseConfig = SallmPhaseConfig()
    spec_augment: SpecAugmentConfig = SpecAugmentConfig()
    weight_decay: float = 0.01
    grad_clip: float = above(0, 1.0)
    eval_every: int = at_least(1, 300, " step")
    curve_examples: int = at_least(1, 48)
    eval_batch_size: int = at_least(1, 32)
    max_new_tokens: int = at_least(1, 40)
    threads: int = at_least(0, 0, THREADS_NOTE)
