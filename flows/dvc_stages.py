"""DVC wiring for the flow: the stage list from dvc.yaml (DVC's own graph and order) and running one stage.

No stage logic here: a stage runs as `dvc repro --single-item <stage>` so DVC alone decides whether it is up to date,
and its output is streamed line by line to a callback (the Prefect task's logger).

    python -m flows.dvc_stages [REPO]   # print the stages in the order the flow runs them, with their upstreams
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# DVC's own messages (dvc/stage/__init__.py, dvc/stage/cache.py): nothing changed, or restored from the run cache.
_UNCHANGED = re.compile(r"Stage '(?P<stage>[^']+)' didn't change, skipping")
_RUN_CACHED = re.compile(r"Stage '(?P<stage>[^']+)' is cached - skipping run, checking out outputs")
_LOCKED = "Unable to acquire lock"
_TAIL_LINES = 40


class StageFailed(RuntimeError):
    """The stage's command (or DVC on its behalf) failed: deterministic, so not retried."""


class DvcBusy(RuntimeError):
    """Another DVC process holds the repository lock: transient, so the task retries."""


@dataclasses.dataclass(frozen=True)
class StageNode:
    name: str                   # DVC's addressing: `synth`, `prepare@sqa`
    upstream: tuple[str, ...]   # stages whose outputs it depends on


@dataclasses.dataclass(frozen=True)
class StageOutcome:
    stage: str
    status: str                 # "ran", "cached" (nothing changed) or "restored" (outputs from DVC's run cache)
    log: str                    # the stage's whole output

    @property
    def skipped(self) -> bool:
        return self.status != "ran"


def stage_graph(root: str | Path, targets: Sequence[str] = ()) -> list[StageNode]:
    """The stages DVC would reproduce for `targets` (default: every stage of ./dvc.yaml), in DVC's execution order.

    The order is DVC's own `plan_repro` over the active graph (frozen stages disconnected), i.e. what `dvc repro`
    does; foreach stages come expanded (`prepare@sqa`). Upstream sets are the graph's edges (to draw the chain).
    """
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph, plan_repro

    root = Path(root).resolve()

    def address(stage: Any) -> str:
        # DVC's `addressing` is relative to the cwd; make it relative to the repo, as `dvc repro` there expects.
        dvcfile = Path(stage.dvcfile.path).resolve()
        return stage.name if dvcfile == root / "dvc.yaml" else f"{dvcfile.relative_to(root)}:{stage.name}"

    with Repo(str(root)) as repo:
        graph = get_active_graph(repo.index.graph)
        # Targets too are read relative to the cwd: anchor them at the repo's dvc.yaml files.
        absolute = [str(root / t) if ":" in t else f"{root / 'dvc.yaml'}:{t}" for t in targets]
        # No target = the main dvc.yaml, as `dvc repro` does (the seed sweep in sweeps/dvc.yaml is only run on request)
        chosen = [s for t in absolute or [str(root / "dvc.yaml")] for s in repo.stage.collect(t)]
        order = plan_repro(graph, chosen)
        return [StageNode(address(s), tuple(sorted(address(d) for d in graph.successors(s)))) for s in order]


def select_for_task(nodes: Sequence[StageNode], task: str, tasks: Sequence[str]) -> list[StageNode]:
    """Only what one task needs: drop stages of the other `tasks` (`x@other`) and everything downstream of them.

    Shared stages (synth, pretrain, prepare@pretrain) stay; a stage that reads another task's outputs (a report over
    all tasks) goes, since it could not run without them.
    """
    dropped: set[str] = set()
    kept = []
    for node in nodes:  # in execution order, so upstreams are decided first
        item = node.name.partition("@")[2]
        if (item in tasks and item != task) or dropped.intersection(node.upstream):
            dropped.add(node.name)
        else:
            kept.append(node)
    return kept


def dvc_executable() -> str:
    """This environment's dvc (the flow may be served from a shell where another dvc comes first on PATH)."""
    exe = Path(sys.executable).parent / "dvc"
    return str(exe) if exe.exists() else "dvc"


def run_stage(workdir: str | Path, stage: str, emit: Callable[[str], None],
              env: Mapping[str, str] | None = None) -> StageOutcome:
    """`dvc repro --single-item <stage>` in `workdir`, streaming output lines to `emit`.

    Raises DvcBusy when the repository is locked by another DVC process, StageFailed (with the output's tail)
    when the stage fails.
    """
    # The stage's cmd (`python -m steps.x`) must find this interpreter's environment first on PATH.
    bindir = str(Path(sys.executable).parent)
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = bindir + os.pathsep + full_env.get("PATH", "")
    full_env.setdefault("TQDM_MININTERVAL", "10")  # progress bars: a line every 10 s, not a flood of updates
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [dvc_executable(), "repro", "--single-item", stage]
    emit(f"$ {' '.join(cmd[1:])}   (in {workdir})")
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        pending = b""
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            # tqdm redraws with \r: treat it as a line end so each update is a readable line.
            parts = re.split(rb"[\r\n]", pending + chunk)
            pending = parts.pop()
            for part in parts:
                line = part.decode(errors="replace").rstrip()
                if line:
                    lines.append(line)
                    emit(line)
        if pending.strip():
            lines.append(pending.decode(errors="replace").rstrip())
            emit(lines[-1])
        rc = proc.wait()
    text = "\n".join(lines)
    if rc != 0:
        tail = "\n".join(lines[-_TAIL_LINES:])
        if _LOCKED in text:
            raise DvcBusy(f"stage {stage}: the DVC repository is locked by another process:\n{tail}")
        raise StageFailed(f"stage {stage} failed (dvc exit code {rc}); last lines:\n{tail}")
    if any(m.group("stage") == stage for m in _UNCHANGED.finditer(text)):
        status = "cached"
    elif any(m.group("stage") == stage for m in _RUN_CACHED.finditer(text)):
        status = "restored"
    else:
        status = "ran"
    return StageOutcome(stage, status, text)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    root = args[0] if args else "."
    for node in stage_graph(root):
        after = f"  <- {', '.join(node.upstream)}" if node.upstream else ""
        print(f"{node.name}{after}")


if __name__ == "__main__":
    main()
