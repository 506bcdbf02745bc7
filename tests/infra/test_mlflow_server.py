"""The pipeline's tracking and registry code against a real `mlflow server` (SQLite backend, proxied artifacts).

    pytest tests/infra/test_mlflow_server.py -m slow    # starts `mlflow server` on 127.0.0.1 and a free port

A stage's run (steps.core.tracking.stage_run) logs params, metrics and an artifact, registers a micro SALLM
(steps.core.registry.register_model) and loads it back (load_registered), all through MLFLOW_TRACKING_URI=http://...;
every artifact goes through the server (`mlflow-artifacts:` URIs), none is written by the client into the server's
artifact folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

# The stage code under test (these modules are expected to move to steps.core: change these lines only).
from steps.core import registry, tracking
from steps.modeling.tiny import save
from tests.infra.servers import BIN, HOST, env_with_bin, free_port, http_ok, running
from tests.tiny_sallm import build_micro

pytestmark = pytest.mark.infra  # real servers, a DVC remote, the dependency sets: tests/infra/


def server_command(store: Path, port: int) -> list[str]:
    """The command docs/cluster.md documents: SQLite backend, artifacts proxied from --artifacts-destination."""
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination", str(store / "artifacts"), "--host", HOST, "--port", str(port),
            "--workers", "1"]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Any:
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = env_with_bin()
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.monotonic()
    with running(server_command(store, port), tmp_path / "mlflow-server.log", env, store,
                 ready=lambda: http_ok(f"{url}/health"), timeout=120, what="mlflow server"):
        print(f"\nmlflow server up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield url, store


@pytest.fixture
def client_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_server: Any) -> Path:
    """The stage's environment on a GPU node: only MLFLOW_TRACKING_URI says where runs go."""
    url, _ = mlflow_server
    root = tmp_path / "node-checkout"
    root.mkdir()
    for var in (tracking.ENV_RUN_ID, tracking.ENV_PARENT_RUN_ID, tracking.ENV_DVC_EXP, tracking.ENV_TRACKING,
                "DVC_STAGE", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "MLFLOW_EXPERIMENT_NAME", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_warned", False)
    monkeypatch.setenv(tracking.ENV_ROOT, str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    return root


@pytest.fixture
def no_direct_writes(monkeypatch: pytest.MonkeyPatch, mlflow_server: Any) -> None:
    """Fail if this process opens the server's artifact folder as a local artifact repository (a write around the
    proxy: what a client does when the store hands it a plain path, as `mlflow ui` over a shared folder would)."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    artifacts = (mlflow_server[1] / "artifacts").resolve()
    original = LocalArtifactRepository.__init__

    def guarded(self: Any, artifact_uri: str, *args: Any, **kwargs: Any) -> None:
        path = Path(artifact_uri.removeprefix("file://")).resolve()
        assert not path.is_relative_to(artifacts), f"client wrote directly to the server's folder: {artifact_uri}"
        original(self, artifact_uri, *args, **kwargs)

    monkeypatch.setattr(LocalArtifactRepository, "__init__", guarded)
    with pytest.raises(AssertionError, match="wrote directly"):  # the guard is live
        LocalArtifactRepository(str(artifacts / "0"))


@pytest.mark.slow
def test_a_stage_logs_and_registers_through_the_server(mlflow_server, client_side, no_direct_writes, speech_rows,
                                                       tmp_path, recwarn) -> None:
    from mlflow.tracking import MlflowClient

    url, store = mlflow_server
    model, processor = build_micro(speech_rows)
    model_dir = save(model, processor, tmp_path / "models" / "sft" / "sqa")

    with tracking.stage_run({"sft": {"lr": 0.001, "max_steps": 4}}, stage="sft", task="sqa", method="sft") as run:
        assert run.active
        for step, loss in enumerate((2.0, 1.5, 1.2), start=1):
            run.log_metrics({"loss": loss}, step=step)
        run.log_text("a small artifact", "notes/hello.txt")
        uri = registry.register_model(run, model_dir, "sqa", "sft")
    assert uri == "models:/speech-grpo-sqa-sft/1"
    assert not [w for w in recwarn if "tracking failed" in str(w.message)]  # tracking swallows errors: check

    client = MlflowClient(tracking_uri=url)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.data.params["sft.lr"] == "0.001"
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [2.0, 1.5, 1.2]
    # Proxied: the server handed out mlflow-artifacts: URIs, not paths in its folder ...
    assert client.get_experiment(logged.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert logged.info.artifact_uri.startswith("mlflow-artifacts:")
    # ... and the bytes landed in --artifacts-destination, written by the server.
    assert (store / "artifacts").is_dir()
    assert len(list((store / "artifacts").rglob("model.safetensors"))) == 1
    assert [p.read_text() for p in (store / "artifacts").rglob("hello.txt")] == ["a small artifact"]
    assert not list(client_side.rglob("*")), "the client made a local store"  # no ./mlruns, no sqlite file

    version = client.get_model_version("speech-grpo-sqa-sft", "1")
    assert version.run_id == run.run_id and version.tags["method"] == "sft"
    loaded = registry.load_registered("sqa", "sft")  # downloaded through the server
    row = speech_rows[1]
    answers = loaded.predict(pd.DataFrame({"prompt": [row["prompt"]], "audio": [row["audio"]]}),
                             params={"max_new_tokens": 5})
    assert len(answers) == 1 and isinstance(answers[0], str)
