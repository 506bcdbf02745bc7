"""The report's training figures, drawn from report.json's `training` data (steps/reporting/training.py) and GRPO's
per-step curves:

- curves_<task>.png: top row, each method's validation BLEU on its own optimiser steps (one panel per method: SFT's
  steps and GRPO's are not one axis), the chosen checkpoint ringed, a continued method's start (the SFT model) at
  step 0; bottom row, for GRPO and MP-GRPO per step: training reward with its least-squares line, KL to the
  reference, the fraction of groups with zero reward variance, completion length.
- frontier_<task>.png: validation BLEU against cumulative training FLOPs from the SFT model, for SFT continued
  (sft_matched), GRPO and MP-GRPO; the start shared at 0, each chosen checkpoint annotated with its test BLEU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from steps.reporting.evaluations import LABELS

COLORS = {"base": "C0", "sft": "C1", "grpo": "C2", "mpgrpo": "C3", "sft_matched": "C4", "grpo_base": "C5"}
STEP_PANELS = (("reward", "training reward (mean BLEU / 100)"), ("kl", "KL to the reference"),
               ("frac_reward_zero_std", "groups with zero reward variance"),
               ("completion_length", "completion length (tokens)"))


def _points(curve: Mapping[str, Sequence[Any]], col: str) -> list[tuple[float, float]]:
    return [(s, v) for s, v in zip(curve.get("step", []), curve.get(col, []), strict=False)
            if s is not None and v is not None]


def curve_figure(plt: Any, task: str, training: Mapping[str, Any],
                 curves: Mapping[str, Mapping[str, Sequence[Any]]], validation: str = "") -> Any:
    """The validation panels (one per method with a history) over the per-step GRPO panels; None if nothing."""
    stops = {m: s for m, s in (training.get("stops") or {}).items() if s.get("points")}
    start = (training.get("frontier") or {}).get("start") or {}
    grpo = {m: c for m, c in curves.items() if m != "sft" and any(_points(c, col) for col, _ in STEP_PANELS)}
    step_panels = [(col, title) for col, title in STEP_PANELS if any(_points(c, col) for c in grpo.values())]
    if not stops and not step_panels:
        return None
    cols = max(len(stops), len(step_panels), 1)
    rows = int(bool(stops)) + int(bool(step_panels))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    if stops:
        for ax, (method, stop) in zip(axes[0], stops.items(), strict=False):
            _validation_panel(ax, method, stop, start, validation)
    if step_panels:
        trends = training.get("reward_trends") or {}
        for ax, (col, title) in zip(axes[-1], step_panels, strict=False):
            ax.set_visible(True)
            for method, curve in grpo.items():
                points = _points(curve, col)
                if points:
                    ax.plot(*zip(*points, strict=True), marker="." if len(points) < 40 else None, linewidth=1,
                            label=LABELS[method], color=COLORS[method])
                trend = trends.get(method) or {}
                if col == "reward" and trend.get("column") == "reward_on_policy":
                    on = _points(curve, "reward_on_policy")
                    ax.plot(*zip(*on, strict=True), linestyle=":", color=COLORS[method],
                            label=f"{LABELS[method]} on-policy")
                if col == "reward" and "slope" in trend:
                    xs = [p[0] for p in _points(curve, trend["column"])]
                    ax.plot([xs[0], xs[-1]], [trend["intercept"] + trend["slope"] * x for x in (xs[0], xs[-1])],
                            linestyle="--", color=COLORS[method], linewidth=1.5,
                            label=f"fit: {trend['verdict'].replace('_', ' ')}")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("GRPO optimiser step")
            ax.legend(fontsize=7)
    fig.suptitle(f"{task.upper()}: validation curves (each on its own steps) and GRPO's training signals")
    return fig


def _validation_panel(ax: Any, method: str, stop: Mapping[str, Any], start: Mapping[str, Any], validation: str
                      ) -> None:
    ax.set_visible(True)
    points = [(p["step"], p["bleu"]) for p in stop["points"]]
    color = COLORS.get(method, "k")
    ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=color)
    if method != "sft" and points[0][0] != 0 and start.get("bleu") is not None and "/sft/" in f"/{stop.get('init')}":
        ax.plot([0, points[0][0]], [start["bleu"], points[0][1]], linestyle=":", color=color)
        ax.plot([0], [start["bleu"]], marker="*", color="k", markersize=9, linestyle="none", label="start: SFT")
    best = next((p for p in points if p[0] == stop.get("best_step")), None)
    if best is not None:
        ax.plot([best[0]], [best[1]], marker="o", markersize=11, markerfacecolor="none", markeredgecolor="k",
                linestyle="none", label=f"chosen: step {best[0]}")
    flag = " (cap, still improving)" if stop.get("not_converged") else ""
    ax.set_title(f"{LABELS.get(method, method)}{flag}", fontsize=9, color="firebrick" if flag else "black")
    ax.set_xlabel(f"{LABELS.get(method, method)} optimiser step")
    ax.set_ylabel(f"validation BLEU{f' ({validation})' if validation else ''}", fontsize=8)
    ax.legend(fontsize=7)


def frontier_figure(plt: Any, task: str, frontier: Mapping[str, Any]) -> Any:
    """Validation BLEU against cumulative FLOPs from the SFT model; None without a method to draw."""
    methods = {m: f for m, f in (frontier.get("methods") or {}).items() if f.get("points")}
    if not methods:
        return None
    decoding = frontier.get("test_decoding", "greedy")
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    start = frontier.get("start") or {}
    for method, f in methods.items():
        xs = [p["flops"] for p in f["points"]]
        ys = [p["bleu"] for p in f["points"]]
        label = LABELS[method] + (" (FLOPs by step, approximate)" if f.get("approximate") else "")
        chosen = f.get("chosen")
        if chosen:  # in the legend, not beside the ring: rings of methods that chose alike would overlap their text
            test = chosen.get("test_bleu")
            label += f", chosen: step {chosen['step']}" + (f", test {test:.2f}" if test is not None else "")
        ax.plot(xs, ys, marker="o", markersize=3, color=COLORS[method], label=label)
        if chosen:
            ax.plot([chosen["flops"]], [chosen["bleu"]], marker="o", markersize=12, markerfacecolor="none",
                    markeredgecolor=COLORS[method], markeredgewidth=2, linestyle="none")
    if start.get("bleu") is not None:
        test = start.get("test_bleu")
        ax.plot([0], [start["bleu"]], marker="*", markersize=14, color="k", linestyle="none",
                label="start: SFT's chosen checkpoint" + (f" (test {test:.2f})" if test is not None else ""))
    ax.set_xlabel("training FLOPs after the SFT model (estimated, cumulative)")
    ax.set_ylabel(f"validation BLEU ({decoding})")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    right = max(p["flops"] for f in methods.values() for p in f["points"])
    ax.set_xlim(-0.02 * right, 1.05 * right if right > 0 else 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{task.upper()}: validation BLEU against compute from the same start\n(ringed: the chosen "
                 f"checkpoint; its test BLEU, {decoding}, in the legend)", fontsize=9)
    return fig
