"""The report's robustness section: conditions the models never trained on, from the evaluation files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steps.reporting.conditions import ROBUSTNESS_TARGET, conditions_markdown, conditions_rows, noise_conditions
from steps.reporting.evaluations import Evaluation


def evaluation(method: str, clean: float, train_voices: float, snr20: float, snr10: float,
               conditions: bool = True) -> Evaluation:
    metrics: dict[str, Any] = {"bleu": clean}
    if conditions:
        metrics["conditions"] = {"snr20": {"bleu": snr20, "n": 4}, "snr20_swapped": {"bleu": 1.0, "n": 4},
                                 "snr10": {"bleu": snr10, "n": 4}, "snr10_swapped": {"bleu": 0.5, "n": 4},
                                 "train_voices": {"bleu": train_voices, "n": 3}}
        metrics["conditions_noise"] = "white"
    return Evaluation(method, "ast", Path("m.json"), metrics, Path("p.jsonl"), None)


def test_rows_give_each_condition_and_the_ratio_to_training_speakers():
    evals = {"base": evaluation("base", 50.0, 60.0, 48.0, 30.0), "sft": evaluation("sft", 70.0, 75.0, 60.0, 40.0)}
    section = conditions_rows(evals)
    assert section["snr"] == ["snr20", "snr10"] and section["noise"] == "white"  # clean to noisy
    base, sft = section["rows"]
    assert base["robustness_snr20"] == pytest.approx(48.0 / 60.0)
    assert sft["robustness_snr10"] == pytest.approx(40.0 / 75.0)
    assert base["meets_target"] is False and sft["meets_target"] is False  # 0.80 < 0.85
    evals["grpo"] = evaluation("grpo", 70.0, 70.0, 0.9 * 70.0, 40.0)
    assert ROBUSTNESS_TARGET < 0.9
    assert conditions_rows(evals)["rows"][2]["meets_target"] is True


def test_markdown_says_how_many_methods_meet_the_target():
    evals = {"base": evaluation("base", 50.0, 60.0, 59.0, 30.0), "sft": evaluation("sft", 70.0, 75.0, 60.0, 40.0)}
    text = "\n".join(conditions_markdown(conditions_rows(evals)))
    assert "| Base | 50.00 | 60.00 | 59.00 | 1.00 | 0.98 | 30.00 | 0.50 | 0.50 |" in text
    assert "met by 1 of 2 (Base)." in text and "noise: white" in text


def test_a_method_without_conditions_is_left_out_and_nothing_shown_without_any():
    evals = {"base": evaluation("base", 50.0, 60.0, 59.0, 30.0, conditions=False)}
    assert noise_conditions(evals) == []
    assert conditions_rows(evals)["rows"] == [] and conditions_markdown(conditions_rows(evals)) == []
