"""flows/deploy.py: the pipeline deployed to a Prefect `process` work pool and run by a real worker.

    pytest tests/infra/test_deploy.py              # the deployment object and its options, no server
    pytest tests/infra/test_deploy.py -m slow      # a real Prefect server and worker on 127.0.0.1, one cheap stage
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import deploy, workspace
from tests.conftest import REPO
from tests.infra.servers import BIN, HOST, env_with_bin, free_port, http_ok, running, wait_until

pytestmark = pytest.mark.infra  # real servers, a DVC remote, the dependency sets: tests/infra/

POOL = "speech-grpo-test"
# The synth stage only, at a few clips per split: the point is where the run executes, not what it computes.
TINY = [f"synth.sizes.{pool}.{split}={n}" for pool in ("ast", "sqa", "pretrain")
        for split, n in (("train", 4), ("validation", 2), ("test", 2))] + ["synth.workers=1"]


def test_the_deployment_loads_the_checkout_at_source_on_the_worker() -> None:
    source = Path("/nodes/gpu-1/speech-grpo")  # needs not exist here: only the worker's machine opens it
    dep = deploy.build_deployment("gpu", source, env={"MLFLOW_TRACKING_URI": "http://10.0.0.5:5000"})
    assert dep.work_pool_name == "gpu" and dep.name == deploy.DEPLOYMENT_NAME and dep.concurrency_limit == 1
    assert dep.entrypoint == "flows/pipeline.py:pipeline"
    assert dep.storage.to_pull_step() == {
        "prefect.deployments.steps.set_working_directory": {"directory": str(source)}}
    assert dep.job_variables == {"working_dir": str(source), "env": {"MLFLOW_TRACKING_URI": "http://10.0.0.5:5000"}}
    # The UI form: the flow's parameters, as with flow.serve.
    assert {"overrides", "stages", "task", "experiment_name"} <= set(dep._parameter_openapi_schema.properties)
    path, _, func = deploy.ENTRYPOINT.partition(":")
    assert (REPO / path).is_file() and func == "pipeline"


def test_env_options_are_key_value() -> None:
    assert deploy.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        deploy.parse_env(["nokey"])


# --------------------------------------------------------------------------------------------------- end to end


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def _clone_synth_only(root: Path) -> Path:
    """A throwaway clone of this repo's HEAD whose pipeline is the synth stage at tiny sizes, committed.

    `dvc exp save` needs every output of dvc.yaml, so the stages the run does not reach are cut from it.
    """
    _git("clone", "-q", str(REPO), str(root), cwd=REPO)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"synth": stages["synth"]}}, sort_keys=False))
    (root / "dvc.lock").unlink(missing_ok=True)
    workspace.write_overrides(root / "params.yaml", TINY)
    _git("add", "-A", cwd=root)
    _git("commit", "-qm", "synth only, tiny sizes", cwd=root)
    return root


@contextlib.contextmanager
def _api(url: str) -> Iterator[Any]:
    """A synchronous Prefect client on `url` (the test process's own settings point elsewhere or nowhere)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        yield client


@pytest.mark.slow
def test_a_worker_runs_a_run_triggered_through_the_api(tmp_path: Path) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    started = time.monotonic()
    clone = _clone_synth_only(tmp_path / "repo")
    port = free_port()
    api_url = f"http://{HOST}:{port}/api"
    env = env_with_bin({"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api_url,
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        "PREFECT_WORKER_QUERY_SECONDS": "1",  # poll every second (default 10): a faster test
                        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5"})
    # The clone's own code must run, as on a worker node: no path into this checkout, no tracking store override.
    for var in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "SPEECH_GRPO_ROOT", "SPEECH_GRPO_TRACKING"):
        env.pop(var, None)

    def run(*cmd: str) -> str:
        out = subprocess.run(list(cmd), cwd=clone, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout}{out.stderr}"
        return out.stdout

    # The API only (--no-ui): see docs/cluster.md for the UI on a port other than 4200.
    server_cmd = [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port), "--no-ui"]
    with running(server_cmd, tmp_path / "server.log", env, tmp_path, ready=lambda: http_ok(f"{api_url}/health"),
                 timeout=120, what="prefect server"):
        run(str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process")
        # Tracking off in the flow run, set through the deployment: shows that its env reaches the worker's run.
        printed = run(sys.executable, "-m", "flows.deploy", "--pool", POOL, "--source", str(clone),
                      "--env", "SPEECH_GRPO_TRACKING=off")
        assert f"'speech-grpo-pipeline/{deploy.DEPLOYMENT_NAME}'" in printed

        worker_cmd = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", "gpu-node-1", "--limit", "1"]
        with _api(api_url) as client, running(worker_cmd, tmp_path / "worker.log", env, tmp_path):

            def worker_online() -> bool:
                return any(w.status == "ONLINE" for w in client.read_workers_for_work_pool(POOL))

            wait_until(worker_online, 60, "prefect worker", log=tmp_path / "worker.log")
            dep = client.read_deployment_by_name(f"speech-grpo-pipeline/{deploy.DEPLOYMENT_NAME}")
            flow_run = client.create_flow_run_from_deployment(
                dep.id, parameters={"overrides": ["seed=7"], "stages": ["synth"], "experiment_name": "on-worker"})

            def finished() -> bool:
                state = client.read_flow_run(flow_run.id).state
                return state is not None and state.is_final()

            waited = wait_until(finished, 300, "the triggered flow run", log=tmp_path / "worker.log", interval=1)
            done = client.read_flow_run(flow_run.id)
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")

    assert done.state.is_completed(), f"{done.state.name}: {done.state.message}\n{worker_log[-4000:]}"
    assert done.work_pool_name == POOL and done.infrastructure_pid  # started by the process worker
    assert str(flow_run.id) in worker_log  # ... this one
    assert {t.name: t.state.name for t in tasks} == {"synth": "Completed"}

    # Saved as a DVC experiment of the clone, with the override; the clone's workspace untouched.
    assert "on-worker" in run(str(BIN / "dvc"), "exp", "list", "--name-only").split()
    ref = next(r for r in _git("for-each-ref", "--format=%(refname)", "refs/exps", cwd=clone).split()
               if r.endswith("/on-worker"))
    assert yaml.safe_load(_git("show", f"{ref}:params.yaml", cwd=clone))["seed"] == 7
    assert "synth" in yaml.safe_load(_git("show", f"{ref}:dvc.lock", cwd=clone))["stages"]
    assert _git("status", "--porcelain", cwd=clone) == ""
    assert len(_git("worktree", "list", cwd=clone).splitlines()) == 1
    assert not (clone / "mlruns" / "mlflow.db").exists()  # SPEECH_GRPO_TRACKING=off came from the deployment
    total = time.monotonic() - started
    print(f"\ntriggered run done {waited:.1f} s after its creation; test {total:.1f} s", file=sys.stderr)
