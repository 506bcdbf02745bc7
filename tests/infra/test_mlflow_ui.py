"""In a browser: the command the README gives (`python -m flows.mlflow_ui`) opens on SFT's and GRPO's test BLEU side by
side for each task, with no further clicks, and the training curves are one click away.

Headless Chromium over the DevTools protocol (tests/browser.py) against the real launcher and `mlflow ui`, over a
store holding what a pipeline run logs (evaluate and training runs, md5-tagged files). Skipped without `chromium`
(`apt-get install -y chromium`). The screenshot lands in pytest's tmp folder (its path is printed);
bench/mlflow_ui_check.py runs the same walk on a real pipeline's store and keeps its screenshots.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from steps.core import tracking
from tests.browser import Browser, chromium_path
from tests.conftest import REPO
from tests.helpers import evaluate_run
from tests.infra.servers import BIN, env_with_bin, free_port, http_ok, running

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_path() is None, reason="needs chromium (apt-get install -y chromium)")]
pytestmark = [pytest.mark.infra, pytest.mark.usefixtures("clean_tracking_env")]  # store: tests/conftest.py

# The page's localStorage on a browser's second visit: MLflow 3.17 opens its Assistant panel once, on the first.
SECOND_VISIT = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True, "mlflow.assistant.panelOpen_v1": False}
BLEU = {("sqa", "sft"): 31.25, ("sqa", "grpo"): 33.75, ("ast", "sft"): 41.5, ("ast", "grpo"): 40.125}


def _train(root: Path, task: str, method: str) -> None:
    from steps.core.config import Config

    summary = root / "metrics" / method / f"{task}.train.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(f'{{"method": "{method}", "task": "{task}"}}')
    with tracking.stage_run(Config(), stage=method, task=task, method=method) as run:
        for step in (10, 20, 30):
            run.log_metrics({"eval_bleu": step / 2, "loss": 3.0 - step / 20, "kl": step / 1000}, step=step)
        run.log_artifact(summary)


def test_the_launcher_opens_on_the_comparison_and_the_curves_are_one_click_away(store, tmp_path):
    root, _ = store
    for (task, method), bleu in BLEU.items():
        evaluate_run(root, task, method, bleu)
        _train(root, task, method)
    evaluate_run(root, "sqa", "base", 5.5)
    port = free_port()
    env = env_with_bin({tracking.ENV_ROOT: str(root), "MLFLOW_TRACKING_URI": tracking.tracking_uri()})
    log = tmp_path / "mlflow-ui.log"
    cmd = [sys.executable, "-m", "flows.mlflow_ui", "--port", str(port)]
    with running(cmd, log, env, REPO, ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
                 timeout=180, what="python -m flows.mlflow_ui"):
        printed = log.read_text()
        url = re.search(r"^\s+(http://127\.0\.0\.1:\d+/#/experiments/\S+viewStateShareKey=sft-vs-grpo)$", printed,
                        re.M)
        assert url, f"the launcher printed no comparison URL:\n{printed}"
        with Browser() as browser:
            start = time.monotonic()
            browser.open(url.group(1), local_storage=SECOND_VISIT)
            text = browser.wait_for_text(["evaluate", "bleu", "bleu_swapped", "bleu_snr20", "31.25", "40.125"])
            seconds = time.monotonic() - start
            shot = browser.screenshot(tmp_path / "comparison.png")
            print(f"\ncomparison rendered in {seconds:.1f} s; screenshot {shot}", file=sys.stderr)
            # Both tasks, SFT and GRPO, each score on the first screen; the base model too; tasks grouped.
            for value in ("31.25", "33.75", "41.5", "40.125", "5.5"):
                assert value in text
            rows = [line for line in text.splitlines() if line in ("sqa", "ast")]
            assert rows == sorted(rows), "rows are sorted by task"
            assert "Model training" in text and "Overview" not in text  # the Model training side bar, not GenAI's
            # One click: the link at the top of the experiment page opens the training curves (as charts) in a new
            # tab; headless, the test follows the link in the same page.
            links = browser.links("SFT vs GRPO: training curves")
            assert [link["target"] for link in links] == ["_blank"]
            assert links[0]["href"].startswith("#/experiments/") and "compareRunsMode=CHART" in links[0]["href"]
            browser.open(url.group(1).split("#")[0] + links[0]["href"])
            text = browser.wait_for_text(["Training curves", "eval_bleu", "loss", "kl", "Step"])  # Step: an x axis
            assert "Add chart" in text and "clip_ratio" not in text
            browser.screenshot(tmp_path / "curves.png")
    assert (BIN / "mlflow").exists()
