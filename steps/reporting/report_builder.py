"""The comparison report (the report stage): Base, SFT, SFT with matched compute, GRPO, MP-GRPO on SQA and AST, from
the evaluation files.

Writes (atomically) under reports/:
- report.md: the headline answer (GRPO or MP-GRPO against SFT continued for the same compute, generated from the
  data: steps/reporting/prose.py); per task the scores table in the paper's layout (greedy decoding, relative change
  vs Base), sampled BLEU mean +- std, two-sided paired bootstrap significance (BLEU, paired by example id, Holm within
  each table; on the sampled outputs and on the greedy ones; GRPO and MP-GRPO against SFT and against SFT with
  matched compute) with each comparison's validation delta beside it, the listening check (real vs swapped audio),
  training (where each method stopped, GRPO's reward trend, curve summaries), the compute-quality frontier and the
  training compute each method measured (FLOPs, tokens, seconds); then the settings that differ from the paper.
- report.json: every number in report.md (and the full-precision values behind them).
- plots/: metrics_<task>.png (sampled mean +- std bars, greedy dots), listening.png, curves_<task>.png (each
  method's validation curve on its own steps; GRPO's reward, KL, zero-variance fraction), frontier_<task>.png.
- examples.md: a few test examples per task, the same ids for every method, with the reference.
All of it is logged to the stage's MLflow run and to the pipeline's parent run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steps.core.config import Config
from steps.core.io import atomic_write_text, write_json
from steps.core.tracking import stage_run
from steps.reporting.analysis import build_report
from steps.reporting.evaluations import load_compute, load_curves, load_evaluations
from steps.reporting.plots import write_plots
from steps.reporting.prose import headline
from steps.reporting.render import render_examples, render_markdown
from steps.reporting.training import load_summaries


def run_report(cfg: Config, metrics_dir: Path, out_dir: Path, *, n_samples: int | None = None,
               seed: int | None = None, n_examples: int | None = None) -> dict[str, Any]:
    """Build and write reports/{report.md, report.json, examples.md, plots/}; log them to MLflow. Returns the data."""
    n_samples = cfg.report.bootstrap_samples if n_samples is None else n_samples
    seed = cfg.seed if seed is None else seed
    n_examples = cfg.report.examples if n_examples is None else n_examples
    root = metrics_dir.parent
    with stage_run(cfg, stage="report") as run:
        evaluations = load_evaluations(metrics_dir)
        inputs = [ev.metrics_path for evals in evaluations.values() for ev in evals.values()]
        inputs += [ev.predictions_path for evals in evaluations.values() for ev in evals.values() if ev.predictions]
        curves, compute, summaries = {}, {}, {}
        for task in evaluations:
            curves[task], read = load_curves(metrics_dir, task)
            compute[task], read_compute = load_compute(metrics_dir, task)
            summaries[task], read_summaries = load_summaries(metrics_dir, task)
            inputs += [p for p in dict.fromkeys([*read, *read_compute, *read_summaries]) if p not in inputs]
        report = build_report(evaluations, curves, cfg, n_samples=n_samples, seed=seed, n_examples=n_examples,
                              inputs=[_relative_path(p, root) for p in inputs], compute=compute, summaries=summaries)
        report["headline"] = headline(report)  # this run's tests; the README's uses the seed sweep's when there
        report["plots"] = [f"plots/{name}" for name in write_plots(report, curves, out_dir / "plots")]
        atomic_write_text(out_dir / "examples.md", render_examples(evaluations, report))
        write_json(out_dir / "report.json", report)
        atomic_write_text(out_dir / "report.md", render_markdown(report))
        run.log_metrics(headline_metrics(report))
        for name in ("report.md", "report.json", "examples.md", "plots"):
            run.log_artifact(out_dir / name, "report" if name != "plots" else "report/plots")
            run.log_artifact_to_parent(out_dir / name, "report" if name != "plots" else "report/plots")
        if run.active:
            from steps.core.registry import alias_reported  # imports mlflow: only with tracking on

            alias_reported(run, metrics_dir, {t: e["present"] for t, e in report["tasks"].items()})
    present = {t: e["present"] for t, e in report["tasks"].items()}
    print(f"report: {present} -> {out_dir / 'report.md'}", flush=True)
    return report


def _relative_path(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def headline_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers worth comparing across pipeline runs in MLflow: BLEU, swapped BLEU and p-values (raw two-sided
    and Holm-adjusted) per task."""
    out = {}
    for task, entry in report["tasks"].items():
        for row in entry.get("listening", []):
            for key in ("bleu", "bleu_swapped"):
                if row[key] is not None:
                    out[f"{task}/{row['method']}/{key}"] = row[key]
        for t in [*entry.get("significance", []), *(entry.get("significance_sampled") or [])]:
            if "p_value" in t:
                suffix = "" if t.get("decoding", "greedy") == "greedy" else "_sampled"
                out[f"{task}/{t['system']}_vs_{t['baseline']}/p_value{suffix}"] = t["p_value"]
                out[f"{task}/{t['system']}_vs_{t['baseline']}/p_holm{suffix}"] = t["p_holm"]
                out[f"{task}/{t['system']}_vs_{t['baseline']}/delta_bleu{suffix}"] = t["delta"]
    return out
