"""GRPO's training curve: the signals TRL logs at every step (reward, KL, entropy, completion length, clip ratio,
zero-variance groups, on- and off-policy reward) and validation BLEU, kept per step and written as
metrics/<method>/<task>.curve.csv (a DVC plot; the report reads it)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from steps.core.tracking import StageRun
from steps.training.runner import StepMetrics

CURVE_COLUMNS = ("step", "reward", "reward_std", "kl", "entropy", "completion_length", "clip_ratio",
                 "frac_reward_zero_std", "reward_on_policy", "reward_off_policy", "val_bleu")
# TRL log key -> curve column
CURVE_KEYS = {"reward": "reward", "reward_std": "reward_std", "kl": "kl", "entropy": "entropy",
              "completions/mean_length": "completion_length", "clip_ratio/region_mean": "clip_ratio",
              "frac_reward_zero_std": "frac_reward_zero_std", "rewards/on_policy/mean": "reward_on_policy",
              "rewards/off_policy/mean": "reward_off_policy", "eval_bleu": "val_bleu"}


class CurveMetrics(StepMetrics):
    """StepMetrics that also keeps the training curve's signals (CURVE_KEYS) of every logged step."""

    def __init__(self, run: StageRun, section: str, curve: list[dict[str, float]]) -> None:
        super().__init__(run, section)
        self.curve = curve

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        super().on_log(args, state, control, logs, **kwargs)
        point = {CURVE_KEYS[k]: v for k, v in self.numbers(logs).items() if k in CURVE_KEYS}
        if point:
            self.curve.append({"step": state.global_step, **point})


def curve_csv(points: Sequence[dict[str, float]]) -> str:
    """One row per step (points of the same step merged), in CURVE_COLUMNS; missing values are empty cells."""
    merged: dict[int, dict[str, float]] = {}
    for point in points:
        merged.setdefault(int(point["step"]), {}).update(point)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for step in sorted(merged):
        writer.writerow({c: merged[step].get(c, "") for c in CURVE_COLUMNS})
    return buffer.getvalue()
