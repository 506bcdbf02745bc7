"""flows/: stage order from DVC, running a stage through DVC, overrides, and the whole flow through a Prefect API.

    pytest tests/infra/test_flow.py              # fast part: a toy DVC repo, no Prefect server
    pytest tests/infra/test_flow.py -m slow      # the flow end to end in a clone of this repo (tiny sizes), ~1-2 min
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from flows import workspace
from flows.dvc_stages import DvcBusy, StageFailed, StageNode, run_stage, select_for_task, stage_graph
from steps.core.config import ConfigError
from tests.conftest import REPO

pytestmark = pytest.mark.infra  # real servers, a DVC remote, the dependency sets: tests/infra/

DVC = str(Path(sys.executable).parent / "dvc")

TOY_DVC_YAML = textwrap.dedent("""
    stages:
      c:
        cmd: cat b_x.txt b_y.txt > c.txt
        deps:
          - b_x.txt
          - b_y.txt
        outs:
          - c.txt
      b:
        foreach: [x, y]
        do:
          cmd: cat a.txt > b_${item}.txt
          deps:
            - a.txt
          outs:
            - b_${item}.txt
      a:
        cmd: echo a > a.txt
        outs:
          - a.txt
      broken:
        cmd: echo boom-from-the-stage && exit 3
