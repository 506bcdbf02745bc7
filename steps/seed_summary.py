"""The seed summary stage: every seed's test BLEU per method and task, and GRPO and MP-GRPO against SFT pooled over
the seeds (steps/reporting/seed_tables.py), once every seed stage has run.

    dvc repro sweeps/dvc.yaml            # what users run
    python -m steps.seed_summary         # the same without DVC's caching

Reads metrics/ (the pipeline's run: the first seed) and sweeps/runs/seed-<n>/<task>/metrics; writes
sweeps/seeds.json and sweeps/seeds.md (`python -m steps.report --readme` copies the table into the README).
"""

from __future__ import annotations

from steps.core.config import config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.reporting.seed_tables import summarize_sweep


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    cfg = config_from_args(args)
    paths = RunPaths.for_params(cfg, args.params)
    summarize_sweep(cfg, paths.root, paths.sweeps)


if __name__ == "__main__":
    main()
