"""Loading helpers, what trains (freeze switches, LoRA), training batches and generation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from steps.core.config import LoraSettings, ModelConfig
from steps.modeling.batches import encode_for_training, model_inputs
from steps.modeling.encoder_speedups import encode_each_clip_once, encode_real_frames_only
from steps.modeling.families import ADAPTERS, adapter_for, get_submodule, split_prompt
from steps.modeling.generation import GenerationSettings, generate
from steps.modeling.loading import apply_finetune_switches, choose_dtype, resolve_base


def training_batch(model, processor, rows):
    adapter = adapter_for(model)
    batch = encode_for_training(processor, adapter, [r["prompt"] for r in rows], [r["reference"] for r in rows],
                                [r["audio"] for r in rows])
    return model_inputs(batch, adapter)


def test_split_prompt_needs_exactly_one_marker() -> None:
    assert split_prompt("a <|audio|> b") == ("a ", " b")
    with pytest.raises(ValueError, match="exactly once"):
        split_prompt("no marker")


def test_choose_dtype() -> None:
    assert choose_dtype("auto", torch.device("cpu")) is torch.float32
    assert choose_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def test_unknown_family_is_a_clear_error() -> None:
    class Config:
        model_type = "wav2vec2"

    with pytest.raises(ValueError, match="not supported yet"):
        adapter_for(Config())


def test_granite_adapter_inlines_the_audio_token() -> None:
    assert ADAPTERS["granite_speech"].user_content("Hear <|audio|> now", "<|audio|>") == "Hear <|audio|> now"
    parts = ADAPTERS["qwen2_audio"].user_content("Hear <|audio|> now", "<|AUDIO|>")
    assert parts == [{"type": "text", "text": "Hear "}, {"type": "audio"}, {"type": "text", "text": " now"}]


def test_resolve_base_follows_the_pointer(tmp_path) -> None:
    (tmp_path / "base_model.json").write_text(json.dumps({"name_or_path": "org/model", "revision": "abc123"}))
    assert resolve_base(tmp_path) == ("org/model", "abc123")
    assert resolve_base(tmp_path / "elsewhere") == (str(tmp_path / "elsewhere"), None)


def test_labels_cover_only_the_answer_and_eos(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    rows = speech_rows[:3]
    batch = training_batch(model, processor, rows)
    tok = processor.tokenizer
    for row, labels in zip(rows, batch["labels"], strict=True):
        kept = labels[labels != -100].tolist()
        assert tok.decode(kept) == row["reference"] + tok.eos_token


@pytest.mark.parametrize("freeze", [False, True])
def test_audio_encoder_gets_gradient_unless_frozen(tiny_sallm, speech_rows, freeze: bool) -> None:
    model = copy.deepcopy(tiny_sallm[0])
    model = apply_finetune_switches(model, ModelConfig(freeze_audio_encoder=freeze))
    model.zero_grad(set_to_none=True)
    model(**training_batch(model, tiny_sallm[1], speech_rows[:2])).loss.backward()
    encoder = get_submodule(model, "model.audio_tower")
    grads = [p.grad for name, p in encoder.named_parameters() if "embed_positions" not in name]
    if freeze:
        assert all(g is None for g in grads)
    else:
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert model.model.audio_tower.embed_positions.weight.grad is None  # sinusoids never train
    assert model.lm_head.weight.grad is not None


def test_freeze_llm_and_projector(tiny_sallm) -> None:
    model = apply_finetune_switches(copy.deepcopy(tiny_sallm[0]), ModelConfig(freeze_llm=True, freeze_projector=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.audio_tower.") for n in trainable)


def test_freezing_the_lower_encoder_layers_trains_the_layers_above(tiny_sallm, speech_rows) -> None:
    model = apply_finetune_switches(copy.deepcopy(tiny_sallm[0]), ModelConfig(freeze_audio_encoder_layers=0))
    encoder = get_submodule(model, "model.audio_tower")  # the micro preset's one layer: the stem frozen, it trains
    model.zero_grad(set_to_none=True)
    model(**training_batch(model, tiny_sallm[1], speech_rows[:2])).loss.backward()
    grads = {n: p.grad for n, p in encoder.named_parameters()}
    stem_and_first = [n for n in grads if n.startswith(("conv1.", "conv2.", "embed_positions."))]
    above = [n for n in grads if n.startswith(("layers.0.", "layer_norm."))]
    assert stem_and_first and all(grads[n] is None for n in stem_and_first)
    assert above and all(grads[n] is not None for n in above) and any(grads[n].abs().sum() > 0 for n in above)
    assert model.lm_head.weight.grad is not None


def test_freezing_more_encoder_layers_than_it_has_is_a_clear_error(tiny_sallm) -> None:
    from steps.core.config import ConfigError, config_from_dict

    layers = len(tiny_sallm[0].model.audio_tower.layers)
    with pytest.raises(ValueError, match=f"freeze_audio_encoder_layers: {layers + 1}, but the encoder has {layers}"):
        apply_finetune_switches(copy.deepcopy(tiny_sallm[0]), ModelConfig(freeze_audio_encoder_layers=layers + 1))
    with pytest.raises(ConfigError, match="set one of the two"):
        config_from_dict({"model": {"freeze_audio_encoder": True, "freeze_audio_encoder_layers": 1}})


def test_lora_trains_only_adapters_and_leaves_base_weights(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    base = copy.deepcopy(model)
    cfg = ModelConfig(finetune="lora", freeze_audio_encoder=True, freeze_projector=True,
                      lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    peft_model = apply_finetune_switches(base, cfg)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all("language_model" in n for n in trainable), "LoRA must stay inside the LLM (not the audio encoder)"
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    batch = training_batch(model, processor, speech_rows[:2])
    for _ in range(3):
        opt.zero_grad()
        peft_model(**batch).loss.backward()
        opt.step()
    for name, param in peft_model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(before[name], param.detach()), f"base weight {name} changed"
    assert any("lora_B" in n and not torch.equal(before[n], p) for n, p in peft_model.named_parameters())


def test_lora_with_trainable_encoder_saves_it_too(tiny_sallm) -> None:
    peft_model = apply_finetune_switches(copy.deepcopy(tiny_sallm[0]), ModelConfig(finetune="lora"))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("audio_tower" in n and "lora_" not in n for n in trainable)
    assert not any("embed_positions" in n for n in trainable)


def test_generation_is_batched_in_order_and_cache_does_not_change_greedy(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    rows = speech_rows[:4]
    prompts, audios = [r["prompt"] for r in rows], [r["audio"] for r in rows]
    settings = GenerationSettings(max_new_tokens=6)
    batched = generate(model, processor, prompts, audios, settings, batch_size=4)
    single = [generate(model, processor, [p], [a], settings, batch_size=1)[0] for p, a in zip(prompts, audios,
                                                                                             strict=True)]
    no_cache = generate(model, processor, prompts, audios, GenerationSettings(max_new_tokens=6, use_cache=False),
                        batch_size=4)
    assert batched == single == no_cache
    sampled = generate(model, processor, prompts, audios, GenerationSettings(max_new_tokens=6, do_sample=True,
                                                                           temperature=0.9, top_p=0.9), seed=3)
    again = generate(model, processor, prompts, audios, GenerationSettings(max_new_tokens=6, do_sample=True,
                                                                         temperature=0.9, top_p=0.9), seed=3)
    assert sampled == again and len(sampled) == 4


def test_seeded_generation_leaves_the_callers_random_stream_alone(tiny_sallm, speech_rows) -> None:
    # Validation samples with a fixed seed in the middle of training; the rollouts after it must not restart from it.
    model, processor = tiny_sallm
    rows = speech_rows[:2]
    settings = GenerationSettings(max_new_tokens=4, do_sample=True, temperature=0.9, top_p=0.9)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    generate(model, processor, [r["prompt"] for r in rows], [r["audio"] for r in rows], settings, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_encoding_each_clip_once_keeps_the_loss_and_gradients(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    rows = [speech_rows[i] for i in (0, 1, 0, 2, 1, 0)]  # as in a GRPO batch: clips repeated
    adapter = adapter_for(model)

    def loss_and_grads(m):
        m.zero_grad()
        m(**training_batch(m, processor, rows)).loss.backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    plain = copy.deepcopy(model)
    shared = copy.deepcopy(model)
    encoder = encode_each_clip_once(get_submodule(shared, adapter.encoder))
    batch_sizes = []
    encoder.conv1.register_forward_pre_hook(lambda _m, args: batch_sizes.append(args[0].shape[0]))  # inside it
    torch.manual_seed(0)
    loss_plain = plain(**training_batch(plain, processor, rows)).loss
    loss_shared = shared(**training_batch(shared, processor, rows)).loss
    assert batch_sizes == [3]  # three distinct clips encoded, not six
    assert torch.allclose(loss_plain, loss_shared, atol=1e-6)
    g_plain, g_shared = loss_and_grads(plain), loss_and_grads(shared)
    assert g_plain.keys() == g_shared.keys() and any("audio_tower" in n for n in g_shared)
    for name, grad in g_plain.items():
        assert torch.allclose(grad, g_shared[name], atol=1e-5, rtol=1e-4), name
    twin = copy.deepcopy(shared)  # a copy computes with its own weights
    with torch.no_grad():
        for p in get_submodule(twin, adapter.encoder).parameters():
            p.zero_()
    assert not torch.allclose(twin(**training_batch(twin, processor, rows)).loss, loss_shared)
    assert set(shared.state_dict()) == set(plain.state_dict())


def test_real_frames_only_keeps_loss_gradients_and_generation(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    rows = [speech_rows[i] for i in (0, 3, 0, 5)]  # clips of different lengths, one repeated (GRPO-style)
    adapter = adapter_for(model)
    plain = copy.deepcopy(model)
    cropped = copy.deepcopy(model)
    encoder = encode_real_frames_only(encode_each_clip_once(get_submodule(cropped, adapter.encoder)))
    frames_seen = []
    encoder.conv1.register_forward_pre_hook(lambda _m, args: frames_seen.append(args[0].shape[-1]))
    batch = training_batch(cropped, processor, rows)
    window = batch["input_features"].shape[-1]
    longest = int(batch["feature_attention_mask"].sum(-1).max())

    def loss_and_grads(m):
        m.zero_grad()
        loss = m(**training_batch(m, processor, rows)).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    loss_plain, g_plain = loss_and_grads(plain)
    loss_cropped, g_cropped = loss_and_grads(cropped)
    assert frames_seen and max(frames_seen) <= longest + 6 < window  # the padding was not encoded
    assert torch.allclose(loss_plain, loss_cropped, atol=1e-6)
    assert g_plain.keys() == g_cropped.keys() and any("audio_tower" in n for n in g_cropped)
    for name, grad in g_plain.items():
        assert torch.allclose(grad, g_cropped[name], atol=1e-5, rtol=1e-4), name
    prompts, audios = [r["prompt"] for r in rows], [r["audio"] for r in rows]
    settings = GenerationSettings(max_new_tokens=6)
    assert generate(plain, processor, prompts, audios, settings) == generate(cropped, processor, prompts, audios,
                                                                             settings)
    assert set(cropped.state_dict()) == set(plain.state_dict())


def test_frozen_encoder_encodes_each_clip_once_and_keeps_loss_and_gradients(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    plain = apply_finetune_switches(copy.deepcopy(model), ModelConfig(freeze_audio_encoder=True))
    kept = copy.deepcopy(plain)
    del plain.model.audio_tower._kept  # the reference: the stock (frozen) encoder, nothing kept
    plain.model.audio_tower.__class__ = type(model.model.audio_tower)
    encoder = kept.model.audio_tower
    rows_encoded = []
    encoder.conv1.register_forward_pre_hook(lambda _m, args: rows_encoded.append(args[0].shape[0]))
    plain.train(), kept.train()

    def loss_and_grads(m, rows):
        m.zero_grad(set_to_none=True)
        loss = m(**training_batch(m, processor, rows)).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    epochs = [[speech_rows[i] for i in (0, 1, 2, 3)], [speech_rows[i] for i in (2, 0, 4, 1)]]  # a new clip in 2
    for rows in epochs:
        loss_plain, g_plain = loss_and_grads(plain, rows)
        loss_kept, g_kept = loss_and_grads(kept, rows)
        assert torch.allclose(loss_plain, loss_kept, atol=1e-6)
        assert g_plain.keys() == g_kept.keys() and not any("audio_tower" in n for n in g_kept)
        for name, grad in g_plain.items():
            assert torch.allclose(grad, g_kept[name], atol=1e-5, rtol=1e-4), name
    assert rows_encoded == [4, 1]  # the second batch encoded its one new clip only
    assert (encoder._kept.hits, encoder._kept.misses) == (3, 5)
    with torch.no_grad():  # weights changed in place (a checkpoint loaded): what was kept is forgotten
        encoder.layer_norm.bias.add_(1.0)
    assert not torch.allclose(kept(**training_batch(kept, processor, epochs[0])).loss, loss_kept)
    assert rows_encoded[-1] == 4
    assert set(kept.state_dict()) == set(model.state_dict())


def test_an_encoder_that_trains_keeps_nothing(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    frozen = apply_finetune_switches(copy.deepcopy(model), ModelConfig(freeze_audio_encoder=True))
    encoder = frozen.model.audio_tower
    encoder.requires_grad_(True)  # a trainable encoder's output changes with every step: never reused
    rows = speech_rows[:2]
    for _ in range(2):
        frozen(**training_batch(frozen, processor, rows)).loss.backward()
    assert (encoder._kept.hits, encoder._kept.misses, len(encoder._kept.rows)) == (0, 0, 0)
    assert encoder.conv1.weight.grad is not None
    trained = apply_finetune_switches(copy.deepcopy(model), ModelConfig(freeze_audio_encoder=False))
    assert not hasattr(trained.model.audio_tower, "_kept")


def test_loaded_qwen2_audio_models_encode_real_frames_only(tiny_sallm, tmp_path) -> None:
    from steps.modeling.loading import load_model_and_processor
    from steps.modeling.tiny import save

    save(*tiny_sallm, tmp_path / "base")
    model, _ = load_model_and_processor(tmp_path / "base", ModelConfig())
    assert type(get_submodule(model, adapter_for(model).encoder)).__name__.startswith("RealFramesOnly")