""")


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory) -> Path:
    """A DVC repo (no git) whose dvc.yaml lists stages out of order, with a foreach and a diamond."""
    tmp_path = tmp_path_factory.mktemp("toy")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(TOY_DVC_YAML)
    (tmp_path / "extra").mkdir()  # like sweeps/dvc.yaml: downstream of the main pipeline, run only on request
    (tmp_path / "extra" / "dvc.yaml").write_text("stages:\n  more:\n    wdir: ..\n    cmd: cp a.txt more.txt\n"
                                                 "    deps: [a.txt]\n    outs: [more.txt]\n")
    return tmp_path


def _dvc_dry_order(root: Path, *targets: str) -> list[str]:
    out = subprocess.run([DVC, "repro", "--dry", "--force", *targets], cwd=root, capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"Running stage '([^']+)'", out)


def test_stage_order_is_dvcs_own(toy_repo):
    nodes = stage_graph(toy_repo)
    assert [n.name for n in nodes] == _dvc_dry_order(toy_repo)
    assert {n.name: n.upstream for n in nodes}["c"] == ("b@x", "b@y")
    assert [n.name for n in stage_graph(toy_repo, ["b@y"])] == ["a", "b@y"]
    assert "extra/dvc.yaml:more" not in [n.name for n in nodes]  # as `dvc repro`: ./dvc.yaml only
    assert [n.name for n in stage_graph(toy_repo, ["extra/dvc.yaml:more"])] == ["a", "extra/dvc.yaml:more"]


@pytest.mark.slow
def test_run_stage_streams_output_and_reports_cached(toy_repo):
    lines: list[str] = []
    first = run_stage(toy_repo, "a", lines.append)
    assert first.status == "ran" and any("Running stage 'a'" in line for line in lines)
    again = run_stage(toy_repo, "a", lines.append)
    assert again.status == "cached" and again.skipped


def test_failing_stage_raises_with_its_output_and_is_not_retried(toy_repo):
    from prefect.states import Failed

    from flows.pipeline import _retry_if_busy

    with pytest.raises(StageFailed, match="boom-from-the-stage") as err:
        run_stage(toy_repo, "broken", lambda line: None)
    assert not _retry_if_busy(None, None, Failed(data=err.value))
    assert _retry_if_busy(None, None, Failed(data=DvcBusy("locked")))


def test_select_for_task_drops_other_tasks_and_their_dependents():
    nodes = [StageNode("synth", ()), StageNode("prepare@sqa", ("synth",)), StageNode("prepare@ast", ("synth",)),
             StageNode("prepare@pretrain", ("synth",)), StageNode("sft@sqa", ("prepare@sqa",)),
             StageNode("sft@ast", ("prepare@ast",)), StageNode("report", ("sft@ast", "sft@sqa"))]
    kept = [n.name for n in select_for_task(nodes, "sqa", ("sqa", "ast"))]
    assert kept == ["synth", "prepare@sqa", "prepare@pretrain", "sft@sqa"]


def test_overrides_are_validated_before_anything_runs():
    from flows.pipeline import resolve_overrides

    params = REPO / "params.yaml"
    with pytest.raises(ConfigError) as err:
        resolve_overrides(params, ["synth.sizes.ast.trian=3", "seed=-1", "nonsense"], {})
    text = str(err.value)
    assert "nonsense" in text and "expected key.path=value" in text
    with pytest.raises(ConfigError, match=r"trian: unknown key\. Did you mean 'train'"):
        resolve_overrides(params, ["synth.sizes.ast.trian=3"], {})
    assert resolve_overrides(params, [], {"off_policy_samples": 2}) == ["mpgrpo.num_off_policy=2"]
    assert resolve_overrides(params, [], {"grpo_learning_rate": 0.001}) == ["grpo.lr=0.001", "mpgrpo.lr=0.001"]
    with pytest.raises(ConfigError, match=r"mpgrpo\.num_off_policy: must be within \[0, num_generations\)"):
        resolve_overrides(params, [], {"off_policy_samples": 8})
    # Shortcuts first, explicit overrides last (they win); values keep their YAML type.
    out = resolve_overrides(params, ["model.name_or_path=other"], {"model": "tiny", "grpo_beta": None})
    assert out == ['model.name_or_path="tiny"', "model.name_or_path=other"]


def test_write_overrides_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1  # the seed\nsynth:\n  sizes: {ast: {train: 5}}\n")
    workspace.write_overrides(params, ["seed=7", "synth.sizes.ast.train=50"])
    assert "# the seed" in params.read_text()
    assert yaml.safe_load(params.read_text()) == {"seed": 7, "synth": {"sizes": {"ast": {"train": 50}}}}


def test_every_shortcut_is_a_flow_parameter():
    import inspect

    from flows.pipeline import SHORTCUTS, pipeline

    assert set(SHORTCUTS) <= set(inspect.signature(pipeline.fn).parameters)


# --- end to end -------------------------------------------------------------------------------------------------------

TINY = [f"synth.sizes.{pool}.{split}={n}" for pool in ("ast", "sqa", "pretrain")
        for split, n in (("train", 4), ("validation", 2), ("test", 2))] + ["synth.workers=1", "prepare.workers=1"]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone of this repo's HEAD, cut to the data stages (no seed sweep), with tiny corpus sizes committed.

    The training stages take minutes and have their own tests; `dvc exp save` needs every output of dvc.yaml to
    exist, so the clone's pipeline stops at prepare.
    """
    root = tmp_path_factory.mktemp("flow") / "repo"
    _git("clone", "-q", str(REPO), str(root), cwd=REPO)
    pipeline_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    pipeline_yaml = {"stages": {k: v for k, v in pipeline_yaml["stages"].items() if k in ("synth", "prepare")}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline_yaml, sort_keys=False))
    (root / "dvc.lock").unlink(missing_ok=True)
    # The seed sweep reads the training stages' outputs, absent here; its stages left dangling, DVC's own order of
    # the data stages varied with Python's hash seed (measured: prepare@ast before prepare@sqa in 2 of 4 runs).
    (root / "sweeps" / "dvc.yaml").unlink()
    workspace.write_overrides(root / "params.yaml", TINY)
    _git("add", "-A", cwd=root)
    _git("commit", "-qm", "data stages only, tiny sizes", cwd=root)
    return root


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _task_states(flow_run_id) -> dict[str, str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return {r.name: r.state.name for r in runs}

    return asyncio.run(read())


@pytest.mark.slow
def test_flow_end_to_end_with_an_override(clone, prefect_api, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import pipeline

    monkeypatch.setenv("SPEECH_GRPO_ROOT", str(clone))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{clone / 'mlruns' / 'mlflow.db'}")
    stages = [n.name for n in stage_graph(clone)]
    assert stages[0] == "synth" and set(stages) == {"synth", "prepare@sqa", "prepare@ast", "prepare@pretrain"}
    assert stages == _dvc_dry_order(clone)

    # A typo fails fast with the config error: no stage runs, no experiment.
    state = pipeline(overrides=["synth.sizes.ast.trian=3"], return_state=True)
    assert state.is_failed() and "Did you mean 'train'" in state.message
    assert _task_states(state.state_details.flow_run_id) == {}

    first = pipeline(overrides=["seed=7"], experiment_name="e2e-seed7", return_state=True)
    assert first.is_completed(), first.message
    summary = first.result()
    assert summary["stages"] == dict.fromkeys(stages, "ran")
    assert set(_task_states(first.state_details.flow_run_id).values()) == {"Completed"}
    # The experiment exists in the main repo; its workspace is untouched and the worktree gone.
    assert "e2e-seed7" in subprocess.run([DVC, "exp", "list", "--name-only"], cwd=clone, capture_output=True,
                                         text=True, check=True).stdout.split()
    shown = subprocess.run([DVC, "exp", "show", "--json"], cwd=clone, capture_output=True, text=True, check=True)
    assert "e2e-seed7" in shown.stdout
    assert _git("status", "--porcelain", cwd=clone) == ""
    assert len(_git("worktree", "list", cwd=clone).splitlines()) == 1

    # Nothing changed: every stage is skipped by DVC and shows as Cached.
    second = pipeline(overrides=["seed=7"], experiment_name="e2e-seed7", return_state=True)
    assert second.is_completed(), second.message
    assert set(second.result()["stages"].values()) <= {"cached", "restored"}
    assert set(_task_states(second.state_details.flow_run_id).values()) == {"Cached"}
    assert second.result()["dvc_experiment"] == "e2e-seed7-2"  # names are never reused

    # MLflow: one parent per flow run (tagged with its experiment), one child per stage task.
    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("speech-grpo")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("dvc_experiment") == "e2e-seed7"
                  and "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.run_id == summary["mlflow_parent_run"] and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.tags["dvc_stage"] for c in children) == sorted(stages)
    assert {c.data.tags["dvc_status"] for c in children} == {"ran"}
    # The second run's stages were all skipped: it leaves no (empty) child run in the default view; its parent
    # counts them and lists each stage's status.
    skipped = client.get_run(second.result()["mlflow_parent_run"])
    assert skipped.data.tags["dvc_stages_ran"] == "0" and skipped.data.tags["dvc_stages_skipped"] == str(len(stages))
    assert not client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{skipped.info.run_id}'")
    assert [f.path for f in client.list_artifacts(skipped.info.run_id, "pipeline")] == ["pipeline/stages.json"]

    # A stage that fails (valid config, missing source): its task fails with the stage's error, later ones do not
    # run, nothing is saved, the flow run fails, and the MLflow parent is marked FAILED.
    bad = pipeline(overrides=["seed=7", "prepare.tasks.sqa.source.path=data/nowhere"], experiment_name="e2e-bad",
                   return_state=True)
    assert bad.is_failed() and "stage prepare@sqa failed" in bad.message
    before = stages[:stages.index("prepare@sqa")]  # DVC's order: the stages before it ran (cached), none after
    assert _task_states(bad.state_details.flow_run_id) == {**dict.fromkeys(before, "Cached"), "prepare@sqa": "Failed"}
    assert "e2e-bad" not in subprocess.run([DVC, "exp", "list", "--name-only"], cwd=clone, capture_output=True,
                                           text=True, check=True).stdout.split()
    assert len(_git("worktree", "list", cwd=clone).splitlines()) == 1
    failed = client.search_runs([exp.experiment_id], filter_string="tags.dvc_experiment = 'e2e-bad'")
    assert {r.info.status for r in failed} == {"FAILED"}


def test_experiment_worktree_starts_from_the_workspace_lock(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git("init", "-q", cwd=root)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    _git("add", "-A", cwd=root)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=root)
    # `dvc repro` in the workspace rewrote the lock, not committed yet
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n# reproduced in the workspace\n")
    messages: list[str] = []
    with workspace.experiment_workspace(root, "run-1", messages.append) as path:
        assert (path / "dvc.lock").read_text() == (root / "dvc.lock").read_text()
    assert any("not committed" in m for m in messages)
    assert not path.exists()


@pytest.mark.parametrize("dvcfile", ["dvc.yaml", "sweeps/dvc.yaml"])
def test_every_stage_output_is_cached(dvcfile):
    """metrics/ and reports/ are gitignored: an output with `cache: false` would exist nowhere but the workspace, so
    a clone could not `dvc checkout` it and an experiment worktree would rerun its stage (measured: pretraining reran
    in a triggered run because metrics/base/pretrain.json could not be restored)."""
    stages = yaml.safe_load((REPO / dvcfile).read_text())["stages"]
    uncached = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                if isinstance(entry, dict) and any(opts.get("cache") is False for opts in entry.values()):
                    uncached.append(f"{name}: {next(iter(entry))}")
    assert not uncached, f"outputs with cache: false in {dvcfile}: {uncached}"
