"""vLLM rollouts (`grpo.use_vllm`, colocate) for Granite Speech with its audio LoRA, with a recording fake engine.

The trainer is built with use_vllm=True: TRL's own VLLMGeneration and `_init_vllm` run, with vLLM's `LLM` replaced by
`RecordingEngine` (it records its arguments, every request, and every weight pushed through the path TRL's colocate
sync uses, `llm_engine.model_executor.driver_worker.model_runner.model.load_weights`). What is shown:
- the engine loads the model folder; before any rollout the sync pushes the policy as it acts on audio (W + the
  adapter's (alpha/r) B A in q_proj and v_proj) under the checkpoint's names, which are exactly the keys of the base
  model.safetensors the engine loaded; a model built from those weights alone scores the rollouts as the trained
  model with its adapter does (so the engine samples from the policy the loss scores);
- every request carries its row's audio; after an update the next step's sync carries the new adapter;
- no rollout is sampled before that sync (it stops);
- serving a saved folder outside training: vLLM's LoRA arguments (enable_lora, max_lora_rank, default_mm_loras), and,
  where vllm imports (the GPU set; slow), vLLM's own validation of them and of the adapter files.
  PYTHONPATH=. python -m pytest tests/test_granite_vllm.py
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from steps.modeling import audio_adapter
from steps.training import rollout_weights
from tests.fake_vllm import FakeLLM
from tests.tiny_granite import ADAPTER, granite_workspace, token_logps, without_adapter

# Granite's extractor on torchaudio or its torch-only stand-in, for the whole module (tests/granite_fixtures.py)
pytestmark = pytest.mark.usefixtures("granite_extractor")


@pytest.fixture(scope="module")
def root(granite_root: Path) -> Path:
    return granite_root


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")
    # TRL's _init_vllm writes these into os.environ: set them here so that monkeypatch puts the old values back.
    for var, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "localhost",
                       "MASTER_PORT": "29511"}.items():
        monkeypatch.setenv(var, os.environ.get(var, value))


class RecordingEngine(FakeLLM):
    """vllm.LLM as TRL's colocate path uses it: built with keyword arguments, weights pushed through load_weights."""

    tokenizer: Any = None
    built: ClassVar[list[RecordingEngine]] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(self.tokenizer, kwargs.get("max_tokens", 8))
        self.model_path, self.kwargs = model, kwargs
        self.pushes: list[dict[str, torch.Tensor]] = []  # one dict per sync
        self.resets = 0
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self.load_weights))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=runner)))
        RecordingEngine.built.append(self)

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        for name, tensor in weights:
            assert name not in self.pushes[-1], f"{name} pushed twice in one sync"
            self.pushes[-1][name] = tensor.detach().clone()

    def reset_prefix_cache(self) -> None:
        self.resets += 1
        self.pushes.append({})  # a sync ends with the reset: the next pushes belong to the next sync

    def generate(self, prompts: list[dict[str, Any]], sampling_params: Any = None, use_tqdm: bool = True,
                 **kwargs: Any) -> list:
        assert not kwargs, f"unexpected engine arguments {kwargs}"
        return super().generate(prompts, sampling_params, use_tqdm)


def vllm_trainer(root: Path, monkeypatch: pytest.MonkeyPatch, **grpo: Any) -> tuple[Any, RecordingEngine]:
    """The micro GRPO trainer with use_vllm: TRL builds its VLLMGeneration around a RecordingEngine."""
    from transformers import AutoTokenizer
    from trl.generation import vllm_generation

    from tests.helpers import grpo_micro_trainer as micro_trainer

    RecordingEngine.tokenizer = AutoTokenizer.from_pretrained(root / "models" / "base")
    RecordingEngine.built = []
    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(vllm_generation, "LLM", RecordingEngine, raising=False)
    monkeypatch.setattr(vllm_generation, "SamplingParams", lambda **kw: SimpleNamespace(**kw), raising=False)
    trainer = micro_trainer(root, use_vllm=True, vllm_mode="colocate", **grpo)
    [engine] = RecordingEngine.built
    engine.pushes.append({})
    engine.max_tokens = trainer.max_completion_length
    return trainer, engine


def grouped_rows(trainer: Any, examples: list[int]) -> list[dict[str, Any]]:
    return [dict(r) for r in trainer.train_dataset.select(examples) for _ in range(trainer.num_generations)]


def in_memory_names(model: Any) -> dict[str, str]:
    """Checkpoint key -> the loaded model's key (the adapter-free names), by transformers' own renames."""
    return {v: k for k, v in audio_adapter.checkpoint_names(model, list(audio_adapter.base_state_dict(model))).items()}


