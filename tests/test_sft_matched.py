"""The equal-compute control: the sft_matched stage, SFT continued for the compute GRPO measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from steps.core.config import config_from_dict, to_dict
from steps.training.sft_trainer import matched_steps, run_sft_matched
from tests.helpers import TASK, micro_paths, sft_micro_config, state_of
from tests.tiny_sallm import build_micro, workspace


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


def write_train_json(path: Path, **compute: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"method": path.parent.name, "compute": compute, "validation": []}))
    return path


# --- fast -------------------------------------------------------------------------------------------------------------


def test_sft_matched_takes_what_it_leaves_out_from_sft() -> None:
    cfg = config_from_dict({"sft": {"lr": 0.3, "batch_size": 5, "warmup_ratio": 0.2}})
    assert cfg.sft_matched.batch_size == 5 and cfg.sft_matched.warmup_ratio == 0.2  # inherited
    assert cfg.sft_matched.lr == 2e-5 and cfg.sft_matched.compute == "flops"  # its own defaults
    own = config_from_dict({"sft": {"lr": 0.3}, "sft_matched": {"lr": 0.02, "compute": "train_seconds"}})
    assert own.sft_matched.lr == 0.02 and own.sft_matched.compute == "train_seconds" and own.sft.lr == 0.3


def test_max_steps_follow_from_the_grpo_and_sft_metrics_files(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    # GRPO's FLOPs: loss passes + rollouts + reference passes; SFT's: loss passes only
    grpo_flops = {"total": 9.0e12, "loss": 5.0e12, "rollouts": 2.5e12, "reference": 1.5e12}
    write_train_json(metrics / "grpo" / f"{TASK}.train.json", train_tokens=96_000, train_steps=20,
                     train_seconds=100.0, rollout_tokens=5000, flops=grpo_flops)
    write_train_json(metrics / "sft" / f"{TASK}.train.json", train_tokens=300 * 790, train_steps=300,
                     train_seconds=60.0, flops={"total": 300 * 4.0e10, "loss": 300 * 4.0e10})
    steps, record = matched_steps(config_from_dict({}), TASK, micro_paths(tmp_path))
    assert steps == round(9.0e12 / 4.0e10) == 225  # the total, not the loss passes' 5e12 (125 steps)
    assert record["compute"] == "flops" and record["grpo"]["flops"] == grpo_flops
    assert record["sft_flops_per_step"] == 4.0e10 and record["max_steps"] == 225
    by_tokens, record = matched_steps(config_from_dict({"sft_matched": {"compute": "train_tokens"}}), TASK,
                                      micro_paths(tmp_path))
    assert by_tokens == round(96_000 / 790) == 122 and record["sft_train_tokens_per_step"] == 790.0
    by_time, _ = matched_steps(config_from_dict({"sft_matched": {"compute": "train_seconds"}}), TASK,
                                micro_paths(tmp_path))
    assert by_time == 500  # 100 s / (60 s / 300 steps)


def test_missing_or_old_metrics_files_are_named_with_the_stage_to_run(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    grpo = metrics / "grpo" / f"{TASK}.train.json"
    with pytest.raises(FileNotFoundError, match=rf"{grpo}.*grpo@{TASK}"):
        matched_steps(config_from_dict({}), TASK, micro_paths(tmp_path))
    grpo.parent.mkdir(parents=True)
    grpo.write_text(json.dumps({"global_step": 20}))  # written before compute was measured
    with pytest.raises(ValueError, match=rf"{grpo} has no measured compute.flops.*grpo@{TASK}"):
        matched_steps(config_from_dict({}), TASK, micro_paths(tmp_path))
    write_train_json(grpo, train_tokens=1000, train_steps=20)  # written before FLOPs were counted
    with pytest.raises(ValueError, match=rf"{grpo} has no measured compute.flops.*grpo@{TASK}"):
        matched_steps(config_from_dict({}), TASK, micro_paths(tmp_path))
    write_train_json(grpo, train_tokens=1000, train_steps=20, flops={"total": 1e9})
    with pytest.raises(FileNotFoundError, match=rf"sft/{TASK}.train.json.*sft@{TASK}"):
        matched_steps(config_from_dict({}), TASK, micro_paths(tmp_path))


def test_sft_matched_starts_from_the_sft_model_and_trains_the_matched_steps(tmp_path: Path, speech_rows) -> None:
    from steps.modeling.tiny import save

    root = workspace(tmp_path, speech_rows)
    sft_dir = root / "models" / "sft" / TASK
    save(*build_micro(speech_rows, seed=1), sft_dir)  # another init than models/base: a stand-in SFT model
    metrics = root / "metrics"
    write_train_json(metrics / "grpo" / f"{TASK}.train.json", train_tokens=3000, train_steps=4,
                     flops={"total": 6e9})
    write_train_json(metrics / "sft" / f"{TASK}.train.json", train_tokens=1000, train_steps=2,
                     flops={"total": 2e9})  # 1e9 a step
    cfg = sft_micro_config(max_steps=50, eval_every=7)  # sft_matched reads neither: GRPO's protocol
    cfg = config_from_dict({"sft": to_dict(cfg.sft), "sft_matched": {"lr": 3e-3},
                            "grpo": {"eval_every": 2, "lr_scheduler": "constant", "patience": None,
                                     "start_candidate": False},
                            "evaluate": {"max_new_tokens": 12, "batch_size": 8}})
    out = root / "models" / "sft_matched" / TASK
    result = run_sft_matched(cfg, TASK, micro_paths(root))
    assert result.global_step == 6  # 6e9 / 1e9
    # GRPO's 4 steps had 2 evaluations (every 2): so have the matched 6 steps (every 3), with GRPO's schedule
    assert [h["step"] for h in result.history] == [3, 6]
    protocol = json.loads((metrics / "sft_matched" / f"{TASK}.train.json").read_text())["matched"]["protocol"]
    assert protocol["eval_every"] == 3 and protocol["lr_scheduler"] == "constant" and protocol["lr"] == 3e-3
    summary = json.loads((metrics / "sft_matched" / f"{TASK}.train.json").read_text())
    assert summary["method"] == "sft_matched" and summary["init"] == str(sft_dir)
    assert summary["matched"]["max_steps"] == 6 and summary["matched"]["grpo"]["flops"]["total"] == 6e9
    assert summary["compute"]["train_steps"] == 6 and summary["compute"]["flops"]["total"] > 0
    base, sft, after = state_of(root / "models" / "base"), state_of(sft_dir), state_of(out)
    changed = [k for k in sft if not torch.equal(sft[k], after[k])]
    assert len(changed) > len(sft) // 2  # it trained

    def distance(a: dict[str, torch.Tensor]) -> float:
        return sum(float((a[k].float() - after[k].float()).norm()) for k in after if a[k].dtype.is_floating_point)

    assert distance(sft) < 0.5 * distance(base)  # it went on from the SFT weights, not from the base's
