"""The seed sweep's summary: each seed's BLEU per method and task, mean +- std, and whether base < SFT < GRPO held.

`collect` reads the pipeline's metrics/ (the first seed) and sweeps/runs/seed-<n>/<task>/metrics (the others) into
sweeps/seeds.json's data; `pooled_significance` tests GRPO and MP-GRPO against SFT on every seed's outputs at once
(a two-sided paired bootstrap that resamples seeds, as a random effect, and test examples, each with all its outputs:
they share the audio and the question, so they are not independent evidence; Holm over the pooled table);
`seeds_markdown` renders sweeps/seeds.md and the README's seed section from it; `summarize_sweep` does all of it (the
seed summary stage, after every seed's runs).
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
from steps.core.seed_runs import seed_run_folder
from steps.evaluation.significance import seed_paired_bootstrap
from steps.reporting.analysis import ALPHA, PAPER_GAINS, holm_family
from steps.reporting.evaluations import LABELS
from steps.reporting.markdown import delta_cell, fmt, fmt_p, md_table, mde_cell

# The models every seed has (steps/training/seed_sweep.py repeats these; base is shared): grpo_base is not repeated.
METHODS = ("base", "sft", "sft_matched", "grpo", "mpgrpo")

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
    """seeds.json's content: the pipeline's seed from metrics/, every extra seed from
    runs_dir/seed-<n>/<task>/metrics."""
    seeds = [cfg.seed, *cfg.sweep.seeds]
    tables: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {t: {} for t in SCORE_TABLES}
    for task in tasks:
        dirs = seed_metrics_dirs(cfg, root, runs_dir, task)
        for seed in seeds:
            for method in METHODS:
                # the base model is shared by every seed: its scores are the pipeline's
                source = dirs[str(cfg.seed)] if method == "base" else dirs[str(seed)]
                for table, value in scores_of(source, method, task).items():
                    tables[table].setdefault(str(seed), {}).setdefault(method, {})[task] = value
    note = (f"seed {cfg.seed} is the pipeline's run (dvc repro; {cfg.evaluate.sampled_runs} sampled runs); the other "
            f"seeds' sampled BLEU is over {cfg.sweep.sampled_runs} run(s); base is pretrained once")
    return {"seeds": [str(s) for s in seeds], **tables, "note": note}


class NoOutputs(ValueError):
    """A seed's predictions lack the decoding asked for (e.g. no sampled runs: sweep.sampled_runs 0)."""


def seed_metrics_dirs(cfg: Config, root: Path, runs_dir: Path, task: str) -> dict[str, Path]:
    """Each seed's metrics folder for `task`: the pipeline's metrics/ for its own seed,
    runs_dir/seed-<n>/<task>/metrics for the rest."""
    paths = RunPaths.of(cfg, root)
    return {str(s): (paths if s == cfg.seed else paths.under(seed_run_folder(runs_dir, s, task))).metrics
            for s in (cfg.seed, *cfg.sweep.seeds)}


def outputs_by_example(dirs: Mapping[str, Path], method: str, task: str, decoding: str
                       ) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """{seed: {example id: that seed's outputs (greedy: one; sampled: its runs)}}, {id: reference}."""
    outputs: dict[str, dict[str, list[str]]] = {}
    refs: dict[str, str] = {}
    for seed, metrics in dirs.items():
        path = predictions_file(metrics, method, task)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (seed {seed}): evaluate {method} on {task} first")
        for row in read_jsonl(path):
            found = [row["greedy"]] if decoding == "greedy" and "greedy" in row else list(row.get("sampled") or [])
            if not found:
                raise NoOutputs(f"{path}: example {row['id']!r} has no {decoding} output")
            outputs.setdefault(seed, {}).setdefault(row["id"], []).extend(found)
            if refs.setdefault(row["id"], row["reference"]) != row["reference"]:
                raise ValueError(f"{path}: example {row['id']!r} has another reference than in the other seeds")
    return outputs, refs


