"""Real local servers for the cluster tests (Prefect server and worker, MLflow server, moto's S3): a free port on
127.0.0.1, a process in its own session, readiness polled with a deadline, and the whole process group stopped on
the way out, also when the test fails. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent  # this environment's console scripts (prefect, mlflow, dvc, moto_server)


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a race with another process is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def env_with_bin(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ plus `extra`, with this environment's bin first on PATH (DVC stage commands run `python -m ...`)."""
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_until(ready: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None, interval: float = 0.5) -> float:
    """Poll `ready` until it is true; seconds taken. Fails with the log's tail on timeout or when `proc` exits."""
    start = time.monotonic()
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}:\n{_tail(log) if log else ''}")
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not ready after {timeout:.0f} s:\n{_tail(log) if log else ''}")
        time.sleep(interval)
    return time.monotonic() - start


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the process group this helper started (the server and its children), SIGKILL after `grace` s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


@contextlib.contextmanager
def running(cmd: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path, ready: Callable[[], bool] | None = None,
            timeout: float = 120.0, what: str | None = None) -> Iterator[subprocess.Popen]:
    """Start `cmd` (output to `log`), wait for `ready` (if given) within `timeout` s, yield it, then stop it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        # Own session: the server's children (uvicorn workers, flow-run processes) go down with it in stop().
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            if ready is not None:
                wait_until(ready, timeout, what or Path(cmd[0]).name, proc, log)
            yield proc
        finally:
            stop(proc)
