"""A tracking server that is away: every stage decides within seconds (stop, or go on untracked), not after MLflow's
minutes of retries (measured before: 264 s for one evaluate stage).

The servers here are local sockets: a port nothing listens on (refused at once), and a listener that accepts and never
answers (the slow case: a firewall or a hung server), both on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from steps.core import tracking, tracking_probe
from steps.core.config import Config
from tests.conftest import REPO
from tests.infra.servers import free_port

DECIDE_WITHIN_S = 15.0  # the bound for a whole stage process, interpreter start included


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (tracking_probe.ENV_UNREACHABLE, tracking_probe.ENV_PROBE_SECONDS, tracking.ENV_TRACKING,
                tracking.ENV_RUN_ID, tracking.ENV_PARENT_RUN_ID, "DVC_STAGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_warned", False)
    monkeypatch.setattr(tracking, "_probed", {})


@pytest.fixture
def refused() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def answering() -> Iterator[str]:
    """A server that answers every GET with 403 (e.g. auth in front of MLflow): it is there."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_policy_defaults_to_stop_for_a_server_and_is_validated(monkeypatch):
    assert tracking_probe.policy("http://mlflow.example:5000") == "stop"
    assert tracking_probe.policy("sqlite:////tmp/x/mlflow.db") == "continue"
    monkeypatch.setenv(tracking_probe.ENV_UNREACHABLE, "Continue")
    assert tracking_probe.policy("https://mlflow.example") == "continue"
    monkeypatch.setenv(tracking_probe.ENV_UNREACHABLE, "skip")
    with pytest.raises(ValueError, match=r"SPEECH_GRPO_TRACKING_UNREACHABLE='skip'.*stop, continue"):
        tracking_probe.policy("http://mlflow.example")


def test_a_local_store_is_never_probed():
    result = tracking_probe.probe("sqlite:////nonexistent/dir/mlflow.db")
    assert result.reachable and result.seconds == 0.0


def test_any_http_answer_means_the_server_is_there(answering):
    assert tracking_probe.probe(answering, timeout=5).reachable


def test_a_refused_connection_is_unreachable_at_once(refused):
    result = tracking_probe.probe(refused, timeout=5)
    assert not result.reachable and "Connection refused" in result.reason and result.seconds < 2


def test_a_silent_server_is_unreachable_after_the_probe_timeout(silent):
    start = time.monotonic()
    result = tracking_probe.probe(silent, timeout=1.0)
    assert not result.reachable and 0.9 < time.monotonic() - start < 3


def test_stop_raises_before_the_stage_body_runs(refused, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refused)
    ran = []
    with pytest.raises(tracking_probe.TrackingUnavailable) as info, tracking.stage_run(Config(), stage="evaluate"):
        ran.append(True)
    assert not ran
    message = str(info.value)
    assert refused in message and "SPEECH_GRPO_TRACKING_UNREACHABLE=continue" in message


def test_continue_runs_the_stage_untracked_and_warns_once(refused, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refused)
    monkeypatch.setenv(tracking_probe.ENV_UNREACHABLE, "continue")
    with pytest.warns(RuntimeWarning, match="WITHOUT tracking"):
        for _ in range(2):  # a second stage_run in the same process does not probe or warn again
            with tracking.stage_run(Config(), stage="evaluate", task="sqa", method="sft") as run:
                run.log_metrics({"bleu": 1.0})  # a no-op, not a retry loop
                assert not run.active
    assert capsys.readouterr().err.count("WARNING: MLflow tracking failed") == 1


def test_the_flow_stops_before_any_stage(refused, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refused)
    with pytest.raises(tracking_probe.TrackingUnavailable):
        tracking.start_pipeline_run("flow-run")
    monkeypatch.setattr(tracking, "_probed", {})
    monkeypatch.setenv(tracking_probe.ENV_UNREACHABLE, "continue")
    with pytest.warns(RuntimeWarning):
        assert tracking.start_pipeline_run("flow-run") is None  # the flow then turns tracking off for its stages


_STAGE = """
import sys
from steps.core.config import Config
from steps.core.tracking import stage_run
with stage_run(Config(), stage="evaluate", task="sqa", method="sft") as run:
    print("STAGE WORK", "tracked" if run.active else "untracked", flush=True)
"""


def _stage_process(uri: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """A stage as DVC runs it: a fresh interpreter entering stage_run, timed from start to exit."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), **env}
    for var in (tracking.ENV_TRACKING, tracking_probe.ENV_UNREACHABLE, tracking_probe.ENV_PROBE_SECONDS):
        if var not in env:
            full_env.pop(var, None)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _STAGE], cwd=REPO, env=full_env, capture_output=True, text=True,
                         timeout=120)
    return out, time.monotonic() - start


# The silent server costs the default probe timeout (5 s): slow.
@pytest.mark.parametrize("server", ["refused", pytest.param("silent", marks=pytest.mark.slow)])
def test_a_stage_process_stops_within_15_s_by_default(server, request):
    uri = request.getfixturevalue(server)
    out, seconds = _stage_process(uri)
    assert seconds < DECIDE_WITHIN_S, f"took {seconds:.1f} s"
    assert out.returncode != 0 and "STAGE WORK" not in out.stdout
    assert f"MLflow tracking server {uri} is not reachable" in out.stderr


# The silent server costs the default probe timeout (5 s): slow.
@pytest.mark.parametrize("server", ["refused", pytest.param("silent", marks=pytest.mark.slow)])
def test_a_stage_process_goes_on_untracked_within_15_s_when_asked(server, request):
    uri = request.getfixturevalue(server)
    out, seconds = _stage_process(uri, **{tracking_probe.ENV_UNREACHABLE: "continue"})
    assert seconds < DECIDE_WITHIN_S, f"took {seconds:.1f} s"
    assert out.returncode == 0, out.stderr[-2000:]
    assert "STAGE WORK untracked" in out.stdout and "continues WITHOUT tracking" in out.stderr


def test_the_probe_command_reports_the_store(refused, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": refused, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "steps.core.tracking_probe"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "A stage would stop" in out.stderr
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp_path) / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "steps.core.tracking_probe"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "a local store" in out.stdout
