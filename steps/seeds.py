"""The seed stages: post-training and evaluation repeated with other seeds, one seed and task at a time, outside the
default pipeline (steps/training/seed_sweep.py).

    dvc repro sweeps/dvc.yaml                      # what users run: the pipeline first if needed, these, the summary
    python -m steps.seeds [--seed 1] [--task sqa]  # the same runs without DVC's caching (default: every seed, task)

Outputs: sweeps/runs/seed-<n>/<task>/{models,metrics}; `python -m steps.seed_summary` then writes the summary.
"""

from __future__ import annotations

from steps.core.config import TASKS, config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.core.seed_runs import seed_run_folder
from steps.training.seed_sweep import run_seed


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="run only this seed (repeatable; it must be listed in sweep.seeds); default: all")
    parser.add_argument("--task", action="append", choices=TASKS, default=None,
                        help="run only this task (repeatable); default: all")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    unknown = sorted(set(args.seed or []) - set(cfg.sweep.seeds))
    if unknown:
        raise SystemExit(f"--seed {unknown}: not in sweep.seeds {list(cfg.sweep.seeds)}; add them to params.yaml")
    paths = RunPaths.for_params(cfg, args.params)
    for seed in args.seed or cfg.sweep.seeds:
        for task in args.task or TASKS:
            run_seed(cfg, seed, task, paths.root, seed_run_folder(paths.sweeps / "runs", seed, task))


if __name__ == "__main__":
    main()
