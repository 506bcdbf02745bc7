"""The names every stage shares: splits, tasks, data pools, post-training methods, rewards."""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# The test texts spoken again by training speakers (synth.test_train_voices): the clean reference of the test's
# held-out conditions (evaluate.conditions). Prepared like a split; sources that lack it simply have none.
TRAIN_VOICES_SPLIT = "test_train_voices"
DATA_SPLITS: tuple[str, ...] = (*SPLITS, TRAIN_VOICES_SPLIT)
# The test texts spoken again under a condition training never had (synth.conditions): split `conditions/<name>`,
# one folder for every condition so that a stage depends on all of them at once (dvc.yaml).
CONDITIONS_DIR = "conditions"


def condition_split(name: str) -> str:
    """The data split holding the spoken condition `name` (data/synth/<pool>/conditions/<name>.jsonl, prepared into
    data/prepared/<pool>/conditions/<name>/)."""
    return f"{CONDITIONS_DIR}/{name}"


TASKS: tuple[str, ...] = ("sqa", "ast")  # what SFT, GRPO and the evaluation post-train and score
POOLS: tuple[str, ...] = (*TASKS, "pretrain")  # the data pools synth and prepare make (pretrain: ASR + AST)
# The post-training methods, in the order the report lists them; `base` (the pretrain stage's model) is evaluated
# beside them. sft_matched is trained after GRPO (it matches GRPO's measured compute).
# grpo_base is GRPO from the base model (the paper's start), beside GRPO from SFT.
SFT_METHODS: tuple[str, ...] = ("sft", "sft_matched")
GRPO_METHODS: tuple[str, ...] = ("grpo", "mpgrpo", "grpo_base")
METHODS: tuple[str, ...] = ("sft", "sft_matched", *GRPO_METHODS)
MODELS: tuple[str, ...] = ("base", *METHODS)  # every model the pipeline evaluates
# Methods the pipeline trains on some tasks only (dvc.yaml's foreach lists; tests/test_dvc_deps.py checks they agree).
ONLY_ON: dict[str, tuple[str, ...]] = {"grpo_base": ("ast",)}


def trained_on(method: str, task: str) -> bool:
    """Whether the pipeline trains and evaluates `method` on `task`."""
    return task in ONLY_ON.get(method, TASKS)
RESOLVED_CONFIG_NAME = "resolved_params.yaml"
# The rewards steps.training.rewards registers, by name: listed here so that validating params.yaml needs no metric
# library (the synth stage must not depend on the metrics); a test keeps the two lists equal.
REWARD_NAMES: tuple[str, ...] = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "meteor", "exact_match")
