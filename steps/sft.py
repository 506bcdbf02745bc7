"""The sft and sft_matched stages: supervised fine-tuning of the base SALLM on one task, the paper's baseline; and
the equal-compute control, SFT continued from models/sft/<task> for the compute GRPO measured
(steps/training/sft_trainer.py).

    python -m steps.sft --task sqa [--method sft|sft_matched] [--params params.yaml] [-S sft.max_steps=200 ...]

Outputs: models/<method>/<task> (the best checkpoint on validation BLEU; safetensors + processor + resolved params),
metrics/<method>/<task>.train.json; checkpoints in models/.work/<method>/<task> while it runs (an interrupted run
resumes). sft_matched reads metrics/grpo/<task>.train.json and metrics/sft/<task>.train.json for its step count.
"""

from __future__ import annotations

from steps.core.config import SFT_METHODS, TASKS, config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.training.sft_trainer import run_sft, run_sft_matched


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--method", default="sft", choices=SFT_METHODS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    paths = RunPaths.for_params(cfg, args.params)
    if args.method == "sft":
        run_sft(cfg, args.task, paths)
    else:
        run_sft_matched(cfg, args.task, paths)


if __name__ == "__main__":
    main()
