"""The seed sweep's training: post-training and evaluation repeated with other seeds (the seed stages,
sweeps/dvc.yaml).

The pipeline's own run (top-level `seed`, metrics/<method>/<task>.json) is the sweep's first seed. For one seed of
`sweep.seeds` and one task, the top-level `seed` is replaced and sft, grpo, mpgrpo and sft_matched train again from
the workspace's base model and prepared data, then each model is evaluated on the test split (greedy, swapped
audio, `sweep.sampled_runs` sampled passes), into sweeps/runs/seed-<n>/<task>/{models,metrics}/ (one DVC stage per
seed and task). The seed changes the data order, the sampled rollouts and dropout; the base model is not pretrained
again (pretraining is a fifth of the pipeline), so the spread measures post-training, and the base row is the same
number in every seed.

The summary over the finished runs (sweeps/seeds.json, sweeps/seeds.md) is steps/reporting/seed_tables.py's, run by
its own stage. Training runs are tagged `sweep_seed` in MLflow and their models are not registered (the registry
holds the pipeline's models).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from steps.core.config import Config, HeldOutConditions
from steps.core.io import atomic_dir
from steps.core.paths import RunPaths
from steps.core.tracking import ENV_SWEEP_SEED
from steps.evaluation.evaluator import run_evaluate
from steps.training.grpo_trainer import run_grpo
from steps.training.sft_trainer import run_sft, run_sft_matched

# What the sweep repeats per seed: GRPO and MP-GRPO from SFT and their baselines (the pooled comparisons). GRPO from the
# base model (grpo_base) is the pipeline's single run only.
SWEEP_GRPO_METHODS = ("grpo", "mpgrpo")
SWEEP_METHODS = ("sft", "sft_matched", *SWEEP_GRPO_METHODS)


def seed_config(cfg: Config, seed: int) -> Config:
    """The pipeline's config with another seed and the sweep's evaluation settings: the clean test split only (the
    held-out noise and speaker conditions are the main pipeline's; per seed they would double the sweep's cost)."""
    clean_only = HeldOutConditions(spoken=(), snr_db=(), train_voices=False)
    return dataclasses.replace(cfg, seed=seed,
                               evaluate=dataclasses.replace(cfg.evaluate, split="test",
                                                            sampled_runs=cfg.sweep.sampled_runs, conditions=clean_only))


def run_seed(cfg: Config, seed: int, task: str, root: Path, out_dir: Path) -> None:
    """sft -> grpo, mpgrpo -> sft_matched (this seed's GRPO compute) -> evaluate for `task` with `seed`, into
    out_dir/{models,metrics} (atomically: an interrupted run leaves no folder that looks finished)."""
    scfg = seed_config(cfg, seed)
    os.environ[ENV_SWEEP_SEED] = str(seed)
    try:
        with atomic_dir(out_dir) as tmp:
            paths = RunPaths.of(cfg, root).under(tmp)
            print(f"seeds: seed {seed}, {task}: sft", flush=True)
            run_sft(scfg, task, paths)
            for method in SWEEP_GRPO_METHODS:
                print(f"seeds: seed {seed}, {task}: {method}", flush=True)
                run_grpo(scfg, method, task, paths)
            print(f"seeds: seed {seed}, {task}: sft_matched", flush=True)
            run_sft_matched(scfg, task, paths)
            for method in SWEEP_METHODS:
                run_evaluate(scfg, method, task, paths)
            shutil.rmtree(paths.models / ".work", ignore_errors=True)  # checkpoints: the best models are saved
    finally:
        os.environ.pop(ENV_SWEEP_SEED, None)