def pooled_significance(cfg: Config, root: Path, runs_dir: Path, tasks: tuple[str, ...] = TASKS
                        ) -> dict[str, list[dict[str, Any]]]:
    """GRPO and MP-GRPO against SFT (and SFT with matched compute) over every seed at once, per task and decoding.

    Seeds are a random effect: the two-sided bootstrap resamples seeds and test examples (`seed_paired_bootstrap`), so
    the p-value and the interval include the spread between trained models, not only the test set's. Every seed
    contributes the same number of outputs per example (the fewest any seed has: the pipeline's seed may have more
    sampled runs than the sweep's), so that no seed weighs more. Holm's correction runs over the whole pooled table
    (every task, decoding and comparison), its one family. The same test with the seeds fixed (every seed once) is
    kept as `fixed_seeds`, to show what treating the three trained models as the only ones would claim.
    """
    tests: list[dict[str, Any]] = []
    for task in tasks:
        dirs = seed_metrics_dirs(cfg, root, runs_dir, task)
        for decoding in ("sampled", "greedy"):
            for baseline, system in POOLED_COMPARISONS:
                try:
                    a, refs = outputs_by_example(dirs, baseline, task, decoding)
                    b, refs_b = outputs_by_example(dirs, system, task, decoding)
                except NoOutputs as exc:
                    tests.append({"task": task, "baseline": baseline, "system": system, "decoding": decoding,
                                  "skipped": str(exc)})
                    continue
                if any(set(a[s]) != set(b[s]) or set(a[s]) != set(refs) for s in dirs) or refs != refs_b:
                    raise ValueError(f"{task}: {baseline} and {system} were not evaluated on the same examples in "
                                     "every seed")
                ids = sorted(refs)
                runs = min(len(outs[s][i]) for outs in (a, b) for s in dirs for i in ids)
                hyps_a = [[a[s][i][:runs] for i in ids] for s in dirs]
                hyps_b = [[b[s][i][:runs] for i in ids] for s in dirs]
                ref_list = [refs[i] for i in ids]
                n_samples = cfg.report.bootstrap_samples
                test = seed_paired_bootstrap(hyps_a, hyps_b, ref_list, n_samples=n_samples, seed=cfg.seed,
                                             alpha=ALPHA, seeds="random")
                fixed = seed_paired_bootstrap(hyps_a, hyps_b, ref_list, n_samples=n_samples, seed=cfg.seed,
                                              alpha=ALPHA, seeds="fixed")
                tests.append({
                    "task": task, "baseline": baseline, "system": system, "decoding": decoding, "n": len(ids),
                    "seeds": list(dirs), "runs_per_seed": runs, "outputs_per_example": runs * len(dirs),
                    "clusters": test["clusters"], "baseline_bleu": test["a"]["score"],
                    "system_bleu": test["b"]["score"], "delta": test["delta"], "delta_ci95": test["delta_ci"],
                    "p_value": test["p_value"], "test": "two-sided", "delta_se": test["delta_se"], "mde": test["mde"],
                    "paper_gain": PAPER_GAINS.get(task), "n_samples": test["n_samples"], "seed": test["seed"],
                    "fixed_seeds": {"p_value": fixed["p_value"], "delta_ci95": fixed["delta_ci"],
                                    "delta_se": fixed["delta_se"]}})
    holm_family(tests, "pooled over seeds: every task, decoding and comparison")
    out: dict[str, list[dict[str, Any]]] = {}
    for t in tests:
        out.setdefault(t.pop("task"), []).append(t)
    return out


def pooled_markdown(pooled: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    if not pooled:
        return []
    rows = [[task.upper(), t["decoding"], f"{LABELS[t['system']]} vs {LABELS[t['baseline']]}",
             *([f"skipped: {t['skipped']}", *[""] * 8] if "skipped" in t else [
                 str(t["n"]), f"{len(t['seeds'])} x {t['runs_per_seed']}", fmt(t["baseline_bleu"]),
                 fmt(t["system_bleu"]), delta_cell(t), fmt_p(t["p_value"]), fmt_p(t["p_holm"]), mde_cell(t),
                 "" if t.get("paper_gain") is None else f"{t['paper_gain']:+.2f}"])]
            for task, tests in pooled.items() for t in tests]
    m = next((t["family_size"] for tests in pooled.values() for t in tests if "family_size" in t), 0)
    return ["### Pooled over seeds", "",
            "Corpus BLEU over every seed's test outputs together (each seed the same number of outputs per example). "
            "p: two-sided paired bootstrap with the seeds as a random effect: each resample draws seeds with "
            "replacement and test examples with replacement, and takes every output of each drawn seed and example, "
            "so that neither the trained models nor the outputs of one example count as more evidence than they are; "
            f"Holm: adjusted over the {m} comparisons of this table. delta's 95% interval is dual to the test. "
            f"MDE 80%: the smallest difference the two-sided test detects with 80% power at {ALPHA:g} alone / at "
            f"{ALPHA:g}/{m} (Holm's level for the table's smallest p). With three seeds no bootstrap sees the spread "
            "between trained models well: docs/statistics.md gives this test's measured false-positive rates.",
            "", md_table(["task", "decoding", "comparison", "examples", "seeds x runs", "BLEU baseline",
                          "BLEU system", "delta [95% CI]", "p (two-sided)", "p (two-sided, Holm)",
                          "MDE 80% (alone / Holm)", "paper's 2B gain"], rows), ""]


def write_summary(data: Mapping[str, Any], out_dir: Path) -> None:
    write_json(out_dir / "seeds.json", data)
    atomic_write_text(out_dir / "seeds.md", "# Seed sweep\n\n" + "\n".join(seeds_markdown(data)))


def summarize_sweep(cfg: Config, root: Path, sweeps_dir: Path, tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    """seeds.json and seeds.md from the pipeline's run and every seed's runs in sweeps_dir/runs (all must exist)."""
    data = collect(cfg, root, sweeps_dir / "runs", tasks)
    data["pooled"] = pooled_significance(cfg, root, sweeps_dir / "runs", tasks)
    write_summary(data, sweeps_dir)
    print(f"seeds: {data['seeds']} -> {sweeps_dir / 'seeds.md'}", flush=True)
    return data


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
