"""The report stage: the paper's comparison (Base, SFT, GRPO, MP-GRPO on SQA and AST) from the evaluation files.

    python -m steps.report [--params params.yaml] [-S report.bootstrap_samples=2000]
    python -m steps.report --readme     # copy the compact table from reports/report.json into README.md

Reads metrics/<method>/<task>.json and .predictions.jsonl (steps/evaluate.py), the training curves
metrics/{grpo,mpgrpo}/<task>.curve.csv and metrics/sft/<task>.train.json where they exist, and the resolved config.
Works with whatever methods have been evaluated (at least base) and says which are missing. The seed sweep
(steps/seeds.py) writes its own sweeps/seeds.md with this module's `seeds_markdown`.

Writes (atomically) under reports/:
- report.md: per task the scores table in the paper's layout (greedy decoding, relative change vs Base), sampled
  BLEU mean +- std, paired bootstrap significance (sacrebleu, BLEU on the greedy hypotheses, paired by example id),
  the listening check (real vs swapped audio), training-curve summaries; then the settings that differ from the
  paper.
- report.json: every number in report.md (and the full-precision values behind them).
- plots/: metrics_<task>.png (sampled mean +- std bars, greedy dots), listening.png, curves_<task>.png.
- examples.md: a few test examples per task, the same ids for every method, with the reference.
All of it is logged to the stage's MLflow run and to the pipeline's parent run.

`--readme` replaces the text between `<!-- report:begin -->` and `<!-- report:end -->` in README.md with a compact
method x task table (BLEU, swapped-audio BLEU, p-value vs the previous method) read from reports/report.json, and,
when sweeps/seeds.json exists, the text between `<!-- seeds:begin -->` and `<!-- seeds:end -->` with the seed table.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.config import Config, ConfigError, config_from_args, stage_parser, to_dict
from steps.io import atomic_dir, atomic_write_text, read_jsonl, write_json

METHODS = ("base", "sft", "grpo", "mpgrpo")
LABELS = {"base": "Base", "sft": "SFT", "grpo": "GRPO", "mpgrpo": "MP-GRPO"}
COLORS = {"base": "C0", "sft": "C1", "grpo": "C2", "mpgrpo": "C3"}  # one colour per method in every plot
TASKS = ("sqa", "ast")
TASK_TITLES = {"sqa": "SQA (spoken question answering)", "ast": "AST (speech translation En->De)"}
# The paper's columns (BLEU, BERTScore, ROUGE-1/2/L, METEOR) plus chrF, in the paper's order.
TABLE_METRICS = (("bleu", "BLEU"), ("bertscore_f1", "BERTScore"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"),
                 ("rougeL", "ROUGE-L"), ("meteor", "METEOR"), ("chrf", "chrF"))
# Where evaluate.py records why a metric was not computed (signatures.<prefix>_skipped).
SKIP_KEYS = {"bertscore_f1": "bertscore_skipped", "meteor": "meteor_skipped"}
CURVE_METHODS = ("grpo", "mpgrpo")
CURVE_PANELS = (("reward", "reward (mean BLEU / 100)"), ("kl", "KL to the reference"),
                ("completion_length", "completion length (tokens)"), ("val_bleu", "validation BLEU (greedy)"))
# A model that listens loses most of its score when each example gets another example's audio.
LISTENING_MAX_RATIO = 0.5
ALPHA = 0.05
SEED_ORDER = ("base", "sft", "grpo")
MARK_BEGIN, MARK_END = "<!-- report:begin -->", "<!-- report:end -->"
SEEDS_BEGIN, SEEDS_END = "<!-- seeds:begin -->", "<!-- seeds:end -->"


# --------------------------------------------------------------------------------------------------- loading


@dataclass
class Evaluation:
    """One method's evaluation on one task: the metrics file and its predictions (None when that file is absent)."""

    method: str
    task: str
    metrics_path: Path
    metrics: dict[str, Any]
    predictions_path: Path
    predictions: list[dict[str, Any]] | None


def load_evaluations(metrics_dir: Path, tasks: Sequence[str] = TASKS) -> dict[str, dict[str, Evaluation]]:
    """{task: {method: Evaluation}} for every metrics/<method>/<task>.json that exists, in METHODS order."""
    out: dict[str, dict[str, Evaluation]] = {}
    for task in tasks:
        found = {}
        for method in METHODS:
            path = metrics_dir / method / f"{task}.json"
            if not path.is_file():
                continue
            preds = path.with_name(f"{task}.predictions.jsonl")
            found[method] = Evaluation(method, task, path, json.loads(path.read_text(encoding="utf-8")), preds,
                                       read_jsonl(preds) if preds.is_file() else None)
        out[task] = found
    if not any(out.values()):
        raise FileNotFoundError(f"no evaluation results under {metrics_dir} (metrics/<method>/<task>.json): run the "
                                "evaluate stages first (`dvc repro evaluate_base`)")
    for task, found in out.items():
        if found and "base" not in found:
            raise FileNotFoundError(f"{task}: {sorted(found)} evaluated but not base ({metrics_dir}/base/{task}.json"
                                    " is missing); every comparison is relative to base: "
                                    f"`dvc repro evaluate_base@{task}`")
    return out


