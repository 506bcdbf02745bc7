"""The pretrain stage: build the tiny preset and train it into a base that listens (steps/training/pretraining.py);
with a real checkpoint, models/base only points at it.

    python -m steps.pretrain [--params params.yaml] [-S pretrain.ctc.steps=300 ...]

Outputs: models/base, metrics/base/pretrain.json, samples.json, learning_curve.csv, resolved_params.yaml.
"""

from __future__ import annotations

from steps.core.config import config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.training.pretraining import run_pretrain


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    cfg = config_from_args(args)
    run_pretrain(cfg, RunPaths.for_params(cfg, args.params))


if __name__ == "__main__":
    main()
