"""The MLflow walk of docs/mlflow.md, checked in headless Chromium on a real pipeline's store, with a screenshot a step.

    python bench/mlflow_ui_check.py [--repo .] [--out bench/results/mlflow_ui] [--port 5077]

Run it from this checkout after `dvc repro` in `--repo` (a fresh clone with the toy sizes of tests/test_dvc_remote.py
takes a few minutes). It starts `python -m flows.mlflow_ui` there (the command the README gives), reads the URL it
prints, and walks: the comparison (no clicks: SFT's and GRPO's test BLEU per task), its Chart tab, its Artifacts tab
(each model's answer per clip), the training curves (the description's link), the Models page and one registered
model's `report` alias, and the plain runs page (no empty runs of stages DVC skipped). Each step waits for the text it
promises and saves `<out>/<n>-<step>.png`; a step whose text does not come fails the walk (exit status 1).
Needs Debian's `chromium`. A check, not a benchmark: the seconds printed depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser import Browser
from tests.infra.servers import env_with_bin, free_port, http_ok, running

SECOND_VISIT = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True, "mlflow.assistant.panelOpen_v1": False}


def runs_of_skipped_stages(repo: Path) -> int:
    """Active runs tagged dvc_status=cached/restored: the empty runs the Prefect flow used to leave (now deleted)."""
    import os

    from mlflow.tracking import MlflowClient

    os.environ["SPEECH_GRPO_ROOT"] = str(repo)
    from steps.core import tracking

    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    exp_id = tracking.experiment_id(client)
    return sum(len(client.search_runs([exp_id], filter_string=f"tags.dvc_status = '{s}'")) for s in ("cached",
                                                                                                     "restored"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".", help="the repository whose store and metrics to show (default: .)")
    parser.add_argument("--out", default="bench/results/mlflow_ui", help="where the screenshots go")
    parser.add_argument("--port", type=int, default=0, help="the UI's port (default: a free one)")
    args = parser.parse_args(argv)
    repo, out = Path(args.repo).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    env = env_with_bin({"SPEECH_GRPO_ROOT": str(repo)})
    env.pop("PYTHONPATH", None)  # the repo's own code
    log = out / "mlflow_ui.log"
    cmd = [sys.executable, "-m", "flows.mlflow_ui", "--port", str(port)]
    failures: list[str] = []
    with running(cmd, log, env, repo, ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"), timeout=180,
                 what="python -m flows.mlflow_ui"):
        printed = log.read_text()
        urls = re.findall(r"^\s+(http://127\.0\.0\.1:\d+/#/experiments/\S+)$", printed, re.M)
        if len(urls) < 2:
            print(f"the launcher printed no view URLs:\n{printed}", file=sys.stderr)
            return 1
        comparison, curves = urls[0], urls[1]
        base, exp_route = comparison.split("#")[0], comparison.split("#")[1].split("?")[0]
        with Browser() as browser:
            n = 0

            def step(name: str, url: str, needles: list[str], check: Callable[[str], str | None] | None = None,
                     settle: float = 3.0) -> None:
                nonlocal n
                n += 1
                start = time.monotonic()
                browser.open(url, local_storage=SECOND_VISIT if n == 1 else None)
                try:
                    text = browser.wait_for_text(needles, timeout=90)
                    problem = check(text) if check else None
                except TimeoutError as exc:
                    text, problem = "", str(exc).splitlines()[0]
                time.sleep(settle)  # charts draw after their text appears
                shot = browser.screenshot(out / f"{n}-{name}.png")
                status = "ok" if problem is None else f"FAILED: {problem}"
                print(f"{n}. {name}: {status} ({time.monotonic() - start:.1f} s) -> {shot}", flush=True)
                if problem:
                    failures.append(f"{name}: {problem}")

            def both_methods_per_task(text: str) -> str | None:
                missing = [f"evaluate@{m}-{t}" for t in ("sqa", "ast") for m in ("sft", "grpo")
                           if f"evaluate@{m}-{t}" not in text]
                return f"rows missing: {missing}" if missing else None

            step("comparison", comparison, ["SFT vs GRPO: test scores", "bleu", "bleu_swapped", "task", "method"],
                 both_methods_per_task)
            step("comparison-charts", comparison + "&compareRunsMode=CHART", ["Test scores", "bleu"])
            step("answers", comparison + "&compareRunsMode=ARTIFACT", ["answers/", "Group by", "greedy"],
                 settle=8)
            step("training-curves", curves, ["Training curves", "eval_bleu", "loss", "Step"])
            step("models", f"{base}#/models", ["speech-grpo-sqa-grpo", "speech-grpo-ast-sft"])
            step("model-grpo-sqa", f"{base}#/models/speech-grpo-sqa-grpo?workflowType=machine_learning",
                 ["Aliases", "report", "Version 1"])

            step("all-runs", f"{base}#{exp_route}?workflowType=machine_learning", ["matching runs"])
            # Where Experiments -> speech-grpo lands (the GenAI overview by default): the link bar is there too.
            step("experiment-home", f"{base}#{exp_route.removesuffix('/runs')}",
                 ["Compare SFT and GRPO", "SFT vs GRPO: test scores"])
    empty = runs_of_skipped_stages(repo)
    print(f"active runs of stages DVC skipped: {empty}", flush=True)
    if empty:
        failures.append(f"{empty} empty runs of skipped stages are listed")
    print(f"\nscreenshots in {out}" + (f"; {len(failures)} step(s) failed" if failures else "; every step passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
