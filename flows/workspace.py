"""Where a triggered run executes: the main workspace (serialised), or an isolated worktree saved as a DVC experiment.

- No overrides: the stages run in the main workspace, like `dvc repro`, under an exclusive file lock so two flow runs
  never reproduce in one workspace at once (DVC would refuse the second anyway, mid-run).
- Overrides: a detached git worktree of HEAD under `.dvc/tmp/flow-runs/<name>` (same filesystem as the DVC cache),
  whose DVC cache is the main repository's (`.dvc/config.local`, links instead of copies). The overrides are written
  to its params.yaml, the stages run there, `dvc exp save` records the result as an experiment (refs are shared with
  the main repository, so `dvc exp show` there lists it), and the worktree is removed. The main workspace is never
  touched, and concurrent runs each have their own worktree.

Note: a worktree holds HEAD, i.e. committed code and dvc.yaml; uncommitted edits run only without overrides. The
workspace's dvc.lock is copied in when it differs from HEAD's, so what `dvc repro` made there is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from flows.dvc_stages import dvc_executable
from steps.core.config import apply_override

LOCK_NAME = "speech-grpo-flow.lock"
RUNS_DIR = Path(".dvc") / "tmp" / "flow-runs"


def _run(cmd: Sequence[str], cwd: Path) -> str:
    out = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


@contextlib.contextmanager
def main_workspace(root: Path, emit: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold the main workspace exclusively (blocking until a concurrent flow run there finishes)."""
    lock_path = root / ".dvc" / "tmp" / LOCK_NAME
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            emit(f"waiting for another flow run in {root} to finish (lock {lock_path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_name(root: Path, wanted: str) -> str:
    """A valid, unused DVC experiment name based on `wanted` (a suffix is added when it is taken)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", wanted).strip("-.") or "flow-run"
    refs = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], root).split()
    taken = {ref.rsplit("/", 1)[-1] for ref in refs}
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def write_overrides(params_path: Path, overrides: Sequence[str]) -> None:
    """Apply `key.path=value` overrides to a params.yaml in place, keeping its comments and layout (round trip)."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip mode
    yaml.width = 4096
    data = yaml.load(params_path.read_text())
    for assignment in overrides:
        apply_override(data, assignment)  # same parsing as steps.core.config.load_config
    with open(params_path, "w") as fh:
        yaml.dump(data, fh)


@contextlib.contextmanager
def experiment_workspace(root: Path, name: str, emit: Callable[[str], None] = print) -> Iterator[Path]:
    """A detached worktree of HEAD sharing the main DVC cache; removed on exit (also on failure)."""
    path = root / RUNS_DIR / name
    if path.exists():  # a leftover of a killed run with the same name
        _remove_worktree(root, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(["git", "worktree", "add", "--detach", str(path), "HEAD"], root)
    try:
        # The workspace's dvc.lock records what `dvc repro` last made there, often not committed yet: start from it,
        # so stages that are unchanged for this run are checked out instead of rerun (DVC still checks every dep).
        lock = root / "dvc.lock"
        if lock.is_file() and (not (path / "dvc.lock").is_file()
                               or lock.read_bytes() != (path / "dvc.lock").read_bytes()):
            shutil.copyfile(lock, path / "dvc.lock")
            emit("workspace dvc.lock differs from HEAD's (not committed): the run starts from the workspace's")
        cache_dir = _run([dvc_executable(), "cache", "dir"], root).strip()
        # Links, not copies: outputs of unchanged stages appear instantly; DVC protects linked cache files.
        (path / ".dvc" / "config.local").write_text(
            f"[cache]\n    dir = {cache_dir}\n    type = \"reflink,hardlink,symlink,copy\"\n")
        start = time.monotonic()
        # Materialise HEAD's outputs from the shared cache so unchanged stages read as "didn't change".
        out = subprocess.run([dvc_executable(), "checkout", "--allow-missing"], cwd=path, capture_output=True,
                             text=True)
        emit(f"workspace {path}: checked out cached outputs in {time.monotonic() - start:.1f} s"
             + ("" if out.returncode == 0 else f" (partial: {out.stderr.strip().splitlines()[-1:]})"))
        yield path
    finally:
        _remove_worktree(root, path)


def _remove_worktree(root: Path, path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=root, capture_output=True)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)


def save_experiment(workdir: Path, name: str) -> str:
    """`dvc exp save --name <name>`: the worktree's params and dvc.lock become an experiment of its baseline.

    Limited to ./dvc.yaml's stages: the seed sweep (sweeps/dvc.yaml) is not part of a run and has no outputs there.
    """
    return _run([dvc_executable(), "exp", "save", "--name", name, "dvc.yaml"], workdir).strip()
