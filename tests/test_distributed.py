"""The grpo stage on two CPU processes (gloo) vs one.

Launched with torchrun: `accelerate launch --cpu --num_processes 2` starts a single process (measured with accelerate
1.15: PartialState reports 1 process, DistributedType.NO), so the test asserts that two really ran."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import TASK
from tests.tiny_sallm import workspace

GRPO = {"init": "base", "max_steps": 3, "eval_every": 3, "prompts_per_step": 2, "num_generations": 4, "lr": 0.001,
        "max_completion_length": 8, "eval_examples": 4, "eval_batch_size": 4, "max_new_tokens": 8, "threads": 1,
        "beta": 0.02, "reward_weights": {"chrf": 1.0}, "patience": None, "start_candidate": False}


def launch(root: Path, processes: int) -> dict[str, Any]:
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"grpo": GRPO, "paths": {"metrics": f"metrics{processes}"}}))
    env = {**os.environ, "SPEECH_GRPO_TRACKING": "off", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    stage = ["-m", "steps.grpo", "--task", TASK, "--params", str(params), "-S", "grpo.init=base"]
    if processes == 1:
        cmd = [sys.executable, *stage]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", "29533", "--log-dir", str(root / "rank-logs"), "--redirects", "3", *stage]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=600)
    ranks = "".join(f"\n--- {p}:\n{p.read_text()[-3000:]}" for p in sorted((root / "rank-logs").rglob("stderr.log")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + ranks
    metrics = root / f"metrics{processes}" / "grpo"
    summary = json.loads((metrics / f"{TASK}.train.json").read_text())
    curve = list(csv.DictReader((metrics / f"{TASK}.curve.csv").open()))
    return {"summary": summary, "curve": curve, "log": done.stdout + done.stderr}


@pytest.mark.slow
def test_grpo_runs_on_two_processes(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    one = launch(root, 1)
    two = launch(root, 2)
    # both processes trained: the compute counts are summed over processes, each process scored its own rows
    assert two["summary"]["compute"]["train_sequences"] == 2 * one["summary"]["compute"]["train_sequences"]
    for run in (one, two):
        assert run["summary"]["global_step"] == 3
        assert [r["step"] for r in run["curve"]] == ["1", "2", "3"]
        rewards = [float(r["reward"]) for r in run["curve"]]
        assert all(0.0 <= r <= 1.0 for r in rewards)
    # Two processes score twice the completions per step; the same model and data give rewards of the same size.
    mean_one = sum(float(r["reward"]) for r in one["curve"]) / 3
    mean_two = sum(float(r["reward"]) for r in two["curve"]) / 3
    assert abs(mean_one - mean_two) < 0.15, (mean_one, mean_two)
    assert (root / "models" / "grpo" / TASK / "model.safetensors").is_file()
