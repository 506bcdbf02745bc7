"""Which evaluation a training run keeps, and when it has reached its validation plateau.

A run's validation history holds the start model's evaluation (step 0) and one every `eval_every` steps. The run
stops at its plateau: once `patience` evaluations in a row have not beaten, by more than `min_delta` BLEU, the last
evaluation that did (Keras' EarlyStopping rule: slow steady gains still add up and count). The evaluation kept is the
best on the selection score (BLEU; among equal BLEU the lower validation loss, where one is recorded), the earliest on
ties, the start model included: a post-training run that never beats its start keeps the start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

# BLEU has 2 meaningful decimals; 1e-4 x loss only breaks ties between equal BLEU.
SELECTION_LOSS_WEIGHT = 1e-4


def selection_score(entry: dict[str, float]) -> float:
    loss = entry.get("eval_loss", math.nan)
    return entry["eval_bleu"] - (SELECTION_LOSS_WEIGHT * loss if math.isfinite(loss) else 0.0)


@dataclass(frozen=True)
class Plateau:
    best_step: int  # the evaluation kept (earliest of the best selection scores)
    best_bleu: float
    since_improvement: int  # evaluations since the last gain of more than min_delta over the best so far
    reached: bool

    def as_dict(self, patience: int | None, min_delta: float) -> dict[str, Any]:
        return {"patience": patience, "min_delta": min_delta, "since_improvement": self.since_improvement,
                "reached": self.reached}


def plateau(history: Sequence[dict[str, float]], patience: int | None, min_delta: float) -> Plateau:
    """The plateau state of a validation history (entries with `step` and `eval_bleu`, any order)."""
    if not history:
        raise ValueError("no validation result yet")
    entries = sorted(history, key=lambda h: h["step"])
    best = max(entries, key=selection_score)  # max keeps the first of equal scores: the earliest
    mark, since = entries[0]["eval_bleu"], 0
    for entry in entries[1:]:
        if entry["eval_bleu"] > mark + min_delta:
            mark, since = entry["eval_bleu"], 0
        else:  # the mark stays: slow steady gains add up past min_delta and count (Keras' EarlyStopping does so)
            since += 1
    return Plateau(int(best["step"]), float(best["eval_bleu"]), since, patience is not None and since >= patience)


class PlateauStop(TrainerCallback):
    """Stops training at the validation plateau (after the method's own callback has added the evaluation)."""

    def __init__(self, history: list[dict[str, float]], patience: int | None, min_delta: float, label: str) -> None:
        self.history, self.patience, self.min_delta, self.label = history, patience, min_delta, label
        self.stopped_at: int | None = None

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.patience is None or not self.history:
            return
        state_now = plateau(self.history, self.patience, self.min_delta)
        if state_now.reached and state.global_step > 0:
            control.should_training_stop = True
            self.stopped_at = state.global_step
            print(f"{self.label}: validation plateau at step {state.global_step}: {self.patience} evaluations "
                  f"without a gain of more than {self.min_delta} BLEU; keeping step {state_now.best_step} "
                  f"(BLEU {state_now.best_bleu:.2f})", flush=True)
