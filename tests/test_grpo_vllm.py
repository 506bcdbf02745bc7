"""The vLLM rollout path (`grpo.use_vllm`, colocate) up to the engine call, with a recorded fake engine.

vLLM is not installed in the CPU set, so the trainer is built without it and then given TRL's own `VLLMGeneration`
(its `_init_vllm` skipped, `SamplingParams` stood in for) around a fake `LLM` whose `generate` records every request
and answers with objects shaped like vLLM's `RequestOutput` (token ids and top-1 logprobs). Everything TRL does
before and after the engine call runs: colocate's one request per row (n=1), the tensor-parallel group's gathering of
prompts (torch.distributed.all_gather_object, simulated for a 2-rank group) and the slicing back, and the
importance-sampling correction built from the engine's logprobs. Where vllm imports (the GPU set; slow), the
recorded requests also go through vLLM's own multimodal processor for the model, on CPU: it must turn each into the
prompt the trainer scores. What only a GPU can check (weight sync, generation) is in docs/gpu.md.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from steps.modeling.batches import audio_extractor, encode_prompts
from steps.training.grpo_trainer import collapse_runs
from tests.fake_vllm import FAKE_LOGPROB, FakeLLM
from tests.helpers import grpo_micro_trainer as micro_trainer
from tests.tiny_sallm import ASR_PROMPT, RATE, workspace

TP_GROUP = "tp-group"  # stands for the process group TRL's _init_vllm would create


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")



def with_fake_vllm(trainer: Any, monkeypatch: pytest.MonkeyPatch, tensor_parallel_size: int = 1) -> Any:
    """Switch a trainer built with use_vllm=False onto TRL's colocate VLLMGeneration around a FakeLLM."""
    from trl.generation import vllm_generation

    monkeypatch.setattr(vllm_generation.VLLMGeneration, "_init_vllm", lambda self: None)
    monkeypatch.setattr(vllm_generation, "SamplingParams", lambda **kw: SimpleNamespace(**kw), raising=False)
    gen = vllm_generation.VLLMGeneration(
        model=trainer.model, accelerator=trainer.accelerator, processing_class=trainer.processing_class,
        mode="colocate", tensor_parallel_size=tensor_parallel_size, repetition_penalty=trainer.repetition_penalty,
        temperature=trainer.temperature, top_p=trainer.top_p, top_k=trainer.top_k, min_p=trainer.min_p,
        max_completion_length=trainer.max_completion_length, logprobs=0)
    gen.llm = FakeLLM(trainer.processing_class.tokenizer, trainer.max_completion_length)
    gen.tp_group = TP_GROUP
    gen.syncs = []
    gen.sync_weights = lambda: gen.syncs.append(trainer.state.global_step)
    trainer.use_vllm, trainer.vllm_mode, trainer.vllm_generation = True, "colocate", gen
    trainer._last_loaded_step = -1  # as TRL's __init__ sets it with use_vllm
    return gen


def grouped_rows(trainer: Any, examples: list[int]) -> list[dict[str, Any]]:
    return [dict(r) for r in trainer.train_dataset.select(examples) for _ in range(trainer.num_generations)]


def prompt_ids_of(trainer: Any, rows: list[dict[str, Any]]) -> list[list[int]]:
    """The token ids the trainer's own tokenisation gives `rows` (what a rank hands TRL's generate)."""
    trainer._rows = rows
    try:
        ids, _, _ = trainer._tokenize_prompts([r["prompt"] for r in rows])
    finally:
        trainer._rows, trainer._audio_fields = [], None
    return ids


def audio_token_id(trainer: Any) -> int:
    processor = trainer.processing_class
    return processor.tokenizer.convert_tokens_to_ids(processor.audio_token)


def as_vllm_expands(trainer: Any, request: dict[str, Any]) -> list[int]:
    """What vLLM makes of a request (its PromptReplacement for Qwen2-Audio and Granite Speech): the one audio token
    replaced by as many as the clip needs; the count taken from the trainer's processor on that clip alone."""
    audio, _ = request["multi_modal_data"]["audio"]
    token = audio_token_id(trainer)
    alone = encode_prompts(trainer.processing_class, trainer.adapter, [ASR_PROMPT], [audio])["input_ids"][0]
    ids = request["prompt_token_ids"]
    assert ids.count(token) == 1  # one placeholder per clip, as vLLM expects token prompts
    at = ids.index(token)
    return ids[:at] + [token] * int((alone == token).sum()) + ids[at + 1:]


