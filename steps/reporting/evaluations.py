"""The report's inputs: each method's evaluation files and training curves, read from metrics/.

Reads metrics/<method>/<task>.json and .predictions.jsonl (steps/evaluation/evaluator.py), the training curves
metrics/{grpo,mpgrpo}/<task>.curve.csv, SFT's validation points in metrics/sft/<task>.train.json and every training
stage's measured compute (metrics/<method>/<task>.train.json's `compute`) where they exist.
Works with whatever methods have been evaluated (at least base) and says which are missing.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import GRPO_METHODS, MODELS, TASKS
from steps.core.config import METHODS as TRAINED_METHODS
from steps.core.io import read_jsonl
from steps.core.paths import curve_file, evaluation_file, predictions_file, train_summary_file

METHODS = MODELS  # the report's rows: base and every post-training method, in this order
LABELS = {"base": "Base", "sft": "SFT", "sft_matched": "SFT (matched compute)", "grpo": "GRPO", "mpgrpo": "MP-GRPO",
          "grpo_base": "GRPO (from base)"}
CURVE_METHODS = GRPO_METHODS  # with a metrics/<method>/<task>.curve.csv


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
            path = evaluation_file(metrics_dir, method, task)
            if not path.is_file():
                continue
            preds = predictions_file(metrics_dir, method, task)
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
    sft = train_summary_file(metrics_dir, "sft", task)
    if sft.is_file():
        points = json.loads(sft.read_text(encoding="utf-8")).get("validation") or []
        curves["sft"] = {"step": [number_or_none(p.get("step")) for p in points],
                         "val_bleu": [number_or_none(p.get("eval_bleu")) for p in points],
                         "eval_loss": [number_or_none(p.get("eval_loss")) for p in points]}
        read.append(sft)
    for method in CURVE_METHODS:
        path = curve_file(metrics_dir, method, task)
        if path.is_file():
            curves[method] = read_curve_csv(path)
            read.append(path)
    return curves, read


def number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def load_compute(metrics_dir: Path, task: str) -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """Each training stage's measured compute on one task ({method: compute}, with sft_matched's `matched` record),
    from the metrics/<method>/<task>.train.json that exist and hold one."""
    out: dict[str, dict[str, Any]] = {}
    read: list[Path] = []
    for method in TRAINED_METHODS:
        path = train_summary_file(metrics_dir, method, task)
        if not path.is_file():
            continue
        summary = json.loads(path.read_text(encoding="utf-8"))
        if summary.get("compute"):
            out[method] = {**summary["compute"], **({"matched": summary["matched"]} if "matched" in summary else {})}
            read.append(path)
    return out, read
