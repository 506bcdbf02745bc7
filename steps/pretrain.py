"""The pretrain stage: build the tiny preset and train it into a base that listens (steps/training/pretraining.py);
with a real checkpoint, models/base only points at it.

    python -m steps.pretrain [--params params.yaml] [-S pretrain.ctc.steps=300 ...]

Outputs: models/base, metrics/base/pretrain.json, samples.json, learning_curve.csv, resolved_params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from steps.core.config import config_from_args, stage_parser
from steps.training.pretraining import run_pretrain


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.params).resolve().parent
    paths = cfg.paths
    run_pretrain(cfg, root, root / paths.data / "prepared", root / paths.models / "base", root / paths.metrics / "base")


if __name__ == "__main__":
    main()
