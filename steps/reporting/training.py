"""What the report says about training itself, from metrics/<method>/<task>.train.json and the GRPO curves: each
method's validation curve (with the cumulative FLOPs and seconds at each evaluation), where it stopped and whether it
was still improving there, whether GRPO's training reward rose, the compute-quality frontier, and the validation
delta beside each test comparison (did validation predict the test?).

All of it becomes report.json data (`training_entry`, `add_validation_deltas`); the plots
(steps/reporting/training_plots.py), report.md and the README's prose (steps/reporting/prose.py) are rendered from it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steps.core.config import GRPO_METHODS, Config
from steps.core.paths import train_summary_file
from steps.reporting.evaluations import TRAINED_METHODS, number_or_none

# Continued from the SFT model: the methods on the compute-quality frontier (SFT's chosen checkpoint is its origin).
FRONTIER_METHODS = ("sft_matched", *GRPO_METHODS)
# Student's t, 97.5% quantile, for 1..30 degrees of freedom (a 95% two-sided interval).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t 97.5% quantile: the table to 30 degrees of freedom, then the Cornish-Fisher expansion (error
    < 1e-3)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def load_summaries(metrics_dir: Path, task: str) -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """{method: metrics/<method>/<task>.train.json} for the trained methods that have one."""
    out, read = {}, []
    for method in TRAINED_METHODS:
        path = train_summary_file(metrics_dir, method, task)
        if path.is_file():
            out[method] = json.loads(path.read_text(encoding="utf-8"))
            read.append(path)
    return out, read


def validation_points(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's validation history by step: BLEU, and the cumulative FLOPs and seconds when recorded."""
    points = [{"step": int(h["step"]), "bleu": number_or_none(h.get("eval_bleu")),
               "flops": number_or_none(h.get("flops")), "train_seconds": number_or_none(h.get("train_seconds"))}
              for h in summary.get("validation") or [] if isinstance(h.get("step"), int | float)]
    return sorted((p for p in points if p["bleu"] is not None), key=lambda p: p["step"])


def step_cap(cfg: Config | None, method: str, summary: Mapping[str, Any]) -> int | None:
    """The step budget the method ran under: sft_matched's derived max_steps, or the section's max_steps (> 0)."""
    if method == "sft_matched" and (summary.get("matched") or {}).get("max_steps"):
        return int(summary["matched"]["max_steps"])
    section = getattr(cfg, method, None) if cfg is not None else None
    steps = getattr(section, "max_steps", None)
    return int(steps) if isinstance(steps, int) and steps > 0 else None


def stop_record(method: str, summary: Mapping[str, Any], cap: int | None) -> dict[str, Any]:
    """Where training stopped (`stopped`: the summary's `plateau` | `max_steps`, else inferred from the step cap) and
    whether validation BLEU was still improving there (the best evaluation is the last, and above the first)."""
    points = validation_points(summary)
    global_step = summary.get("global_step")
    stopped, source = summary.get("stopped"), "summary"
    if stopped is None:
        source = "inferred"
        stopped = "max_steps" if cap is not None and isinstance(global_step, int) and global_step >= cap else None
    best_step = summary.get("best_step")
    last = points[-1] if points else None
    improving = bool(last and len(points) >= 2 and best_step == last["step"] and last["bleu"] > points[0]["bleu"])
    return {"points": points, "global_step": global_step, "cap": cap, "stopped": stopped, "stopped_source": source,
            "best_step": best_step, "best_bleu": number_or_none(summary.get("best_validation_bleu")),
            "last_step": last["step"] if last else None, "last_bleu": last["bleu"] if last else None,
            "still_improving": improving, "not_converged": stopped == "max_steps" and improving,
            "init": summary.get("init")}


