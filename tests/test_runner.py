"""steps/training/runner.py, the skeleton every trainer shares: what training cost, counted the same way for SFT and
GRPO (ComputeMeter), and kept across a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from steps.training.runner import ComputeMeter
from steps.training.sft_trainer import run_sft
from tests.helpers import TASK, micro_paths, run_grpo_micro, sft_micro_config, stop_at, through_a_checkpoint
from tests.tiny_sallm import workspace


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


class LossPassTokens(TrainerCallback):
    """Independently of the trainers' count: the attention-mask sum of every model call that builds a graph in
    training mode (the loss passes; generation, reference and validation passes run without grad)."""

    def __init__(self) -> None:
        self.tokens, self.sequences, self.handle = 0, 0, None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        def record(module: Any, args: Any, kwargs: Any) -> None:
            if module.training and torch.is_grad_enabled():
                self.tokens += int(kwargs["attention_mask"].sum())
                self.sequences += kwargs["attention_mask"].size(0)

        self.handle = model.register_forward_pre_hook(record, with_kwargs=True)

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.handle.remove()


def test_compute_meter_state_survives_a_checkpoint(tmp_path: Path) -> None:
    meter = ComputeMeter()
    meter.train_tokens, meter.train_steps, meter.rollout_tokens, meter.train_seconds = 1234, 5, 99, 7.5
    restored = through_a_checkpoint(meter, tmp_path / "checkpoint-5")
    assert restored.figures() == meter.figures()
    assert restored.figures()["train_tokens_per_step"] == pytest.approx(1234 / 5)


def test_sft_counts_the_attention_mask_sum_of_its_loss_batches(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    paths = micro_paths(root)
    probe = LossPassTokens()
    result = run_sft(sft_micro_config(max_steps=4, eval_every=2), TASK, paths, callbacks=[probe])
    compute = json.loads(paths.train_summary("sft", TASK).read_text())["compute"]
    assert compute == result.compute
    assert compute["train_tokens"] == probe.tokens > 0
    assert compute["train_sequences"] == probe.sequences == 4 * 4  # 4 steps x batch 4
    assert compute["train_steps"] == 4 and compute["rollout_tokens"] == 0
    assert compute["train_tokens_per_step"] == pytest.approx(probe.tokens / 4, abs=0.01)
    assert compute["train_seconds"] > 0


def test_grpo_counts_the_attention_mask_sum_of_its_loss_batches_and_its_rollouts(tmp_path: Path,
                                                                                 speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    probe = LossPassTokens()
    run_grpo_micro(root, callbacks=[probe], reward_weights={"chrf": 1.0})
    compute = json.loads((root / "metrics" / "grpo" / f"{TASK}.train.json").read_text())["compute"]
    assert compute["train_tokens"] == probe.tokens > 0
    assert compute["train_sequences"] == probe.sequences == 2 * 2 * 4  # 2 steps x 2 prompts x 4 completions
    assert compute["train_steps"] == 2
    assert 0 < compute["rollout_tokens"] <= 2 * 2 * 4 * 8  # at most max_completion_length 8 each
    assert compute["rollout_tokens"] < compute["train_tokens"]  # the loss passes also cover the prompts


def test_a_resumed_run_counts_what_an_uninterrupted_one_does(tmp_path: Path, speech_rows) -> None:
    cfg = sft_micro_config(max_steps=4, eval_every=2)
    whole = run_sft(cfg, TASK, micro_paths(workspace(tmp_path / "whole", speech_rows)))
    paths = micro_paths(workspace(tmp_path / "resumed", speech_rows))
    with pytest.raises(KeyboardInterrupt):
        run_sft(cfg, TASK, paths, callbacks=[stop_at(3)])
    resumed = run_sft(cfg, TASK, paths)
    assert resumed.resumed_from_step == 2
    assert resumed.compute["train_steps"] == 4  # the checkpoint's 2 and the 2 after it
    assert resumed.compute["train_tokens"] == whole.compute["train_tokens"]
