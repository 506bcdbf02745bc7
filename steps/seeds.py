"""The seed sweep: post-training and evaluation repeated with other seeds, outside the default pipeline.

    dvc repro sweeps/dvc.yaml            # what users run: the pipeline first if needed, then this
    python -m steps.seeds                # the same without DVC's caching

The pipeline's own run (top-level `seed`, metrics/<method>/<task>.json) is the sweep's first seed. For every seed in
`sweep.seeds`, the top-level `seed` is replaced and sft, grpo and mpgrpo train again for every task from the
workspace's base model and prepared data, then each model is evaluated on the test split (greedy, swapped audio,
`sweep.sampled_runs` sampled passes), into sweeps/runs/seed-<n>/{models,metrics}/. The seed changes the data order,
the sampled rollouts and dropout; the base model is not pretrained again (pretraining is a third of the pipeline),
so the spread measures post-training, and the base row is the same number in every seed.

Writes sweeps/seeds.json ({"seeds", "runs": {seed: {method: {task: BLEU}}}, "swapped": same with swapped-audio
BLEU}) and sweeps/seeds.md (mean +- std per method and whether base < SFT < GRPO held in every seed);
`python -m steps.report --readme` copies the table into the README. Training runs are tagged `sweep_seed` in
MLflow and their models are not registered (the registry holds the pipeline's models).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steps.config import Config, config_from_args, stage_parser
from steps.io import atomic_dir, atomic_write_text, write_json
from steps.sft import TASKS
from steps.tracking import ENV_SWEEP_SEED

TRAINED = ("sft", "grpo", "mpgrpo")
METHODS = ("base", *TRAINED)


# seeds.json's tables and the metrics-file key each is read from: greedy BLEU with the real and the swapped audio,
# and the paper's sampled decoding (mean over the evaluation's sampled runs; one sampled run on swapped audio).
SCORE_TABLES = {"runs": "bleu", "swapped": "bleu_swapped", "sampled": "bleu_sampled_mean",
                "sampled_swapped": "bleu_swapped_sampled"}


def scores_of(metrics_dir: Path, method: str, task: str) -> dict[str, float | None]:
    """Each SCORE_TABLES score (None when not computed) from an evaluate stage's metrics/<method>/<task>.json."""
    path = metrics_dir / method / f"{task}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: evaluate {method} on {task} first (`dvc repro`)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("bleu") is None:
        raise ValueError(f"{path} has no greedy BLEU (evaluate.greedy: false?); the sweep compares greedy BLEU too")
    return {table: None if data.get(key) is None else float(data[key]) for table, key in SCORE_TABLES.items()}


def seed_config(cfg: Config, seed: int) -> Config:
    """The pipeline's config with another seed and the sweep's evaluation settings."""
    return dataclasses.replace(cfg, seed=seed,
                               evaluate=dataclasses.replace(cfg.evaluate, split="test",
                                                            sampled_runs=cfg.sweep.sampled_runs))


def run_seed(cfg: Config, seed: int, root: Path, out_dir: Path, tasks: tuple[str, ...] = TASKS) -> None:
    """sft -> grpo, mpgrpo -> evaluate for every task with `seed`, into out_dir/{models,metrics} (atomically)."""
    from steps.evaluate import run_evaluate
    from steps.grpo import run_grpo
    from steps.sft import run_sft

    scfg = seed_config(cfg, seed)
    data_dir = root / cfg.paths.data / "prepared"
    base_dir = root / cfg.paths.models / "base"
    os.environ[ENV_SWEEP_SEED] = str(seed)
    try:
        with atomic_dir(out_dir) as tmp:
            models, metrics, work = tmp / "models", tmp / "metrics", tmp / ".work"
            for task in tasks:
                print(f"seeds: seed {seed}, {task}: sft", flush=True)
                run_sft(scfg, task, base_dir, data_dir, models / "sft" / task, work / "sft" / task,
                        metrics / "sft" / f"{task}.train.json")
                for method in ("grpo", "mpgrpo"):
                    print(f"seeds: seed {seed}, {task}: {method}", flush=True)
                    init = base_dir if getattr(scfg, method).init == "base" else models / "sft" / task
                    run_grpo(scfg, method, task, init, data_dir, models / method / task, work / method / task,
                             metrics / method, root)
                for method in TRAINED:
                    run_evaluate(scfg, method, task, models / method / task, data_dir, metrics / method)
            shutil.rmtree(work, ignore_errors=True)  # checkpoints: the best model is already in models/
    finally:
        os.environ.pop(ENV_SWEEP_SEED, None)


def collect(cfg: Config, root: Path, runs_dir: Path, tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    """seeds.json's content: the pipeline's seed from metrics/, every extra seed from runs_dir/seed-<n>/metrics."""
    pipeline_metrics = root / cfg.paths.metrics
    seeds = [cfg.seed, *cfg.sweep.seeds]
    tables: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {t: {} for t in SCORE_TABLES}
    for seed in seeds:
        metrics = pipeline_metrics if seed == cfg.seed else runs_dir / f"seed-{seed}" / "metrics"
        for method in METHODS:
            # the base model is shared by every seed: its scores are the pipeline's
            source = pipeline_metrics if method == "base" else metrics
            for task in tasks:
                for table, value in scores_of(source, method, task).items():
                    tables[table].setdefault(str(seed), {}).setdefault(method, {})[task] = value
    note = (f"seed {cfg.seed} is the pipeline's run (dvc repro; {cfg.evaluate.sampled_runs} sampled runs); the other "
            f"seeds' sampled BLEU is over {cfg.sweep.sampled_runs} run(s); base is pretrained once")
    return {"seeds": [str(s) for s in seeds], **tables, "note": note}


def write_summary(data: Mapping[str, Any], out_dir: Path) -> None:
    from steps.report import seeds_markdown

    write_json(out_dir / "seeds.json", data)
    atomic_write_text(out_dir / "seeds.md", "# Seed sweep\n\n" + "\n".join(seeds_markdown(data)))


def run_sweep(cfg: Config, root: Path, out_dir: Path, only: list[int] | None = None,
              tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    for seed in only or cfg.sweep.seeds:
        run_seed(cfg, seed, root, out_dir / "runs" / f"seed-{seed}", tasks)
    data = collect(cfg, root, out_dir / "runs", tasks)
    write_summary(data, out_dir)
    print(f"seeds: {data['seeds']} -> {out_dir / 'seeds.md'}", flush=True)
    return data


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="run only this seed (repeatable; it must be listed in sweep.seeds); default: all")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    unknown = sorted(set(args.seed or []) - set(cfg.sweep.seeds))
    if unknown:
        raise SystemExit(f"--seed {unknown}: not in sweep.seeds {list(cfg.sweep.seeds)}; add them to params.yaml")
    root = Path(args.params).resolve().parent
    run_sweep(cfg, root, root / "sweeps", args.seed)


if __name__ == "__main__":
    main()