def read_curve_csv(path: Path) -> dict[str, list[float | None]]:
    """A curve CSV as columns of floats; empty cells (a metric not logged at that step) become None."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns: dict[str, list[float | None]] = {}
    for row in rows:
        for key, text in row.items():
            columns.setdefault(key, []).append(_float_or_none(text))
    return columns


def _float_or_none(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def load_curves(metrics_dir: Path, task: str) -> tuple[dict[str, dict[str, list[float | None]]], list[Path]]:
    """Training curves of one task: GRPO/MP-GRPO CSVs, and SFT's validation points as columns step/val_bleu."""
    curves: dict[str, dict[str, list[float | None]]] = {}
    read: list[Path] = []
    sft = metrics_dir / "sft" / f"{task}.train.json"
    if sft.is_file():
        points = json.loads(sft.read_text(encoding="utf-8")).get("validation") or []
        curves["sft"] = {"step": [_num(p.get("step")) for p in points],
                         "val_bleu": [_num(p.get("eval_bleu")) for p in points],
                         "eval_loss": [_num(p.get("eval_loss")) for p in points]}
        read.append(sft)
    for method in CURVE_METHODS:
        path = metrics_dir / method / f"{task}.curve.csv"
        if path.is_file():
            curves[method] = read_curve_csv(path)
            read.append(path)
    return curves, read


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


# --------------------------------------------------------------------------------------------------- tables


def scores_table(evals: Mapping[str, Evaluation]) -> dict[str, Any]:
    """Greedy scores per method, their relative change vs base (%), sampled mean/std, and skipped-metric reasons."""
    greedy = {m: {key: _num(e.metrics.get(key)) for key, _ in TABLE_METRICS} for m, e in evals.items()}
    base = greedy.get("base", {})
    relative = {m: {key: _relative(row[key], base.get(key)) for key, _ in TABLE_METRICS}
                for m, row in greedy.items() if m != "base"}
    sampled = {}
    for m, e in evals.items():
        mean = {key: _num(e.metrics.get(f"{key}_sampled_mean")) for key, _ in TABLE_METRICS}
        std = {key: _num(e.metrics.get(f"{key}_sampled_std")) for key, _ in TABLE_METRICS}
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


# --------------------------------------------------------------------------------------------------- significance


def paired_by_id(a: Evaluation, b: Evaluation, decoding: str = "greedy") -> tuple[list[str], list[str], list[str]]:
    """Hypotheses of a and b and the references, aligned by example id (in a's order).

    decoding "greedy": one greedy hypothesis per example. "sampled" (the paper's decoding): the sampled runs pooled,
    run r of a paired with run r of b for every example (as many runs as both have), the references repeated, so the
    bootstrap resamples over examples and sampling noise together.
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
    if decoding == "greedy":
        return ([ids_a[i]["greedy"] for i in order], [ids_b[i]["greedy"] for i in order],
                [ids_a[i]["reference"] for i in order])
    runs = sampled_runs_in(a, b)
    return ([ids_a[i]["sampled"][r] for r in range(runs) for i in order],
            [ids_b[i]["sampled"][r] for r in range(runs) for i in order],
            [ids_a[i]["reference"] for _ in range(runs) for i in order])


def sampled_runs_in(*evals: Evaluation) -> int:
    """How many sampled runs every example of every evaluation has (0 when any has none)."""
    counts = [len(row.get("sampled") or []) for ev in evals for row in (ev.predictions or [])]
    return min(counts) if counts else 0


def comparisons(present: Sequence[str]) -> list[tuple[str, str]]:
    """(baseline, system) pairs: each method against the previous one present, and MP-GRPO against SFT."""
    chain = [m for m in METHODS if m in present]
    pairs = list(itertools.pairwise(chain))
    if "mpgrpo" in present and "sft" in present and ("sft", "mpgrpo") not in pairs:
        pairs.append(("sft", "mpgrpo"))
    return pairs


def significance(a: Evaluation, b: Evaluation, n_samples: int, seed: int, decoding: str = "greedy"
                 ) -> dict[str, Any]:
    """Paired bootstrap (sacrebleu, BLEU) of system b against baseline a, with a plain-words verdict."""
    from steps.metrics import paired_bootstrap

    hyps_a, hyps_b, refs = paired_by_id(a, b, decoding)
    test = paired_bootstrap(hyps_a, hyps_b, refs, metric="bleu", n_samples=n_samples, seed=seed)
    delta = test["b"]["score"] - test["a"]["score"]
    p_value, note = test["p_value"], None
    # sacrebleu counts resampled differences strictly above the observed one and adds 1, so two systems with no
    # difference at all get p = 1/(n+1), "significant": no observed difference is never evidence of one.
    if hyps_a == hyps_b or abs(delta) < 1e-9:
        p_value, note = 1.0, f"no observed difference; sacrebleu's raw p-value {test['p_value']:.4f} replaced by 1"
    significant = p_value < ALPHA
    return {"baseline": a.method, "system": b.method, "metric": "bleu", "decoding": decoding, "n": len(refs),
            "baseline_bleu": test["a"]["score"], "system_bleu": test["b"]["score"], "delta": delta,
            "baseline_ci95": [test["a"]["ci_low"], test["a"]["ci_high"]],
            "system_ci95": [test["b"]["ci_low"], test["b"]["ci_high"]],
            "p_value": p_value, "significant": significant, "verdict": verdict(a.method, b.method, delta, p_value),
            "note": note, "n_samples": n_samples, "seed": seed, "signature": test["signature"]}


def verdict(baseline: str, system: str, delta: float, p_value: float) -> str:
    if p_value >= ALPHA:
        return f"not significant (p >= {ALPHA})"
    direction = "higher" if delta > 0 else "lower"
    return f"significant at p<{ALPHA}: {LABELS[system]} {direction} than {LABELS[baseline]}"


def task_significance(evals: Mapping[str, Evaluation], n_samples: int, seed: int, decoding: str = "greedy"
                      ) -> list[dict[str, Any]]:
    """Every comparison's test on `decoding` outputs (sampled: only where both methods have sampled runs)."""
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
            out.append(significance(evals[a], evals[b], n_samples, seed, decoding))
    return out


