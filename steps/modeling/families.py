"""What differs between speech-LLM families beyond transformers' Auto classes, in one `FamilyAdapter` each.

An adapter says how the chat prompt places the audio, which processor outputs carry it, and which submodules are the
audio encoder, the projector and the LLM (for the freeze switches and LoRA). Adding another audio-text-to-text family
(Voxtral, Qwen2.5-Omni) is one more entry in `ADAPTERS`.

Prompts in our datasets hold the marker `<|audio|>` exactly once; the adapter puts the audio where the marker is.
GPU users with Granite Speech need torchaudio built for their CUDA torch (its feature extractor computes the mel
spectrogram with torchaudio) and peft (its checkpoints ship a LoRA adapter that is switched on for audio inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

AUDIO_MARKER = "<|audio|>"


@dataclass(frozen=True)
class FamilyAdapter:
    """What one model family needs beyond the Auto classes.

    `encoder`, `projector` and `llm` are dotted submodule paths inside the loaded model; `llm` lists the decoder and
    the LM head. `content_style` says whether the chat template takes the audio as a typed content part ("parts",
    the Qwen2-Audio family) or as the processor's audio token inside a plain string ("inline", Granite Speech).
    """

    model_type: str
    encoder: str
    projector: str
    llm: tuple[str, ...]
    content_style: str  # "parts" | "inline"
    feature_keys: tuple[str, ...]  # the processor outputs that carry audio, passed on to forward/generate
    needs: str = ""  # what a user must install for this family beyond our pins
    # Whisper-style encoder fed a fixed window of mostly padding: run it on the batch's real frames only.
    crop_audio_window: bool = False

    def user_content(self, prompt: str, audio_token: str) -> str | list[dict[str, str]]:
        before, after = split_prompt(prompt)
        if self.content_style == "inline":
            return before + audio_token + after
        parts: list[dict[str, str]] = []
        if before:
            parts.append({"type": "text", "text": before})
        parts.append({"type": "audio"})
        if after:
            parts.append({"type": "text", "text": after})
        return parts


ADAPTERS: dict[str, FamilyAdapter] = {
    "qwen2_audio": FamilyAdapter(
        model_type="qwen2_audio",
        encoder="model.audio_tower",
        projector="model.multi_modal_projector",
        llm=("model.language_model", "lm_head"),
        content_style="parts",
        feature_keys=("input_features", "feature_attention_mask"),
        crop_audio_window=True,
    ),
    "granite_speech": FamilyAdapter(
        model_type="granite_speech",
        encoder="model.encoder",
        projector="model.projector",
        llm=("model.language_model", "lm_head"),
        content_style="inline",
        feature_keys=("input_features", "input_features_mask"),
        needs="torchaudio matching your torch build (the feature extractor uses it) and peft (checkpoint LoRA)",
    ),
}


def adapter_for(model_or_config: Any) -> FamilyAdapter:
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(f"model type {model_type!r} is not supported yet; supported: {sorted(ADAPTERS)}. "
                         "Add a FamilyAdapter for it in steps/modeling/families.py")
    return ADAPTERS[model_type]


def split_prompt(prompt: str) -> tuple[str, str]:
    if prompt.count(AUDIO_MARKER) != 1:
        raise ValueError(f"prompt must contain {AUDIO_MARKER!r} exactly once, got {prompt!r}")
    before, after = prompt.split(AUDIO_MARKER)
    return before, after


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_submodule(dotted)
