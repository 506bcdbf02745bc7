"""Is the MLflow tracking server there? A probe of a few seconds before a stage's work, and what to do when it is not.

MLflow's own client retries a connection for minutes (measured: 264 s before `python -m steps.evaluate` gave up on a
stopped server), so a pipeline of 20 stages against a stopped server would wait over an hour. Instead
`steps.core.tracking.stage_run` (and the Prefect flow, once per flow run) asks here first:

- a local store (`sqlite:///...`, a path) has no server to be down: always tracked;
- a server (`http://`, `https://`): one GET of `<uri>/health` with a short timeout
  (`SPEECH_GRPO_TRACKING_PROBE_SECONDS`, default 5). Any HTTP answer, even 401/403/404, means a server is there
  (auth and the path are MLflow's business); no connection, a timeout, or a proxy's 502/503/504 mean it is not.

When it is not, `SPEECH_GRPO_TRACKING_UNREACHABLE` decides:
- `stop` (the default when a server was named): raise `TrackingUnavailable` before any work, naming the server and
  the fixes. Runs that silently go untracked would be missing from the team's server.
- `continue`: warn once and run the stage untracked.

    python -m steps.core.tracking_probe      # probe the store in use, print the verdict (exit 1 when unreachable)
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

ENV_UNREACHABLE = "SPEECH_GRPO_TRACKING_UNREACHABLE"
ENV_PROBE_SECONDS = "SPEECH_GRPO_TRACKING_PROBE_SECONDS"
DEFAULT_PROBE_SECONDS = 5.0
POLICIES = ("stop", "continue")
_SERVER_SCHEMES = ("http://", "https://")
_GATEWAY_DOWN = (502, 503, 504)  # a proxy answering for a server that is not there


class TrackingUnavailable(RuntimeError):
    """The tracking server named by MLFLOW_TRACKING_URI did not answer and the policy is `stop`."""


@dataclass(frozen=True)
class ProbeResult:
    uri: str
    reachable: bool
    seconds: float
    reason: str = ""  # why not reachable


def is_server(uri: str) -> bool:
    """True for a tracking server (http/https); False for a local store, which cannot be down."""
    return uri.strip().lower().startswith(_SERVER_SCHEMES)


def probe_seconds() -> float:
    raw = os.environ.get(ENV_PROBE_SECONDS, "").strip()
    if not raw:
        return DEFAULT_PROBE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PROBE_SECONDS}={raw!r}: expected a number of seconds, e.g. 5") from None
    if value <= 0:
        raise ValueError(f"{ENV_PROBE_SECONDS}={raw!r}: must be > 0")
    return value


def policy(uri: str) -> str:
    """`stop` or `continue` when the server is unreachable: the env setting, else `stop` for a named server."""
    raw = os.environ.get(ENV_UNREACHABLE, "").strip().lower()
    if not raw:
        return "stop" if is_server(uri) else "continue"
    if raw not in POLICIES:
        raise ValueError(f"{ENV_UNREACHABLE}={raw!r}: expected one of {', '.join(POLICIES)}")
    return raw


def _health_url(uri: str) -> str:
    return uri.rstrip("/") + "/health"


def _get(url: str, timeout: float, out: list[str]) -> None:
    """Record '' when a server answered, else the reason (run in a thread so the whole probe has a hard deadline)."""
    try:
        request = urllib.request.Request(url, method="GET", headers={"User-Agent": "speech-grpo-probe"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(64)
        out.append("")
    except urllib.error.HTTPError as exc:
        out.append(f"HTTP {exc.code} from {url}" if exc.code in _GATEWAY_DOWN else "")
    except Exception as exc:  # connection refused, DNS, timeout, TLS: all mean "not reachable"
        reason = getattr(exc, "reason", exc)
        out.append(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__)


def probe(uri: str, timeout: float | None = None) -> ProbeResult:
    """Ask the server once, within `timeout` seconds in all (DNS included). A local store is always reachable."""
    start = time.monotonic()
    if not is_server(uri):
        return ProbeResult(uri, True, 0.0)
    timeout = probe_seconds() if timeout is None else timeout
    out: list[str] = []
    worker = threading.Thread(target=_get, args=(_health_url(uri), timeout, out), daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    seconds = time.monotonic() - start
    if not out:
        return ProbeResult(uri, False, seconds, f"no answer within {timeout:g} s")
    return ProbeResult(uri, not out[0], seconds, out[0])


def unreachable_message(result: ProbeResult, action: str) -> str:
    fixes = (f"Start the server (or fix MLFLOW_TRACKING_URI), or set {ENV_UNREACHABLE}=continue to run untracked, "
             f"or SPEECH_GRPO_TRACKING=off to turn tracking off")
    return (f"MLflow tracking server {result.uri} is not reachable ({result.reason}; probed in "
            f"{result.seconds:.1f} s). {action}. {fixes}.")


def check(uri: str) -> bool:
    """Probe `uri`; True: track. False: go on untracked (policy continue). Raises TrackingUnavailable (policy stop)."""
    chosen = policy(uri)  # a bad setting fails before the probe
    result = probe(uri)
    if result.reachable:
        return True
    if chosen == "stop":
        raise TrackingUnavailable(unreachable_message(
            result, f"Stopping before any work ({ENV_UNREACHABLE}=stop, the default for a server)"))
    return False


def main() -> None:
    from steps.core.tracking import tracking_uri

    uri = tracking_uri()
    result = probe(uri)
    if result.reachable:
        print(f"{uri}: reachable" + (f" ({result.seconds:.2f} s)" if is_server(uri) else " (a local store)"))
        return
    print(unreachable_message(result, f"A stage would {policy(uri)}"), file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
