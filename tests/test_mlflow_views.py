"""The MLflow side of comparing methods: which runs the saved views show, what they hold, the registry's `report`
alias, and the flow's tags and empty runs (flows/mlflow_views.py, steps/core/registry.py, flows/pipeline.py).

    pytest tests/test_mlflow_views.py -m slow     # the store tests (a real SQLite store; its schema takes ~6 s)
"""

from __future__ import annotations

import json

import pytest

from flows import mlflow_views
from flows.pipeline import stage_tags
from steps.core import artifact_md5, registry, tracking
from steps.core.config import Config
from tests.helpers import evaluate_run

pytestmark = pytest.mark.usefixtures("clean_tracking_env")  # the store fixture: tests/conftest.py


@pytest.mark.parametrize(("stage", "tags"), [
    ("evaluate@sft_matched-ast", {"stage": "evaluate", "method": "sft_matched", "task": "ast"}),
    ("evaluate_base@sqa", {"stage": "evaluate", "method": "base", "task": "sqa"}),
    ("grpo@ast", {"stage": "grpo", "method": "grpo", "task": "ast"}),
    ("pretrain", {"stage": "pretrain", "method": "base"}),
    ("prepare@sqa", {"stage": "prepare", "task": "sqa"}),
    ("report", {"stage": "report"}),
])
def test_the_flow_tags_a_stage_run_as_the_stage_itself_does(stage, tags):
    assert stage_tags(stage) == {**tags, "dvc_stage": stage}


def test_the_comparison_columns_lead_with_bleu_then_conditions_then_the_other_metrics():
    keys = {"n", "decode_seconds", "chrf", "rouge1", "bleu", "bleu_swapped", "bleu_sampled_mean", "bleu_snr20",
            "bleu_snr20_swapped", "bleu_train_voices", "robustness_snr20", "listening_gap_bleu"}
    assert mlflow_views.score_columns(keys) == [
        "bleu", "bleu_sampled_mean", "bleu_swapped", "listening_gap_bleu", "bleu_snr20", "bleu_train_voices",
        "bleu_snr20_swapped", "rouge1", "chrf", "robustness_snr20"]


def test_the_views_fit_the_tag_and_hide_the_charts_nobody_asked_for():
    class Run:  # what the views read of an MLflow run
        def __init__(self, run_id: str, metrics: list[str]) -> None:
            self.info = type("Info", (), {"run_id": run_id})()
            self.data = type("Data", (), {"metrics": dict.fromkeys(metrics, 0.0)})()

    many = [f"trl/metric_{i:02d}" for i in range(60)]  # TRL logs dozens of metrics per step
    view = mlflow_views.curves_view([Run(f"{i:032x}", ["eval_bleu", "loss", *many]) for i in range(8)])
    charts = view.state["compareRunCharts"]
    assert [c["metricKey"] for c in charts if not c["deleted"]] == ["eval_bleu", "loss"]
    assert {c["metricKey"] for c in charts if c["deleted"]} == set(many)
    assert view.state["searchFilter"].startswith("attributes.run_id IN ('00000000")
    assert len(json.dumps(view.state)) < mlflow_views.MAX_STATE_CHARS
    empty = mlflow_views.comparison_view([])
    assert empty.state["searchFilter"] == "tags.stage = 'evaluate'"