# --------------------------------------------------------------------------------------------------- listening


def listening_rows(evals: Mapping[str, Evaluation]) -> list[dict[str, Any]]:
    """Per method: BLEU with real and with swapped audio, the gap, the gain over base with each, and a flag.

    A gain is a speech result only if swapped-audio BLEU stays far below real-audio BLEU and the gain over base
    shrinks when the audio is swapped; a swapped BLEU above half the real one is flagged.
    """
    base = evals.get("base")
    base_real = _num(base.metrics.get("bleu")) if base else None
    base_swapped = _num(base.metrics.get("bleu_swapped")) if base else None
    base_sampled = _num(base.metrics.get("bleu_sampled_mean")) if base else None
    base_swapped_sampled = _num(base.metrics.get("bleu_swapped_sampled")) if base else None
    rows = []
    for method, ev in evals.items():
        real, swapped = _num(ev.metrics.get("bleu")), _num(ev.metrics.get("bleu_swapped"))
        # The same check on the paper's decoding: the sampled mean with the real audio, one sampled run swapped.
        sampled, swapped_sampled = _num(ev.metrics.get("bleu_sampled_mean")), _num(ev.metrics.get(
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


# --------------------------------------------------------------------------------------------------- curves


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


# --------------------------------------------------------------------------------------------------- paper settings


@dataclass(frozen=True)
class PaperSetting:
    key: str  # a params.yaml key path
    label: str
    paper: Any  # None: the paper does not state it
    paper_text: str


MODEL_SETTINGS = (
    PaperSetting("model.name_or_path", "model", "granite-speech-3.3-2b", "Granite Speech 3.3 2B"),
    PaperSetting("prepare.tasks.sqa.source", "SQA data", "librisqa", "LibriSQA Part I"),
    PaperSetting("prepare.tasks.ast.source", "AST data", "covost2", "CoVoST2 En->De"),
    PaperSetting("model.finetune", "fine-tuning", None, "not stated"),
)
# Compared for both the grpo and the mpgrpo section (keys relative to the section).
GRPO_SETTINGS = (
    PaperSetting("init", "starting model", "base", "the base model"),
    PaperSetting("num_generations", "group size", 8, "8"),
    PaperSetting("beta", "KL coefficient beta", 0.02, "0.02"),
    PaperSetting("temperature", "rollout temperature", 1.0, "1.0"),
    PaperSetting("max_completion_length", "max completion length", 200, "200 tokens"),
    PaperSetting("lr", "learning rate", 1e-6, "1e-6"),
    PaperSetting("loss_type", "loss", "dapo", "DAPO (token-level)"),
    PaperSetting("reward_weights", "reward", {"bleu": 1.0}, "BLEU"),
    PaperSetting("reward_options", "reward details", None, "sentence BLEU; tokenisation, casing, smoothing not stated"),
    PaperSetting("advantage_std_floor", "advantage std floor", 0, "none: (r - mean) / std (LEAF: 1/3)"),
    PaperSetting("max_steps", "training steps", None, "not stated (GRPO on 2B: up to 24 h on 4x H100)"),
)
LATER_SETTINGS = (
    PaperSetting("mpgrpo.num_off_policy", "MP-GRPO off-policy samples per group", 1, "1 (7 on-policy + 1)"),
    PaperSetting("mpgrpo.off_policy_source", "MP-GRPO off-policy sample", "reference", "the reference"),
    PaperSetting("evaluate.temperature", "evaluation temperature", 0.9, "0.9"),
    PaperSetting("evaluate.top_p", "evaluation top-p", 0.9, "0.9"),
    PaperSetting("evaluate.sampled_runs", "sampled evaluation runs", None, "not stated (LEAF: 5)"),
    PaperSetting("sft.max_steps", "SFT steps", None, "searched over 1-10 epochs"),
    PaperSetting("grpo.eval_decoding", "checkpoint selection", None, "best on validation; decoding not stated"),
)


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _same(ours: Any, paper: Any) -> bool:
    if ours is None and paper == 0:
        return True  # a numeric option switched off (advantage_std_floor: null) is the paper's 0
    if isinstance(ours, int | float) and isinstance(paper, int | float) and not isinstance(ours, bool):
        return math.isclose(ours, paper, rel_tol=1e-9)
    if isinstance(paper, str) and isinstance(ours, str):
        return paper.lower() in ours.lower()  # a hub id, or a data path naming the corpus
    return ours == paper


def settings_vs_paper(cfg: Config) -> list[dict[str, Any]]:
    """Every setting the paper states (or leaves open) next to ours, read from the resolved config, with the reason
    params.yaml gives for ours (`report.why`, keyed like the table's params keys)."""
    resolved = to_dict(cfg)
    per_section = [PaperSetting(f"{section}.{s.key}", f"{section}: {s.label}", s.paper, s.paper_text)
                   for section in CURVE_METHODS for s in GRPO_SETTINGS]
    settings = (*MODEL_SETTINGS, *per_section, *LATER_SETTINGS)
    known = [s.key for s in settings]
    unknown = sorted(set(cfg.report.why) - set(known))
    if unknown:
        raise ConfigError("params", [f"report.why.{k}: not a setting the report compares with the paper; use one of "
                                     f"{', '.join(known)}" for k in unknown])
    rows = []
    for s in settings:
        ours = _lookup(resolved, s.key)
        if s.key.endswith(".source") and isinstance(ours, Mapping):
            # The paper's corpus only when the source is real data whose path names it.
            ours = f"{ours.get('kind')}: {ours.get('path')}"
            status = "same" if not ours.startswith("synthetic") and _same(ours, s.paper) else "differs"
        elif s.paper is None:
            status = "left open"
        else:
            status = "same" if _same(ours, s.paper) else "differs"
        rows.append({"key": s.key, "setting": s.label, "paper": s.paper_text, "ours": ours, "status": status,
                     "why": _reason(cfg.report.why, resolved, s.key)})
    return rows


def _reason(why: Mapping[str, str], resolved: Mapping[str, Any], key: str) -> str:
    """`report.why[key]`; an mpgrpo setting inherited unchanged from grpo takes grpo's reason."""
    if key in why:
        return why[key]
    section, _, rest = key.partition(".")
    if section == "mpgrpo" and _lookup(resolved, key) == _lookup(resolved, f"grpo.{rest}"):
        return why.get(f"grpo.{rest}", "")
    return ""


# --------------------------------------------------------------------------------------------------- seeds


def seed_summary(data: Mapping[str, Any], decoding: str = "greedy") -> dict[str, Any]:
    """Mean +- std BLEU over seeds per method and task, and whether base < SFT < GRPO held in every seed.

    `data` is sweeps/seeds.json (steps/seeds.py): {"seeds": [1, 2], "runs": {"1": {"base": {"sqa": 4.1, ...},
    "sft": ...}, ...}}, optionally "swapped" of the same shape with swapped-audio BLEU (seed keys may be ints or
    strings; std is the sample std, ddof=1, 0 for one seed). decoding "sampled" reads the paper's decoding from
    "sampled" and "sampled_swapped" instead. A None score counts as missing.
    """
    runs_key, swapped_key = ("runs", "swapped") if decoding == "greedy" else ("sampled", "sampled_swapped")
    runs = data.get(runs_key)
    if not isinstance(runs, Mapping) or not runs:
        shape = '{"seeds": [...], "' + runs_key + '": {seed: {method: {task: bleu}}}}'
        raise ValueError(f"seeds.json: expected {shape}, got keys {sorted(data)}")
    runs = {str(k): {m: {t: v for t, v in scores.items() if v is not None} for m, scores in methods.items()}
            for k, methods in runs.items()}
    data = {**data, "swapped": {str(k): v for k, v in (data.get(swapped_key) or {}).items()}}
    seeds = [str(s) for s in data.get("seeds", list(runs))]
    absent = [s for s in seeds if s not in runs]
    if absent:
        raise ValueError(f"seeds.json: seeds {absent} are listed but have no entry under runs")
    tasks = sorted({t for s in seeds for scores in runs[s].values() for t in scores},
                   key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t))
    out: dict[str, Any] = {"seeds": seeds, "decoding": decoding, "tasks": {}}
    for task in tasks:
        methods = {}
        for method in [m for m in METHODS if any(task in runs[s].get(m, {}) for s in seeds)]:
            values = [float(runs[s][method][task]) for s in seeds if task in runs[s].get(method, {})]
            methods[method] = {"n": len(values), "values": values, **_mean_std(values)}
            swapped = [data.get("swapped", {}).get(s, {}).get(method, {}).get(task) for s in seeds]
            swapped = [float(v) for v in swapped if v is not None]
            if swapped:
                methods[method]["swapped"] = _mean_std(swapped)
        held, failed, incomplete = [], [], []
        for s in seeds:
            chain = [runs[s].get(m, {}).get(task) for m in SEED_ORDER]
            if any(v is None for v in chain):
                incomplete.append(s)
            elif all(x < y for x, y in itertools.pairwise(chain)):
                held.append(s)
            else:
                failed.append(s)
        out["tasks"][task] = {"methods": methods, "order": " < ".join(LABELS[m] for m in SEED_ORDER),
                              "held_in": held, "failed_in": failed, "incomplete_in": incomplete,
                              "held_every_seed": bool(held) and not failed and not incomplete}
    return out


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


# --------------------------------------------------------------------------------------------------- the report


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
                 n_samples: int, seed: int, n_examples: int = 5, inputs: Sequence[str] = ()) -> dict[str, Any]:
    """Everything report.md shows, as data (report.json); the markdown and the README table are rendered from it."""
    report: dict[str, Any] = {"methods": list(METHODS), "tasks": {}, "bootstrap": {"metric": "bleu", "hypotheses":
                              "greedy", "n_samples": n_samples, "seed": seed, "alpha": ALPHA},
                              "listening_max_ratio": LISTENING_MAX_RATIO}
    for task, evals in evaluations.items():
        present = [m for m in METHODS if m in evals]
        entry: dict[str, Any] = {"present": present, "missing": [m for m in METHODS if m not in evals]}
        if present:
            entry |= {"scores": scores_table(evals), "significance": task_significance(evals, n_samples, seed),
                      "significance_sampled": task_significance(evals, n_samples, seed, "sampled"),
                      "listening": listening_rows(evals),
                      "predictions_missing": [m for m in present if evals[m].predictions is None],
                      "example_ids": pick_examples(evals, n_examples, seed)}
        entry["curves"] = {m: curve_summary(c) for m, c in curves.get(task, {}).items()}
        report["tasks"][task] = entry
    report["settings"] = settings_vs_paper(cfg)
    report["inputs"] = list(inputs)
    return _rounded(report)


