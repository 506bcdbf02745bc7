"""The grpo and mpgrpo stages: GRPO with a BLEU reward, and mixed-policy GRPO (the reference in each group), on one
task (steps/training/grpo.py).

    python -m steps.grpo --task sqa [--method grpo|mpgrpo] [--params params.yaml] [-S grpo.max_steps=200 ...]

Outputs: models/<method>/<task> (the best checkpoint on validation BLEU), metrics/<method>/<task>.train.json and
metrics/<method>/<task>.curve.csv; checkpoints in models/.work/<method>/<task> while it runs.
"""

from __future__ import annotations

from pathlib import Path

from steps.core.config import TASKS, config_from_args, stage_parser
from steps.training.grpo import METHODS, init_dir_for, run_grpo


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--method", default="grpo", choices=METHODS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.params).resolve().parent
    models = root / cfg.paths.models
    run_grpo(cfg, args.method, args.task, init_dir_for(cfg, args.method, args.task, models),
             root / cfg.paths.data / "prepared", models / args.method / args.task,
             models / ".work" / args.method / args.task, root / cfg.paths.metrics / args.method, root)


if __name__ == "__main__":
    main()
