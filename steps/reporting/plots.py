"""The report's figures: metric bars per task, the listening check, training curves (PNG, reports/plots/)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steps.core.io import atomic_dir
from steps.reporting.analysis import TABLE_METRICS
from steps.reporting.evaluations import LABELS

# one colour per method in every plot
COLORS = {"base": "C0", "sft": "C1", "grpo": "C2", "mpgrpo": "C3", "sft_matched": "C4", "grpo_base": "C5"}
CURVE_PANELS = (("reward", "reward (mean BLEU / 100)"), ("kl", "KL to the reference"),
                ("completion_length", "completion length (tokens)"), ("val_bleu", "validation BLEU"))


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
        for task in report["tasks"]:
            fig = _curve_figure(plt, task, curves.get(task, {}), report.get("validation_decoding", ""))
            if fig is not None:
                names.append(_save(plt, fig, tmp / f"curves_{task}.png"))
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
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = report["tasks"][task]["listening"]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["bleu"] or 0.0 for r in rows], 0.4, label="real audio")
        ax.bar([x + 0.2 for x in xs], [r["bleu_swapped"] or 0.0 for r in rows], 0.4, label="swapped audio")
        ax.set_xticks(list(xs), [LABELS[r["method"]] + (" (!)" if r["flagged"] else "") for r in rows])
        ax.set_ylabel("BLEU (greedy)")
        ax.set_title(f"{task.upper()}: listening check")
        ax.legend(fontsize=8)
    return fig


def _curve_points(curve: Mapping[str, Sequence[Any]], col: str) -> list[tuple[float, float]]:
    return [(s, v) for s, v in zip(curve.get("step", []), curve.get(col, []), strict=False)
            if s is not None and v is not None]


def _curve_figure(plt: Any, task: str, curves: Mapping[str, Mapping[str, Sequence[Any]]], validation: str = ""
                  ) -> Any:
    """One panel per training signal that was logged (reward, KL, length, validation BLEU); None if none was.
    `validation` names the decoding validation BLEU was measured with (it is what checkpoints were chosen on)."""
    panels = [(col, f"{title} ({validation})" if col == "val_bleu" and validation else title)
              for col, title in CURVE_PANELS if any(_curve_points(c, col) for c in curves.values())]
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (col, title) in zip(axes.flat, panels, strict=False):
        for m, curve in curves.items():
            points = _curve_points(curve, col)
            if points:
                ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None, label=LABELS[m],
                        color=COLORS[m])
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        ax.legend(fontsize=8)
    fig.suptitle(f"{task.upper()}: training curves")
    return fig
