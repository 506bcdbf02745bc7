"""The comparison's numbers: scores tables, two-sided paired bootstrap significance (Holm within each table), the
listening check, curve summaries.

`build_report` turns the evaluations (steps/reporting/evaluations.py) into report.json's data; everything shown in
report.md and the README is rendered from it (steps/reporting/render.py).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from steps.core.config import Config, trained_on
from steps.evaluation.significance import ALPHA, POWER, clustered_paired_bootstrap, holm, minimal_detectable_effect
from steps.reporting.conditions import conditions_rows
from steps.reporting.evaluations import LABELS, METHODS, TRAINED_METHODS, Evaluation, number_or_none
from steps.reporting.paper_settings import settings_vs_paper
from steps.reporting.training import add_validation_deltas, training_entry, validation_vs_test

# The paper's columns (BLEU, BERTScore, ROUGE-1/2/L, METEOR) plus chrF, in the paper's order.
TABLE_METRICS = (("bleu", "BLEU"), ("bertscore_f1", "BERTScore"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"),
                 ("rougeL", "ROUGE-L"), ("meteor", "METEOR"), ("chrf", "chrF"))
# Where the evaluator (steps/evaluation/evaluator.py) records why a metric was skipped (signatures.<prefix>_skipped).
SKIP_KEYS = {"bertscore_f1": "bertscore_skipped", "meteor": "meteor_skipped"}
# A model that listens loses most of its score when each example gets another example's audio.
LISTENING_MAX_RATIO = 0.5
# The paper's GRPO - SFT BLEU gain with Granite Speech 2B (PAPER.md): the effect the default should be able to detect.
PAPER_GAINS = {"sqa": 44.90 - 40.88, "ast": 31.47 - 30.50}


# --- tables -----------------------------------------------------------------------------------------------------------


def scores_table(evals: Mapping[str, Evaluation]) -> dict[str, Any]:
    """Greedy scores per method, their relative change vs base (%), sampled mean/std, and skipped-metric reasons."""
    greedy = {m: {key: number_or_none(e.metrics.get(key)) for key, _ in TABLE_METRICS} for m, e in evals.items()}
    base = greedy.get("base", {})
    relative = {m: {key: _relative(row[key], base.get(key)) for key, _ in TABLE_METRICS}
                for m, row in greedy.items() if m != "base"}
    sampled = {}
    for m, e in evals.items():
        mean = {key: number_or_none(e.metrics.get(f"{key}_sampled_mean")) for key, _ in TABLE_METRICS}
        std = {key: number_or_none(e.metrics.get(f"{key}_sampled_std")) for key, _ in TABLE_METRICS}
        sampled[m] = {"runs": (e.metrics.get("sampled") or {}).get("runs"), "mean": mean, "std": std}
    skipped: dict[str, str] = {}
    for key, skip_key in SKIP_KEYS.items():
        for e in evals.values():
            reason = (e.metrics.get("signatures") or {}).get(skip_key)
            if e.metrics.get(key) is None and reason:
                skipped.setdefault(key, reason)
    n = {m: e.metrics.get("n") for m, e in evals.items()}
    return {"greedy": greedy, "relative_to_base_pct": relative, "sampled": sampled, "skipped": skipped, "n": n}


def _relative(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return 100.0 * (value - base) / base


# --- significance -----------------------------------------------------------------------------------------------------


def paired_by_id(a: Evaluation, b: Evaluation, decoding: str = "greedy"
                 ) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """Each example's outputs from a and from b, and its reference, aligned by example id (in a's order).

    decoding "greedy": the one greedy hypothesis per example. "sampled" (the paper's decoding): every sampled run of
    the example (as many runs as both have), kept together, so that the bootstrap resamples examples with all their
    runs (`clustered_paired_bootstrap`) rather than treating runs of one example as independent evidence.
    Raises ValueError naming both files when they do not hold the same examples (ids or references differ).
    """
    rows = {}
    for ev in (a, b):
        if ev.predictions is None:
            raise FileNotFoundError(f"{ev.predictions_path} is missing: rerun the evaluate stage of {ev.method}")
        by_id = {}
        for i, row in enumerate(ev.predictions):
            if decoding == "greedy" and "greedy" not in row:
                raise ValueError(f"{ev.predictions_path}: row {i} has no greedy hypothesis (evaluate.greedy: false?); "
                                 "significance uses the greedy outputs")
            if row["id"] in by_id:
                raise ValueError(f"{ev.predictions_path}: example id {row['id']!r} appears twice")
            by_id[row["id"]] = row
        rows[ev.method] = by_id
    ids_a, ids_b = rows[a.method], rows[b.method]
    only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        raise ValueError(f"{a.predictions_path} and {b.predictions_path} do not hold the same examples: "
                         f"{len(only_a)} ids only in the first {only_a[:3]}, {len(only_b)} only in the second "
                         f"{only_b[:3]}; evaluate both on the same split and evaluate.limit")
    for ex_id, row in ids_a.items():
        if row["reference"] != ids_b[ex_id]["reference"]:
            raise ValueError(f"{a.predictions_path} and {b.predictions_path}: example {ex_id!r} has different "
                             f"references ({row['reference']!r} vs {ids_b[ex_id]['reference']!r}); were they "
                             "evaluated on the same prepared data?")
    order = list(ids_a)
    refs = [ids_a[i]["reference"] for i in order]
    if decoding == "greedy":
        return [[ids_a[i]["greedy"]] for i in order], [[ids_b[i]["greedy"]] for i in order], refs
    runs = sampled_runs_in(a, b)
    return ([ids_a[i]["sampled"][:runs] for i in order], [ids_b[i]["sampled"][:runs] for i in order], refs)


def sampled_runs_in(*evals: Evaluation) -> int:
    """How many sampled runs every example of every evaluation has (0 when any has none)."""
    counts = [len(row.get("sampled") or []) for ev in evals for row in (ev.predictions or [])]
    return min(counts) if counts else 0


# Outside the chain: sft_matched (SFT continued for GRPO's compute, the equal-compute baseline of both GRPOs) and
# grpo_base (GRPO from the base model: compared with the base it starts from and with SFT).
OUTSIDE_CHAIN = {"sft_matched": "sft", "grpo_base": "base"}  # method -> the one its "p vs previous" is against
CHAIN = tuple(m for m in METHODS if m not in OUTSIDE_CHAIN)
SFT_BASELINES = ("sft", "sft_matched")


def comparisons(present: Sequence[str]) -> list[tuple[str, str]]:
    """(baseline, system) pairs: each method against the previous one present in base, SFT, GRPO, MP-GRPO; MP-GRPO
    against SFT; GRPO and MP-GRPO against SFT with matched compute, and that against SFT."""
    chain = [m for m in CHAIN if m in present]
    pairs = list(itertools.pairwise(chain))
    if "mpgrpo" in present and "sft" in present and ("sft", "mpgrpo") not in pairs:
        pairs.append(("sft", "mpgrpo"))
    if "sft_matched" in present:
        pairs += [("sft_matched", m) for m in ("grpo", "mpgrpo") if m in present]
        pairs += [("sft", "sft_matched")] if "sft" in present else []
    if "grpo_base" in present:
        pairs += [(m, "grpo_base") for m in ("base", "sft", "grpo") if m in present]
    return pairs


def significance(a: Evaluation, b: Evaluation, n_samples: int, seed: int, decoding: str = "greedy",
                 paper_gain: float | None = None) -> dict[str, Any]:
    """Two-sided paired bootstrap of BLEU of system b against baseline a, examples as clusters, with the power of the
    test (its minimal detectable effect at 80% power). The verdict, the Holm-adjusted p-value and the sizes at the
    family's level come from `holm_family`, once every comparison of the table is known."""
    hyps_a, hyps_b, refs = paired_by_id(a, b, decoding)
    test = clustered_paired_bootstrap(hyps_a, hyps_b, refs, n_samples=n_samples, seed=seed, alpha=ALPHA)
    n = len(refs)
    return {"baseline": a.method, "system": b.method, "metric": "bleu", "decoding": decoding, "n": n,
            "outputs_per_example": test["b"]["outputs"] // n, "clusters": "examples",
            "baseline_bleu": test["a"]["score"], "system_bleu": test["b"]["score"], "delta": test["delta"],
            "baseline_ci95": [test["a"]["ci_low"], test["a"]["ci_high"]],
            "system_ci95": [test["b"]["ci_low"], test["b"]["ci_high"]], "delta_ci95": test["delta_ci"],
            "p_value": test["p_value"], "test": "two-sided", "delta_se": test["delta_se"], "mde": test["mde"],
            "paper_gain": paper_gain, "n_samples": n_samples, "seed": seed, "signature": test["signature"]}


def holm_family(tests: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    """Holm's correction over one table's comparisons (skipped ones are not tests), in place; returns `tests`.

    Adds `p_holm` (the adjusted p-value, which decides `significant` and the verdict), the family and its size,
    `mde_holm`: the effect detected with 80% power at alpha / m, the level Holm applies to the family's smallest p, so
    an effect that large is found whatever the other comparisons give, and `examples_for_paper_gain`: the test size at
    which the paper's 2B gain would be that MDE (the MDE scales as 1 / sqrt(examples)).
    """
    done = [t for t in tests if "skipped" not in t]
    for t, p_holm in zip(done, holm([t["p_value"] for t in done]), strict=True):
        mde_holm = minimal_detectable_effect(t["delta_se"], ALPHA / len(done))
        gain = t.get("paper_gain")
        t |= {"p_holm": p_holm, "significant": p_holm < ALPHA, "family": family, "family_size": len(done),
              "verdict": verdict(t["baseline"], t["system"], t["delta"], p_holm), "mde_holm": mde_holm,
              "examples_for_paper_gain": None if not gain or mde_holm <= 0 else math.ceil(t["n"] * (mde_holm / gain)
                                                                                           ** 2)}
    return tests


def verdict(baseline: str, system: str, delta: float, p_holm: float) -> str:
    if p_holm >= ALPHA:
        return f"not significant (two-sided, Holm: p >= {ALPHA})"
    direction = "higher" if delta > 0 else "lower"
    return f"significant (two-sided, Holm: p < {ALPHA}): {LABELS[system]} {direction} than {LABELS[baseline]}"


def task_significance(evals: Mapping[str, Evaluation], n_samples: int, seed: int, decoding: str = "greedy",
                      task: str | None = None) -> list[dict[str, Any]]:
    """Every comparison's test on `decoding` outputs (sampled: only where both methods have sampled runs), Holm-adjusted
    over this task and decoding's comparisons (one table of the report); GRPO and MP-GRPO against SFT (and SFT with
    matched compute) are sized against the paper's gain on `task`."""
    out = []
    for a, b in comparisons(list(evals)):
        missing = [evals[m].predictions_path for m in (a, b) if evals[m].predictions is None]
        if missing:
            out.append({"baseline": a, "system": b, "decoding": decoding,
                        "skipped": f"no predictions file: {', '.join(map(str, missing))}"})
        elif decoding == "sampled" and not sampled_runs_in(evals[a], evals[b]):
            out.append({"baseline": a, "system": b, "decoding": decoding,
                        "skipped": "no sampled runs (evaluate.sampled_runs: 0)"})
        else:
            gain = PAPER_GAINS.get(task or "") if a in SFT_BASELINES and b in ("grpo", "mpgrpo") else None
            out.append(significance(evals[a], evals[b], n_samples, seed, decoding, gain))
    return holm_family(out, f"{task or 'task'} {decoding}")


# --- listening --------------------------------------------------------------------------------------------------------


def listening_rows(evals: Mapping[str, Evaluation]) -> list[dict[str, Any]]:
    """Per method: BLEU with real and with swapped audio, the gap, the gain over base with each, and a flag.

    A gain is a speech result only if swapped-audio BLEU stays far below real-audio BLEU and the gain over base
    shrinks when the audio is swapped; a swapped BLEU above half the real one is flagged.
    """
    base = evals.get("base")
    base_real = number_or_none(base.metrics.get("bleu")) if base else None
    base_swapped = number_or_none(base.metrics.get("bleu_swapped")) if base else None
    base_sampled = number_or_none(base.metrics.get("bleu_sampled_mean")) if base else None
    base_swapped_sampled = number_or_none(base.metrics.get("bleu_swapped_sampled")) if base else None
    rows = []
    for method, ev in evals.items():
        real, swapped = number_or_none(ev.metrics.get("bleu")), number_or_none(ev.metrics.get("bleu_swapped"))
        # The same check on the paper's decoding: the sampled mean with the real audio, one sampled run swapped.
        sampled, swapped_sampled = number_or_none(ev.metrics.get("bleu_sampled_mean")), number_or_none(ev.metrics.get(
            "bleu_swapped_sampled"))
        row: dict[str, Any] = {"method": method, "bleu": real, "bleu_swapped": swapped,
                               "gap": _diff(real, swapped), "gain_real": None, "gain_swapped": None,
                               "bleu_sampled": sampled, "bleu_swapped_sampled": swapped_sampled,
                               "gap_sampled": _diff(sampled, swapped_sampled), "gain_real_sampled": None,
                               "gain_swapped_sampled": None}
        if method != "base":
            row["gain_real"], row["gain_swapped"] = _diff(real, base_real), _diff(swapped, base_swapped)
            row["gain_real_sampled"] = _diff(sampled, base_sampled)
            row["gain_swapped_sampled"] = _diff(swapped_sampled, base_swapped_sampled)
        row["flagged"] = bool(real is not None and swapped is not None and swapped > LISTENING_MAX_RATIO * real)
        row["verdict"] = listening_verdict(row)
        rows.append(row)
    return rows


def _diff(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


def listening_verdict(row: Mapping[str, Any]) -> str:
    label = LABELS[row["method"]]
    if row["bleu_swapped"] is None or row["bleu"] is None:
        return f"{label}: no swapped-audio score (evaluate.listening: false?); listening not checked"
    if row["flagged"]:
        return (f"{label}: FLAG: swapped-audio BLEU {row['bleu_swapped']:.2f} is more than half of real-audio BLEU "
                f"{row['bleu']:.2f}: the scores may come from the text prompt rather than the audio")
    if row["method"] == "base":
        return f"{label}: listens (swapped-audio BLEU {row['bleu_swapped']:.2f} vs {row['bleu']:.2f})"
    gain_real, gain_swapped = row["gain_real"], row["gain_swapped"]
    if gain_real is None or gain_swapped is None:
        return f"{label}: no base scores to compare with"
    if gain_real <= 0:
        return f"{label}: no gain over Base with real audio ({gain_real:+.2f} BLEU)"
    if gain_swapped < gain_real:
        return (f"{label}: speech result: the gain over Base shrinks from {gain_real:+.2f} (real audio) to "
                f"{gain_swapped:+.2f} BLEU (swapped audio)")
    return (f"{label}: not a speech result: the gain over Base does not shrink with swapped audio "
            f"({gain_real:+.2f} real vs {gain_swapped:+.2f} swapped)")


# --- curves and the whole report --------------------------------------------------------------------------------------


def curve_summary(curve: Mapping[str, Sequence[float | None]]) -> dict[str, Any]:
    """Logged points, and per training signal the mean of its first and last tenth of logged values."""
    steps = [s for s in curve.get("step", []) if s is not None]
    out: dict[str, Any] = {"points": len(steps), "last_step": int(max(steps)) if steps else None}
    for col in ("reward", "kl", "completion_length", "entropy", "clip_ratio", "frac_reward_zero_std",
                "reward_on_policy", "reward_off_policy", "eval_loss"):
        values = [v for v in curve.get(col, []) if v is not None]
        if values:
            k = max(1, len(values) // 10)
            out[col] = {"first": statistics.fmean(values[:k]), "last": statistics.fmean(values[-k:])}
    points = [(s, v) for s, v in zip(curve.get("step", []), curve.get("val_bleu", []), strict=False)
              if s is not None and v is not None]
    if points:
        step, best = max(points, key=lambda p: p[1])
        out["best_val_bleu"] = {"step": int(step), "bleu": best}
    return out


def pick_examples(evals: Mapping[str, Evaluation], k: int, seed: int) -> list[str]:
    """k example ids every method with predictions has, drawn with `seed`, in the first file's order."""
    files = [e.predictions for e in evals.values() if e.predictions is not None]
    if not files or k <= 0:
        return []
    common = set.intersection(*({r["id"] for r in rows} for rows in files))
    order = [r["id"] for r in files[0] if r["id"] in common]
    chosen = set(random.Random(seed).sample(sorted(common), min(k, len(common))))
    return [i for i in order if i in chosen]


def build_report(evaluations: Mapping[str, Mapping[str, Evaluation]],
                 curves: Mapping[str, Mapping[str, Mapping[str, Sequence[float | None]]]], cfg: Config, *,
                 n_samples: int, seed: int, n_examples: int = 5, inputs: Sequence[str] = (),
                 compute: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
                 summaries: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> dict[str, Any]:
    """Everything report.md shows, as data (report.json); the markdown and the README table are rendered from it.
    `summaries`: {task: {method: metrics/<method>/<task>.train.json}} (steps/reporting/training.py)."""
    report: dict[str, Any] = {"methods": list(METHODS), "tasks": {}, "bootstrap": {"metric": "bleu", "hypotheses":
                              "greedy", "n_samples": n_samples, "seed": seed, "alpha": ALPHA, "test": "two-sided",
                              "correction": "holm", "family": "each task and decoding", "power": POWER},
                              "listening_max_ratio": LISTENING_MAX_RATIO}
    for task, evals in evaluations.items():
        present = [m for m in METHODS if m in evals]
        entry: dict[str, Any] = {"present": present,
                                 "missing": [m for m in METHODS if m not in evals and trained_on(m, task)]}
        if present:
            entry |= {"scores": scores_table(evals),
                      "significance": task_significance(evals, n_samples, seed, "greedy", task),
                      "significance_sampled": task_significance(evals, n_samples, seed, "sampled", task),
                      "listening": listening_rows(evals),
                      "conditions": conditions_rows(evals),
                      "predictions_missing": [m for m in present if evals[m].predictions is None],
                      "example_ids": pick_examples(evals, n_examples, seed)}
        entry["curves"] = {m: curve_summary(c) for m, c in curves.get(task, {}).items()}
        entry["compute"] = dict((compute or {}).get(task, {}))  # metrics/<method>/<task>.train.json's `compute`
        trained = (summaries or {}).get(task, {})
        for key in ("significance", "significance_sampled"):
            add_validation_deltas(entry.get(key) or [], trained)
        entry["training"] = training_entry(trained, curves.get(task, {}), cfg, entry, _decoding_of(cfg))
        entry["validation_vs_test"] = validation_vs_test(entry)
        report["tasks"][task] = entry
    report["settings"] = settings_vs_paper(cfg)
    report["validation_decoding"] = validation_decoding(cfg)
    report["inputs"] = list(inputs)
    return _rounded(report)


def _decoding_of(cfg: Config) -> str:
    """`greedy` when every trained method validated greedily, else `sampled` (the frontier's test BLEU follows)."""
    return "greedy" if all(getattr(cfg, m).eval_decoding == "greedy" for m in TRAINED_METHODS) else "sampled"


def validation_decoding(cfg: Config) -> str:
    """How SFT, GRPO and MP-GRPO (and SFT with matched compute) decoded for validation BLEU (the curves' title), e.g.
    `sampled T 0.9, top-p 0.9`."""
    sampled = f"sampled T {cfg.evaluate.temperature:g}, top-p {cfg.evaluate.top_p:g}"
    names = {m: sampled if getattr(cfg, m).eval_decoding == "sampled" else "greedy"
             for m in TRAINED_METHODS}
    if len(set(names.values())) == 1:
        return next(iter(names.values()))
    return "; ".join(f"{LABELS[m]} {d}" for m, d in names.items())


def _rounded(data: Any) -> Any:
    """Floats to 6 significant digits: readable JSON that keeps small values (a KL of 3e-4, an lr of 1e-6, p-values)."""
    if isinstance(data, Mapping):
        return {k: _rounded(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_rounded(v) for v in data]
    if isinstance(data, float) and math.isfinite(data):
        return float(f"{data:.6g}")
    return data
