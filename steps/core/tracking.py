"""MLflow tracking for the pipeline: one parent run per pipeline run, one child run per stage.

Stages call one context manager; everything else (where the store is, which parent to nest under) is resolved here:

    with stage_run(cfg, stage="sft", task="sqa", method="sft") as run:
        ...
        run.log_metrics({"loss": loss}, step=step)
        run.log_artifact(predictions_path)

Where runs go (the first that applies):
- `MLFLOW_TRACKING_URI`, when set; else `sqlite:///<repo root>/mlruns/mlflow.db` with artifacts under
  `<repo root>/mlruns/artifacts`. The repo root is `SPEECH_GRPO_ROOT`, else the main worktree of the git repository
  holding `DVC_ROOT` (or the working directory), so runs from git worktrees, `dvc exp run --temp` copies and the
  Prefect flow's isolated workspaces all land in the main repository's store.

Which run a stage logs into:
- `SPEECH_GRPO_MLFLOW_RUN_ID` (set by the Prefect flow, which opens a child run per stage task): that run, resumed.
- `SPEECH_GRPO_MLFLOW_PARENT_RUN_ID`: a new child of that parent.
- under `dvc repro` / `dvc exp run` (DVC sets `DVC_STAGE`): a new child of the parent run of this DVC invocation,
  found or created by its key, the (host, pid, start time) of the process that runs the stages (see
  `invocation_key`).
- otherwise (`python -m steps.<stage>` by hand): a top-level run.

Tracking never breaks a stage once it runs: any tracking error is reported loudly once (stderr + a warning) and the
stage goes on without tracking. `SPEECH_GRPO_TRACKING=off` turns tracking off. A tracking *server* is probed first,
for seconds (steps/core/tracking_probe.py): when it does not answer, the stage stops before its work (the default for
a server) or runs untracked (`SPEECH_GRPO_TRACKING_UNREACHABLE=continue`), instead of waiting out MLflow's retries.

Every file a run logs as an artifact also gets a tag `md5/<artifact path>` = the file's md5, the hash dvc.lock
records for it: which run made the workspace's metrics/<model>/<task>.json (or .train.json) is then a lookup
(steps/core/artifact_md5.py), used by the UI launcher's comparison view and the registry's `report` alias.

    python -m steps.core.tracking uri     # print the resolved tracking URI (used by `python -m flows.mlflow_ui`)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from steps.core.artifact_md5 import file_md5, md5_tag
from steps.core.config import RESOLVED_CONFIG_NAME, to_dict

ENV_ROOT = "SPEECH_GRPO_ROOT"
ENV_RUN_ID = "SPEECH_GRPO_MLFLOW_RUN_ID"
ENV_PARENT_RUN_ID = "SPEECH_GRPO_MLFLOW_PARENT_RUN_ID"
ENV_DVC_EXP = "SPEECH_GRPO_DVC_EXP"
ENV_TRACKING = "SPEECH_GRPO_TRACKING"
ENV_SWEEP_SEED = "SPEECH_GRPO_SWEEP_SEED"  # set by steps.seeds while it trains a sweep seed
DEFAULT_EXPERIMENT = "speech-grpo"
INVOCATION_TAG = "pipeline_invocation"
# MLflow limits a param value to 6000 characters; longer values (prompt lists) are cut rather than rejected.
_MAX_PARAM_CHARS = 6000
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish"}

log = logging.getLogger(__name__)
_warned = False


def _warn_once(what: str, exc: BaseException) -> None:
    """Say loudly, once per process, that tracking failed; the stage itself goes on."""
    global _warned
    if _warned:
        return
    _warned = True
    msg = (f"MLflow tracking failed while {what}: {type(exc).__name__}: {exc}. The stage continues WITHOUT tracking; "
           f"check MLFLOW_TRACKING_URI (now {tracking_uri()!r}) or set {ENV_TRACKING}=off to silence this.")
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def tracking_enabled() -> bool:
    return os.environ.get(ENV_TRACKING, "on").strip().lower() not in ("0", "off", "false", "no")


_probed: dict[str, bool] = {}


def server_available() -> bool:
    """Probe the tracking server once per process and URI (seconds, not MLflow's minutes of retries).

    True: track. False: the server is down and the policy is `continue` (warned once). Raises
    `tracking_probe.TrackingUnavailable` when it is down and the policy is `stop`: call it before the stage's work.
    """
    from steps.core.tracking_probe import check

    uri = tracking_uri()
    if uri not in _probed:
        _probed[uri] = check(uri)
        if not _probed[uri]:
            _warn_once("reaching the tracking server", ConnectionError(f"{uri} did not answer the probe"))
    return _probed[uri]


# --- where ------------------------------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def repo_root() -> Path:
    """The main repository's root, also from inside a git worktree or DVC's temporary experiment copy."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).resolve()
    # DVC points DVC_ROOT at the parent repository when it runs a queued/--temp experiment in a copy.
    base = Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    common = _git(["rev-parse", "--path-format=absolute", "--git-common-dir"], base)
    if common and Path(common).name == ".git":
        return Path(common).parent
    return base


def default_tracking_uri() -> str:
    return f"sqlite:///{repo_root() / 'mlruns' / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifact_root() -> str:
    return (repo_root() / "mlruns" / "artifacts").as_uri()


def _client() -> Any:
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any) -> str:
    """The MLflow experiment all pipeline runs share (`MLFLOW_EXPERIMENT_NAME`, default speech-grpo)."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # Without an explicit location a SQLite store puts artifacts under ./mlruns of whatever the cwd is.
    location = artifact_root() if tracking_uri() == default_tracking_uri() else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# --- which parent -----------------------------------------------------------------------------------------------------


def invocation_key() -> str | None:
    """A key shared by every stage of one `dvc repro` / `dvc exp run` invocation and by no other invocation.

    DVC runs each stage's cmd as a child process (through a shell, which may exec the command directly), so the
    nearest ancestor that is not a shell is the process running the whole reproduction: the same for all its stages,
    and a different process for the next invocation. Its pid alone could be reused later; pid plus start time (and
    host) cannot. Content-based keys (git HEAD, params hash, dvc.lock) do not work: dvc.lock changes between stages
    of one run, and two invocations with equal content would share a parent. None outside DVC (no DVC_STAGE).
    """
    if not os.environ.get("DVC_STAGE"):
        return None
    import psutil

    proc = psutil.Process().parent()
    while proc is not None and Path(proc.name()).name in _SHELLS:
        proc = proc.parent()
    if proc is None:
        return None
    return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"


def _find_or_create_parent(client: Any, exp_id: str, key: str) -> str:
    found = client.search_runs([exp_id], filter_string=f"tags.{INVOCATION_TAG} = '{key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp_name = os.environ.get("DVC_EXP_NAME") or os.environ.get(ENV_DVC_EXP)
    name = f"dvc exp {exp_name}" if exp_name else "dvc repro"
    tags = {INVOCATION_TAG: key, "launcher": "dvc", **_common_tags()}
    return client.create_run(exp_id, run_name=name, tags=tags).info.run_id


def dvc_experiment_name() -> str | None:
    """The DVC experiment this process runs in (`dvc exp run`, a Prefect run with overrides); None in the workspace."""
    return os.environ.get("DVC_EXP_NAME") or os.environ.get(ENV_DVC_EXP) or None


def _common_tags() -> dict[str, str]:
    tags = {}
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or _git(["rev-parse", "HEAD"], Path.cwd())
    if commit:
        tags["git_commit"] = commit
    exp_name = dvc_experiment_name()
    if exp_name:
        tags["dvc_experiment"] = exp_name
    if os.environ.get(ENV_SWEEP_SEED):
        tags["sweep_seed"] = os.environ[ENV_SWEEP_SEED]
    return tags


def in_seed_sweep() -> bool:
    """True while steps.seeds trains an extra seed (its models are not the pipeline's: they are not registered)."""
    return bool(os.environ.get(ENV_SWEEP_SEED))


# --- the flow's API ---------------------------------------------------------------------------------------------------


def start_pipeline_run(name: str, tags: Mapping[str, str] | None = None) -> str | None:
    """Open the parent run of one pipeline run (used by the Prefect flow); None when tracking is unavailable."""
    if not tracking_enabled() or not server_available():  # a `stop` policy raises here, before any stage
        return None
    try:
        client = _client()
        all_tags = {**_common_tags(), **(tags or {})}
        return client.create_run(experiment_id(client), run_name=name, tags=all_tags).info.run_id
    except Exception as exc:
        _warn_once("opening the pipeline run", exc)
        return None


def start_child_run(parent_run_id: str | None, name: str, tags: Mapping[str, str] | None = None) -> str | None:
    """Open a child run under `parent_run_id` (the flow opens one per stage task; the stage resumes it)."""
    if not tracking_enabled() or parent_run_id is None:
        return None
    try:
        client = _client()
        parent = client.get_run(parent_run_id)
        all_tags = {"mlflow.parentRunId": parent_run_id, **(tags or {})}
        return client.create_run(parent.info.experiment_id, run_name=name, tags=all_tags).info.run_id
    except Exception as exc:
        _warn_once(f"opening the child run {name!r}", exc)
        return None


def end_run(run_id: str | None, status: str = "FINISHED", tags: Mapping[str, str] | None = None,
            texts: Mapping[str, str] | None = None) -> None:
    """Close a run with `status` (FINISHED, FAILED, KILLED), adding tags and small text artifacts (e.g. a log)."""
    if run_id is None or not tracking_enabled():
        return
    try:
        client = _client()
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, value)
        for name, text in (texts or {}).items():
            client.log_text(run_id, text, name)
        client.set_terminated(run_id, status=status)
    except Exception as exc:
        _warn_once(f"closing run {run_id}", exc)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'a.b.c': 'value'} as MLflow params (lists as YAML-ish text, cut to MLflow's limit)."""
    if isinstance(data, Mapping):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = "null" if data is None else str(list(data) if isinstance(data, tuple) else data)
    return {prefix: text[:_MAX_PARAM_CHARS]}


# --- the stages' API --------------------------------------------------------------------------------------------------


class StageRun:
    """What a stage logs through. Every method is a no-op once tracking has failed or is off."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            _warn_once(what, exc)
            self.run_id = None  # a broken store stays broken; do not pay its timeouts at every step

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.run_id is None:  # tracking off: mlflow need not even be installed (the GPU check)
            return
        import mlflow

        self._call("logging metrics", mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.run_id is None:
            return
        import mlflow

        try:
            mlflow.log_params({k: str(v)[:_MAX_PARAM_CHARS] for k, v in params.items()})
        except Exception as exc:  # e.g. a param re-logged with another value: warn, keep tracking metrics
            _warn_once("logging params", exc)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.run_id is None:  # tracking off: mlflow need not even be installed (the GPU check)
            return
        import mlflow

        self._call("setting tags", mlflow.set_tags, dict(tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or folder; a file's md5 also becomes its tag `md5/<artifact path>` (core/artifact_md5.py)."""
        if self.run_id is None:  # tracking off: mlflow need not even be installed (the GPU check)
            return
        import mlflow

        path = Path(path)
        fn = mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact
        self._call(f"logging artifact {path}", fn, str(path), artifact_path)
        if path.is_file():
            self._call(f"tagging artifact {path}", mlflow.set_tag, md5_tag(path.name, artifact_path), file_md5(path))

    def parent_run_id(self) -> str | None:
        """The pipeline run this stage's run is nested under (None for a top-level run or without tracking)."""
        if self.run_id is None:
            return None
        try:
            return _client().get_run(self.run_id).data.tags.get("mlflow.parentRunId")
        except Exception as exc:
            _warn_once("looking up the parent run", exc)
            return None

    def log_artifact_to_parent(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or folder to the parent (pipeline) run as well, where a whole run's summary belongs.

        A no-op for a top-level run. Uses the client, not the fluent API, so the stage's own run stays the active one.
        """
        parent = self.parent_run_id()
        if parent is None:
            return

        def log() -> None:
            client = _client()
            fn = client.log_artifacts if Path(path).is_dir() else client.log_artifact
            fn(parent, str(path), artifact_path)

        self._call(f"logging artifact {path} to the parent run", log)

    def log_table(self, data: Mapping[str, list[Any]], artifact_file: str) -> None:
        """Columns of equal length as an MLflow table (the UI compares a table across runs, row by row)."""
        if self.run_id is None:  # tracking off: mlflow need not even be installed (the GPU check)
            return
        import mlflow

        self._call(f"logging the table {artifact_file}", mlflow.log_table, dict(data), artifact_file)

    def log_dict(self, data: Any, name: str) -> None:
        if self.run_id is None:  # tracking off: mlflow need not even be installed (the GPU check)
            return
        import mlflow

        self._call(f"logging {name}", mlflow.log_dict, data, name)

    def log_text(self, text: str, name: str) -> None:
        if self.run_id is None:  # tracking off: mlflow need not even be installed (the GPU check)
            return
        import mlflow

        self._call(f"logging {name}", mlflow.log_text, text, name)





def discard_run(run_id: str | None) -> None:
    """Delete a run that holds nothing (MLflow's soft delete: hidden from the UI's default view and from searches)."""
    if run_id is None or not tracking_enabled():
        return
    try:
        _client().delete_run(run_id)
    except Exception as exc:
        _warn_once(f"deleting the empty run {run_id}", exc)


def _open_stage_run(stage: str, tags: dict[str, str]) -> str | None:
    """Start (or resume) the stage's run as MLflow's active run and return its id."""
    import mlflow

    client = _client()
    mlflow.set_tracking_uri(tracking_uri())  # the fluent API (and HF's MLflow callback) log to the active run
    if os.environ.get(ENV_RUN_ID):
        run = mlflow.start_run(run_id=os.environ[ENV_RUN_ID])
    else:
        exp_id = experiment_id(client)
        parent = os.environ.get(ENV_PARENT_RUN_ID)
        if not parent and (key := invocation_key()):
            parent = _find_or_create_parent(client, exp_id, key)
        if parent:
            tags = {"mlflow.parentRunId": parent, **tags}
        run = mlflow.start_run(experiment_id=exp_id, run_name=tags.get("dvc_stage", stage), tags=tags)
    mlflow.set_tags(tags)
    return run.info.run_id


def _close_stage_run(run_id: str, failed: bool) -> None:
    import mlflow

    status = "FAILED" if failed else "FINISHED"
    mlflow.end_run(status=status)
    # Under plain `dvc repro` nothing else closes the parent: each stage marks it ended with its own status
    # (the next stage re-opens it), so it reads FINISHED after the last stage or FAILED after a failing one.
    if not os.environ.get(ENV_RUN_ID) and not os.environ.get(ENV_PARENT_RUN_ID):
        client = _client()
        parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        if parent:
            client.set_terminated(parent, status=status)


@contextlib.contextmanager
def stage_run(cfg: Any, stage: str, task: str | None = None, method: str | None = None,
              tags: Mapping[str, str] | None = None) -> Iterator[StageRun]:
    """The stage's MLflow run: tags, the resolved config as params and artifact, then metrics via the handle.

    `cfg` is the stage's resolved `Config` (or any dataclass/mapping); `method` is base, sft, grpo or mpgrpo.
    Exceptions from the stage propagate (the run is marked FAILED); tracking errors never do.
    """
    handle = StageRun(None)
    if tracking_enabled() and server_available():  # a `stop` policy raises here, before the stage's work
        all_tags = {"stage": stage, **_common_tags()}
        if os.environ.get("DVC_STAGE"):
            all_tags["dvc_stage"] = os.environ["DVC_STAGE"]
        if task:
            all_tags["task"] = task
        if method:
            all_tags["method"] = method
        all_tags.update(tags or {})
        try:
            handle = StageRun(_open_stage_run(stage, all_tags))
        except Exception as exc:
            _warn_once(f"opening the run of stage {stage!r}", exc)
        resolved = to_dict(cfg)
        handle.log_params(flatten(resolved))
        handle.log_dict(resolved, f"config/{RESOLVED_CONFIG_NAME}")
    failed = True
    try:
        yield handle
        failed = False
    finally:
        if handle.run_id is not None:
            try:
                _close_stage_run(handle.run_id, failed)
            except Exception as exc:
                _warn_once(f"closing the run of stage {stage!r}", exc)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["uri"]:
        print(tracking_uri())
    elif args[:1] == ["artifacts"]:
        print(artifact_root())
    else:
        raise SystemExit("usage: python -m steps.core.tracking {uri|artifacts}")


if __name__ == "__main__":
    main()