def reward_trend(curve: Mapping[str, Sequence[float | None]]) -> dict[str, Any] | None:
    """Did the training reward rise? The least-squares slope of the per-step reward over the steps with its 95%
    interval (t, residuals assumed independent), and the mean of the first and last quarter of the steps.

    MP-GRPO's reward is read from its on-policy rows (`reward_on_policy`): the off-policy texts score high whatever
    the policy does. `verdict`: rose (interval above 0), fell (below 0), flat (it includes 0), too_few_steps (< 3).
    """
    column = "reward_on_policy" if any(v is not None for v in curve.get("reward_on_policy", [])) else "reward"
    points = [(float(s), float(v)) for s, v in zip(curve.get("step", []), curve.get(column, []), strict=False)
              if s is not None and v is not None]
    if not points:
        return None
    out: dict[str, Any] = {"column": column, "steps": len(points)}
    zero = [v for v in curve.get("frac_reward_zero_std", []) if v is not None]
    kl = [v for v in curve.get("kl", []) if v is not None]
    out |= {"zero_std_mean": statistics.fmean(zero) if zero else None, "kl_max": max(kl) if kl else None}
    if len(points) < 3:
        return out | {"verdict": "too_few_steps"}
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(residual / (len(xs) - 2) / sxx) if sxx else math.inf
    half = t975(len(xs) - 2) * se
    quarter = max(1, len(ys) // 4)
    verdict = "rose" if slope - half > 0 else "fell" if slope + half < 0 else "flat"
    return out | {"slope": slope, "intercept": my - slope * mx, "slope_ci95": [slope - half, slope + half],
                  "level": 0.95, "first_quarter_mean":
                  statistics.fmean(ys[:quarter]), "last_quarter_mean": statistics.fmean(ys[-quarter:]),
                  "verdict": verdict}


def flops_total(compute: Mapping[str, Any]) -> float | None:
    """`compute.flops.total` of a training summary (steps/training/flops.py), None when not recorded."""
    flops = compute.get("flops")
    return number_or_none(flops.get("total")) if isinstance(flops, Mapping) else None


def _from_sft(summary: Mapping[str, Any]) -> bool:
    init = summary.get("init")
    return bool(init) and Path(str(init)).parent.name == "sft"


def frontier(summaries: Mapping[str, Mapping[str, Any]], test_bleu: Mapping[str, float | None]) -> dict[str, Any]:
    """Validation BLEU against cumulative training FLOPs for the methods continued from the SFT model, its chosen
    checkpoint the shared origin (0 extra FLOPs; a method's own step-0 evaluation, when recorded, replaces it), each
    method's chosen checkpoint with its test BLEU (`test_bleu`). A history without per-evaluation FLOPs is placed by
    step on a straight line to the run's total (`approximate`); a run without FLOPs is left out, with the reason."""
    sft = summaries.get("sft") or {}
    start = {"bleu": number_or_none(sft.get("best_validation_bleu")), "step": sft.get("best_step"),
             "test_bleu": test_bleu.get("sft"), "total_flops": flops_total(sft.get("compute") or {})}
    methods: dict[str, Any] = {}
    for method in FRONTIER_METHODS:
        summary = summaries.get(method)
        if summary is None:
            continue
        if not _from_sft(summary):
            where = "/".join(Path(str(summary.get("init"))).parts[-2:])  # not the machine's absolute path
            methods[method] = {"skipped": f"started from {where}, not from the SFT model"}
            continue
        compute = summary.get("compute") or {}
        total = flops_total(compute)
        points = validation_points(summary)
        approximate = any(p["flops"] is None for p in points)
        if total is None:
            methods[method] = {"skipped": "no FLOPs recorded (a summary written before they were counted: rerun "
                                          f"the {method} stage)"}
            continue
        if approximate:
            steps = summary.get("global_step") or max((p["step"] for p in points), default=0) or 1
            points = [p | {"flops": total * p["step"] / steps} for p in points]
        if not any(p["step"] == 0 for p in points) and start["bleu"] is not None:
            points = [{"step": 0, "bleu": start["bleu"], "flops": 0.0, "train_seconds": 0.0}, *points]
        best = summary.get("best_step")
        chosen = next((p for p in points if p["step"] == best), None)
        methods[method] = {
            "points": points, "approximate": approximate, "total_flops": total,
            "train_seconds": number_or_none(compute.get("train_seconds")),
            "flops_split": {k: v for k, v in (compute.get("flops") or {}).items() if k != "total"},
            "chosen": None if chosen is None else {**chosen, "test_bleu": test_bleu.get(method)}}
    return {"start": start, "methods": methods}


def test_bleu_of(entry: Mapping[str, Any], decoding: str) -> dict[str, float | None]:
    """Each method's test BLEU in the decoding validation used (greedy, or the sampled runs' mean)."""
    scores = entry.get("scores") or {}
    if decoding == "greedy":
        return {m: row.get("bleu") for m, row in (scores.get("greedy") or {}).items()}
    return {m: s["mean"].get("bleu") for m, s in (scores.get("sampled") or {}).items()}


def training_entry(summaries: Mapping[str, Mapping[str, Any]],
                   curves: Mapping[str, Mapping[str, Sequence[float | None]]], cfg: Config | None,
                   entry: Mapping[str, Any], decoding: str) -> dict[str, Any]:
    """report.json's per-task training data: `stops` (per trained method), `reward_trends` (GRPO methods),
    `frontier`; `decoding` is validation's (`greedy` or `sampled`), which the frontier's test BLEU follows."""
    stops = {m: stop_record(m, s, step_cap(cfg, m, s)) for m, s in summaries.items()}
    trends = {m: t for m in GRPO_METHODS if m in curves and (t := reward_trend(curves[m])) is not None}
    return {"stops": stops, "reward_trends": trends,
            "frontier": frontier(summaries, test_bleu_of(entry, decoding)) | {"test_decoding": decoding}}


def add_validation_deltas(tests: Sequence[dict[str, Any]], summaries: Mapping[str, Mapping[str, Any]]) -> None:
    """Each comparison's validation delta beside its test delta: the chosen checkpoints' validation BLEU, system minus
    baseline (None for base, which has no validation run), in place."""
    best = {m: number_or_none(s.get("best_validation_bleu")) for m, s in summaries.items()}
    for t in tests:
        a, b = best.get(t["baseline"]), best.get(t["system"])
        t["validation_delta"] = None if a is None or b is None else b - a


def validation_vs_test(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The comparisons with a validation delta, beside their test deltas, and how often validation's sign was the
    greedy test's."""
    sampled = {(t["baseline"], t["system"]): t for t in entry.get("significance_sampled") or [] if "delta" in t}
    rows = []
    for t in entry.get("significance") or []:
        if t.get("validation_delta") is None or "delta" not in t:
            continue
        other = sampled.get((t["baseline"], t["system"]))
        rows.append({"baseline": t["baseline"], "system": t["system"], "validation_delta": t["validation_delta"],
                     "test_delta_greedy": t["delta"], "p_holm_greedy": t.get("p_holm"),
                     "test_delta_sampled": other["delta"] if other else None,
                     "same_sign": (t["validation_delta"] > 0) == (t["delta"] > 0)})
    return {"rows": rows, "same_sign": sum(r["same_sign"] for r in rows), "comparisons": len(rows)}
