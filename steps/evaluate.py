"""The evaluate stage: one model on one task's test split, with the paper's decoding and metrics and the listening
check (steps/evaluation/evaluator.py).

    python -m steps.evaluate --model sft --task sqa [--params params.yaml] [-S evaluate.sampled_runs=5 ...]
    python -m steps.evaluate --model all --task ast     # every model that exists (pipeline models, extras)

Outputs: metrics/<model>/<task>.json and metrics/<model>/<task>.predictions.jsonl.
"""

from __future__ import annotations

from steps.core.config import TASKS, config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.evaluation.evaluator import available_models, run_evaluate


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base, sft, grpo, mpgrpo, sft_matched, an "
                                                       "evaluate.extra_models name, or 'all' (every one that exists)")
    parser.add_argument("--task", required=True, choices=TASKS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    paths = RunPaths.for_params(cfg, args.params)
    names = available_models(cfg, paths, args.task) if args.model == "all" else [args.model]
    if not names:
        raise SystemExit(f"no model to evaluate for {args.task}: run the pretrain/sft stages first")
    for name in names:
        run_evaluate(cfg, name, args.task, paths)


if __name__ == "__main__":
    main()
