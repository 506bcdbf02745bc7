"""What vLLM samples GRPO's rollouts from when the policy carries Granite Speech's audio LoRA (`grpo.use_vllm`).

TRL's colocated engine is built from the model folder without LoRA, sends no LoRA request, and its weight sync
pushes `named_parameters()` under their in-memory names: for Granite Speech that is the base LLM without its audio
adapter (names such as `...q_proj.base_layer.weight` and `...lora_A.default.weight` that vLLM's model does not know),
so rollouts would be sampled from another model than the one the loss scores: an off-policy run that looks
on-policy.

Every rollout request carries audio, so the policy that must sample is the model with its adapter on:
W + (alpha / r) B A in each adapted layer. `use_merged_audio_policy` replaces the engine's sync with one that pushes
exactly those weights (steps.modeling.audio_adapter.merged_weights, TRL's own treatment of a PEFT policy) under the
checkpoint's names (`language_model.model.layers.N...`, what vLLM's GraniteSpeechForConditionalGeneration loads).
TRL syncs before the first generation of every optimiser step, so no rollout is sampled before the merged weights
are in; `_generate_single_turn` checks it. Why not vLLM's LoRA (enable_lora + a LoRA request per audio request, or
default_mm_loras): with LoRA enabled vLLM wraps the layers (`qkv_proj.base_layer.weight`) and the model's
`load_weights` no longer finds them (vLLM issue 39934), so the base weights of full fine-tuning could not be synced;
a LoRA request also loads the adapter from disk, once per id. For serving a saved model outside training,
steps.modeling.audio_adapter.vllm_serving_kwargs gives the LoRA arguments (tests/test_granite_vllm.py).
"""

from __future__ import annotations

import functools
from typing import Any

from steps.modeling.audio_adapter import merged_weights

SYNCED = "audio_policy_synced"  # set on the VLLMGeneration once merged weights are in the engine


def sync_audio_policy(generation: Any, model: Any) -> None:
    """Push the policy as it acts on audio into the colocated engine (replaces VLLMGeneration.sync_weights)."""
    if generation.mode != "colocate":
        raise ValueError("grpo.use_vllm with an audio adapter needs vllm_mode: colocate")
    if generation.enable_sleep_mode:  # as TRL: map the weights' memory before writing into it
        from trl.generation.vllm_generation import empty_cache

        empty_cache()
        generation.llm.wake_up(tags=["weights"])
        generation._llm_weights_sleeping = False
    engine_model = generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
    policy = generation.accelerator.unwrap_model(model)
    for name, tensor in merged_weights(policy, generation._dist.gather_params):
        engine_model.load_weights([(name, tensor)])
    generation.llm.reset_prefix_cache()
    setattr(generation, SYNCED, True)


def use_merged_audio_policy(generation: Any, model: Any) -> None:
    """Make `generation` (TRL's VLLMGeneration) sync the merged audio policy; TRL calls it at every step."""
    generation.sync_weights = functools.partial(sync_audio_policy, generation, model)
    setattr(generation, SYNCED, False)


def check_synced(generation: Any) -> None:
    if not getattr(generation, SYNCED, True):
        raise RuntimeError("vLLM would sample rollouts before the policy's weights (with its audio adapter merged) "
                           "were pushed: the engine holds the checkpoint's base LLM without the adapter")
