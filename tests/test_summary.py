"""The summary stage: BLEU per task and method and the headline deltas, in the metrics file dvc.yaml lists first."""

from __future__ import annotations

import json

import pytest
import yaml

from steps.summary import build_summary, main
from tests.conftest import REPO


def _report(greedy: bool = True) -> dict:
    def scores(bleus: dict[str, float]) -> dict:
        out = {"sampled": {m: {"runs": 2, "mean": {"bleu": b - 1}, "std": {"bleu": 0.5}} for m, b in bleus.items()}}
        if greedy:
            out["greedy"] = {m: {"bleu": b, "rouge1": 1.0} for m, b in bleus.items()}
        return out

    return {"tasks": {"sqa": {"scores": scores({"base": 10.0, "sft": 40.0, "sft_matched": 42.5, "grpo": 39.25,
                                                 "mpgrpo": 41.0})},
                      "ast": {"scores": scores({"sft": 30.0, "grpo": 31.123})}}}


def test_bleu_per_method_and_the_headline_deltas():
    summary = build_summary(_report())
    assert summary["sqa"]["bleu"] == {"base": 10.0, "sft": 40.0, "sft_matched": 42.5, "grpo": 39.25, "mpgrpo": 41.0}
    assert summary["sqa"]["delta"] == {"grpo_vs_sft": -0.75, "mpgrpo_vs_sft": 1.0, "grpo_vs_sft_matched": -3.25,
                                       "mpgrpo_vs_sft_matched": -1.5}
    assert summary["ast"] == {"bleu": {"sft": 30.0, "grpo": 31.12}, "delta": {"grpo_vs_sft": 1.12}}


def test_without_a_greedy_pass_the_sampled_mean_is_named_so():
    summary = build_summary(_report(greedy=False))
    assert summary["ast"] == {"bleu_sampled": {"sft": 29.0, "grpo": 30.12}, "delta_sampled": {"grpo_vs_sft": 1.12}}


def test_the_stage_writes_the_file_and_names_a_missing_report(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="dvc repro report"):
        main(["--params", str(tmp_path / "params.yaml")])
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.json").write_text(json.dumps(_report()))
    main(["--params", str(tmp_path / "params.yaml")])
    assert json.loads((tmp_path / "metrics" / "summary.json").read_text()) == build_summary(_report())
    assert "summary[sqa]: base 10.0" in capsys.readouterr().out


def test_dvc_yaml_declares_the_summary_first_so_dvc_lists_its_metrics_first():
    # DVC orders `dvc exp show` / `dvc metrics show` columns by the stage that declares each metrics file.
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    with_metrics = [name for name, stage in stages.items() if stage.get("do", stage).get("metrics")]
    assert with_metrics[0] == "summary" and stages["summary"]["metrics"] == ["metrics/summary.json"]
    assert "reports/report.json" in stages["summary"]["deps"]
