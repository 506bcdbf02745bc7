"""Config sections of post-training: `sft`, `sft_matched`, `grpo` and `mpgrpo`, on one shared base."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from steps.core.config.loader import above, at_least, checked, did_you_mean, within
from steps.core.config.model import THREADS_NOTE
from steps.core.config.names import REWARD_NAMES

Scheduler = Literal["constant", "constant_with_warmup", "cosine", "cosine_with_min_lr", "linear"]


@dataclasses.dataclass(frozen=True)
class PostTrainingConfig:
    """What every post-training method shares (steps/training/runner.py): the optimiser; validation BLEU of the start
    model (step 0) and every `eval_every` steps on the first `eval_examples` validation examples (null: all;
    `eval_decoding`: `greedy`, or `sampled` with the evaluation's temperature/top-p); training stops at its plateau,
    once `patience` evaluations in a row have not beaten the best so far by more than `min_delta` BLEU, or at
    `max_steps` (a cap; the summary says which); the best evaluation is kept, the start model included
    (`start_candidate`). Checkpoints in `<paths.models>/.work/<method>/<task>` (resumed after an interruption, deleted
    after success unless `keep_checkpoints`)."""

    lr: float = above(0, 5e-4)
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: float = within(0, 1, 0.1, "[)")
    max_steps: int = 2500
    weight_decay: float = 0.01
    max_grad_norm: float = above(0, 1.0)
    train_limit: int | None = at_least(1, None, " (a number of examples) or null (all)")
    eval_every: int = at_least(1, 100)
    eval_examples: int | None = at_least(1, None, " (the first N validation examples) or null (all)")
    eval_decoding: Literal["sampled", "greedy"] = "greedy"
    eval_batch_size: int = at_least(1, 32)
    max_new_tokens: int = at_least(1, 48)
    logging_steps: int = at_least(1, 1)
    save_total_limit: int = at_least(1, 2)
    keep_checkpoints: bool = False
    threads: int = at_least(0, 0, THREADS_NOTE)
    patience: int | None = at_least(1, 3, " evaluations, or null (train to max_steps)")
    min_delta: float = at_least(0, 1.0, " BLEU")
    start_candidate: bool = True  # evaluate the start model (step 0); it is kept when no checkpoint beats it


@dataclasses.dataclass(frozen=True)
class SftConfig(PostTrainingConfig):
    """The sft stage (steps/training/sft_trainer.py): TRL's SFTTrainer on one task's train split, from models/base.
    `max_steps` > 0 overrides `epochs`."""

    epochs: float = 1.0
    batch_size: int = at_least(1, 16)
    grad_accumulation: int = at_least(1, 1)

    def problems(self) -> list[str]:
        if self.max_steps <= 0 and self.epochs <= 0:
            return [f"epochs/max_steps: set epochs > 0 or max_steps > 0, got {self.epochs}/{self.max_steps}"]
        return []


@dataclasses.dataclass(frozen=True)
class SftMatchedConfig(SftConfig):
    """The sft_matched stage: SFT continued from models/sft/<task> for the compute GRPO measured (the equal-compute
    control, steps/training/sft_trainer.py). The section holds only what differs from `sft`. Not read, because the
    stage takes them from GRPO: `max_steps` (GRPO's measured `compute` figure over SFT's per step: `flops`, the
    estimated FLOPs of every pass, rollouts and reference included (steps/training/flops.py); `train_tokens`, the
    loss passes' tokens; or `train_seconds`), `eval_every` (as many evaluations as GRPO had), `lr_scheduler`,
    `warmup_ratio`, `patience`, `min_delta`, `start_candidate` (GRPO's). `lr` is its own."""

    lr: float = above(0, 2e-5)
    compute: Literal["flops", "train_tokens", "train_seconds"] = "flops"


# The keys sft_matched sets itself when its section leaves them out (every other key comes from `sft`).
SFT_MATCHED_OWN_KEYS: tuple[str, ...] = ("lr", "compute")


@dataclasses.dataclass(frozen=True)
class GrpoConfig(PostTrainingConfig):
    """The grpo and mpgrpo stages (steps/training/grpo_trainer.py): TRL's GRPOTrainer with audio.

    `init`: start from `base` (the paper) or `sft` (models/sft/<task>). Each optimiser step samples `num_generations`
    completions for each of `prompts_per_step` prompts (per process). `num_off_policy` > 0 is mixed-policy GRPO: that
    many completions of each group are an off-policy text (`off_policy_source`: `reference` or a JSONL of recorded
    outputs keyed by id, field `off_policy_field`; `policy_shaping_gamma`: LUFFY's shaping). `advantage_std_floor`:
    advantages are (r - mean) / max(std, floor) over the group. `shared_prefix`: each group's prompt and audio go
    through the LLM once per log-prob pass and rollout prefill (steps/modeling/shared_prefix.py; the same results up to
    rounding, checked against the plain pass at first use). The `mpgrpo` and `grpo_base` (GRPO from the base model)
    sections hold only what differs from `grpo`.
    """

    lr: float = above(0, 2e-5)
    lr_scheduler: Scheduler = "constant_with_warmup"
    warmup_ratio: float = within(0, 1, 0.0, "[)")
    max_steps: int = at_least(1, 120)
    weight_decay: float = 0.0
    eval_every: int = at_least(1, 10)
    init: Literal["base", "sft"] = "sft"
    prompts_per_step: int = at_least(1, 16)
    num_generations: int = at_least(2, 8, " completions per prompt (GRPO compares them)")
    beta: float = at_least(0, 0.02, " (0 = no KL term, no reference model)")
    temperature: float = above(0, 1.0)
    top_p: float = within(0, 1, 1.0, "(]")
    max_completion_length: int = at_least(1, 48)
    loss_type: Literal["dapo", "grpo", "bnpo", "dr_grpo"] = "dapo"
    epsilon: float = above(0, 0.2)
    epsilon_high: float | None = above(0, None, " or null (= epsilon)")
    scale_rewards: Literal["group", "batch", "none"] = "group"
    advantage_std_floor: float | None = 0.1
    reward_weights: dict[str, float] = dataclasses.field(default_factory=lambda: {"bleu": 1.0})
    reward_options: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=lambda: {"bleu": {"smooth_method": "none"}})
    num_off_policy: int = 0
    off_policy_source: str = checked("reference", lambda v: bool(v.strip()),
                                     "`reference` or the path of a JSONL file of recorded outputs")
    off_policy_field: str = "greedy"
    policy_shaping_gamma: float | None = above(0, None, " (LUFFY uses 0.1) or null")
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = within(0, 1, 0.3, "(]")
    deepspeed: str | None = None
    shared_prefix: bool = True

    def problems(self) -> list[str]:
        out = []
        if self.advantage_std_floor is not None and (self.advantage_std_floor <= 0 or self.scale_rewards != "group"):
            out.append(f"advantage_std_floor: needs scale_rewards: group and a value > 0 (e.g. 0.333), got "
                       f"{self.advantage_std_floor} with scale_rewards {self.scale_rewards!r}; null turns it off")
        if not 0 <= self.num_off_policy < max(self.num_generations, 1):
            out.append(f"num_off_policy: must be within [0, num_generations) = [0, {self.num_generations}), "
                       f"got {self.num_off_policy}")
        return out + self.reward_problems()

    def reward_problems(self) -> list[str]:
        out = []
        known = sorted(REWARD_NAMES)
        for name, weight in self.reward_weights.items():
            if name not in REWARD_NAMES:
                out.append(f"reward_weights.{name}: unknown reward; known: {known}{did_you_mean(name, known)}")
            elif weight < 0:
                out.append(f"reward_weights.{name}: must be >= 0, got {weight}")
        if self.reward_weights and not any(w > 0 for w in self.reward_weights.values()):
            out.append("reward_weights: at least one weight must be > 0")
        # Options of a known reward that has no weight are unused (the default's BLEU options stay valid when an
        # ablation weights other rewards); an unknown name is a typo.
        out += [f"reward_options.{name}: unknown reward; known: {known}{did_you_mean(name, known)}"
                for name in self.reward_options if name not in REWARD_NAMES]
        return out
