"""The real GraniteSpeechForConditionalGeneration class with a tiny config: forward and generate.

Its feature extractor needs torchaudio (not installable beside CPU torch here), so the first test hands the model
`input_features` directly: (batch, frames, 2 x mel bins), the shape the extractor produces by stacking frame pairs.
The last test runs the real GraniteSpeechProcessor through the project's encoding where torchaudio imports (the GPU
dependency set, requirements/gpu.txt) and is skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steps.modeling.batches import encode_for_training, encode_prompts
from steps.modeling.families import ADAPTERS, adapter_for, get_submodule

AUDIO_TOKEN_ID = 5
VOCAB = 64


def tiny_granite(vocab: int = VOCAB, audio_token_id: int = AUDIO_TOKEN_ID):
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    config = GraniteSpeechConfig(
        text_config={"model_type": "granite", "vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64,
                     "max_position_embeddings": 128, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2},
        encoder_config={"input_dim": 16, "num_layers": 1, "hidden_dim": 32, "num_heads": 2, "output_dim": 8,
                        "context_size": 20, "max_pos_emb": 32, "conv_kernel_size": 3, "feedforward_mult": 2},
        projector_config={"model_type": "blip_2_qformer", "hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 64, "encoder_hidden_size": 32},
        audio_token_index=audio_token_id, window_size=4, downsample_rate=2, has_lora_adapter=False,
    )
    torch.manual_seed(0)
    return GraniteSpeechForConditionalGeneration(config).eval()


def test_tiny_granite_speech_forward_and_generate() -> None:
    model = tiny_granite()
    assert adapter_for(model) is ADAPTERS["granite_speech"]
    for path in (ADAPTERS["granite_speech"].encoder, ADAPTERS["granite_speech"].projector,
                 *ADAPTERS["granite_speech"].llm):
        get_submodule(model, path)  # the adapter's module paths exist
    features = torch.randn(2, 12, 16)
    with torch.no_grad():
        n_audio = model.get_audio_features(features, return_dict=True).pooler_output.shape[1]
    prompt = [10, 11] + [AUDIO_TOKEN_ID] * n_audio + [12]
    input_ids = torch.tensor([prompt, prompt])
    labels = input_ids.clone()
    out = model(input_ids=input_ids, input_features=features, attention_mask=torch.ones_like(input_ids),
                labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.encoder.input_linear.weight.grad is not None  # audio reaches the loss
    generated = model.generate(input_ids=input_ids, input_features=features, attention_mask=torch.ones_like(input_ids),
                               max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert generated.shape == (2, len(prompt) + 4)


def torchaudio_imports() -> bool:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # absent, or a build that does not match torch (CPU torch + the registry's CUDA torchaudio)
        return False
    return True


@pytest.mark.skipif(not torchaudio_imports(), reason="GraniteSpeechFeatureExtractor needs torchaudio")
def test_real_granite_processor_through_the_project_encoding() -> None:
    from transformers import GraniteSpeechFeatureExtractor, GraniteSpeechProcessor

    from steps.modeling.tiny import train_tokenizer
    from tests.tiny_sallm import ASR_PROMPT, AST_PROMPT

    template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = train_tokenizer(["hello world the cat sat", "hallo welt die katze"] * 4, vocab_size=300)
    # 8 mel bins stacked in pairs = the tiny encoder's input_dim 16; window 4 / downsample 2 as in tiny_granite().
    extractor = GraniteSpeechFeatureExtractor(n_mels=8, projector_window_size=4, projector_downsample_rate=2)
    processor = GraniteSpeechProcessor(audio_processor=extractor, tokenizer=tok, chat_template=template)
    model = tiny_granite(vocab=len(tok), audio_token_id=tok.convert_tokens_to_ids(processor.audio_token))
    rng = np.random.default_rng(0)
    audios = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000, 24000)]
    adapter = ADAPTERS["granite_speech"]

    batch = encode_prompts(processor, adapter, [ASR_PROMPT, AST_PROMPT], audios)
    features = {k: batch[k] for k in adapter.feature_keys}
    assert features["input_features"].shape[-1] == 16
    generated = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **features,
                               max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 3)

    train = encode_for_training(processor, adapter, [ASR_PROMPT, AST_PROMPT], ["hello world", "hallo welt"], audios)
    model.train()
    out = model(input_ids=train["input_ids"], attention_mask=train["attention_mask"], labels=train["labels"],
                **{k: train[k] for k in adapter.feature_keys})
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.encoder.input_linear.weight.grad.abs().sum() > 0  # the extractor's features reach the loss
