"""The report's figures: metric bars per task, the listening check, training curves and the compute-quality
frontier (PNG, reports/plots/; the last two drawn by steps/reporting/training_plots.py)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steps.core.io import atomic_dir
from steps.reporting.analysis import TABLE_METRICS
from steps.reporting.evaluations import LABELS
from steps.reporting.training_plots import COLORS, curve_figure, frontier_figure


def write_plots(report: Mapping[str, Any], curves: Mapping[str, Mapping[str, Mapping[str, Sequence[Any]]]],
                folder: Path) -> list[str]:
    """All PNGs into `folder` (replaced as a whole); returns their names."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; before pyplot is imported
    import matplotlib.pyplot as plt

    names: list[str] = []
    with atomic_dir(folder) as tmp:
        for task, entry in report["tasks"].items():
            if entry["present"]:
                names.append(_save(plt, _metric_bars(plt, task, entry), tmp / f"metrics_{task}.png"))
        if any(e["present"] for e in report["tasks"].values()):
            names.append(_save(plt, _listening_figure(plt, report), tmp / "listening.png"))
        for task, entry in report["tasks"].items():
            training = entry.get("training") or {}
            fig = curve_figure(plt, task, training, curves.get(task, {}), report.get("validation_decoding", ""))
            if fig is not None:
                names.append(_save(plt, fig, tmp / f"curves_{task}.png"))
        for task, entry in report["tasks"].items():
            fig = frontier_figure(plt, task, (entry.get("training") or {}).get("frontier") or {})
            if fig is not None:
                names.append(_save(plt, fig, tmp / f"frontier_{task}.png"))
    return names


def _save(plt: Any, fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)
    return path.name


def _metric_bars(plt: Any, task: str, entry: Mapping[str, Any]) -> Any:
    scores, present = entry["scores"], entry["present"]
    metrics = [(k, n) for k, n in TABLE_METRICS if any(scores["greedy"][m][k] is not None for m in present)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(metrics) + 2), 4.0))
    width = 0.8 / len(present)
    for i, m in enumerate(present):
        xs = [j + (i - (len(present) - 1) / 2) * width for j in range(len(metrics))]
        sampled = scores["sampled"][m]
        # Bars: sampled mean +- std (the paper's decoding); without sampled runs, the greedy score and no error bar.
        heights = [sampled["mean"][k] if sampled["mean"][k] is not None else scores["greedy"][m][k] or 0.0
                   for k, _ in metrics]
        errors = [sampled["std"][k] or 0.0 for k, _ in metrics]
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=LABELS[m], color=COLORS[m])
        ax.plot(xs, [scores["greedy"][m][k] for k, _ in metrics], "k.", markersize=5)
    ax.set_xticks(range(len(metrics)), [n for _, n in metrics])
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"{task.upper()}: sampled decoding, mean ± std over runs (dots: greedy)")
    ax.legend(fontsize=8)
    return fig


def _listening_figure(plt: Any, report: Mapping[str, Any]) -> Any:
    tasks = [t for t, e in report["tasks"].items() if e["present"]]
    most = max(len(report["tasks"][t]["listening"]) for t in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(5.0, 1.15 * most) * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = report["tasks"][task]["listening"]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["bleu"] or 0.0 for r in rows], 0.4, label="real audio")
        ax.bar([x + 0.2 for x in xs], [r["bleu_swapped"] or 0.0 for r in rows], 0.4, label="swapped audio")
        # long names ("SFT (matched compute)") wrapped onto lines of their own: they ran over their neighbours
        ax.set_xticks(list(xs), [textwrap.fill(LABELS[r["method"]] + (" (!)" if r["flagged"] else ""), 12)
                                 for r in rows], fontsize=8)
        ax.set_ylabel("BLEU (greedy)")
        ax.set_title(f"{task.upper()}: listening check")
        ax.legend(fontsize=8)
    return fig
