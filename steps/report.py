"""The report stage: the paper's comparison (Base, SFT, GRPO, MP-GRPO on SQA and AST) from the evaluation files
(steps/reporting/).

    python -m steps.report [--params params.yaml] [-S report.bootstrap_samples=2000]
    python -m steps.report --readme     # copy the compact table from reports/report.json into README.md

Outputs: reports/report.md, report.json, examples.md and plots/. `--readme` replaces the README's marked blocks
(`<!-- report:begin -->` ... `<!-- report:end -->`, and the seed table when sweeps/seeds.json exists).
"""

from __future__ import annotations

from pathlib import Path

from steps.core.config import config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.reporting.render import MARK_BEGIN, MARK_END, update_readme
from steps.reporting.report_builder import run_report


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true",
                        help="only copy the compact table from reports/report.json into README.md between "
                             f"{MARK_BEGIN} and {MARK_END}")
    parser.add_argument("--readme-path", default=None, help="the README to update (default: README.md beside params)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    paths = RunPaths.for_params(cfg, args.params)
    if args.readme:
        readme = Path(args.readme_path) if args.readme_path else paths.root / "README.md"
        try:
            update_readme(readme, paths.reports / "report.json", paths.sweeps / "seeds.json")
        except (ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"report --readme: {exc}") from exc
        print(f"report: results table updated in {readme}", flush=True)
        return
    run_report(cfg, paths.metrics, paths.reports)


if __name__ == "__main__":
    main()
