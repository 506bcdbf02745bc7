"""The sft and sft_matched stages: supervised fine-tuning of the base SALLM on one task, the paper's baseline; and
the equal-compute control, SFT continued from models/sft/<task> for the compute GRPO measured (steps/training/sft.py).

    python -m steps.sft --task sqa [--method sft|sft_matched] [--params params.yaml] [-S sft.max_steps=200 ...]

Outputs: models/<method>/<task> (the best checkpoint on validation BLEU; safetensors + processor + resolved params),
metrics/<method>/<task>.train.json; checkpoints in models/.work/<method>/<task> while it runs (an interrupted run
resumes). sft_matched reads metrics/grpo/<task>.train.json and metrics/sft/<task>.train.json for its step count.
"""

from __future__ import annotations

from pathlib import Path

from steps.core.config import TASKS, config_from_args, stage_parser
from steps.training.sft import run_sft, run_sft_matched

METHODS = ("sft", "sft_matched")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--method", default="sft", choices=METHODS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.params).resolve().parent
    models, metrics, data = root / cfg.paths.models, root / cfg.paths.metrics, root / cfg.paths.data / "prepared"
    work = models / ".work" / args.method / args.task
    if args.method == "sft":
        run_sft(cfg, args.task, models / "base", data, models / "sft" / args.task, work,
                metrics / "sft" / f"{args.task}.train.json")
    else:
        run_sft_matched(cfg, args.task, models / "sft" / args.task, data, models / "sft_matched" / args.task, work,
                        metrics)


if __name__ == "__main__":
    main()
