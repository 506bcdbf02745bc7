"""steps/core/tracking.py: where runs go, parent/child nesting, the dvc-invocation key, and never crashing a stage.

    pytest tests/test_tracking.py            # fast part (no MLflow database)
    pytest tests/test_tracking.py -m slow    # against a real SQLite store (its schema takes ~6 s to create)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from steps.core import tracking
from steps.core.config import Config
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("clean_tracking_env")


def test_default_store_is_absolute_sqlite_under_the_main_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.ENV_ROOT, raising=False)
    monkeypatch.chdir(REPO / "steps")  # anywhere inside the checkout resolves to its root
    # ...the main repository's root: the checkout itself, or the repository a git worktree belongs to
    common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip()
    main = Path(common).parent
    assert tracking.tracking_uri() == f"sqlite:///{main / 'mlruns' / 'mlflow.db'}"
    assert tracking.artifact_root() == (main / "mlruns" / "artifacts").as_uri()
    monkeypatch.setenv(tracking.ENV_ROOT, str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_root_from_a_git_worktree_is_the_main_repo(monkeypatch, tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=main, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=main, check=True)
    subprocess.run([*git, "worktree", "add", "-q", "--detach", str(tmp_path / "wt")], cwd=main, check=True)
    monkeypatch.delenv(tracking.ENV_ROOT, raising=False)
    monkeypatch.chdir(tmp_path / "wt")
    assert tracking.repo_root() == main.resolve()


def test_flatten_config():
    flat = tracking.flatten({"seed": 1, "synth": {"sizes": {"ast": {"train": 4}}, "voices": ("a", "b")}, "n": None})
    assert flat == {"seed": "1", "synth.sizes.ast.train": "4", "synth.voices": "['a', 'b']", "n": "null"}
    assert len(tracking.flatten({"long": "x" * 10000})["long"]) == 6000


def test_tracking_failure_warns_once_and_never_raises(monkeypatch, capsys):
    # A store that cannot be opened (its folder cannot be created under /proc).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/no-such-dir/mlflow.db")
    ran = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracking.stage_run(Config(), stage="synth", task="sqa", method="base") as run:
            run.log_metrics({"loss": 1.0}, step=0)
            run.log_artifact(__file__)
            ran.append(True)
        assert tracking.start_pipeline_run("x") is None
    assert ran and not run.active
    assert len([w for w in caught if "MLflow tracking failed" in str(w.message)]) == 1
    assert capsys.readouterr().err.count("WARNING: MLflow tracking failed") == 1


def test_stage_errors_still_propagate_without_tracking(monkeypatch):
    monkeypatch.setenv(tracking.ENV_TRACKING, "off")
    with pytest.raises(ZeroDivisionError), tracking.stage_run(Config(), stage="synth") as run:
        assert not run.active
        _ = 1 / 0


_KEY_SCRIPT = textwrap.dedent("""
    import subprocess, sys
    cmd = [sys.executable, "-c", "from steps.core.tracking import invocation_key; print(invocation_key())"]
    # Like DVC: each stage's cmd through a shell, one after the other, from one process.
    for _ in range(2):
        subprocess.run(["sh", "-c", " ".join(cmd[:2]) + ' "' + cmd[2] + '"'], check=True)
""")


def test_invocation_key_is_shared_within_one_dvc_run_and_differs_across_runs(monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "synth")
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _KEY_SCRIPT], cwd=REPO, capture_output=True, text=True, check=True)
        runs.append(out.stdout.split())
    assert len(runs[0]) == 2 and runs[0][0] == runs[0][1] != "None"   # both stages of one invocation: same key
    assert runs[1][0] == runs[1][1] and runs[1][0] != runs[0][0]         # the next invocation: another key
    monkeypatch.delenv("DVC_STAGE")
    assert tracking.invocation_key() is None                             # not under DVC: no shared parent


# --- real store -------------------------------------------------------------------------------------------------------




@pytest.mark.slow
def test_stage_run_nests_under_the_parent_from_the_env(store, monkeypatch):
    root, client = store
    parent = tracking.start_pipeline_run("flow-run", {"launcher": "test"})
    assert parent is not None
    monkeypatch.setenv(tracking.ENV_PARENT_RUN_ID, parent)
    monkeypatch.setenv(tracking.ENV_DVC_EXP, "my-exp")
    with tracking.stage_run(Config(seed=7), stage="sft", task="sqa", method="sft") as run:
        for step in range(3):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    child = client.get_run(run.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert {k: child.data.tags[k] for k in ("stage", "task", "method", "dvc_experiment")} == {
        "stage": "sft", "task": "sqa", "method": "sft", "dvc_experiment": "my-exp"}
    assert child.data.params["seed"] == "7" and "synth.sizes.ast.train" in child.data.params
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert child.info.status == "FINISHED"
    exp = client.get_experiment(child.info.experiment_id)
    assert exp.name == "speech-grpo" and exp.artifact_location == (root / "mlruns" / "artifacts").as_uri()
    assert [f.path for f in client.list_artifacts(run.run_id, "config")] == ["config/resolved_params.yaml"]


@pytest.mark.slow
def test_stage_run_resumes_the_run_the_flow_opened(store, monkeypatch):
    _, client = store
    parent = tracking.start_pipeline_run("flow-run")
    child = tracking.start_child_run(parent, "prepare@sqa", {"dvc_stage": "prepare@sqa"})
    monkeypatch.setenv(tracking.ENV_RUN_ID, child)
    with pytest.raises(RuntimeError), tracking.stage_run(Config(), stage="prepare", task="sqa") as run:
        assert run.run_id == child
        raise RuntimeError("stage broke")
    assert client.get_run(child).info.status == "FAILED"
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    runs = client.search_runs([client.get_run(parent).info.experiment_id])
    assert len(runs) == 2  # no extra run was created


_DVC_LIKE = textwrap.dedent("""
    import subprocess, sys
    stage = "from steps.core.config import Config; from steps.core.tracking import stage_run; "\\
            "import sys; stage_run_ = stage_run(Config(), stage=sys.argv[1]); run = stage_run_.__enter__(); "\\
            "run.log_metrics({'x': 1.0}); stage_run_.__exit__(None, None, None)"
    for name in ("synth", "prepare"):
        subprocess.run([sys.executable, "-c", stage, name], check=True, env={**__import__("os").environ,
                       "DVC_STAGE": name})
""")


@pytest.mark.slow
def test_stages_of_one_dvc_invocation_share_a_parent(store):
    _, client = store
    for _ in range(2):  # two invocations, two stages each
        subprocess.run([sys.executable, "-c", _DVC_LIKE], cwd=REPO, check=True)
    runs = client.search_runs([client.get_experiment_by_name("speech-grpo").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2 and len(children) == 4
    for p in parents:
        mine = sorted(c.data.tags["dvc_stage"] for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id)
        assert mine == ["prepare", "synth"]
        assert p.info.status == "FINISHED" and p.data.tags["launcher"] == "dvc"
