"""A tiny Granite Speech (the real GraniteSpeechForConditionalGeneration class, random weights) with its audio LoRA,
and a workspace whose models/base is that model laid out on disk as the released checkpoints are:

    config.json (has_lora_adapter: true), generation_config.json, model.safetensors (the base: encoder.*,
    projector.*, language_model.model.*, language_model.lm_head.*; no LoRA tensor), adapter_config.json +
    adapter_model.safetensors (PEFT's format: base_model.model.language_model.model.layers.N.self_attn.{q,v}_proj.
    lora_{A,B}.weight), preprocessor / processor / tokenizer files.

The released 3.3 adapter is rank 64, alpha 32 on q_proj and v_proj (vLLM PR 16246: rank 64; llama.cpp's conversion
of the 2B adapter: alpha 32, 160 tensors = 40 layers x 2 modules x A, B); here rank 8, alpha 4 (the same alpha / r),
with both matrices random so that the adapter changes the outputs (a fresh LoRA's B is zero).
The feature extractor needs torchaudio: run inside `tests.torchaudio_stub.granite_extractor_backend()`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

AUDIO_TOKEN_ID = 5
VOCAB = 64
ADAPTER = {"r": 8, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}


def tiny_granite(vocab: int = VOCAB, audio_token_id: int = AUDIO_TOKEN_ID, window_size: int = 4,
                 downsample_rate: int = 2, max_positions: int = 128, special: tuple[int, int, int | None] = (0, 1, 2),
                 input_dim: int = 16, has_lora_adapter: bool = False, seed: int = 0) -> Any:
    """A random tiny GraniteSpeechForConditionalGeneration (no adapter attached); `special` = (pad, eos, bos)."""
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    pad, eos, bos = special
    config = GraniteSpeechConfig(
        text_config={"model_type": "granite", "vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64,
                     "max_position_embeddings": max_positions, "pad_token_id": pad, "eos_token_id": eos,
                     "bos_token_id": bos},
        encoder_config={"input_dim": input_dim, "num_layers": 1, "hidden_dim": 32, "num_heads": 2, "output_dim": 8,
                        "context_size": 20, "max_pos_emb": 32, "conv_kernel_size": 3, "feedforward_mult": 2},
        projector_config={"model_type": "blip_2_qformer", "hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 64, "encoder_hidden_size": 32},
        audio_token_index=audio_token_id, window_size=window_size, downsample_rate=downsample_rate,
        has_lora_adapter=has_lora_adapter,
    )
    torch.manual_seed(seed)
    return GraniteSpeechForConditionalGeneration(config).eval()


def add_audio_adapter(model: Any, seed: int = 1, dropout: float = 0.0) -> Any:
    """Attach the audio LoRA as transformers' peft integration does when it loads a checkpoint's adapter."""
    from peft import LoraConfig

    model.config.has_lora_adapter = True
    torch.manual_seed(seed)
    model.add_adapter(LoraConfig(r=ADAPTER["r"], lora_alpha=ADAPTER["alpha"], lora_dropout=dropout,
                                 target_modules=list(ADAPTER["target_modules"]), init_lora_weights=False,
                                 task_type="CAUSAL_LM"))
    return model


def granite_workspace(root: Path, rows: list[dict[str, Any]], task: str = "ast", adapter: bool = True) -> Path:
    """tests/tiny_sallm.workspace with a tiny Granite Speech as models/base: the real processor with the released
    checkpoints' extractor settings (80 mels, stacked in pairs to the encoder's 160 inputs; projector window 15,
    downsample 5), the tiny preset's BPE tokenizer and chat template, and (`adapter`) its audio LoRA.

    80 mels because a saved GraniteSpeechFeatureExtractor reloads with n_mels=80 whatever it was saved with
    (transformers 5.20.2 writes n_mels inside `melspec_kwargs` and reads it as a top-level argument)."""
    from transformers import GraniteSpeechFeatureExtractor, GraniteSpeechProcessor

    from steps.modeling.audio_adapter import save_model
    from steps.modeling.loading import prepare_tokens
    from steps.modeling.tiny import CHAT_TEMPLATE, train_tokenizer
    from tests.tiny_sallm import MICRO, to_dataset

    for split in ("train", "validation", "test"):
        to_dataset(rows).save_to_disk(str(root / "data" / "prepared" / task / split))
    texts = [t for r in rows for t in (r["prompt"].replace("<|audio|>", " "), r["reference"], r["transcript"])]
    tok = train_tokenizer(texts, MICRO.vocab_size)
    extractor = GraniteSpeechFeatureExtractor()
    processor = GraniteSpeechProcessor(audio_processor=extractor, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    model = tiny_granite(vocab=len(tok), audio_token_id=tok.convert_tokens_to_ids(processor.audio_token),
                         window_size=extractor.projector_window_size,
                         downsample_rate=extractor.projector_downsample_rate, max_positions=512,
                         special=(tok.pad_token_id, tok.eos_token_id, None), input_dim=2 * extractor.feature_size)
    if adapter:
        add_audio_adapter(model)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.generation_config.bos_token_id = None
    prepare_tokens(model, processor)
    base = root / "models" / "base"
    save_model(model.train(), base)
    processor.save_pretrained(base)
    return root


def without_adapter(folder: Path, dest: Path) -> Path:
    """The same weights with the adapter's files removed and has_lora_adapter false: the adapter-off model."""
    from steps.modeling.audio_adapter import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME

    shutil.copytree(folder, dest)
    for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME):
        (dest / name).unlink()
    config = json.loads((dest / "config.json").read_text())
    config["has_lora_adapter"] = False
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def lora_calls(model: Any, log: list[tuple[str, bool, bool]], tag: str) -> list[Any]:
    """Record, for every forward of an adapted layer: (tag, adapter applied, grad enabled). Returns the hooks."""
    from steps.modeling import audio_adapter

    name = audio_adapter.audio_adapter_name(model)
    return [layer.register_forward_hook(
        lambda m, *_: log.append((tag, not m.disable_adapters and name in m.active_adapters, torch.is_grad_enabled())))
        for layer in audio_adapter.lora_layers(model, name).values()]


@torch.no_grad()
def token_logps(model: Any, ids: torch.Tensor, mask: torch.Tensor, width: int, audio: dict[str, Any]) -> torch.Tensor:
    """Log-probabilities of the last `width` tokens (plain logits: also for a model TRL did not prepare)."""
    logits = model(input_ids=ids, attention_mask=mask, **audio).logits[:, -width - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[:, -width:, None]).squeeze(-1)
