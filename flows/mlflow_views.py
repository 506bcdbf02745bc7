"""The MLflow UI's saved views of this pipeline: the SFT vs GRPO comparison a new user lands on, and training curves.

MLflow 3.17 keeps a runs-page view in an experiment tag `mlflow.sharedViewState.<id>`: a JSON envelope (name, times)
around the page's state (search filter, sort, selected columns and their order, charts). The page's "Views" menu lists
them by name, and the URL `#/experiments/<id>/runs?viewStateShareKey=<id>` opens one (measured in headless
Chromium, tests/infra/test_mlflow_ui.py). The URL also carries `workflowType=machine_learning`, which shows the "Model
training" side bar instead of the GenAI one that MLflow 3.17 otherwise takes from the browser's localStorage (default
GenAI).

Which runs a view shows: the ones that made the workspace's files. A stage's run tags every file it logs with the
file's md5 (steps/core/tracking.py), so the evaluate run behind metrics/<model>/<task>.json and the training run behind
metrics/<method>/<task>.train.json are lookups; a file no run logged falls back to the newest finished run of that
stage, task and method. `python -m flows.mlflow_ui` writes both views (and a description with their links at the top of
the experiment page) each time it starts, so they follow the workspace.

    python -m flows.mlflow_views [--base-url http://127.0.0.1:5000]   # write the views, print their URLs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core import artifact_md5, tracking
from steps.core.config import TASKS

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
MAX_STATE_CHARS = 18000  # MLflow's experiment tags hold 20000 characters; the envelope needs a few hundred
NOTE_TAG = "mlflow.note.content"           # the experiment's description, shown above its runs
NOTE_HEADER = "**Compare SFT and GRPO**"   # marks the description as ours (a user's own is never overwritten)
COMPARISON_VIEW = "sft-vs-grpo"
CURVES_VIEW = "training-curves"
METHODS = ("base", "sft", "sft_matched", "grpo", "mpgrpo")
TRAINED = ("sft", "sft_matched", "grpo", "mpgrpo")

# Evaluate-run metrics, in the order the table shows them (the ones present in the runs are kept): test BLEU greedy,
# the paper's sampled decoding, its other metrics, the listening check, then the held-out conditions.
# BLEU first (greedy, sampled, swapped audio, each held-out condition), then the paper's other metrics, then the rest.
SCORE_COLUMNS = ("bleu", "bleu_sampled_mean", "bleu_sampled_std", "bleu_swapped", "listening_gap_bleu")
CONDITIONS = ("bleu_snr", "bleu_train_voices")  # prefixes: the noisy test clips, the training speakers' clean ones
OTHER_COLUMNS = ("bertscore_f1", "rouge1", "rouge2", "rougeL", "meteor", "chrf", "wer", "bleu_swapped_sampled")
LAST_PREFIXES = ("robustness_",)
COMPARISON_BARS = ("bleu", "bleu_sampled_mean", "bleu_swapped", "bleu_train_voices")
CURVES = ("eval_bleu", "loss", "reward", "kl", "rewards/bleu/mean", "completions/mean_length", "frac_reward_zero_std",
          "entropy", "grad_norm", "learning_rate")


@dataclass(frozen=True)
class View:
    view_id: str
    name: str
    state: dict[str, Any]
    chart: bool = False  # open on the Chart tab rather than the table


# --- which runs -------------------------------------------------------------------------------------------------------


def _newest(client: Any, exp_id: str, filter_string: str) -> Any | None:
    found = client.search_runs([exp_id], filter_string=f"{filter_string} and attributes.status = 'FINISHED'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def _methods_in(metrics_dir: Path, task: str, suffix: str, methods: Sequence[str]) -> list[str]:
    """`methods` first (in that order), then any other folder of metrics_dir with the file (evaluate.extra_models)."""
    found = sorted(p.name for p in metrics_dir.glob("*") if (p / f"{task}{suffix}").is_file())
    return [*methods, *(m for m in found if m not in methods)]


def evaluate_runs(client: Any, exp_id: str, metrics_dir: Path) -> list[Any]:
    """The evaluate run of every task and model: the one that wrote metrics/<model>/<task>.json, else the newest."""
    runs = []
    for task in TASKS:
        for method in _methods_in(metrics_dir, task, ".json", METHODS):
            where = f"tags.stage = 'evaluate' and tags.task = '{task}' and tags.method = '{method}'"
            path = metrics_dir / method / f"{task}.json"
            made = artifact_md5.runs_for_file(client, exp_id, path, "evaluation", where)
            run = made[0] if made else _newest(client, exp_id, where)
            if run is not None:
                runs.append(run)
    return runs


def training_runs(client: Any, exp_id: str, metrics_dir: Path) -> list[Any]:
    """The training run of every trained method and task: the one that wrote metrics/<m>/<t>.train.json, else newest."""
    runs = []
    for task in TASKS:
        for method in TRAINED:
            where = f"tags.stage = '{method}' and tags.task = '{task}'"
            made = artifact_md5.runs_for_file(client, exp_id, metrics_dir / method / f"{task}.train.json", None, where)
            run = made[0] if made else _newest(client, exp_id, where)
            if run is not None:
                runs.append(run)
    return runs


# --- the views' state -------------------------------------------------------------------------------------------------


def column(kind: str, key: str) -> str:
    """The runs table's column id: `metrics.`bleu``, `tags.`task`` (MLflow's canonical sort key)."""
    return f"{kind}.`{key}`"


def score_columns(metric_keys: set[str]) -> list[str]:
    """The evaluate metrics to show, those present: BLEU's, the held-out conditions (noisy, then their swapped-audio
    twins), the paper's other metrics, the robustness ratios."""
    conditions = sorted((k for k in metric_keys if k.startswith(CONDITIONS)), key=lambda k: (k.endswith("_swapped"), k))
    chosen = [*SCORE_COLUMNS, *conditions, *OTHER_COLUMNS]
    chosen += sorted(k for k in metric_keys if k.startswith(LAST_PREFIXES))
    return [k for k in dict.fromkeys(chosen) if k in metric_keys]


