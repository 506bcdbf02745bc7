"""The real GraniteSpeechForConditionalGeneration class with a tiny config: forward and generate.

Its feature extractor needs torchaudio (not installable beside CPU torch here), so the test hands the model
`input_features` directly: (batch, frames, 2 x mel bins), the shape the extractor produces by stacking frame pairs.
"""

from __future__ import annotations

import torch

from steps.modeling.families import ADAPTERS, adapter_for, get_submodule

AUDIO_TOKEN_ID = 5
VOCAB = 64


def tiny_granite():
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    config = GraniteSpeechConfig(
        text_config={"model_type": "granite", "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64,
                     "max_position_embeddings": 128, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2},
        encoder_config={"input_dim": 16, "num_layers": 1, "hidden_dim": 32, "num_heads": 2, "output_dim": 8,
                        "context_size": 20, "max_pos_emb": 32, "conv_kernel_size": 3, "feedforward_mult": 2},
        projector_config={"model_type": "blip_2_qformer", "hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 64, "encoder_hidden_size": 32},
        audio_token_index=AUDIO_TOKEN_ID, window_size=4, downsample_rate=2, has_lora_adapter=False,
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
