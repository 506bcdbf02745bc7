"""The equal-compute control: what the trainers count as compute, and the sft_matched stage that matches GRPO's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from steps.core.config import config_from_dict, to_dict
from steps.training.runner import ComputeMeter
from steps.training.sft import matched_steps, run_sft, run_sft_matched
from tests.test_grpo import run as run_grpo_micro
from tests.test_grpo import state_of
from tests.test_sft import micro_config, sft_paths
from tests.tiny_sallm import build_micro, workspace

TASK = "ast"


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


def write_train_json(path: Path, **compute: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"method": path.parent.name, "compute": compute, "validation": []}))
    return path


# --- fast -------------------------------------------------------------------------------------------------------------


def test_sft_matched_takes_what_it_leaves_out_from_sft() -> None:
    cfg = config_from_dict({"sft": {"lr": 0.3, "batch_size": 5, "warmup_ratio": 0.2}})
    assert cfg.sft_matched.batch_size == 5 and cfg.sft_matched.warmup_ratio == 0.2  # inherited
    assert cfg.sft_matched.lr == 1e-4 and cfg.sft_matched.compute == "train_tokens"  # its own defaults
    own = config_from_dict({"sft": {"lr": 0.3}, "sft_matched": {"lr": 0.02, "compute": "train_seconds"}})
    assert own.sft_matched.lr == 0.02 and own.sft_matched.compute == "train_seconds" and own.sft.lr == 0.3


def test_max_steps_follow_from_the_grpo_and_sft_metrics_files(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    write_train_json(metrics / "grpo" / f"{TASK}.train.json", train_tokens=96_000, train_steps=20,
                     train_seconds=100.0, rollout_tokens=5000)
    write_train_json(metrics / "sft" / f"{TASK}.train.json", train_tokens=300 * 790, train_steps=300,
                     train_seconds=60.0)
    steps, record = matched_steps(config_from_dict({}), TASK, metrics)
    assert steps == round(96_000 / 790) == 122
    assert record["compute"] == "train_tokens" and record["grpo"]["train_tokens"] == 96_000
    assert record["sft_train_tokens_per_step"] == 790.0 and record["max_steps"] == 122
    by_time, _ = matched_steps(config_from_dict({"sft_matched": {"compute": "train_seconds"}}), TASK, metrics)
    assert by_time == 500  # 100 s / (60 s / 300 steps)


def test_missing_or_old_metrics_files_are_named_with_the_stage_to_run(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    grpo = metrics / "grpo" / f"{TASK}.train.json"
    with pytest.raises(FileNotFoundError, match=rf"{grpo}.*grpo@{TASK}"):
        matched_steps(config_from_dict({}), TASK, metrics)
    grpo.parent.mkdir(parents=True)
    grpo.write_text(json.dumps({"global_step": 20}))  # written before compute was measured
    with pytest.raises(ValueError, match=rf"{grpo} has no measured compute.train_tokens.*grpo@{TASK}"):
        matched_steps(config_from_dict({}), TASK, metrics)
    write_train_json(grpo, train_tokens=1000, train_steps=20)
    with pytest.raises(FileNotFoundError, match=rf"sft/{TASK}.train.json.*sft@{TASK}"):
        matched_steps(config_from_dict({}), TASK, metrics)


def test_compute_meter_state_survives_a_checkpoint(tmp_path: Path) -> None:
    meter = ComputeMeter()
    meter.train_tokens, meter.train_steps, meter.rollout_tokens, meter.train_seconds = 1234, 5, 99, 7.5
    checkpoint = tmp_path / "checkpoint-5"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"stateful_callbacks": {"ComputeMeter":
                                                                                       meter.state()}}))
    restored = ComputeMeter()
    restored.restore(checkpoint)
    assert restored.figures() == meter.figures()
    assert restored.figures()["train_tokens_per_step"] == pytest.approx(1234 / 5)


# --- tiny runs --------------------------------------------------------------------------------------------------------


def test_sft_counts_the_attention_mask_sum_of_its_loss_batches(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    paths = sft_paths(root)
    probe = LossPassTokens()
    result = run_sft(micro_config(max_steps=4, eval_every=2), TASK, **paths, callbacks=[probe])
    compute = json.loads(paths["metrics_path"].read_text())["compute"]
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
    from tests.test_sft import stop_at

    cfg = micro_config(max_steps=4, eval_every=2)
    whole = run_sft(cfg, TASK, **sft_paths(workspace(tmp_path / "whole", speech_rows)))
    paths = sft_paths(workspace(tmp_path / "resumed", speech_rows))
    with pytest.raises(KeyboardInterrupt):
        run_sft(cfg, TASK, **paths, callbacks=[stop_at(3)])
    resumed = run_sft(cfg, TASK, **paths)
    assert resumed.resumed_from_step == 2
    assert resumed.compute["train_steps"] == 4  # the checkpoint's 2 and the 2 after it
    assert resumed.compute["train_tokens"] == whole.compute["train_tokens"]


def test_sft_matched_starts_from_the_sft_model_and_trains_the_matched_steps(tmp_path: Path, speech_rows) -> None:
    from steps.modeling.tiny import save

    root = workspace(tmp_path, speech_rows)
    sft_dir = root / "models" / "sft" / TASK
    save(*build_micro(speech_rows, seed=1), sft_dir)  # another init than models/base: a stand-in SFT model
    metrics = root / "metrics"
    write_train_json(metrics / "grpo" / f"{TASK}.train.json", train_tokens=3000, train_steps=2)
    write_train_json(metrics / "sft" / f"{TASK}.train.json", train_tokens=1000, train_steps=2)  # 500 a step
    cfg = micro_config(max_steps=50)  # sft_matched does not read max_steps
    cfg = config_from_dict({"sft": to_dict(cfg.sft), "sft_matched": {"lr": 3e-3, "eval_every": 3},
                            "evaluate": {"max_new_tokens": 12, "batch_size": 8}})
    out = root / "models" / "sft_matched" / TASK
    result = run_sft_matched(cfg, TASK, sft_dir, root / "data", out, root / "models" / ".work" / "sft_matched" / TASK,
                             metrics)
    assert result.global_step == 6  # 3000 / 500
    summary = json.loads((metrics / "sft_matched" / f"{TASK}.train.json").read_text())
    assert summary["method"] == "sft_matched" and summary["init"] == str(sft_dir)
    assert summary["matched"]["max_steps"] == 6 and summary["matched"]["grpo"]["train_tokens"] == 3000
    assert summary["compute"]["train_steps"] == 6 and summary["compute"]["train_tokens"] > 0
    base, sft, after = state_of(root / "models" / "base"), state_of(sft_dir), state_of(out)
    changed = [k for k in sft if not torch.equal(sft[k], after[k])]
    assert len(changed) > len(sft) // 2  # it trained

    def distance(a: dict[str, torch.Tensor]) -> float:
        return sum(float((a[k].float() - after[k].float()).norm()) for k in after if a[k].dtype.is_floating_point)

    assert distance(sft) < 0.5 * distance(base)  # it went on from the SFT weights, not from the base's