def test_every_request_carries_its_rows_audio(tmp_path: Path, speech_rows, monkeypatch) -> None:
    trainer = micro_trainer(workspace(tmp_path, speech_rows))
    gen = with_fake_vllm(trainer, monkeypatch)
    rows = grouped_rows(trainer, [0, 1])
    expected_prompts = prompt_ids_of(trainer, rows)
    batch = trainer._generate_and_score_completions(rows)

    assert gen.syncs == [0]  # TRL pushed the weights once before generating
    [(requests, params)] = gen.llm.calls
    assert params.n == 1 and params.logprobs == 0  # colocate: one request per row, G rows per prompt
    assert len(requests) == len(rows) == 8
    assert audio_extractor(trainer.processing_class).sampling_rate == RATE
    for request, row, prompt in zip(requests, rows, expected_prompts, strict=True):
        assert request["prompt_token_ids"] == collapse_runs(prompt, audio_token_id(trainer))
        audio, rate = request["multi_modal_data"]["audio"]
        assert rate == RATE and np.array_equal(audio, row["audio"])
        assert as_vllm_expands(trainer, request) == prompt  # the engine sees the prompt the trainer scores
    clips = [r["multi_modal_data"]["audio"][0] for r in requests]
    assert all(np.array_equal(c, clips[0]) for c in clips[:4]) and all(np.array_equal(c, clips[4]) for c in clips[4:])
    assert not np.array_equal(clips[0], clips[4])  # the two groups carry different clips
    assert "generate" not in vars(gen.llm)  # the audio wrapper is removed after the call

    # The engine's answers and logprobs are what the batch holds, and the loss pass (with TRL's IS ratio) runs.
    for i in range(len(rows)):
        ids = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        assert ids == gen.llm.completion(i)
        assert torch.all(batch["sampling_per_token_logps"][i][: len(ids)] == FAKE_LOGPROB)
    assert "importance_sampling_ratio" in batch and "input_features" in batch
    batch["advantages"] = torch.linspace(-1.0, 1.0, len(rows))
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in trainer.model.model.audio_tower.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def fake_tp_group(monkeypatch: pytest.MonkeyPatch, rank: int, peer_prompts: list[list[int]],
                  peer_audios: list[np.ndarray]) -> list[str]:
    """torch.distributed for a 2-rank TP group: this process is `rank`, the other holds the peer's rows."""
    gathered: list[str] = []

    def all_gather_object(output: list[Any], obj: Any, group: Any = None) -> None:
        assert group == TP_GROUP and len(output) == 2
        if all(o is None for o in obj):
            kind, peer = "images", [None] * len(peer_prompts)
        elif all(isinstance(o, list) and all(isinstance(t, int) for t in o) for o in obj):
            kind, peer = "prompts", peer_prompts
        else:
            kind, peer = "audio", peer_audios
        assert len(obj) == len(peer)
        gathered.append(kind)
        output[rank], output[1 - rank] = obj, peer

    def get_rank(group: Any = None) -> int:
        assert group == TP_GROUP
        return rank

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    monkeypatch.setattr(torch.distributed, "get_rank", get_rank)
    return gathered


@pytest.mark.parametrize("rank", [0, 1])
def test_tensor_parallel_group_keeps_audio_aligned_with_gathered_prompts(tmp_path: Path, speech_rows, monkeypatch,
                                                                         rank: int) -> None:
    trainer = micro_trainer(workspace(tmp_path, speech_rows))
    gen = with_fake_vllm(trainer, monkeypatch, tensor_parallel_size=2)
    rows, peer_rows = grouped_rows(trainer, [0, 1]), grouped_rows(trainer, [2, 3])
    local_prompts, peer_prompts = prompt_ids_of(trainer, rows), prompt_ids_of(trainer, peer_rows)
    assert local_prompts != peer_prompts  # clips of other lengths: other audio placeholder counts
    gathered = fake_tp_group(monkeypatch, rank, peer_prompts, [r["audio"] for r in peer_rows])
    batch = trainer._generate_and_score_completions(rows)

    assert "prompts" in gathered and "audio" in gathered
    [(requests, _)] = gen.llm.calls
    # One engine call for the whole TP group, in rank order; each prompt beside its own clip.
    group_rows = rows + peer_rows if rank == 0 else peer_rows + rows
    group_prompts = local_prompts + peer_prompts if rank == 0 else peer_prompts + local_prompts
    assert len(requests) == 16
    for request, row, prompt in zip(requests, group_rows, group_prompts, strict=True):
        assert np.array_equal(request["multi_modal_data"]["audio"][0], row["audio"])
        assert as_vllm_expands(trainer, request) == prompt  # the clip's length fits the prompt's placeholders
    # TRL keeps this rank's share of the answers: requests rank * 8 ... rank * 8 + 7.
    for i in range(len(rows)):
        ids = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        assert ids == gen.llm.completion(rank * len(rows) + i)
    assert batch["input_features"].size(0) == len(rows)  # the loss pass gets the local rows' audio only