@pytest.mark.slow
def test_the_views_show_the_runs_that_made_the_workspace_files(store):
    root, client = store
    made = evaluate_run(root, "sqa", "grpo", 30.0)
    kept = (root / "metrics" / "grpo" / "sqa.json").read_bytes()
    evaluate_run(root, "sqa", "grpo", 99.0)  # a newer run (another experiment, say) whose file is not the workspace's
    (root / "metrics" / "grpo" / "sqa.json").write_bytes(kept)
    sft = evaluate_run(root, "sqa", "sft", 31.0)
    exp_id = tracking.experiment_id(client)
    md5 = artifact_md5.file_md5(root / "metrics/grpo/sqa.json")
    assert client.get_run(made).data.tags["md5/evaluation/sqa.json"] == md5

    chosen = [r.info.run_id for r in mlflow_views.evaluate_runs(client, exp_id, root / "metrics")]
    assert chosen == [sft, made]  # methods in order, each the run that wrote the file

    (root / "metrics" / "sft" / "sqa.json").write_text("{}")  # a file no run logged: the newest run stands in
    assert [r.info.run_id for r in mlflow_views.evaluate_runs(client, exp_id, root / "metrics")] == [sft, made]

    client.set_experiment_tag(exp_id, mlflow_views.NOTE_TAG, "our team's notes")
    views = mlflow_views.write_views(client, exp_id, root / "metrics")
    tags = client.get_experiment(exp_id).tags
    saved = json.loads(tags[mlflow_views.VIEW_TAG_PREFIX + mlflow_views.COMPARISON_VIEW])
    state = json.loads(saved["state"])
    assert saved["name"] == "SFT vs GRPO: test scores" and views[0].name == saved["name"]
    assert state["searchFilter"] == f"attributes.run_id IN ('{sft}', '{made}')"
    assert state["selectedColumns"][:5] == ["tags.`task`", "tags.`method`", "metrics.`bleu`", "metrics.`bleu_swapped`",
                                            "metrics.`bleu_snr20`"]
    assert state["orderByKey"] == "tags.`task`"
    assert tags[mlflow_views.NOTE_TAG] == "our team's notes"  # a user's description is never overwritten
    client.delete_experiment_tag(exp_id, mlflow_views.NOTE_TAG)
    mlflow_views.write_views(client, exp_id, root / "metrics")
    note = client.get_experiment(exp_id).tags[mlflow_views.NOTE_TAG]
    assert note.startswith(mlflow_views.NOTE_HEADER) and "viewStateShareKey=training-curves" in note
    path = mlflow_views.view_path(exp_id, views[1])
    assert path.endswith("viewStateShareKey=training-curves&compareRunsMode=CHART") and "machine_learning" in path


@pytest.mark.slow
def test_the_report_alias_follows_the_version_the_report_read(store, monkeypatch):
    root, client = store
    metrics = root / "metrics"

    def train(method: str, minutes: float) -> str:
        summary = metrics / method / "sqa.train.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps({"method": method, "train_minutes": minutes}))
        with tracking.stage_run(Config(), stage=method, task="sqa", method=method) as run:
            run.log_artifact(summary)
        name = registry.registered_name("sqa", method)
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        client.create_model_version(name, f"runs:/{run.run_id}/model", run_id=run.run_id)
        return summary.read_text()

    first = train("grpo", 1.0)
    train("grpo", 2.0)  # version 2, a later training run
    train("sft", 3.0)
    (metrics / "grpo" / "sqa.train.json").write_text(first)  # the workspace holds version 1's outputs
    with tracking.stage_run(Config(), stage="report") as report_run:
        done = registry.alias_reported(report_run, metrics, {"sqa": ["base", "sft", "grpo"]})
    assert done == {"speech-grpo-sqa-grpo": "1", "speech-grpo-sqa-sft": "1"}
    assert str(client.get_model_version_by_alias("speech-grpo-sqa-grpo", "report").version) == "1"

    (metrics / "grpo" / "sqa.train.json").write_text("{}")  # outputs no registered version made: no alias
    with tracking.stage_run(Config(), stage="report") as report_run:
        registry.alias_reported(report_run, metrics, {"sqa": ["grpo"]})
    with pytest.raises(Exception, match="alias"):
        client.get_model_version_by_alias("speech-grpo-sqa-grpo", "report")

    monkeypatch.setenv(tracking.ENV_DVC_EXP, "lr 3e-5")  # a DVC experiment's report gets its own alias
    assert registry.report_alias() == "report-lr-3e-5"


@pytest.mark.slow
def test_a_skipped_stage_leaves_no_run_in_the_default_view(store):
    _, client = store
    parent = tracking.start_pipeline_run("flow-run")
    child = tracking.start_child_run(parent, "evaluate@sft-sqa", stage_tags("evaluate@sft-sqa"))
    tracking.discard_run(child)
    exp_id = client.get_run(parent).info.experiment_id
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [parent]
    assert client.get_run(child).info.lifecycle_stage == "deleted"
