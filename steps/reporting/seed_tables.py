"""The seed sweep's summary: each seed's BLEU per method and task, mean +- std, and whether base < SFT < GRPO held.

`collect` reads the pipeline's metrics/ (the first seed) and sweeps/runs/seed-<n>/metrics (the others) into
sweeps/seeds.json's data; `pooled_significance` tests GRPO and MP-GRPO against SFT on every seed's outputs at once
(a paired bootstrap that resamples test examples, each with all its seeds' and runs' outputs: they share the audio
and the question, so they are not independent evidence); `seeds_markdown` renders sweeps/seeds.md and the README's
seed section from it.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steps.core.config import TASKS, Config
from steps.core.io import atomic_write_text, read_jsonl, write_json
from steps.core.paths import RunPaths, evaluation_file, predictions_file
from steps.evaluation.significance import clustered_paired_bootstrap
from steps.reporting.analysis import ALPHA, PAPER_GAINS, verdict
from steps.reporting.evaluations import LABELS, METHODS
from steps.reporting.markdown import fmt, fmt_p, md_table

SEED_ORDER = ("base", "sft", "grpo")
POOLED_COMPARISONS = (("sft", "grpo"), ("sft", "mpgrpo"), ("sft_matched", "grpo"), ("sft_matched", "mpgrpo"))
# seeds.json's tables and the metrics-file key each is read from: greedy BLEU with the real and the swapped audio,
# and the paper's sampled decoding (mean over the evaluation's sampled runs; one sampled run on swapped audio).
SCORE_TABLES = {"runs": "bleu", "swapped": "bleu_swapped", "sampled": "bleu_sampled_mean",
                "sampled_swapped": "bleu_swapped_sampled"}


def scores_of(metrics_dir: Path, method: str, task: str) -> dict[str, float | None]:
    """Each SCORE_TABLES score (None when not computed) from an evaluate stage's metrics/<method>/<task>.json."""
    path = evaluation_file(metrics_dir, method, task)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: evaluate {method} on {task} first (`dvc repro`)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("bleu") is None:
        raise ValueError(f"{path} has no greedy BLEU (evaluate.greedy: false?); the sweep compares greedy BLEU too")
    return {table: None if data.get(key) is None else float(data[key]) for table, key in SCORE_TABLES.items()}


