"""The sft stage: supervised fine-tuning of the base SALLM on one task, the paper's baseline (steps/training/sft.py).

    python -m steps.sft --task sqa [--params params.yaml] [-S sft.max_steps=200 -S sft.lr=5e-4 ...]

Outputs: models/sft/<task> (the best checkpoint on validation BLEU; safetensors + processor + resolved params),
metrics/sft/<task>.train.json; checkpoints in models/.work/sft/<task> while it runs (an interrupted run resumes).
"""

from __future__ import annotations

from pathlib import Path

from steps.core.config import TASKS, config_from_args, stage_parser
from steps.training.sft import run_sft


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.params).resolve().parent
    models = root / cfg.paths.models
    run_sft(cfg, args.task, models / "base", root / cfg.paths.data / "prepared", models / "sft" / args.task,
            models / ".work" / "sft" / args.task, root / cfg.paths.metrics / "sft" / f"{args.task}.train.json")


if __name__ == "__main__":
    main()
