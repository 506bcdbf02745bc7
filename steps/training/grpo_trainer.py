"""GRPO with a BLEU reward, and mixed-policy GRPO, on TRL's GRPOTrainer (trl 1.16.0, whose internals are overridden
here): the trainer of the grpo and mpgrpo stages, and `run_grpo`, the stage's work on one task.

Why a subclass: TRL 1.16 hands the processor's audio tensors to `generate()` only; the old-policy, reference and loss
passes would score the audio placeholder tokens without the audio (measured: the encoder got no gradient). Here the
audio rides along in the batch and reaches every pass. With `grpo.shared_prefix` (default) each group's prompt and
audio run through the LLM once per log-prob pass and per rollout prefill, and the processor once per clip
(steps/modeling/shared_prefix.py; the same results up to rounding). With `grpo.use_vllm` (colocate) each request
carries its clip (tests/test_grpo_vllm.py, with a fake engine; docs/gpu.md).

Mixed policy (LUFFY, arXiv 2504.14945): the last `num_off_policy` completions of each group are replaced by an
off-policy text + EOS (off_policy.py) before rewards are computed, so rewards and advantages are normalised over the
joint group; in the loss those tokens have behaviour probability 1 and no clipping (grpo_loss.py), and the KL term
covers on-policy tokens only. An off-policy text longer than `max_completion_length` is never truncated (a cut
reference would be rewarded as a worse answer): that example keeps its sample and `offpolicy/too_long` counts it.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanmax, nanmin

from steps.core.config import GRPO_METHODS, Config, GrpoConfig
from steps.core.io import atomic_write_text
from steps.core.paths import RunPaths
from steps.evaluation.metrics import corpus_bleu
from steps.modeling.audio_adapter import has_audio_adapter, prepare_audio_adapter
from steps.modeling.batches import audio_extractor
from steps.modeling.encoder_speedups import encode_each_clip_once, encode_real_frames_only
from steps.modeling.families import FamilyAdapter, adapter_for, get_submodule
from steps.modeling.generation import GenerationSettings, generate
from steps.modeling.shared_prefix import LogProbCheck, enable_shared_prefix, encode_prompts_once, prefill_once
from steps.training.checkpoints import save_in_model_layout, write_validation_history
from steps.training.curves import CurveMetrics, curve_csv
from steps.training.flops import flop_phase
from steps.training.grpo_loss import (
    floored_advantages,
    kl_penalty,
    normalised_loss,
    off_policy_positions,
    policy_token_loss,
)
from steps.training.off_policy import OffPolicySource
from steps.training.rewards import weighted_reward
from steps.training.rollout_weights import check_synced, use_merged_audio_policy
from steps.training.runner import (
    NonFiniteGuard,
    TrainerInputs,
    TrainingJob,
    TrainResult,
    compute_meter,
    run_training,
    trainer_kwargs,
    validation_settings,
)

# --- helpers ----------------------------------------------------------------------------------------------------------


def collapse_runs(ids: Sequence[int], token: int) -> list[int]:
    """`ids` with every run of `token` cut to one `token` (the processor's expanded audio placeholder, unexpanded)."""
    out: list[int] = []
    for t in ids:
        if t != token or not out or out[-1] != token:
            out.append(t)
    return out


BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def _stay_in_eval(module: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(module, False)


def freeze_batch_norm(model: torch.nn.Module) -> int:
    """Keep every batch norm of `model` in eval mode (normalising with its running statistics), also when the
    Trainer calls model.train(). Returns how many.

    In training mode a batch norm normalises with the statistics of the batch at hand, so the rollouts, the loss
    pass and TRL's reference pass (run in eval mode) would score different policies, and the statistics would drift
    with every loss pass. Granite Speech's conformer has one in every block; the tiny preset has none.
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, BATCH_NORMS):
            module.train = types.MethodType(_stay_in_eval, module)
            module.train()
            frozen += 1
    return frozen


def switch_off_dropout(model: torch.nn.Module) -> int:
    """Set every dropout of `model` to 0: nn.Dropout modules, and the float rates modules read in forward
    (`attention_dropout`, Whisper-style `dropout` / `activation_dropout`, `layerdrop`).

    The rollouts, the old-policy and reference passes and the loss pass must score the same policy: with dropout
    on (all of them run in training mode) ratios, KL and the copies `encode_each_clip_once` shares would carry its
    noise. Granite Speech configs have 0.1 in the encoder and the Q-former, whose attention reads a float that TRL's
    `disable_dropout` (nn.Dropout only) does not reach; the Qwen2-Audio presets have 0 everywhere. The saved config is
    unchanged. Returns how many were switched off.
    """
    switched = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p = 0.0
            switched += 1
        for name, rate in list(vars(module).items()):
            if isinstance(rate, float) and rate > 0 and (name.endswith("dropout") or name == "layerdrop"):
                setattr(module, name, 0.0)
                switched += 1
    return switched


# --- the trainer ------------------------------------------------------------------------------------------------------


class AudioGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with the audio carried through every pass, and mixed-policy groups (module docstring)."""

    def __init__(self, *args: Any, adapter: FamilyAdapter, off_policy: OffPolicySource | None = None,
                 num_off_policy: int = 0, shaping_gamma: float | None = None,
                 advantage_std_floor: float | None = None, validation: Any = None,
                 validation_settings: GenerationSettings | None = None, validation_seed: int = 0,
                 shared_prefix: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adapter = adapter
        self.off_policy = off_policy
        self.num_off_policy = num_off_policy
        self.shaping_gamma = shaping_gamma
        self.validation = validation
        self.validation_settings = validation_settings or GenerationSettings()
        self.validation_seed = validation_seed
        self.advantage_std_floor = advantage_std_floor
        self._all_rewards: torch.Tensor | None = None
        self._rows: list[dict[str, Any]] = []
        self._audio_fields: dict[str, torch.Tensor] | None = None
        self._off_mask: list[bool] = []
        if self.use_vllm and self.vllm_mode != "colocate":
            raise ValueError("grpo.use_vllm with vllm_mode=server cannot carry the audio to the server: use "
                             "vllm_mode: colocate")
        for model in (self.model, getattr(self, "ref_model", None)):  # a group's G rows share one clip
            if model is not None:
                # Granite Speech: the audio LoRA on in every pass (TRL loads the reference model itself)
                prepare_audio_adapter(self.accelerator.unwrap_model(model), "the GRPO model")
                switch_off_dropout(self.accelerator.unwrap_model(model))  # every pass scores the same policy
                freeze_batch_norm(self.accelerator.unwrap_model(model))  # nor a batch norm's batch statistics
                encoder = get_submodule(self.accelerator.unwrap_model(model), adapter.encoder)
                if adapter.crop_audio_window:  # TRL builds the reference model itself, past loading's crop
                    encode_real_frames_only(encoder)
                encode_each_clip_once(encoder)
                if shared_prefix:  # each group's prompt + audio through the LLM once (steps/modeling/shared_prefix.py)
                    enable_shared_prefix(self.accelerator.unwrap_model(model))
        self._prefix_check = LogProbCheck.for_trainer(self) if shared_prefix else None
        if self.use_vllm and has_audio_adapter(self.accelerator.unwrap_model(self.model)):
            use_merged_audio_policy(self.vllm_generation, self.vllm_generation.model)  # steps/training/rollout_weights

    # -- audio in ----------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._rows = list(inputs)
        try:
            with flop_phase(self, "reference"):  # the log-prob passes before the loss; _generate's are rollouts
                output = super()._generate_and_score_completions(inputs)
            device = self.accelerator.device
            if self.advantage_std_floor is not None and self.model.training:
                output["advantages"] = floored_advantages(
                    self._all_rewards, self.reward_weights, self.num_generations, self.advantage_std_floor,
                )[self.accelerator.process_index * len(inputs):(self.accelerator.process_index + 1) * len(inputs)]
            output.update({k: v.to(device) for k, v in (self._audio_fields or {}).items()})
            output["off_policy_mask"] = torch.tensor(self._off_mask or [False] * len(inputs), device=device)
            if self.use_vllm and self.vllm_importance_sampling_correction and self.num_off_policy \
                    and self.model.training:
                self._keep_off_policy_rows_out_of_sampling_correction(output)
            return output
        finally:
            self._rows, self._audio_fields = [], None

    def _keep_off_policy_rows_out_of_sampling_correction(self, output: dict[str, Any]) -> None:
        """vLLM never sampled an off-policy row: its IS weight is 1 and TRL's ratio metrics cover on-policy rows only.

        `_generate` gives those rows NaN sampling logprobs, which TRL treats as unscored tokens (ratio exp(0) = 1,
        left out of `sampling/sampling_logp_difference`), but `sampling/importance_sampling_ratio/{min,mean,max}`
        still count their 1s (with behaviour logprob 0 they counted ratios of ~0). Recomputed here as TRL does (per
        process, then min / nan-mean / max over processes), on the on-policy rows; every process calls the gather.
        """
        off = output["off_policy_mask"]
        ratio = output["importance_sampling_ratio"].masked_fill(off.view(-1, 1), 1.0)  # also under a clip_max < 1
        output["importance_sampling_ratio"] = ratio
        on = ~off
        sequence_level = ratio.size(1) == 1  # one ratio per row, else one per token
        values = ratio[on].flatten() if sequence_level else ratio[output["completion_mask"].bool() & on.view(-1, 1)]
        nan = torch.tensor(float("nan"), device=ratio.device)
        stats = torch.stack([values.min(), values.mean(), values.max()]) if values.numel() else nan.repeat(3)
        stats = self.accelerator.gather(stats.unsqueeze(0))
        metrics = self._metrics["train"]
        for key, value in (("min", nanmin(stats[:, 0])), ("mean", stats[:, 1].nanmean()), ("max", nanmax(stats[:, 2]))):
            metrics[f"sampling/importance_sampling_ratio/{key}"][-1] = value.item()

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, torch.Tensor]]:
        audios = [row["audio"] for row in self._rows]
        batch = encode_prompts_once(self.processing_class, self.adapter, prompts, audios,  # a group's G rows: once
                                    ids=[row.get("id") for row in self._rows])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        prompt_ids = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
        self._audio_fields = {k: batch[k] for k in self.adapter.feature_keys if k in batch}
        return prompt_ids, None, dict(self._audio_fields)

    def _generate_single_turn(self, prompt_ids: Any, images: Any, multimodal_fields: Any,
                              num_generations: int, has_tool_images: bool = False) -> Any:
        if not self.use_vllm:
            with (prefill_once(self.accelerator.unwrap_model(self.model)) if self._prefix_check is not None
                  else contextlib.nullcontext()):  # one prefill per prompt
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                     has_tool_images)
        # vLLM colocate: TRL sends one request per row (token ids, n=1) to `llm.generate`; add each row's audio.
        # Tested with a recorded fake engine (tests/test_grpo_vllm.py); a real rollout needs a GPU (docs/gpu.md).
        vllm = self.vllm_generation
        llm = vllm.llm
        rate = audio_extractor(self.processing_class).sampling_rate
        audios = [row["audio"] for row in self._rows]
        if vllm.tensor_parallel_size > 1:
            # TRL gathers the TP group's prompts (rank order) into one engine call and slices the answers back:
            # gather the clips the same way, so that request i carries the audio of prompt i.
            gathered: list[Any] = [None] * vllm.tensor_parallel_size
            torch.distributed.all_gather_object(gathered, audios, group=vllm.tp_group)
            audios = [audio for part in gathered for audio in part]
        audio_token = self.processing_class.tokenizer.convert_tokens_to_ids(self.processing_class.audio_token)
        original = llm.generate

        def generate_with_audio(requests: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
            check_synced(vllm)  # a policy with an audio adapter: TRL's sync (just before) pushed it merged
            for request, audio in zip(requests, audios, strict=True):
                # vLLM expands one audio token per clip itself: our prompt has it expanded already (measured with
                # vLLM 0.33's processors: 53 audio tokens went in, 105 came out). The trainer keeps its own ids.
                request["prompt_token_ids"] = collapse_runs(request["prompt_token_ids"], audio_token)
                request["multi_modal_data"] = {"audio": (audio, rate)}
            return original(requests, *args, **kwargs)

        llm.generate = generate_with_audio
        try:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        finally:
            del llm.generate

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor,
                                           attention_mask: torch.Tensor, logits_to_keep: int,
                                           batch_size: int | None = None, compute_entropy: bool = False,
                                           compute_aux_loss: bool = False, **extra: Any) -> Any:
        # Inside TRL's scoring the audio is not passed: take it from the batch being scored.
        audio = {k: extra[k] for k in self.adapter.feature_keys if extra.get(k) is not None}
        if not audio and self._audio_fields is not None:
            audio = {k: v.to(input_ids.device) for k, v in self._audio_fields.items()}
        if not audio:
            raise RuntimeError("no audio features reached the log-prob pass: the model would score the audio "
                               "placeholders without the audio")
        for key, value in audio.items():
            if value.size(0) != input_ids.size(0):
                raise RuntimeError(f"{key} has {value.size(0)} rows for {input_ids.size(0)} sequences")
        batch_size = batch_size or input_ids.size(0)

        def score(start: int, shared: bool) -> Any:
            end = start + batch_size
            ids, mask = input_ids[start:end], attention_mask[start:end]
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100
            prefix = {"shared_prefix_length": ids.size(1) - logits_to_keep} if shared else {}
            with self.accelerator.autocast():
                return model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True,
                             **{k: v[start:end] for k, v in audio.items()}, **prefix)

        # Shared prefixes (grpo.shared_prefix), checked against the plain pass at first use on each model
        shared = self._prefix_check is not None and self._prefix_check.use_shared(
            id(self.accelerator.unwrap_model(model)), lambda s: score(0, s), logits_to_keep,
            attention_mask[:batch_size, -logits_to_keep:])
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            out = score(start, shared)
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out.entropy[:, -logits_to_keep:])
        return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None

    # -- mixed policy ------------------------------------------------------------------------------------
    def _generate(self, prompts: list[Any]) -> Any:
        with flop_phase(self, "rollouts"):
            out = list(super()._generate(prompts))
        n = len(prompts)
        meter = compute_meter(self)
        if meter is not None and self.model.training:  # rollout cost: every sampled token, replaced ones included
            meter.add_rollout(self, sum(len(ids) for ids in out[1]))
        self._off_mask = [False] * n
        if self.num_off_policy == 0 or not self.model.training or self.off_policy is None:
            return tuple(out)
        completion_ids, completions, logprobs = out[1], out[3], out[4]
        mask = off_policy_positions(n, self.accelerator.process_index, self.num_generations,
                                    self.num_off_policy)
        tok = self.processing_class.tokenizer
        too_long = 0
        for i in (i for i, off in enumerate(mask) if off):
            ids = tok(self.off_policy.text_for(self._rows[i]), add_special_tokens=False)["input_ids"]
            ids = [*ids, tok.eos_token_id]
            if len(ids) > self.max_completion_length:
                mask[i] = False
                too_long += 1
                continue
            completion_ids[i] = ids
            completions[i] = tok.decode(ids, skip_special_tokens=True)
            if logprobs is not None:  # vLLM's: this text was not sampled, so there is nothing to correct; NaN is
                logprobs[i] = [float("nan")] * len(ids)  # TRL's unscored token (see _keep_off_policy_rows_out_...)
        self._off_mask = mask
        self._metrics["train"]["offpolicy/too_long"].append(float(too_long))
        self._metrics["train"]["offpolicy/fraction"].append(sum(mask) / max(n, 1))
        return tuple(out)

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._all_rewards = rewards_per_func  # every process's rows, for advantages with a std floor
        if self.num_off_policy and self.model.training:
            local = torch.tensor(self._off_mask or [False] * len(prompts), device=rewards_per_func.device)
            off = self.accelerator.gather(local).bool()
            weights = self.reward_weights.to(rewards_per_func.device)
            total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
            for name, rows in (("on_policy", ~off), ("off_policy", off)):
                if rows.any():
                    self._metrics["train"][f"rewards/{name}/mean"].append(total[rows].mean().item())
        return rewards_per_func

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"].float()
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True,
            **{k: inputs[k] for k in self.adapter.feature_keys if k in inputs})
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        off = inputs.get("off_policy_mask", torch.zeros(logps.size(0), dtype=torch.bool, device=logps.device))
        token_loss, is_clipped = policy_token_loss(logps, old, inputs["advantages"], off, self.epsilon_low,
                                                   self.epsilon_high, self.shaping_gamma)
        if "importance_sampling_ratio" in inputs:  # TRL's vLLM sampling correction, on-policy rows only
            ratio = inputs["importance_sampling_ratio"]
            token_loss = torch.where(off.view(-1, 1), token_loss, token_loss * ratio)
        on_mask = mask * (~off).float().view(-1, 1)
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            kl = kl_penalty(ref, logps)
            token_loss = token_loss + self.beta * kl * (~off).float().view(-1, 1)
        loss = self._normalise(token_loss, mask)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["entropy"].append(self._global_mean(entropies, mask))
        self._metrics[mode]["clip_ratio/region_mean"].append(self._global_mean(is_clipped.float(), on_mask))
        if self.beta != 0.0:
            self._metrics[mode]["kl"].append(self._global_mean(kl, on_mask))
        if off.any():
            self._metrics[mode]["offpolicy/token_prob"].append(
                self._global_mean(torch.exp(logps.detach()), mask * off.float().view(-1, 1)))
        return loss

    def _normalise(self, token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # set by Trainer's loop; the configured value outside it (a loss computed directly)
        steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        train = self.model.training
        return normalised_loss(token_loss, mask, self.loss_type, steps if train else 1.0,
                               getattr(self, "_num_items", torch.tensor(0.0)), self.accelerator.num_processes,
                               self.args.steps_per_generation, self.max_completion_length, train)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor:
        self._num_items = inputs["num_items_in_batch"]
        meter = compute_meter(self)
        if meter is not None and self.model.training:
            # The sequences the loss pass attends to (prompt with audio positions + completion up to EOS), counted
            # per loss pass as SFT's are (TRL's num_input_tokens_seen counts per generation batch instead).
            meter.add_train(self, torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _global_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        totals = torch.stack([(values.detach() * mask).sum(), mask.sum()])
        totals = self.accelerator.reduce(totals, reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    # -- validation: BLEU (grpo.eval_decoding), the number the best checkpoint is chosen on ------------------
    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        val = self.validation
        hyps = generate(self.accelerator.unwrap_model(self.model), self.processing_class, list(val["prompt"]),
                        list(val["audio"]), self.validation_settings, self.args.per_device_eval_batch_size,
                        seed=self.validation_seed)  # same stream at every evaluation; the rollouts' is kept
        bleu = corpus_bleu(hyps, list(val["reference"]))
        metrics = {f"{metric_key_prefix}_bleu": bleu, f"{metric_key_prefix}_selection": bleu}
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        save_in_model_layout(self.model, lambda: super(AudioGRPOTrainer, self)._save(output_dir, state_dict))


# --- callbacks --------------------------------------------------------------------------------------------------------


class ValidationHistory(TrainerCallback):
    """Each validation BLEU into the history beside the checkpoints (it survives an interruption)."""

    def __init__(self, history: list[dict[str, float]], work_dir: Path, section: str) -> None:
        self.history, self.work_dir, self.section = history, work_dir, section

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        self.history.append({"step": state.global_step, "eval_bleu": float(metrics["eval_bleu"])})
        write_validation_history(self.work_dir, self.history)
        print(f"{self.section}: step {state.global_step}: validation BLEU {metrics['eval_bleu']:.2f}", flush=True)




# --- the stage --------------------------------------------------------------------------------------------------------


def section_config(cfg: Config, method: str) -> GrpoConfig:
    if method not in GRPO_METHODS:
        raise ValueError(f"method must be one of {GRPO_METHODS}, got {method!r}")
    return getattr(cfg, method)


def trainer_args(gcfg: GrpoConfig, seed: int, work_dir: Path, device: torch.device) -> Any:
    """TRL's GRPOConfig built from our section (with the knobs every method shares, runner.trainer_kwargs)."""
    return GRPOConfig(
        **trainer_kwargs(gcfg, work_dir, device, seed),
        per_device_train_batch_size=gcfg.prompts_per_step * gcfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=gcfg.num_generations,
        max_completion_length=gcfg.max_completion_length,
        temperature=gcfg.temperature,
        top_p=gcfg.top_p,
        beta=gcfg.beta,
        loss_type=gcfg.loss_type,
        epsilon=gcfg.epsilon,
        epsilon_high=gcfg.epsilon_high if gcfg.epsilon_high is not None else gcfg.epsilon,
        scale_rewards=gcfg.scale_rewards,
        use_vllm=gcfg.use_vllm,
        vllm_mode=gcfg.vllm_mode,
        vllm_gpu_memory_utilization=gcfg.vllm_gpu_memory_utilization,
        deepspeed=gcfg.deepspeed,
        log_completions=False,
    )


def build_trainer(cfg: Config, method: str, model: Any, processor: Any, train: Any, validation: Any,
                  work_dir: Path, root: Path, callbacks: list[Any]) -> Any:
    """The audio GRPO trainer for `method`, with rewards and off-policy source from its config section."""
    gcfg = section_config(cfg, method)
    reward = weighted_reward(gcfg.reward_weights, gcfg.reward_options)
    funcs, weights = reward.trl_reward_funcs()
    args = trainer_args(gcfg, cfg.seed, work_dir, next(model.parameters()).device)
    args.reward_weights = weights
    off_policy = OffPolicySource.from_config(gcfg, root) if gcfg.num_off_policy else None
    return AudioGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train, eval_dataset=validation,
                         processing_class=processor, callbacks=callbacks, adapter=adapter_for(model),
                         off_policy=off_policy, num_off_policy=gcfg.num_off_policy,
                         shaping_gamma=gcfg.policy_shaping_gamma, advantage_std_floor=gcfg.advantage_std_floor,
                         validation=validation,
                         validation_settings=validation_settings(cfg, gcfg.eval_decoding, gcfg.max_new_tokens),
                         validation_seed=cfg.seed, shared_prefix=gcfg.shared_prefix)


def run_grpo(cfg: Config, method: str, task: str, paths: RunPaths, callbacks: list[Any] | None = None
             ) -> TrainResult:
    """Train the method's start model (grpo.init) with (mixed-policy) GRPO on the task's train split; save the
    best-on-validation model to paths.model(method, task)."""
    gcfg = section_config(cfg, method)
    work_dir = paths.work(method, task)
    curve: list[dict[str, float]] = []

    def build(inputs: TrainerInputs) -> AudioGRPOTrainer:
        extra = [ValidationHistory(inputs.history, work_dir, method), NonFiniteGuard(method),
                 CurveMetrics(inputs.run, method, curve)]
        # the caller's callbacks first: a test's fault injection runs before our guard looks
        return build_trainer(cfg, method, inputs.model, inputs.processor, inputs.train, inputs.validation, work_dir,
                             paths.root, [*(callbacks or []), *extra])

    def write_curve() -> list[Path]:
        return [atomic_write_text(paths.curve(method, task), curve_csv(curve))]

    about = f" x {gcfg.num_generations} completions ({gcfg.num_off_policy} off-policy per group)"
    job = TrainingJob(cfg, method, task, gcfg, paths.start_model(cfg, method, task), paths.prepared,
                      paths.model(method, task), work_dir, paths.train_summary(method, task), about)
    return run_training(job, build, write_curve)