def collect(cfg: Config, root: Path, runs_dir: Path, tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    """seeds.json's content: the pipeline's seed from metrics/, every extra seed from runs_dir/seed-<n>/metrics."""
    dirs = seed_metrics_dirs(cfg, root, runs_dir)
    seeds = [cfg.seed, *cfg.sweep.seeds]
    tables: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {t: {} for t in SCORE_TABLES}
    for seed in seeds:
        metrics = dirs[str(seed)]
        for method in METHODS:
            # the base model is shared by every seed: its scores are the pipeline's
            source = dirs[str(cfg.seed)] if method == "base" else metrics
            for task in tasks:
                for table, value in scores_of(source, method, task).items():
                    tables[table].setdefault(str(seed), {}).setdefault(method, {})[task] = value
    note = (f"seed {cfg.seed} is the pipeline's run (dvc repro; {cfg.evaluate.sampled_runs} sampled runs); the other "
            f"seeds' sampled BLEU is over {cfg.sweep.sampled_runs} run(s); base is pretrained once")
    return {"seeds": [str(s) for s in seeds], **tables, "note": note}


class NoOutputs(ValueError):
    """A seed's predictions lack the decoding asked for (e.g. no sampled runs: sweep.sampled_runs 0)."""


def seed_metrics_dirs(cfg: Config, root: Path, runs_dir: Path) -> dict[str, Path]:
    """Each seed's metrics folder: the pipeline's metrics/ for its own seed, runs_dir/seed-<n>/metrics for the rest."""
    paths = RunPaths.of(cfg, root)
    return {str(s): (paths if s == cfg.seed else paths.under(seed_folder(runs_dir, s))).metrics
            for s in (cfg.seed, *cfg.sweep.seeds)}


def seed_folder(runs_dir: Path, seed: int) -> Path:
    """One extra seed's models and metrics (sweeps/runs/seed-<n>)."""
    return runs_dir / f"seed-{seed}"


def outputs_by_example(dirs: Mapping[str, Path], method: str, task: str, decoding: str
                       ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """{example id: every seed's outputs (greedy: one per seed; sampled: each seed's runs)}, {id: reference}."""
    outputs: dict[str, list[str]] = {}
    refs: dict[str, str] = {}
    for seed, metrics in dirs.items():
        path = predictions_file(metrics, method, task)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (seed {seed}): evaluate {method} on {task} first")
        for row in read_jsonl(path):
            found = [row["greedy"]] if decoding == "greedy" and "greedy" in row else list(row.get("sampled") or [])
            if not found:
                raise NoOutputs(f"{path}: example {row['id']!r} has no {decoding} output")
            outputs.setdefault(row["id"], []).extend(found)
            if refs.setdefault(row["id"], row["reference"]) != row["reference"]:
                raise ValueError(f"{path}: example {row['id']!r} has another reference than in the other seeds")
    return outputs, refs


def pooled_significance(cfg: Config, root: Path, runs_dir: Path, tasks: tuple[str, ...] = TASKS
                        ) -> dict[str, list[dict[str, Any]]]:
    """GRPO and MP-GRPO against SFT over every seed at once, per task and decoding (examples as clusters)."""
    dirs = seed_metrics_dirs(cfg, root, runs_dir)
    out: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        for decoding in ("sampled", "greedy"):
            for baseline, system in POOLED_COMPARISONS:
                try:
                    a, refs = outputs_by_example(dirs, baseline, task, decoding)
                    b, refs_b = outputs_by_example(dirs, system, task, decoding)
                except NoOutputs as exc:
                    out.setdefault(task, []).append({"baseline": baseline, "system": system, "decoding": decoding,
                                                     "skipped": str(exc)})
                    continue
                if set(a) != set(b) or refs != refs_b:
                    raise ValueError(f"{task}: {baseline} and {system} were not evaluated on the same examples")
                ids = sorted(a)
                test = clustered_paired_bootstrap([a[i] for i in ids], [b[i] for i in ids], [refs[i] for i in ids],
                                                  n_samples=cfg.report.bootstrap_samples, seed=cfg.seed)
                gain = PAPER_GAINS.get(task)
                out.setdefault(task, []).append({
                    "baseline": baseline, "system": system, "decoding": decoding, "n": len(ids),
                    "outputs_per_example": test["b"]["outputs"] // len(ids), "seeds": list(dirs),
                    "baseline_bleu": test["a"]["score"], "system_bleu": test["b"]["score"], "delta": test["delta"],
                    "p_value": test["p_value"], "significant": test["p_value"] < ALPHA,
                    "verdict": verdict(baseline, system, test["delta"], test["p_value"]), "mde": test["mde"],
                    "paper_gain": gain, "n_samples": test["n_samples"], "seed": test["seed"]})
    return out


def pooled_markdown(pooled: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    if not pooled:
        return []
    rows = [[task.upper(), t["decoding"], f"{LABELS[t['system']]} vs {LABELS[t['baseline']]}",
             *([f"skipped: {t['skipped']}", *[""] * 7] if "skipped" in t else [
                 str(t["n"]), str(t["outputs_per_example"]), fmt(t["baseline_bleu"]), fmt(t["system_bleu"]),
                 f"{t['delta']:+.2f}", fmt_p(t["p_value"]), fmt(t["mde"]),
                 "" if t.get("paper_gain") is None else f"{t['paper_gain']:+.2f}"])]
            for task, tests in pooled.items() for t in tests]
    return ["### Pooled over seeds", "",
            "Corpus BLEU over every seed's test outputs together; p: paired bootstrap resampling test examples, each "
            "with all its seeds' (and sampled runs') outputs, so that correlated outputs of one example are not "
            "counted as independent evidence; MDE: the smallest difference detectable with 80% power at p < 0.05.",
            "", md_table(["task", "decoding", "comparison", "examples", "outputs each", "BLEU baseline",
                          "BLEU system", "delta", "p", "MDE 80%", "paper's 2B gain"], rows), ""]


def write_summary(data: Mapping[str, Any], out_dir: Path) -> None:
    write_json(out_dir / "seeds.json", data)
    atomic_write_text(out_dir / "seeds.md", "# Seed sweep\n\n" + "\n".join(seeds_markdown(data)))


def seed_summary(data: Mapping[str, Any], decoding: str = "greedy") -> dict[str, Any]:
    """Mean +- std BLEU over seeds per method and task, and whether base < SFT < GRPO held in every seed.

    `data` is sweeps/seeds.json (`collect`): {"seeds": [1, 2], "runs": {"1": {"base": {"sqa": 4.1, ...},
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


def seeds_markdown(data: Mapping[str, Any]) -> list[str]:
    """The seed section of sweeps/seeds.md and the README, from seeds.json's content: the paper's sampled decoding
    first (when the sweep has it), then greedy."""
    out = [f"## Seeds ({len(data['seeds'])}: {', '.join(map(str, data['seeds']))})", ""]
    if any(v is not None for methods in (data.get("sampled") or {}).values() for scores in methods.values()
           for v in scores.values()):
        out += _seeds_markdown(seed_summary(data, "sampled"))
        if data.get("note"):
            out += [f"({data['note']}.)", ""]
    return out + _seeds_markdown(seed_summary(data)) + pooled_markdown(data.get("pooled") or {})


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
