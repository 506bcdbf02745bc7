"""The real GraniteSpeechForConditionalGeneration class with a tiny config: forward and generate, and every stage.

The first tests hand the model `input_features` directly: (batch, frames, 2 x mel bins), the shape the extractor
produces by stacking frame pairs; GRPO's dropout switch is checked on it too. The real GraniteSpeechProcessor then runs
through the project's encoding (its feature extractor on torchaudio where it imports, else on the torch-only stand-in
tests/torchaudio_stub.py), and (slow) a tiny Granite Speech with its audio LoRA, laid out as the released checkpoints
(tests/tiny_granite.py), goes through sft, grpo, mpgrpo and evaluate with the Qwen2-Audio stage tests' checks:
  PYTHONPATH=. python -m pytest tests/test_granite_speech.py -m slow
The adapter's own checks (every pass, what trains, save and reload) are in tests/test_granite_adapter.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from steps.modeling.batches import encode_for_training, encode_prompts
from steps.modeling.families import ADAPTERS, adapter_for, get_submodule
from tests.helpers import TASK, grpo_micro_config, grpo_micro_trainer, micro_paths, sft_micro_config, validation_loss
from tests.tiny_granite import AUDIO_TOKEN_ID, granite_workspace, tiny_granite
from tests.torchaudio_stub import granite_extractor_backend, torchaudio_imports

__all__ = ["granite_workspace", "tiny_granite", "torchaudio_imports"]  # tests/test_grpo_vllm.py imports them here


@pytest.fixture(scope="module", autouse=True)
def extractor_backend() -> Iterator[str]:
    """torchaudio where it imports, else the torch-only mel stand-in (tests/torchaudio_stub.py)."""
    with granite_extractor_backend() as backend:
        yield backend


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


def test_grpo_switches_off_granite_dropout_that_trl_does_not_reach() -> None:
    from trl.trainer.utils import disable_dropout_in_model

    from steps.training.grpo_trainer import switch_off_dropout

    model = tiny_granite().train()  # Granite Speech's config defaults: dropout 0.1 in the encoder and the Q-former
    features = torch.randn(2, 12, 16)
    with torch.no_grad():
        n_audio = model.get_audio_features(features, return_dict=True).pooler_output.shape[1]
    ids = torch.tensor([[10, 11] + [AUDIO_TOKEN_ID] * n_audio + [12]] * 2)

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids, input_features=features, attention_mask=torch.ones_like(ids)).logits

    disable_dropout_in_model(model)  # TRL's disable_dropout: nn.Dropout modules only
    assert not torch.equal(logits(), logits())  # the Q-former's attention dropout (a float) is still on
    assert switch_off_dropout(model) > 0
    assert torch.equal(logits(), logits()) and switch_off_dropout(model) == 0


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


# --- every stage ------------------------------------------------------------------------------------------------------


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


@pytest.mark.slow
def test_granite_speech_through_sft_grpo_mpgrpo_and_evaluate(tmp_path: Path, speech_rows, monkeypatch) -> None:
    """The Qwen2-Audio stage tests' checks (test_sft, test_grpo, test_evaluate) on a tiny Granite Speech."""
    import csv
    import json

    from safetensors.torch import load_file

    from steps.core.io import read_jsonl
    from steps.evaluation.evaluator import run_evaluate
    from steps.training.grpo_trainer import run_grpo
    from steps.training.sft_trainer import run_sft

    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")
    task = TASK
    root = granite_workspace(tmp_path, speech_rows, task)
    base = root / "models" / "base"
    adapter = ADAPTERS["granite_speech"]

    def state(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
        return load_file(folder / name)

    def adapter_state(folder: Path) -> dict[str, torch.Tensor]:  # the audio LoRA, saved beside (finetune: full)
        return state(folder, "adapter_model.safetensors")

    def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
        assert before.keys() == after.keys()  # saved in the base's layout
        return [k for k in before if not torch.equal(before[k], after[k])]

    # sft: validation loss falls, most tensors (encoder, projector and LLM among them) move, outputs are written.
    paths = micro_paths(root)
    sft_dir = paths.model("sft", task)
    result = run_sft(sft_micro_config(keep_checkpoints=False), task, paths)
    assert result.global_step == 20
    assert validation_loss(sft_dir, speech_rows) < validation_loss(base, speech_rows)
    moved = changed(state(base), state(sft_dir))
    assert len(moved) > len(state(base)) // 2
    assert all(any(part in k for k in moved) for part in ("encoder", "projector", "language_model"))
    assert changed(adapter_state(base), adapter_state(sft_dir))  # the audio LoRA trained, and was saved
    assert json.loads(paths.train_summary("sft", task).read_text())["global_step"] == 20
    assert (sft_dir / "resolved_params.yaml").is_file() and not paths.work("sft", task).exists()

    # The GRPO loss pass: the audio reaches it (the encoder gets gradient) and other audio changes the log-probs.
    trainer = grpo_micro_trainer(root)
    model = trainer.model
    encoder = get_submodule(model, adapter.encoder)
    calls: list[bool] = []
    handle = encoder.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    pair = same_token_count_pair(trainer.processing_class, speech_rows)
    rows = [dict(r) for r in trainer.train_dataset.select(pair) for _ in range(trainer.num_generations)]
    batch = trainer._prepare_inputs(rows)
    assert set(adapter.feature_keys) <= set(batch) and batch["input_features"].size(0) == len(rows)
    assert calls == [False]  # generation saw the audio
    batch["advantages"] = torch.linspace(-1.0, 1.0, len(rows))
    model.zero_grad()
    trainer.compute_loss(model, batch).backward()
    handle.remove()
    assert calls[-1] is True  # the loss pass ran the encoder, with grad
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    with torch.no_grad():
        real, _, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, mask, width, **{k: batch[k] for k in adapter.feature_keys})
        swapped, _, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, mask, width, **{k: batch[k].flip(0) for k in adapter.feature_keys})
        again, _, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, mask, width, **{k: batch[k] for k in adapter.feature_keys})
    tokens = batch["completion_mask"].bool()
    assert torch.isfinite(real[tokens]).all() and not torch.allclose(real[tokens], swapped[tokens])
    # In training mode (as for every GRPO pass), two passes agree: no dropout noise in the ratios or the KL (the
    # encoder's and the Q-former's dropout is 0.1 in Granite Speech configs; GRPO switches it off).
    assert model.training and torch.equal(real, again)

    # grpo and mpgrpo from the SFT model: a few steps each; the encoder and the LLM move; curves and summaries written.
    for method in ("grpo", "mpgrpo"):
        cfg = grpo_micro_config(init="sft", reward_weights={"chrf": 1.0}, max_completion_length=64)
        result = run_grpo(cfg, method, task, paths)
        assert result.global_step == 2
        moved = changed(state(sft_dir), state(result.model_dir))
        assert any("encoder" in k for k in moved) and any("language_model" in k for k in moved), method
        assert changed(adapter_state(sft_dir), adapter_state(result.model_dir)), method
        summary = json.loads((root / "metrics" / method / f"{task}.train.json").read_text())
        assert summary["global_step"] == 2 and summary["validation"][0]["step"] == 2
        curve = list(csv.DictReader((root / "metrics" / method / f"{task}.curve.csv").open()))
        assert [r["step"] for r in curve] == ["1", "2"] and all(r["reward"] != "" for r in curve)
        if method == "mpgrpo":  # the reference joined every group
            assert all(r["reward_off_policy"] != "" for r in curve)

    # evaluate every model: metrics with signatures, predictions holding every run, the listening check.
    for name in ("base", "sft", "grpo", "mpgrpo"):
        scores = run_evaluate(sft_micro_config(), name, task, paths)
        assert all(math.isfinite(scores[k]) for k in ("bleu", "chrf", "bleu_swapped"))
        metrics = json.loads((root / "metrics" / name / f"{task}.json").read_text())
        for key in ("bleu", "bleu_swapped", "bleu_sampled_mean", "bleu_sampled_std", "signatures", "n"):
            assert key in metrics, (name, key)
        predictions = read_jsonl(root / "metrics" / name / f"{task}.predictions.jsonl")
        assert [p["id"] for p in predictions] == [r["id"] for r in speech_rows]
        assert all(len(p["sampled"]) == 2 and "greedy" in p and "swapped" in p for p in predictions)
