"""steps/training/selection.py: the plateau rule and which evaluation a run keeps; and, through the trainers, that
the start model is evaluated (step 0), kept when nothing beats it, and that a plateau stops training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.training.runner import start_wins
from steps.training.selection import plateau
from tests.helpers import TASK, micro_paths, run_grpo_micro, sft_micro_config
from tests.tiny_sallm import workspace


def history(*bleus: float, every: int = 10) -> list[dict[str, float]]:
    return [{"step": i * every, "eval_bleu": b} for i, b in enumerate(bleus)]


@pytest.mark.parametrize(("bleus", "best_step", "since", "reached"), [
    ((10.0, 12.0, 14.0, 16.0), 30, 0, False),  # still climbing
    ((10.0, 12.0, 12.2, 12.4, 12.3), 30, 3, True),  # gains of 0.2-0.4 < 0.5: a plateau, the best is kept anyway
    ((10.0, 10.3, 10.6, 10.9), 30, 1, False),  # slow steady gains add up past min_delta (10.6 > 10.0 + 0.5)
    ((10.0, 9.0, 8.0, 7.0), 0, 3, True),  # the start model stays the best
    ((10.0, 12.0, 11.0, 12.0), 10, 2, False),  # ties: the earliest
])
def test_the_plateau_rule(bleus: tuple[float, ...], best_step: int, since: int, reached: bool) -> None:
    state = plateau(list(reversed(history(*bleus))), patience=3, min_delta=0.5)  # any order
    assert (state.best_step, state.since_improvement, state.reached) == (best_step, since, reached)
    assert not plateau(history(*bleus), patience=None, min_delta=0.5).reached  # null patience: train to max_steps


def test_the_start_model_wins_ties_and_a_run_that_kept_no_checkpoint() -> None:
    runs = history(20.0, 19.0, 20.0)
    assert start_wins(runs, best_step=20)  # equal BLEU: the earliest, the start
    assert not start_wins(history(20.0, 19.0, 20.5), best_step=20)
    assert start_wins(runs, best_step=None)
    assert not start_wins(runs[1:], best_step=20)  # a resumed history without the start: the checkpoint
    # SFT breaks equal BLEU by validation loss
    assert not start_wins([{"step": 0, "eval_bleu": 5.0, "eval_loss": 3.0},
                           {"step": 10, "eval_bleu": 5.0, "eval_loss": 2.0}], best_step=10)


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


def test_grpo_keeps_its_start_model_when_no_checkpoint_beats_it(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    # a step size that cannot move the greedy validation outputs: every checkpoint ties with the start
    result = run_grpo_micro(root, lr=1e-12, max_steps=2, eval_every=1, reward_weights={"chrf": 1.0},
                            start_candidate=True)
    summary = json.loads(micro_paths(root).train_summary("grpo", TASK).read_text())
    assert [h["step"] for h in summary["validation"]] == [0, 1, 2]
    assert summary["best_step"] == 0 and result.best_step == 0
    base = micro_paths(root).base_model
    assert (result.model_dir / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
    assert summary["stopped"] == "max_steps"


@pytest.mark.slow
def test_sft_stops_at_its_validation_plateau(tmp_path: Path, speech_rows) -> None:
    from steps.training.sft_trainer import run_sft

    root = workspace(tmp_path, speech_rows)
    # no gain can exceed 1000 BLEU: the plateau is reached after `patience` evaluations past the start
    result = run_sft(sft_micro_config(max_steps=40, eval_every=4, patience=2, min_delta=1000.0,
                                      start_candidate=True), TASK,
                     micro_paths(root))
    summary = json.loads(micro_paths(root).train_summary("sft", TASK).read_text())
    assert result.global_step == 8 and summary["stopped"] == "plateau"
    assert [h["step"] for h in summary["validation"]] == [0, 4, 8]
    assert summary["plateau"] == {"patience": 2, "min_delta": 1000.0, "since_improvement": 2, "reached": True}
