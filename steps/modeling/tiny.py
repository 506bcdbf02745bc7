"""The offline `tiny` preset: a random-initialised Qwen2-Audio-architecture SALLM built without any download.

- tokenizer: byte-level BPE trained with `tokenizers` on the corpus text (English and German), Qwen-style special
  tokens (<|im_start|>, <|im_end|> = EOS, <|endoftext|> = pad, <|AUDIO|>, <|audio_bos|>, <|audio_eos|>);
- processor: the real Qwen2AudioProcessor (WhisperFeatureExtractor + the tokenizer) with a compact chat template;
- model: Qwen2AudioForConditionalGeneration with sizes from `model.tiny`, and Whisper's sinusoidal position table in
  the encoder (a fresh Qwen2AudioEncoder has a frozen table of random noise there, which leaves it almost blind to
  position);
- the audio window (feature extractor `chunk_length` and encoder `max_source_positions`, set together: the encoder
  demands mel length == 2 x max_source_positions) comes from the longest clip in the data.

`save_pretrained` on both makes a folder that `AutoModelForImageTextToText` / `AutoProcessor` reload. Built by the
pretrain stage (`python -m steps.pretrain`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from steps.core.config import TinyModelConfig

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # 10 ms mel frames, as in Whisper
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
PAD, EOS = "<|endoftext|>", "<|im_end|>"

# The audio goes where the prompt's <|audio|> marker was (content parts in order); no system turn: shorter inputs.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def window_seconds_for(longest_clip_seconds: float) -> int:
    """The smallest whole-second window that holds the longest clip (the feature extractor counts whole seconds)."""
    if longest_clip_seconds <= 0:
        raise ValueError(f"longest clip must be > 0 s, got {longest_clip_seconds}")
    return max(1, math.ceil(longest_clip_seconds - 1e-6))


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed sinusoidal position table (length x channels): sines in the first half, cosines in the second."""
    if channels % 2:
        raise ValueError(f"channels must be even, got {channels}")
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2, dtype=torch.float64))
    scaled_time = torch.arange(length, dtype=torch.float64)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1).to(torch.float32)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained offline on `texts`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOS, pad_token=PAD, padding_side="left",
        extra_special_tokens={"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>",
                              "audio_eos_token": "<|audio_eos|>"},
        model_max_length=4096,
    )


def build_processor(tokenizer: Any, window_seconds: int, num_mel_bins: int) -> Any:
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=SAMPLE_RATE,
                                                hop_length=HOP_LENGTH, chunk_length=window_seconds, n_fft=400)
    return Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def max_source_positions(window_seconds: int) -> int:
    """Encoder positions after its stride-2 conv: half the mel frames of the window."""
    return window_seconds * SAMPLE_RATE // HOP_LENGTH // 2


def build_model(cfg: TinyModelConfig, tokenizer: Any, window_seconds: int, seed: int) -> Any:
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    torch.manual_seed(seed)
    positions = max_source_positions(window_seconds)
    audio_config = {
        "model_type": "qwen2_audio_encoder", "num_mel_bins": cfg.num_mel_bins, "encoder_layers": cfg.encoder_layers,
        "encoder_attention_heads": cfg.encoder_heads, "encoder_ffn_dim": cfg.encoder_ffn_dim,
        "d_model": cfg.encoder_dim, "max_source_positions": positions, "dropout": 0.0, "attention_dropout": 0.0,
    }
    text_config = {
        "model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": cfg.llm_dim,
        "num_hidden_layers": cfg.llm_layers, "num_attention_heads": cfg.llm_heads,
        "num_key_value_heads": cfg.llm_kv_heads, "intermediate_size": cfg.llm_ffn_dim,
        "max_position_embeddings": cfg.max_position_embeddings, "tie_word_embeddings": True,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
    }
    config = Qwen2AudioConfig(audio_config=audio_config, text_config=text_config,
                              audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
                              tie_word_embeddings=True)
    model = Qwen2AudioForConditionalGeneration(config)
    encoder = model.model.audio_tower
    with torch.no_grad():
        encoder.embed_positions.weight.copy_(whisper_sinusoids(positions, cfg.encoder_dim))
    encoder.embed_positions.requires_grad_(False)
    gen = model.generation_config
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = None
    return model


def build_tiny(cfg: TinyModelConfig, corpus_texts: Iterable[str], window_seconds: int, seed: int = 0
               ) -> tuple[Any, Any]:
    """Tokenizer, processor and random-initialised model of the tiny preset."""
    from steps.modeling.loading import prepare_tokens

    tokenizer = train_tokenizer(corpus_texts, cfg.vocab_size)
    processor = build_processor(tokenizer, window_seconds, cfg.num_mel_bins)
    model = build_model(cfg, tokenizer, window_seconds, seed)
    prepare_tokens(model, processor)
    return model, processor


def save(model: Any, processor: Any, folder: str | Path) -> Path:
    """model.safetensors + config + generation config + processor files (tokenizer, chat template, extractor)."""
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
