"""steps/training/off_policy.py: where mixed-policy GRPO's off-policy texts come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.training.off_policy import OffPolicySource
from tests.helpers import grpo_micro_config


def test_off_policy_source_reads_recorded_outputs_and_names_missing_ids(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": "a", "greedy": "ein Hund"}) + "\n")
    cfg = grpo_micro_config(off_policy_source=str(path))
    source = OffPolicySource.from_config(cfg.grpo, tmp_path)
    assert source.text_for({"id": "a", "reference": "x"}) == "ein Hund"
    with pytest.raises(KeyError, match="no output for example 'b'"):
        source.text_for({"id": "b", "reference": "x"})
    with pytest.raises(FileNotFoundError, match="off_policy_source"):
        OffPolicySource.from_config(grpo_micro_config(off_policy_source="missing.jsonl").grpo, tmp_path)
