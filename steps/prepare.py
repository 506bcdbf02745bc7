"""The prepare stage: decode, resample and format one pool's examples into HF datasets (steps/data/preparation.py).

    python -m steps.prepare --task sqa [--params params.yaml] [-S prepare.workers=1]

Outputs: data/prepared/<task>/<split>/ (HF datasets with 16 kHz audio, prompt, reference) and
data/prepared/<task>/report.json (counts per split, every skipped example with its file and reason).
"""

from __future__ import annotations

import logging
from pathlib import Path

from steps.core.config import POOLS, config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.data.preparation import run_prepare


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--task", required=True, help=f"which prepare.tasks entry to prepare ({', '.join(POOLS)})")
    parser.add_argument("--out", default=None, help="output folder (default: <paths.data>/prepared/<task>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    paths = RunPaths.for_params(cfg, args.params)
    out = Path(args.out) if args.out else paths.prepared / args.task
    run_prepare(cfg, args.task, paths.root, out)


if __name__ == "__main__":
    main()