def run_filter(runs: Sequence[Any], fallback: str) -> str:
    """A search filter matching exactly these runs (MLflow's `IN` works on run ids only), or `fallback` when none."""
    if not runs:
        return fallback
    return "attributes.run_id IN (" + ", ".join(f"'{r.info.run_id}'" for r in runs) + ")"


def _short_id(text: str) -> str:
    """A stable short id (the page only needs ids unique within the view; the tag holds 20000 characters)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, text).hex[:12]


def _section(name: str, display: bool = True) -> dict[str, Any]:
    return {"uuid": _short_id(name), "name": name, "display": display, "isReordered": True}


# The page adds its two default sections when they are missing, empty here (every other chart is deleted): hidden.
_DEFAULT_SECTIONS = ("Model metrics", "System metrics")


def _chart(kind: str, metric: str, section: str, deleted: bool = False) -> dict[str, Any]:
    chart: dict[str, Any] = {"uuid": _short_id(f"{section}/{kind}/{metric}"), "type": kind, "metricKey": metric,
                             "deleted": deleted}
    if deleted:  # the page only needs to know the metric has a chart (the view must fit a 20000-character tag)
        return chart
    chart |= {"metricSectionId": _section(section)["uuid"], "isGenerated": False, "runsCountToCompare": 50,
              "displayName": metric}
    if kind == "LINE":
        chart |= {"selectedMetricKeys": [metric], "lineSmoothness": 0, "xAxisScaleType": "linear",
                  "scaleType": "linear", "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
                  "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": False,
                  "useGlobalLineSmoothing": False}
    return chart


def charts_for(kind: str, shown: Sequence[str], metric_keys: set[str], section: str) -> list[dict[str, Any]]:
    """The charts of `shown` (those the runs have), plus a deleted chart for every other metric of the runs.

    The page adds a chart for each metric that has none, burying the chosen ones among dozens (TRL logs ~40 per
    step); a chart marked deleted is how the page remembers that the user removed it, so it adds none for those.
    """
    chosen = [k for k in shown if k in metric_keys]
    return ([_chart(kind, k, section) for k in chosen]
            + [_chart(kind, k, section, deleted=True) for k in sorted(metric_keys - set(chosen))])


def _state(search_filter: str, order_by: str, columns: Sequence[str], charts: Sequence[dict[str, Any]],
           section: str) -> dict[str, Any]:
    return {
        # the search facets
        "searchFilter": search_filter, "orderByKey": order_by, "orderByAsc": True, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        # the page's UI state: columns in this order, every run shown in the charts, these charts only
        "selectedColumns": list(columns), "columnOrder": list(columns), "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": list(charts), "isAccordionReordered": True,
        "compareRunSections": [_section(section), *(_section(s, False) for s in _DEFAULT_SECTIONS)],
        "hideEmptyCharts": True,
        "useGroupedValuesInCharts": True, "runListHidden": False, "viewMaximized": False, "groupBy": None,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def comparison_view(runs: Sequence[Any]) -> View:
    """Evaluate runs of every task and model, sorted by task; tags task and method, then the scores as columns."""
    metric_keys = {k for r in runs for k in r.data.metrics}
    scores = score_columns(metric_keys) if runs else list(SCORE_COLUMNS[:1])
    columns = [column("tags", "task"), column("tags", "method"), *(column("metrics", k) for k in scores)]
    section = "Test scores"
    charts = charts_for("BAR", COMPARISON_BARS, metric_keys, section)
    state = _state(run_filter(runs, "tags.stage = 'evaluate'"), column("tags", "task"), columns, charts, section)
    return View(COMPARISON_VIEW, "SFT vs GRPO: test scores", state)


def curves_view(runs: Sequence[Any]) -> View:
    """Training runs of SFT, SFT (matched compute), GRPO and MP-GRPO: validation BLEU, loss, reward, KL by step."""
    metric_keys = {k for r in runs for k in r.data.metrics}
    section = "Training curves"
    charts = charts_for("LINE", CURVES, metric_keys, section)
    summary = [k for k in ("best_validation_bleu", "best_step", "train_minutes") if k in metric_keys]
    columns = [column("tags", "task"), column("tags", "method"), *(column("metrics", k) for k in summary)]
    # Without runs: every run with a method but base that is not an evaluation (MLflow's search has no OR).
    state = _state(run_filter(runs, "tags.method != 'base' and tags.stage != 'evaluate'"), column("tags", "task"),
                   columns, charts, section)
    return View(CURVES_VIEW, "SFT vs GRPO: training curves", state, chart=True)


# --- writing them -----------------------------------------------------------------------------------------------------


def save_view(client: Any, exp_id: str, view: View) -> None:
    """Write the view as the runs page's Views menu stores it (keeping its creation time when it exists)."""
    tag = VIEW_TAG_PREFIX + view.view_id
    now = int(time.time() * 1000)
    created = now
    old = client.get_experiment(exp_id).tags.get(tag)
    if old:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            created = int(json.loads(old).get("createdAt", now))
    state = view.state
    if len(json.dumps(state)) > MAX_STATE_CHARS:  # too many metrics: let the page generate their charts after all
        state = {**state, "compareRunCharts": [c for c in state["compareRunCharts"] if not c["deleted"]]}
    envelope = {"name": view.name, "createdAt": created, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(exp_id, tag, json.dumps(envelope))


def view_path(exp_id: str, view: View) -> str:
    """The page's route (after `#`): the runs tab, the Model training side bar, the view; the chart tab for curves."""
    query = f"workflowType=machine_learning&viewStateShareKey={view.view_id}"
    return f"/experiments/{exp_id}/runs?{query}" + ("&compareRunsMode=CHART" if view.chart else "")


def view_url(base_url: str, exp_id: str, view: View) -> str:
    return f"{base_url.rstrip('/')}/#{view_path(exp_id, view)}"


def description(exp_id: str, views: Sequence[View], counts: Mapping[str, int]) -> str:
    """The experiment's description: one line of links, shown above the runs on every tab of the experiment."""
    links = " · ".join(f"[{v.name}](#{view_path(exp_id, v)})" for v in views)
    return (f"{NOTE_HEADER} (written by `python -m flows.mlflow_ui`; {counts.get(COMPARISON_VIEW, 0)} evaluate runs, "
            f"{counts.get(CURVES_VIEW, 0)} training runs of this workspace): {links}")


def write_views(client: Any, exp_id: str, metrics_dir: Path) -> list[View]:
    """Build both views from the store and the workspace's metrics, save them, and describe the experiment."""
    evals, trains = evaluate_runs(client, exp_id, metrics_dir), training_runs(client, exp_id, metrics_dir)
    views = [comparison_view(evals), curves_view(trains)]
    for view in views:
        save_view(client, exp_id, view)
    note = client.get_experiment(exp_id).tags.get(NOTE_TAG, "")
    if not note.strip() or note.startswith(NOTE_HEADER):
        client.set_experiment_tag(exp_id, NOTE_TAG, description(
            exp_id, views, {COMPARISON_VIEW: len(evals), CURVES_VIEW: len(trains)}))
    return views


def metrics_dir(root: Path) -> Path:
    """The workspace's metrics folder (params.yaml's paths.metrics)."""
    from steps.core.config import load_config

    try:
        return root / load_config(root / "params.yaml").paths.metrics
    except Exception:  # a broken params.yaml must not keep the UI from starting
        return root / "metrics"


def setup(base_url: str, root: Path | None = None) -> list[tuple[View, str]]:
    """Write the views into the store in use; (view, URL) pairs, the comparison first. Raises on a store error."""
    from mlflow.tracking import MlflowClient

    root = root or tracking.repo_root()
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    exp_id = tracking.experiment_id(client)
    return [(v, view_url(base_url, exp_id, v)) for v in write_views(client, exp_id, metrics_dir(root))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:5000", help="where the UI is served")
    args = parser.parse_args(argv)
    for view, url in setup(args.base_url):
        print(f"{view.name}: {url}")


if __name__ == "__main__":
    main()