def _rounded(data: Any) -> Any:
    """Floats to 6 significant digits: readable JSON that keeps small values (a KL of 3e-4, an lr of 1e-6, p-values)."""
    if isinstance(data, Mapping):
        return {k: _rounded(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_rounded(v) for v in data]
    if isinstance(data, float) and math.isfinite(data):
        return float(f"{data:.6g}")
    return data


# --------------------------------------------------------------------------------------------------- markdown


def fmt(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def fmt_p(p: float | None) -> str:
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _labels(methods: Sequence[str]) -> str:
    return ", ".join(LABELS[m] for m in methods)


def render_markdown(report: Mapping[str, Any]) -> str:
    """report.md, rendered from the report data alone (so report.json holds every number shown)."""
    boot = report["bootstrap"]
    out = ["# speech-grpo: Base vs SFT vs GRPO vs MP-GRPO", "",
           "Generated by `python -m steps.report` from the evaluation files (see Inputs). Scores are on a 0-100 "
           "scale, on the test split, with **greedy** decoding unless said otherwise (the paper reports sampled "
           "decoding, top-p 0.9, temperature 0.9: sampled BLEU mean ± std is given below each table, and its "
           "significance first). Checkpoints were chosen on validation BLEU with `sft/grpo.eval_decoding`.", ""]
    missing = {t: e["missing"] for t, e in report["tasks"].items() if e["missing"]}
    if missing:
        out += ["**Missing**: " + "; ".join(f"{t.upper()}: {_labels(ms)}" for t, ms in missing.items())
                + " (no metrics/<method>/<task>.json yet: run their training and evaluate stages).", ""]
    for task, entry in report["tasks"].items():
        out += [f"## {TASK_TITLES.get(task, task)}", ""]
        if not entry["present"]:
            out += ["No evaluation results for this task.", ""]
            continue
        out += _task_markdown(entry, boot)
    out += _settings_markdown(report["settings"])
    if report.get("plots"):
        out += ["## Plots", "", *[f"![{name}]({name})" for name in report["plots"]], ""]
    out += ["## Inputs", "", *[f"- `{p}`" for p in report.get("inputs", [])], ""]
    return "\n".join(out)


def _task_markdown(entry: Mapping[str, Any], boot: Mapping[str, Any]) -> list[str]:
    scores, present = entry["scores"], entry["present"]
    sizes = sorted({n for n in scores["n"].values() if n is not None})
    out = [f"Test examples: {', '.join(map(str, sizes))}." + (" **Different sizes per method**: "
           + ", ".join(f"{LABELS[m]} {n}" for m, n in scores["n"].items()) if len(sizes) > 1 else ""), ""]
    out += ["### Scores (greedy; in brackets the change relative to Base)", ""]
    marks = {key: f"[^{key}]" for key in scores["skipped"]}
    header = ["", *[name + marks.get(key, "") for key, name in TABLE_METRICS]]
    rows = []
    for m in present:
        cells = [LABELS[m]]
        for key, _ in TABLE_METRICS:
            value = scores["greedy"][m][key]
            rel = scores["relative_to_base_pct"].get(m, {}).get(key)
            cells.append(fmt(value) + (f" ({fmt_pct(rel)})" if m != "base" and value is not None else ""))
        rows.append(cells)
    out += [md_table(header, rows), ""]
    out += [f"[^{key}]: {dict(TABLE_METRICS)[key]} not computed: {reason}" for key, reason in scores["skipped"].items()]
    if scores["skipped"]:
        out.append("")
    sampled_rows = [[LABELS[m], str(s["runs"] if s["runs"] is not None else "n/a"),
                     f"{fmt(s['mean']['bleu'])} ± {fmt(s['std']['bleu'])}"]
                    for m, s in scores["sampled"].items()]
    out += ["Sampled decoding (top-p, temperature from params `evaluate`), BLEU mean ± sample std over runs:", "",
            md_table(["", "runs", "BLEU"], sampled_rows), ""]
    out += _significance_markdown(entry.get("significance_sampled") or [], boot, "sampled")
    out += _significance_markdown(entry["significance"], boot)
    out += _listening_markdown(entry["listening"])
    if entry.get("predictions_missing"):
        out += [f"No predictions file for {_labels(entry['predictions_missing'])}: no significance test for them.",
                ""]
    out += _curves_markdown(entry["curves"])
    return out


def _significance_markdown(tests: Sequence[Mapping[str, Any]], boot: Mapping[str, Any], decoding: str = "greedy"
                           ) -> list[str]:
    what = ("the greedy outputs paired by example id" if decoding == "greedy" else
            "the sampled outputs (the paper's decoding), every run pooled, paired by example id and run")
    out = [f"### Significance, {decoding} (paired bootstrap, sacrebleu, BLEU of {what}, "
           f"{boot['n_samples']} resamples, seed {boot['seed']})", ""]
    if not tests:
        return [*out, "Only one method evaluated: nothing to compare.", ""]
    rows = []
    notes = []
    for t in tests:
        name = f"{LABELS[t['system']]} vs {LABELS[t['baseline']]}"
        if "skipped" in t:
            rows.append([name, *["n/a"] * 6, f"skipped: {t['skipped']}"])
            continue
        ci_a, ci_b = t["baseline_ci95"], t["system_ci95"]
        rows.append([name, fmt(t["baseline_bleu"]), f"[{fmt(ci_a[0])}, {fmt(ci_a[1])}]", fmt(t["system_bleu"]),
                     f"[{fmt(ci_b[0])}, {fmt(ci_b[1])}]", f"{t['delta']:+.2f}", fmt_p(t["p_value"]), t["verdict"]])
        if t.get("note"):
            notes.append(f"- {name}: {t['note']}.")
    out += [md_table(["comparison", "BLEU baseline", "95% CI", "BLEU system", "95% CI", "delta", "p", "verdict"],
                     rows), ""]
    return [*out, *notes, *([""] if notes else [])]


def _listening_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["### Listening check (each example's audio swapped for another example's)", "",
           "A gain is a speech result only if BLEU with swapped audio stays far below BLEU with the real audio and the "
           f"gain over Base shrinks when the audio is swapped. Flagged: swapped-audio BLEU above "
           f"{LISTENING_MAX_RATIO:g} x real-audio BLEU.", ""]
    table = [[LABELS[r["method"]], fmt(r["bleu"]), fmt(r["bleu_swapped"]), fmt(r["gap"]),
              "" if r["method"] == "base" else fmt(r["gain_real"]),
              "" if r["method"] == "base" else fmt(r["gain_swapped"]), "**FLAG**" if r["flagged"] else "ok"]
             for r in rows]
    out += ["Greedy decoding:", "",
            md_table(["", "BLEU real audio", "BLEU swapped audio", "gap", "gain over Base (real)",
                      "gain over Base (swapped)", "flag"], table), ""]
    if any(r.get("bleu_swapped_sampled") is not None for r in rows):
        sampled = [[LABELS[r["method"]], fmt(r["bleu_sampled"]), fmt(r["bleu_swapped_sampled"]),
                    fmt(r["gap_sampled"]),
                    "" if r["method"] == "base" else fmt(r["gain_real_sampled"]),
                    "" if r["method"] == "base" else fmt(r["gain_swapped_sampled"])] for r in rows]
        out += ["The paper's sampled decoding (real audio: mean over the sampled runs; swapped: one sampled run):", "",
                md_table(["", "BLEU real audio", "BLEU swapped audio", "gap", "gain over Base (real)",
                          "gain over Base (swapped)"], sampled), ""]
    return [*out, *[f"- {r['verdict']}" for r in rows], ""]


def _curves_markdown(curves: Mapping[str, Mapping[str, Any]]) -> list[str]:
    out = ["### Training curves", ""]
    missing = [m for m in ("sft", *CURVE_METHODS) if m not in curves]
    if not curves:
        return [*out, "No training curves found (metrics/sft/<task>.train.json, metrics/<method>/<task>.curve.csv).",
                ""]

    def first_last(summary: Mapping[str, Any], key: str) -> str:
        v = summary.get(key)
        return "" if v is None else f"{v['first']:.4g} → {v['last']:.4g}"

    rows = []
    for m, s in curves.items():
        best = s.get("best_val_bleu")
        rows.append([LABELS[m], str(s["points"]), str(s["last_step"] if s["last_step"] is not None else ""),
                     first_last(s, "reward"), first_last(s, "kl"), first_last(s, "completion_length"),
                     first_last(s, "eval_loss"), f"{fmt(best['bleu'])} (step {best['step']})" if best else ""])
    out += ["First → last tenth of the logged points (mean of each).", "",
            md_table(["", "points", "last step", "reward", "KL", "completion length", "validation loss",
                      "best validation BLEU"], rows), ""]
    if missing:
        out += [f"No curve for {_labels(missing)}.", ""]
    return out


def _settings_markdown(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    differs = [s for s in settings if s["status"] != "same"]
    same = [s for s in settings if s["status"] == "same"]
    rows = [[s["setting"], f"`{s['key']}`", s["paper"], f"`{s['ours']}`", s["status"],
             s.get("why") or ("not given (add `report.why`)" if s["status"] == "differs" else "")] for s in differs]
    out = ["## Settings that differ from the paper", "",
           "The paper: Granite Speech 3.3 2B, GRPO from the base model, group size 8, beta 0.02, temperature 1.0, "
           "max completion 200 tokens, lr 1e-6, DAPO loss; evaluation with top-p 0.9, temperature 0.9. Ours, from "
           "the resolved config of this run, and why (params `report.why`):", "",
           md_table(["setting", "params key", "paper", "ours", "", "why"], rows), ""]
    if same:
        out += ["As in the paper: " + "; ".join(f"{s['setting']} ({s['paper']})" for s in same) + ".", ""]
    return out


def seeds_markdown(data: Mapping[str, Any]) -> list[str]:
    """The seed section of sweeps/seeds.md and the README, from seeds.json's content: the paper's sampled decoding
    first (when the sweep has it), then greedy."""
    out = [f"## Seeds ({len(data['seeds'])}: {', '.join(map(str, data['seeds']))})", ""]
    if any(v is not None for methods in (data.get("sampled") or {}).values() for scores in methods.values()
           for v in scores.values()):
        out += _seeds_markdown(seed_summary(data, "sampled"))
        if data.get("note"):
            out += [f"({data['note']}.)", ""]
    return out + _seeds_markdown(seed_summary(data))


def _seeds_markdown(seeds: Mapping[str, Any]) -> list[str]:
    sampled = seeds.get("decoding") == "sampled"
    what = "the paper's decoding (top-p 0.9, temperature 0.9, mean over sampled runs)" if sampled else "greedy"
    out = [f"Test-split BLEU, {what}: mean ± sample std over seeds, each seed's value, and the same with each "
           "example's audio swapped for another's.", ""]
    for task, entry in seeds["tasks"].items():
        rows = [[LABELS[m], f"{fmt(s['mean'])} ± {fmt(s['std'])}", ", ".join(fmt(v) for v in s["values"]),
                 f"{fmt(s['swapped']['mean'])} ± {fmt(s['swapped']['std'])}" if "swapped" in s else "n/a"]
                for m, s in entry["methods"].items()]
        out += [f"### {task.upper()}, {'paper' if sampled else 'greedy'} decoding", "",
                md_table(["", "BLEU", "per seed", "BLEU swapped audio"], rows), ""]
        held = "held in every seed" if entry["held_every_seed"] else "did **not** hold in every seed"
        detail = []
        if entry["failed_in"]:
            detail.append(f"failed in {seed_list(entry['failed_in'])}")
        if entry["incomplete_in"]:
            detail.append(f"a method missing in {seed_list(entry['incomplete_in'])}")
        out += [f"Ordering {entry['order']}: {held}" + (f" ({'; '.join(detail)})" if detail else "") + ".", ""]
    return out


def seed_list(seeds: Sequence[str]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(seeds)


def render_examples(evaluations: Mapping[str, Mapping[str, Evaluation]], report: Mapping[str, Any]) -> str:
    """examples.md: the chosen test examples of each task with every method's greedy and swapped-audio output."""
    out = ["# Example predictions", "", "The same test examples for every method (greedy decoding; swapped: the same "
           "prompt with another example's audio).", ""]
    for task, evals in evaluations.items():
        ids = report["tasks"][task].get("example_ids") or []
        if not ids:
            continue
        out += [f"## {TASK_TITLES.get(task, task)}", ""]
        rows = {m: {r["id"]: r for r in e.predictions} for m, e in evals.items() if e.predictions is not None}
        for ex_id in ids:
            first = next(iter(rows.values()))[ex_id]
            out += [f"### `{ex_id}`", "", f"- prompt: `{_one_line(first.get('prompt', ''))}`",
                    f"- reference: **{_one_line(first['reference'])}**", ""]
            table = [[LABELS[m], _cell(r[ex_id].get("greedy", "")), _cell(r[ex_id].get("swapped", ""))]
                     for m, r in rows.items()]
            out += [md_table(["", "greedy", "swapped audio"], table), ""]
    return "\n".join(out)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cell(text: str) -> str:
    # Pipes end a table cell in markdown, even inside code.
    return _one_line(text).replace("|", "\\|")


# --------------------------------------------------------------------------------------------------- README


def readme_table(report: Mapping[str, Any]) -> str:
    """Compact per-task tables for the README: greedy BLEU, swapped-audio BLEU, sampled BLEU, p vs the previous row."""
    out = []
    for task, entry in report["tasks"].items():
        rows = []
        for m in METHODS:
            if m not in entry["present"]:
                rows.append([LABELS[m], "missing", "", "", "", "", ""])
                continue
            row = next(r for r in entry["listening"] if r["method"] == m)
            sampled = entry["scores"]["sampled"][m]
            mean, std = sampled["mean"].get("bleu"), sampled["std"].get("bleu")
            rows.append([LABELS[m], f"{fmt(mean)} ± {fmt(std)}" if mean is not None else "n/a",
                         fmt(row.get("bleu_swapped_sampled")),
                         _p_vs_previous(entry.get("significance_sampled") or [], m, entry["present"]),
                         fmt(row["bleu"]), fmt(row["bleu_swapped"]),
                         _p_vs_previous(entry.get("significance") or [], m, entry["present"])])
        out += [f"**{task.upper()}**", "",
                md_table(["method", "BLEU (paper's decoding)", "swapped audio", "p vs previous", "BLEU greedy",
                          "swapped audio", "p vs previous"], rows), ""]
    boot = report["bootstrap"]
    note = (f"Test split. BLEU (paper's decoding): top-p 0.9, temperature 0.9, mean ± std over the sampled runs, as "
            f"the paper reports; greedy: the mode, for reference. Swapped audio: the same decoding with each example's "
            f"audio replaced by another's (one sampled run; a model that listens drops far). p: paired bootstrap on "
            f"BLEU ({boot['n_samples']} resamples) against the previous row (sampled: every run pooled, paired by "
            "example and run). Generated from reports/report.json by `python -m steps.report --readme`.")
    return "\n".join(out) + "\n" + note


def _p_vs_previous(tests: Sequence[Mapping[str, Any]], method: str, present: Sequence[str]) -> str:
    test = next((t for t in tests if t["system"] == method and "skipped" not in t
                 and t["baseline"] == _previous(method, present)), None)
    return f"{fmt_p(test['p_value'])} (vs {LABELS[test['baseline']]})" if test else ""


def _previous(method: str, present: Sequence[str]) -> str | None:
    chain = [m for m in METHODS if m in present]
    i = chain.index(method)
    return chain[i - 1] if i > 0 else None


def replace_between_markers(text: str, content: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> str:
    """`text` with everything between the begin and end markers replaced by `content` (markers kept)."""
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"README needs exactly one {begin!r} and one {end!r} line (found {text.count(begin)} and "
                         f"{text.count(end)}); add them where the results table belongs")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    if end in head:
        raise ValueError(f"{end!r} comes before {begin!r} in the README; put begin first")
    return f"{head}{begin}\n{content}\n{end}{tail}"


def update_readme(readme: Path, report_json: Path, seeds_json: Path | None = None) -> Path:
    """Replace the README's marked blocks with the tables from report.json and seeds.json (nothing is recomputed)."""
    if not report_json.is_file():
        raise FileNotFoundError(f"{report_json} not found: run `python -m steps.report` (or `dvc repro report`) first")
    if not readme.is_file():
        raise FileNotFoundError(f"{readme} not found")
    table = readme_table(json.loads(report_json.read_text(encoding="utf-8")))
    text = replace_between_markers(readme.read_text(encoding="utf-8"), table)
    if seeds_json is not None and seeds_json.is_file():
        seeds = json.loads(seeds_json.read_text(encoding="utf-8"))
        section = "\n".join(seeds_markdown(seeds)[2:]).strip()  # without its heading: the README has its own
        text = replace_between_markers(text, section + f"\n\nGenerated from {seeds_json.name} by "
                                       "`python -m steps.report --readme`.", SEEDS_BEGIN, SEEDS_END)
    return atomic_write_text(readme, text)


# --------------------------------------------------------------------------------------------------- plots


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
            fig = _curve_figure(plt, task, curves.get(task, {}))
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


def _curve_figure(plt: Any, task: str, curves: Mapping[str, Mapping[str, Sequence[Any]]]) -> Any:
    """One panel per training signal that was logged (reward, KL, length, validation BLEU); None if none was."""
    panels = [(col, title) for col, title in CURVE_PANELS if any(_curve_points(c, col) for c in curves.values())]
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


# --------------------------------------------------------------------------------------------------- stage


def run_report(cfg: Config, metrics_dir: Path, out_dir: Path, *, n_samples: int | None = None,
               seed: int | None = None, n_examples: int | None = None) -> dict[str, Any]:
    """Build and write reports/{report.md, report.json, examples.md, plots/}; log them to MLflow. Returns the data."""
    from steps.tracking import stage_run

    n_samples = cfg.report.bootstrap_samples if n_samples is None else n_samples
    seed = cfg.seed if seed is None else seed
    n_examples = cfg.report.examples if n_examples is None else n_examples
    root = metrics_dir.parent
    with stage_run(cfg, stage="report") as run:
        evaluations = load_evaluations(metrics_dir)
        inputs = [ev.metrics_path for evals in evaluations.values() for ev in evals.values()]
        inputs += [ev.predictions_path for evals in evaluations.values() for ev in evals.values() if ev.predictions]
        curves = {}
        for task in evaluations:
            curves[task], read = load_curves(metrics_dir, task)
            inputs += read
        report = build_report(evaluations, curves, cfg, n_samples=n_samples, seed=seed, n_examples=n_examples,
                              inputs=[_relative_path(p, root) for p in inputs])
        report["plots"] = [f"plots/{name}" for name in write_plots(report, curves, out_dir / "plots")]
        atomic_write_text(out_dir / "examples.md", render_examples(evaluations, report))
        write_json(out_dir / "report.json", report)
        atomic_write_text(out_dir / "report.md", render_markdown(report))
        run.log_metrics(headline_metrics(report))
        for name in ("report.md", "report.json", "examples.md", "plots"):
            run.log_artifact(out_dir / name, "report" if name != "plots" else "report/plots")
            run.log_artifact_to_parent(out_dir / name, "report" if name != "plots" else "report/plots")
    present = {t: e["present"] for t, e in report["tasks"].items()}
    print(f"report: {present} -> {out_dir / 'report.md'}", flush=True)
    return report


def _relative_path(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def headline_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers worth comparing across pipeline runs in MLflow: BLEU, swapped BLEU and p-values per task."""
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
                out[f"{task}/{t['system']}_vs_{t['baseline']}/delta_bleu{suffix}"] = t["delta"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true",
                        help="only copy the compact table from reports/report.json into README.md between "
                             f"{MARK_BEGIN} and {MARK_END}")
    parser.add_argument("--readme-path", default=None, help="the README to update (default: README.md beside params)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.params).resolve().parent
    out_dir = root / cfg.paths.reports
    if args.readme:
        readme = Path(args.readme_path) if args.readme_path else root / "README.md"
        try:
            update_readme(readme, out_dir / "report.json", root / "sweeps" / "seeds.json")
        except (ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"report --readme: {exc}") from exc
        print(f"report: results table updated in {readme}", flush=True)
        return
    run_report(cfg, root / cfg.paths.metrics, out_dir)


if __name__ == "__main__":
    main()