def on_policy_is_metrics(batch: dict[str, Any], mode: str, clip_min: float | None, clip_max: float | None
                         ) -> dict[str, float]:
    """TRL's sampling/* metrics recomputed by hand over the on-policy rows' tokens only."""
    on = ~batch["off_policy_mask"]
    mask = batch["completion_mask"].bool() & on.view(-1, 1)
    diff = (batch["old_per_token_logps"] - batch["sampling_per_token_logps"]) * mask
    delta = diff.abs()[mask]
    lo, hi = -math.inf if clip_min is None else clip_min, math.inf if clip_max is None else clip_max
    ratio = torch.exp(diff.sum(-1))[on] if mode.startswith("sequence") else torch.exp(diff)[mask]
    ratio = ratio.clamp(min=clip_min, max=clip_max) if mode.endswith("truncate") else \
        ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)
    return {"sampling/sampling_logp_difference/mean": delta.mean().item(),
            "sampling/sampling_logp_difference/max": delta.max().item(),
            "sampling/importance_sampling_ratio/min": ratio.min().item(),
            "sampling/importance_sampling_ratio/mean": ratio.mean().item(),
            "sampling/importance_sampling_ratio/max": ratio.max().item()}


@pytest.mark.parametrize("mode", ["sequence_mask", "token_truncate"])
def test_off_policy_rows_stay_out_of_the_importance_sampling_correction(tmp_path: Path, speech_rows, monkeypatch,
                                                                        mode: str) -> None:
    trainer = micro_trainer(workspace(tmp_path, speech_rows), method="mpgrpo", max_completion_length=64)
    trainer.vllm_importance_sampling_mode = mode
    trainer.vllm_importance_sampling_clip_min = 0.5 if mode == "token_truncate" else None
    with_fake_vllm(trainer, monkeypatch)
    rows = grouped_rows(trainer, [0, 1])
    batch = trainer._generate_and_score_completions(rows)

    off = batch["off_policy_mask"]
    assert off.tolist() == [False, False, False, True] * 2
    tok = trainer.processing_class.tokenizer
    for i in (3, 7):  # the reference replaced the engine's answer
        ids = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        assert tok.decode(ids, skip_special_tokens=True) == rows[i]["reference"]
    on_mask = batch["completion_mask"].bool() & ~off.view(-1, 1)
    assert torch.all(batch["sampling_per_token_logps"][on_mask] == FAKE_LOGPROB)
    expected = on_policy_is_metrics(batch, mode, trainer.vllm_importance_sampling_clip_min,
                                    trainer.vllm_importance_sampling_clip_max)
    for key, value in expected.items():
        assert trainer._metrics["train"][key][-1] == pytest.approx(value, rel=1e-5, abs=1e-12), key
    # The reference was never sampled by vLLM: no correction (ratio exactly 1).
    assert torch.all(batch["importance_sampling_ratio"][off] == 1.0)
    batch["advantages"] = torch.linspace(-1.0, 1.0, len(rows))
    assert torch.isfinite(trainer.compute_loss(trainer.model, batch))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm is in the GPU dependency set only (requirements/gpu.txt)")
@pytest.mark.parametrize("family", ["qwen2_audio", "granite_speech"])
def test_vllm_own_processor_turns_each_request_into_the_trainers_prompt(tmp_path: Path, speech_rows, monkeypatch,
                                                                       family: str) -> None:
    """The recorded requests through vLLM's multimodal processor for the model (CPU: no engine, no GPU)."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    from tests.tiny_granite import granite_workspace, torchaudio_imports

    if family == "granite_speech" and not torchaudio_imports():
        pytest.skip("GraniteSpeechFeatureExtractor needs torchaudio")
    root = (workspace if family == "qwen2_audio" else granite_workspace)(tmp_path, speech_rows)
    trainer = micro_trainer(root)
    assert trainer.adapter.model_type == family
    gen = with_fake_vllm(trainer, monkeypatch)
    rows = grouped_rows(trainer, [0, 1])
    expected = prompt_ids_of(trainer, rows)
    trainer._generate_and_score_completions(rows)
    [(requests, _)] = gen.llm.calls
    processor = MULTIMODAL_REGISTRY.create_processor(ModelConfig(model=str(root / "models" / "base"), dtype="float32"))
    for request, prompt in zip(requests[::trainer.num_generations], expected[::trainer.num_generations], strict=True):
        out = processor(request["prompt_token_ids"], processor.info.parse_mm_data(request["multi_modal_data"]))
        assert out["prompt_token_ids"] == prompt
        [placeholder] = out["mm_placeholders"]["audio"]
        assert placeholder.length == prompt.count(audio_token_id(trainer))
