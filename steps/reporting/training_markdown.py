"""report.md's training sections, rendered from report.json's `training` and `validation_vs_test` data
(steps/reporting/training.py): where each method stopped, GRPO's reward trend, the compute-quality frontier, and
validation beside test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steps.reporting.evaluations import LABELS
from steps.reporting.markdown import fmt, md_table
from steps.reporting.prose import stop_sentence, trend_sentence


def flops_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def stops_markdown(training: Mapping[str, Any]) -> list[str]:
    stops = training.get("stops") or {}
    if not stops:
        return []
    rows = []
    for method, s in stops.items():
        stopped = s.get("stopped") or "not recorded"
        if s.get("stopped_source") == "inferred" and s.get("stopped"):
            stopped += " (inferred)"
        rows.append([LABELS.get(method, method), stopped, str(s.get("cap") or ""), str(s.get("global_step") or ""),
                     str(s.get("best_step") if s.get("best_step") is not None else ""), fmt(s.get("best_bleu")),
                     str(s.get("last_step") if s.get("last_step") is not None else ""), fmt(s.get("last_bleu")),
                     "**yes**" if s.get("still_improving") else "no"])
    trends = training.get("reward_trends") or {}
    trend_rows = [[LABELS[m], t["column"], str(t["steps"]), t["verdict"].replace("_", " "),
                   "" if "slope" not in t else f"{t['slope']:.3g} [{t['slope_ci95'][0]:.3g}, {t['slope_ci95'][1]:.3g}]",
                   "" if "slope" not in t else f"{t['first_quarter_mean']:.3g} → {t['last_quarter_mean']:.3g}",
                   fmt(t.get("zero_std_mean")), "" if t.get("kl_max") is None else f"{t['kl_max']:.3g}"]
                  for m, t in trends.items()]
    out = ["### Where training stopped", "",
           "Each method's validation history (metrics/<method>/<task>.train.json): `stopped` as the run recorded it "
           "(plateau: early stopping; max_steps: the step cap), else inferred from the step count; still improving: "
           "the best validation BLEU is the last evaluation and above the first.", "",
           md_table(["", "stopped", "step cap", "steps run", "chosen step", "validation BLEU (chosen)",
                     "last evaluated step", "validation BLEU (last)", "still improving"], rows), ""]
    if trend_rows:
        out += ["GRPO's training reward per step (MP-GRPO: its on-policy rows): least-squares slope per step with its "
                "95% interval (rose / fell: the interval excludes 0; flat: it includes 0), first- and last-quarter "
                "means, the mean fraction of groups with zero reward variance (no gradient) and the largest KL.", "",
                md_table(["", "signal", "steps", "trend", "slope [95% CI]", "first → last quarter",
                          "zero-variance groups", "KL max"], trend_rows), ""]
    sentences = [f"{LABELS[m]}: {trend_sentence(t)}" for m, t in trends.items()]
    sentences += [f"{LABELS[m]}: {stop_sentence(s)}" for m, s in stops.items() if s.get("not_converged")]
    return out + [f"- {s}" for s in sentences] + ([""] if sentences else [])


def frontier_markdown(task: str, frontier: Mapping[str, Any]) -> list[str]:
    methods = frontier.get("methods") or {}
    if not methods:
        return []
    start = frontier.get("start") or {}
    decoding = frontier.get("test_decoding", "greedy")
    rows = [["SFT (the start)", "0", flops_cell(start.get("total_flops")) + " (SFT itself)",
             str(start.get("step") if start.get("step") is not None else ""), fmt(start.get("bleu")),
             fmt(start.get("test_bleu")), ""]]
    skipped = []
    for method, f in methods.items():
        if "skipped" in f:
            skipped.append(f"{LABELS[method]}: {f['skipped']}")
            continue
        chosen = f.get("chosen") or {}
        rows.append([LABELS[method], flops_cell(chosen.get("flops")), flops_cell(f.get("total_flops")),
                     str(chosen.get("step", "")), fmt(chosen.get("bleu")), fmt(chosen.get("test_bleu")),
                     fmt(f.get("train_seconds"))])
    out = ["### Compute-quality frontier", "",
           "Validation BLEU against the estimated training FLOPs spent after the SFT model "
           f"(plots/frontier_{task}.png), for SFT continued for GRPO's compute and GRPO and MP-GRPO, all from SFT's "
           "chosen checkpoint. FLOPs: loss "
           "passes forward + backward, rollouts and reference passes, audio encoder included "
           f"(steps/training/flops.py). Test BLEU: {decoding}, of the checkpoint each method chose on validation.", "",
           md_table(["", "FLOPs to the chosen checkpoint", "FLOPs in all", "chosen step", "validation BLEU",
                     "test BLEU", "train seconds in all"], rows), ""]
    if any(f.get("approximate") for f in methods.values()):
        out += ["Approximate: a history without per-evaluation FLOPs is placed by step on a line to the run's total.",
                ""]
    return out + ([f"Not on the frontier: {'; '.join(skipped)}.", ""] if skipped else [])


def validation_markdown(vt: Mapping[str, Any]) -> list[str]:
    rows = [[f"{LABELS[r['system']]} vs {LABELS[r['baseline']]}", f"{r['validation_delta']:+.2f}",
             f"{r['test_delta_greedy']:+.2f}",
             "" if r.get("test_delta_sampled") is None else f"{r['test_delta_sampled']:+.2f}",
             "yes" if r["same_sign"] else "**no**"] for r in vt.get("rows") or []]
    if not rows:
        return []
    return ["### Validation beside test", "",
            "Did validation predict the test? The validation delta is between the chosen checkpoints' validation BLEU "
            "(the decoding checkpoints were chosen with), the test deltas are the significance tables'. "
            f"Validation's sign was the greedy test's in {vt['same_sign']} of {vt['comparisons']} comparisons.", "",
            md_table(["comparison", "validation delta", "test delta, greedy", "test delta, sampled", "same sign"],
                     rows), ""]
