"""The seeds stage: post-training and evaluation repeated with other seeds, outside the default pipeline
(steps/training/seed_sweep.py).

    dvc repro sweeps/dvc.yaml            # what users run: the pipeline first if needed, then this
    python -m steps.seeds [--seed 1]     # the same without DVC's caching

Outputs: sweeps/runs/seed-<n>/{models,metrics}, sweeps/seeds.json, sweeps/seeds.md.
"""

from __future__ import annotations

from steps.core.config import config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.training.seed_sweep import run_sweep


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="run only this seed (repeatable; it must be listed in sweep.seeds); default: all")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    unknown = sorted(set(args.seed or []) - set(cfg.sweep.seeds))
    if unknown:
        raise SystemExit(f"--seed {unknown}: not in sweep.seeds {list(cfg.sweep.seeds)}; add them to params.yaml")
    paths = RunPaths.for_params(cfg, args.params)
    run_sweep(cfg, paths.root, paths.sweeps, args.seed)


if __name__ == "__main__":
    main()
