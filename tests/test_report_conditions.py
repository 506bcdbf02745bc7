"""The report's robustness section: conditions the models never trained on, from the evaluation files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steps.reporting.conditions import (
    ROBUSTNESS_TARGET,
    conditions_markdown,
    conditions_rows,
    held_out_conditions,
    noise_conditions,
)
from steps.reporting.evaluations import Evaluation


def evaluation(method: str, test: float, train_voices: float, snr3: float, snr0: float, slow: float = 40.0,
               conditions: bool = True, snr20: float | None = None) -> Evaluation:
    metrics: dict[str, Any] = {"bleu": test}
    if conditions:
        metrics["conditions"] = {"clean": {"bleu": test - 1.0, "n": 4},
                                 "slow": {"bleu": slow, "n": 4}, "slow_swapped": {"bleu": 2.0, "n": 4},
                                 "snr0": {"bleu": snr0, "n": 4}, "snr0_swapped": {"bleu": 0.5, "n": 4},
                                 "snr3": {"bleu": snr3, "n": 4}, "snr3_swapped": {"bleu": 1.0, "n": 4},
                                 "train_voices": {"bleu": train_voices, "n": 3}}
        if snr20 is not None:
            metrics["conditions"]["snr20"] = {"bleu": snr20, "n": 4}
        metrics["conditions_noise"] = "white"
    return Evaluation(method, "ast", Path("m.json"), metrics, Path("p.jsonl"), None)


def test_rows_give_each_condition_and_the_ratio_to_training_speakers():
    evals = {"base": evaluation("base", 50.0, 60.0, 48.0, 30.0), "sft": evaluation("sft", 70.0, 75.0, 60.0, 40.0)}
    section = conditions_rows(evals)
    assert section["conditions"] == ["slow", "snr3", "snr0"]  # spoken first, then noise from clean to noisy
    assert section["snr"] == ["snr3", "snr0"] and section["noise"] == "white" and section["n"] == 4
    base, sft = section["rows"]
    assert base["robustness_snr3"] == pytest.approx(48.0 / 60.0)
    assert sft["robustness_snr0"] == pytest.approx(40.0 / 75.0)
    assert sft["robustness_slow"] == pytest.approx(40.0 / 75.0) and sft["slow_swapped"] == 2.0
    assert base["robustness_clean"] == pytest.approx(49.0 / 60.0) and base["test_clean"] == 50.0
    assert base["meets_target"] is None  # no evaluation has the target condition: nothing judged


def test_the_target_is_judged_only_where_its_condition_was_decoded():
    evals = {"base": evaluation("base", 50.0, 60.0, 48.0, 30.0, snr20=54.0),   # 0.90 of the reference
             "sft": evaluation("sft", 70.0, 75.0, 60.0, 40.0, snr20=60.0)}     # 0.80
    assert 0.80 < ROBUSTNESS_TARGET < 0.90
    assert [r["meets_target"] for r in conditions_rows(evals)["rows"]] == [True, False]
    text = "\n".join(conditions_markdown(conditions_rows(evals)))
    assert "under white noise at 20 dB SNR for every method: met by 1 of 2 (Base)." in text
    assert "Target" not in "\n".join(conditions_markdown(conditions_rows(
        {"base": evaluation("base", 50.0, 60.0, 48.0, 30.0)})))


def test_markdown_has_a_row_per_condition_and_a_column_per_method():
    evals = {"base": evaluation("base", 50.0, 60.0, 59.0, 30.0), "sft": evaluation("sft", 70.0, 75.0, 60.0, 40.0)}
    text = "\n".join(conditions_markdown(conditions_rows(evals)))
    assert "| condition | Base | SFT |" in text
    assert "| held-out speakers, clean (whole test split) | 50.00 | 70.00 |" in text
    assert "| training speakers, clean (the reference) | 60.00 | 75.00 |" in text
    assert "| slower than any training rate | 40.00 (0.67) / 2.00 | 40.00 (0.53) / 2.00 |" in text
    assert "| white noise at 3 dB SNR | 59.00 (0.98) / 1.00 | 60.00 (0.80) / 1.00 |" in text
    assert text.index("3 dB SNR") < text.index("0 dB SNR") and "the first 4 test texts" in text
    assert "Left out" not in text
    evals["sft"].metrics["conditions_dropped"] = {"slow": 2}
    text = "\n".join(conditions_markdown(conditions_rows(evals)))
    assert "Left out, longer than the model's audio window (never cut): slower than any training rate 2 clips." in text


def test_a_method_without_conditions_is_left_out_and_nothing_shown_without_any():
    evals = {"base": evaluation("base", 50.0, 60.0, 59.0, 30.0, conditions=False)}
    assert noise_conditions(evals) == [] and held_out_conditions(evals) == []
    assert conditions_rows(evals)["rows"] == [] and conditions_markdown(conditions_rows(evals)) == []
    evals["sft"] = evaluation("sft", 70.0, 75.0, 60.0, 40.0)
    assert [r["method"] for r in conditions_rows(evals)["rows"]] == ["sft"]
