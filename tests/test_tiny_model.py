"""The tiny preset: sinusoidal positions, the audio window, save/reload through the Auto classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steps.core.config import ModelConfig
from steps.modeling import tiny as tiny_model
from steps.modeling.batches import ClipTooLongError, chat_prompt, encode_prompts, model_inputs
from steps.modeling.families import adapter_for
from steps.modeling.loading import load_model_and_processor
from tests.tiny_sallm import ASR_PROMPT


def test_whisper_sinusoids_match_the_formula() -> None:
    table = tiny_model.whisper_sinusoids(50, 8)
    assert table.shape == (50, 8)
    assert torch.allclose(table[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    inc = math.log(10000) / 3
    for pos, ch in ((7, 1), (31, 3)):
        assert table[pos, ch].item() == pytest.approx(math.sin(pos * math.exp(-inc * ch)), abs=1e-6)
        assert table[pos, 4 + ch].item() == pytest.approx(math.cos(pos * math.exp(-inc * ch)), abs=1e-6)


def test_tiny_encoder_has_frozen_sinusoidal_positions(tiny_sallm) -> None:
    model, _ = tiny_sallm
    table = model.model.audio_tower.embed_positions
    expected = tiny_model.whisper_sinusoids(table.weight.shape[0], table.weight.shape[1])
    assert torch.allclose(table.weight, expected)
    assert not table.weight.requires_grad


@pytest.mark.parametrize(("longest", "window"), [(0.4, 1), (4.161, 5), (5.0, 5), (7.137, 8)])
def test_window_is_the_longest_clip_rounded_up(longest: float, window: int) -> None:
    assert tiny_model.window_seconds_for(longest) == window


def test_window_sets_extractor_and_encoder_together(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    fe = processor.feature_extractor
    window = tiny_model.window_seconds_for(max(r["duration"] for r in speech_rows))
    assert fe.chunk_length == window
    assert fe.nb_max_frames == 2 * model.config.audio_config.max_source_positions


def test_too_long_clip_is_a_clear_error(tiny_sallm) -> None:
    model, processor = tiny_sallm
    too_long = np.zeros(processor.feature_extractor.n_samples + 1600, dtype=np.float32)
    with pytest.raises(ClipTooLongError, match=r"clip ex-7 lasts .* audio window is"):
        encode_prompts(processor, adapter_for(model), [ASR_PROMPT], [too_long], ids=["ex-7"])


def test_chat_template_puts_audio_where_the_marker_is(tiny_sallm) -> None:
    model, processor = tiny_sallm
    text = chat_prompt(processor, adapter_for(model), "Listen to <|audio|> and answer: who?")
    assert text == ("<|im_start|>user\nListen to <|audio_bos|><|AUDIO|><|audio_eos|> and answer: who?<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_save_and_reload_round_trip(tiny_sallm, speech_rows, tmp_path) -> None:
    model, processor = tiny_sallm
    tiny_model.save(model, processor, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")), "weights must be saved as safetensors only"
    loaded, loaded_proc = load_model_and_processor(tmp_path, ModelConfig(device="cpu"))
    assert type(loaded).__name__ == "Qwen2AudioForConditionalGeneration"
    assert type(loaded_proc).__name__ == "Qwen2AudioProcessor"
    assert loaded_proc.chat_template == processor.chat_template
    text = speech_rows[1]["reference"] + " " + speech_rows[0]["reference"]
    assert loaded_proc.tokenizer(text)["input_ids"] == processor.tokenizer(text)["input_ids"]
    assert loaded_proc.feature_extractor.chunk_length == processor.feature_extractor.chunk_length
    assert loaded.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    positions = model.model.audio_tower.embed_positions.weight
    assert torch.allclose(loaded.model.audio_tower.embed_positions.weight, positions)
    adapter = adapter_for(model)
    batch = model_inputs(encode_prompts(processor, adapter, [r["prompt"] for r in speech_rows[:2]],
                                        [r["audio"] for r in speech_rows[:2]]), adapter)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, loaded(**batch).logits, atol=1e-5)
