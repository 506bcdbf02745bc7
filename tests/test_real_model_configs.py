"""configs/: the real-model params files load and carry the paper's settings; the DeepSpeed/accelerate files parse.

    pytest tests/test_real_model_configs.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from steps.core.config import load_config
from tests.conftest import REPO

CONFIGS = REPO / "configs"
PARAMS_FILES = [p for p in sorted(CONFIGS.glob("*.yaml")) if p.name != "accelerate_multi_gpu.yaml"]
MODELS = {"granite_speech_3.3_2b.yaml": "ibm-granite/granite-speech-3.3-2b",
          "qwen2_audio_7b_instruct.yaml": "Qwen/Qwen2-Audio-7B-Instruct"}
PAPER_PROMPTS = {"sqa": "Listen to the audio <|audio|> and answer the following question: {question}",
                 "ast": "<|audio|> listen to the speech and translate it into German."}


def key_paths(data: Any, prefix: str = "") -> set[str]:
    """Every nested mapping key as a dotted path (lists are leaves)."""
    if not isinstance(data, dict):
        return set()
    out = set()
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out |= {path} | key_paths(value, path)
    return out


def test_there_is_a_params_file_per_model() -> None:
    assert sorted(p.name for p in PARAMS_FILES) == sorted(MODELS)


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_params_file_loads_with_the_model_and_the_papers_settings(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.name_or_path == MODELS[path.name]
    assert cfg.model.dtype == "bfloat16"
    for section in (cfg.grpo, cfg.mpgrpo):
        assert section.num_generations == 8
        assert section.beta == 0.02
        assert section.temperature == 1.0
        assert section.max_completion_length == 200
        assert section.loss_type == "dapo" and section.scale_rewards == "group"
        assert section.reward_weights == {"bleu": 1.0}
        assert section.init == "base"
        assert 1e-6 <= section.lr <= 5e-5  # the paper's search range
        assert section.deepspeed == "configs/deepspeed_zero2.json" and (REPO / section.deepspeed).is_file()
    assert cfg.grpo.num_off_policy == 0 and cfg.mpgrpo.num_off_policy == 1  # MP-GRPO: 7 on-policy + the reference
    assert 1e-6 <= cfg.sft.lr <= 5e-5 and 0 <= cfg.sft.warmup_ratio <= 0.15 and 1 <= cfg.sft.epochs <= 10
    assert cfg.sft.max_new_tokens == 200
    assert (cfg.evaluate.temperature, cfg.evaluate.top_p) == (0.9, 0.9)  # the paper's evaluation decoding
    tasks = cfg.prepare.tasks
    assert tasks["sqa"].source.kind == "manifest" and tasks["sqa"].source.columns["audio"] == "speech_path"
    assert tasks["ast"].source.kind == "covost2"
    # The paper's example prompts come first.
    assert tasks["sqa"].prompts["sqa"][0] == PAPER_PROMPTS["sqa"]
    assert tasks["ast"].prompts["ast"][0] == PAPER_PROMPTS["ast"]


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_params_file_has_every_key_of_params_yaml(path: Path) -> None:
    # It replaces params.yaml for `dvc repro`, and DVC fails on any params key a stage lists that the file lacks.
    # report.why holds each file's own reasons for its own differences from the paper: not a key every file shares.
    expected = {k for k in key_paths(yaml.safe_load((REPO / "params.yaml").read_text()))
                if not k.startswith("report.why.")}
    missing = sorted(expected - key_paths(yaml.safe_load(path.read_text())))
    assert not missing, f"{path.name} lacks keys that params.yaml has: {missing}"


@pytest.mark.parametrize("path", [*PARAMS_FILES, REPO / "params.yaml"], ids=lambda p: p.name)
def test_params_file_says_why_each_setting_differs_from_the_paper(path: Path) -> None:
    from steps.reporting.paper_settings import settings_vs_paper

    rows = settings_vs_paper(load_config(path))
    unexplained = [r["key"] for r in rows if r["status"] == "differs" and not r["why"]]
    assert not unexplained, f"{path.name}: add report.why entries for {unexplained}"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_parse_and_leave_the_trainer_in_charge(stage: int) -> None:
    ds = json.loads((CONFIGS / f"deepspeed_zero{stage}.json").read_text())
    assert ds["zero_optimization"]["stage"] == stage
    # "auto" lets the HF Trainer fill in its own batch size, accumulation, clipping and precision.
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert ds[key] == "auto"
    assert ds["bf16"]["enabled"] == "auto"
    # No optimizer/scheduler blocks: those would replace the stage's AdamW and lr schedule with DeepSpeed's.
    assert "optimizer" not in ds and "scheduler" not in ds


def test_accelerate_config_launches_deepspeed_zero2() -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(CONFIGS / "accelerate_multi_gpu.yaml"))
    assert cfg.distributed_type == DistributedType.DEEPSPEED
    assert cfg.num_processes >= 2 and cfg.num_machines == 1
    ds_file = cfg.deepspeed_config["deepspeed_config_file"]
    assert ds_file == "configs/deepspeed_zero2.json" and (REPO / ds_file).is_file()