def test_the_engine_samples_from_the_policy_with_its_adapter(root: Path, tmp_path: Path, speech_rows,
                                                             monkeypatch) -> None:
    trainer, engine = vllm_trainer(root, monkeypatch)
    assert engine.model_path == str(root / "models" / "base")
    model = trainer.model
    rows = grouped_rows(trainer, [0, 1])
    batch = trainer._generate_and_score_completions(rows)

    # One sync, before the rollouts: every weight the engine loaded from model.safetensors, under the same names.
    pushed = engine.pushes[0]
    base_file = load_file(root / "models" / "base" / "model.safetensors")
    buffers = {k for k in base_file if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert set(pushed) == set(base_file) - buffers and engine.resets == 1
    # q_proj / v_proj carry the adapter merged in; every other weight is the policy's own.
    name = audio_adapter.audio_adapter_name(model)
    layers = audio_adapter.lora_layers(model, name)
    memory, state = in_memory_names(model), audio_adapter.base_state_dict(model)
    merged = 0
    for key, tensor in pushed.items():
        layer = layers.get(memory[key].removesuffix(".weight"))
        if layer is None:
            assert torch.equal(tensor, state[memory[key]]), key
            continue
        expected = layer.base_layer.weight + layer.get_delta_weight(name)
        assert torch.allclose(tensor, expected) and not torch.allclose(tensor, layer.base_layer.weight), key
        merged += 1
    assert merged == len(ADAPTER["target_modules"])  # one layer in the tiny LLM

    # A model holding only what was pushed (no adapter) scores the rollouts as the policy with its adapter does.
    engine_copy = audio_adapter_free(root, tmp_path, pushed)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    audio = {k: batch[k] for k in trainer.adapter.feature_keys}
    tokens = batch["completion_mask"].bool()
    model.eval()
    policy = token_logps(model, ids, mask, width, audio)
    assert torch.allclose(token_logps(engine_copy, ids, mask, width, audio)[tokens], policy[tokens], atol=1e-4)
    base_only = audio_adapter_free(root, tmp_path / "b", {})  # what TRL's stock engine would have sampled from
    assert (token_logps(base_only, ids, mask, width, audio)[tokens] - policy[tokens]).abs().max() > 1e-2

    # Each request carries its row's clip.
    [(requests, _)] = engine.calls
    assert len(requests) == len(rows)
    for request, row in zip(requests, rows, strict=True):
        assert np.array_equal(request["multi_modal_data"]["audio"][0], row["audio"])


def audio_adapter_free(root: Path, tmp_path: Path, weights: dict[str, torch.Tensor]) -> Any:
    """The base folder without its adapter, with `weights` (checkpoint names) loaded over it."""
    from steps.core.config import ModelConfig
    from steps.modeling.loading import load_model_and_processor

    folder = without_adapter(root / "models" / "base", tmp_path / "engine")
    model, _ = load_model_and_processor(folder, ModelConfig())
    state, memory = model.state_dict(), in_memory_names(model) if weights else {}
    with torch.no_grad():
        for key, tensor in weights.items():
            state[memory[key]].copy_(tensor)
    return model.eval()


def test_the_next_sync_carries_the_updated_adapter(root: Path, monkeypatch) -> None:
    trainer, engine = vllm_trainer(root, monkeypatch)
    model = trainer.model
    trainer._generate_and_score_completions(grouped_rows(trainer, [0, 1]))
    name = audio_adapter.audio_adapter_name(model)
    [layer] = [m for p, m in audio_adapter.lora_layers(model, name).items() if p.endswith("v_proj")]
    with torch.no_grad():
        layer.lora_B[name].weight.add_(0.5)  # an optimiser step on the adapter only (finetune: lora)
    trainer.state.global_step = 1
    trainer._generate_and_score_completions(grouped_rows(trainer, [2, 3]))
    assert engine.resets == 2
    key = "language_model.model.layers.0.self_attn.v_proj.weight"
    before, after = engine.pushes[0][key], engine.pushes[1][key]
    assert torch.allclose(after, layer.base_layer.weight + layer.get_delta_weight(name))
    assert not torch.allclose(before, after)


def test_no_rollout_before_the_merged_weights_are_in(root: Path, monkeypatch) -> None:
    trainer, engine = vllm_trainer(root, monkeypatch)
    trainer._last_loaded_step = trainer.state.global_step  # as if TRL had skipped the sync
    with pytest.raises(RuntimeError, match="before the policy's weights"):
        trainer._generate_and_score_completions(grouped_rows(trainer, [0, 1]))
    assert engine.calls == []


def test_serving_a_saved_folder_with_vllm_turns_the_adapter_on_for_audio(root: Path, tmp_path: Path) -> None:
    base = root / "models" / "base"
    kwargs = audio_adapter.vllm_serving_kwargs(base)
    assert kwargs == {"enable_lora": True, "max_lora_rank": 8, "max_loras": 1, "default_mm_loras": {"audio": str(base)}}
    assert audio_adapter.vllm_serving_kwargs(without_adapter(base, tmp_path / "off")) == {}
    assert [audio_adapter.vllm_lora_rank(r) for r in (4, 8, 50, 64)] == [8, 8, 64, 64]  # the released adapter: 64


def test_a_model_without_adapter_keeps_trls_own_sync(tmp_path: Path, speech_rows, monkeypatch) -> None:
    trainer, _ = vllm_trainer(granite_workspace(tmp_path, speech_rows, adapter=False), monkeypatch)
    assert not hasattr(trainer.vllm_generation, rollout_weights.SYNCED)
    assert "sync_weights" not in vars(trainer.vllm_generation)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm is in the GPU dependency set only (requirements/gpu.txt)")
def test_vllm_accepts_the_lora_arguments_and_the_saved_adapter(root: Path) -> None:
    """vLLM's own validation, on CPU: its LoRA config from our arguments, and its PEFT reader on the adapter files.
    Not run where this was written (no vllm beside torch 2.13): written against vLLM 0.33's vllm.config.LoRAConfig and
    vllm.lora.peft_helper.PEFTHelper."""
    from vllm.config import LoRAConfig
    from vllm.lora.peft_helper import PEFTHelper

    base = root / "models" / "base"
    kwargs = audio_adapter.vllm_serving_kwargs(base)
    lora_config = LoRAConfig(max_lora_rank=kwargs["max_lora_rank"], max_loras=kwargs["max_loras"],
                             default_mm_loras=kwargs["default_mm_loras"])
    text_config = json.loads((base / "config.json").read_text())["text_config"]
    helper = PEFTHelper.from_local_dir(str(base), max_position_embeddings=text_config["max_position_embeddings"])
    helper.validate_legal(lora_config)
    assert helper.r == ADAPTER["r"] and helper.lora_alpha == ADAPTER["alpha"]
