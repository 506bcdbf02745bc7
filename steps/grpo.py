"""The grpo and mpgrpo stages: GRPO with a BLEU reward, and mixed-policy GRPO (the reference in each group), on one
task (steps/training/grpo_trainer.py).

    python -m steps.grpo --task sqa [--method grpo|mpgrpo] [--params params.yaml] [-S grpo.max_steps=200 ...]

Outputs: models/<method>/<task> (the best checkpoint on validation BLEU), metrics/<method>/<task>.train.json and
metrics/<method>/<task>.curve.csv; checkpoints in models/.work/<method>/<task> while it runs.
"""

from __future__ import annotations

from steps.core.config import GRPO_METHODS, TASKS, config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.training.grpo_trainer import run_grpo


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--method", default="grpo", choices=GRPO_METHODS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    run_grpo(cfg, args.method, args.task, RunPaths.for_params(cfg, args.params))


if __name__ == "__main__":
    main()
