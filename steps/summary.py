"""The summary stage: test BLEU per task and method and the headline deltas, in one small metrics file.

    python -m steps.summary [--params params.yaml]

Reads reports/report.json (the report stage's numbers) and writes metrics/summary.json:

    {"sqa": {"bleu": {"base": 9.1, "sft": 41.0, "sft_matched": 42.3, "grpo": 40.2, "mpgrpo": 41.5},
             "delta": {"grpo_vs_sft": -0.8, "mpgrpo_vs_sft": 0.5, "grpo_vs_sft_matched": -2.1}},
     "ast": {...}}

Greedy decoding (the report's main table); where the evaluation ran no greedy pass, the sampled mean as
`bleu_sampled` / `delta_sampled`. dvc.yaml defines this stage first because DVC orders metrics files by the stage that
declares them: `dvc exp show` and `dvc metrics diff` then lead with these columns (sqa.bleu.sft, sqa.delta.grpo_vs_sft,
...) instead of pretraining's minutes. `dvc metrics diff metrics/summary.json` compares only them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steps.core.config import config_from_args, stage_parser
from steps.core.io import write_json

SUMMARY_NAME = "summary.json"
# (system, baseline): the comparisons the README's headline is about.
HEADLINE = (("grpo", "sft"), ("mpgrpo", "sft"), ("grpo", "sft_matched"), ("mpgrpo", "sft_matched"))
DIGITS = 2


def _bleu_by_method(scores: Mapping[str, Any], decoding: str) -> dict[str, float]:
    if decoding == "greedy":
        table = scores.get("greedy") or {}
        values = {m: row.get("bleu") for m, row in table.items()}
    else:
        table = scores.get("sampled") or {}
        values = {m: (row.get("mean") or {}).get("bleu") for m, row in table.items()}
    return {m: round(float(v), DIGITS) for m, v in values.items() if isinstance(v, int | float)}


def build_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Per task: BLEU of every method present and the headline deltas (system - baseline) whose two ends exist."""
    out: dict[str, Any] = {}
    for task, entry in report.get("tasks", {}).items():
        scores = entry.get("scores") or {}
        bleu, suffix = _bleu_by_method(scores, "greedy"), ""
        if not bleu:
            bleu, suffix = _bleu_by_method(scores, "sampled"), "_sampled"
        if not bleu:
            continue
        deltas = {f"{s}_vs_{b}": round(bleu[s] - bleu[b], DIGITS) for s, b in HEADLINE if s in bleu and b in bleu}
        out[task] = {f"bleu{suffix}": bleu, **({f"delta{suffix}": deltas} if deltas else {})}
    return out


def write_summary(report_path: Path, out_path: Path) -> dict[str, Any]:
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} does not exist: run the report stage first (`dvc repro report`)")
    summary = build_summary(json.loads(report_path.read_text(encoding="utf-8")))
    write_json(out_path, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.params).resolve().parent
    out = root / cfg.paths.metrics / SUMMARY_NAME
    summary = write_summary(root / cfg.paths.reports / "report.json", out)
    for task, entry in summary.items():
        print(f"summary[{task}]: " + ", ".join(f"{k} {v}" for part in entry.values() for k, v in part.items()),
              flush=True)
    print(f"summary: -> {out}", flush=True)


if __name__ == "__main__":
    main()
