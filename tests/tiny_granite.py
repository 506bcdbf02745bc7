"""A tiny GraniteSpeechForConditionalGeneration (the paper's model family) built from a config, and a micro
workspace with it as models/base (needs torchaudio for the real feature extractor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

AUDIO_TOKEN_ID = 5
VOCAB = 64


def tiny_granite(vocab: int = VOCAB, audio_token_id: int = AUDIO_TOKEN_ID, window_size: int = 4,
                 downsample_rate: int = 2, max_positions: int = 128, special: tuple[int, int, int | None] = (0, 1, 2),
                 input_dim: int = 16):
    """A random tiny GraniteSpeechForConditionalGeneration; `special` = (pad, eos, bos) token ids."""
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
        has_lora_adapter=False,
    )
    torch.manual_seed(0)
    return GraniteSpeechForConditionalGeneration(config).eval()


def torchaudio_imports() -> bool:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # absent, or a build that does not match torch (CPU torch + the registry's CUDA torchaudio)
        return False
    return True


def granite_workspace(root: Path, rows: list[dict[str, Any]], task: str = "ast") -> Path:
    """tests/tiny_sallm.workspace with a tiny Granite Speech as models/base: the real processor with the released
    checkpoints' extractor settings (80 mels, stacked in pairs to the encoder's 160 inputs; projector window 15,
    downsample 5), the tiny preset's BPE tokenizer and chat template. Needs torchaudio (the extractor).

    80 mels because a saved GraniteSpeechFeatureExtractor reloads with n_mels=80 whatever it was saved with
    (transformers 5.20.2 writes n_mels inside `melspec_kwargs` and reads it as a top-level argument)."""
    from transformers import GraniteSpeechFeatureExtractor, GraniteSpeechProcessor

    from steps.modeling.loading import prepare_tokens
    from steps.modeling.tiny import CHAT_TEMPLATE, save, train_tokenizer
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
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.generation_config.bos_token_id = None
    prepare_tokens(model, processor)
    save(model.train(), processor, root / "models" / "base")
    return root


def same_token_count_pair(processor: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Two examples whose clips get as many audio tokens (their audio can be swapped without changing the prompts)."""
    from steps.modeling.batches import audio_extractor

    sizes = audio_extractor(processor)([r["audio"] for r in rows])["audio_embed_sizes"]
    sizes = [int(s) for s in sizes]
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if sizes[i] == sizes[j]:
                return [i, j]
    raise AssertionError(f"no two fixture clips with the same audio token count: {sizes}")
