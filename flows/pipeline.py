"""The pipeline as a Prefect flow: one task per DVC stage, in DVC's order, each running its stage through DVC.

Wiring only. DVC decides what is up to date (a skipped stage shows as a `Cached` task); params.yaml plus the run's
overrides decide what a stage does; MLflow gets a parent run for the flow run and a child run per stage task (the
stage itself logs into that child through steps.core.tracking). Runs with overrides execute in an isolated
worktree and are saved as a DVC experiment (flows/workspace.py); runs without them reproduce the main workspace,
serialised.

    python -m flows.pipeline [-S key.path=value ...] [--task sqa] [--stage prepare@sqa]   # one run, in-process
    python -m flows.serve                                                                 # the served deployment
"""

# No `from __future__ import annotations` here: a served deployment loads this file by path and validates the flow
# parameters against its annotations, which must then be real objects, not strings (measured: pydantic fails on
# `Literal` otherwise).
import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Completed, State

from flows import workspace
from flows.dvc_stages import DvcBusy, StageNode, run_stage, select_for_task, stage_graph
from steps.core import tracking
from steps.core.config import POOLS, TASKS, ConfigError, load_config, to_dict

FLOW_NAME = "speech-grpo-pipeline"

# Named shortcuts of the flow (and of the UI form) -> the params.yaml keys each one sets. A shortcut applies to the
# keys that exist in the current configuration; one whose keys do not exist yet fails fast instead of being ignored.
# Adding a shortcut: a parameter of `pipeline` below (same name) plus one line here.
SHORTCUTS: dict[str, tuple[str, ...]] = {
    "model": ("model.name_or_path",),
    "sft_learning_rate": ("sft.lr",),
    "grpo_learning_rate": ("grpo.lr", "mpgrpo.lr"),
    "grpo_beta": ("grpo.beta", "mpgrpo.beta"),
    "group_size": ("grpo.num_generations", "mpgrpo.num_generations"),
    "reward_weights": ("grpo.reward_weights", "mpgrpo.reward_weights"),
    "off_policy_samples": ("mpgrpo.num_off_policy",),
}


def repo_root() -> Path:
    """The repository the flow runs: `SPEECH_GRPO_ROOT`, else the checkout holding this package."""
    return Path(os.environ.get(tracking.ENV_ROOT) or Path(__file__).resolve().parents[1]).resolve()


def _has_key(tree: Any, key: str) -> bool:
    node = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def resolve_overrides(params_path: Path, overrides: Sequence[str], shortcuts: Mapping[str, Any]) -> list[str]:
    """Shortcuts + overrides -> the `key=value` list, validated against params.yaml (raises ConfigError, all at once).

    Explicit overrides come last, so they win over a shortcut setting the same key.
    """
    base = to_dict(load_config(params_path))  # every key the config defines, with defaults filled in
    problems = [f"override {o!r}: expected key.path=value" for o in overrides if "=" not in o]
    out: list[str] = []
    for name, value in shortcuts.items():
        if value is None:
            continue
        keys = [k for k in SHORTCUTS[name] if _has_key(base, k)]
        if not keys:
            problems.append(f"shortcut {name}: sets {', '.join(SHORTCUTS[name])}, which this params.yaml does not "
                            f"define (yet); leave it empty or use overrides")
        out += [f"{key}={json.dumps(value)}" for key in keys]  # JSON is YAML: the value keeps its type
    if problems:
        raise ConfigError("the flow parameters", problems)
    out += [o.strip() for o in overrides]
    load_config(params_path, out)  # a typo or bad value fails here, before anything runs
    return out


def _retry_if_busy(task: Any, task_run: Any, state: State) -> bool:
    """Retry only a DVC lock held by another process; a failing stage fails the same way again."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(exc, DvcBusy)


@task(name="dvc-stage", task_run_name="{stage}", retries=3, retry_delay_seconds=30, retry_condition_fn=_retry_if_busy,
      cache_policy=NO_CACHE, persist_result=False)
def dvc_stage(stage: str, workdir: str, parent_run_id: str | None, env: dict[str, str]) -> State:
    """Run one DVC stage; Completed named "Cached" when DVC skipped it, Failed with the stage's output tail."""
    logger = get_run_logger()

    def emit(line: str) -> None:
        # DVC reports a failing stage with an "ERROR:" line: keep it at error level in the UI.
        (logger.error if line.startswith("ERROR") else logger.info)(line)

    child = tracking.start_child_run(parent_run_id, stage, stage_tags(stage))
    stage_env = {**env, **({tracking.ENV_RUN_ID: child} if child else {})}
    try:
        outcome = run_stage(workdir, stage, emit, stage_env)
    except Exception as exc:
        tracking.end_run(child, "FAILED", {"dvc_status": "locked" if isinstance(exc, DvcBusy) else "failed"},
                         {"logs/stage.log": str(exc)})
        raise
    if outcome.skipped:
        tracking.discard_run(child)  # it holds no metrics: it would only bury the runs that do (Prefect keeps the log)
        why = "nothing changed" if outcome.status == "cached" else "outputs restored from DVC's run cache"
        logger.info(f"{stage}: cached by DVC ({why}); not run")
        return Completed(name="Cached", message=f"DVC: {why}", data={"stage": stage, "status": outcome.status})
    tracking.end_run(child, "FINISHED", {"dvc_status": outcome.status}, {"logs/stage.log": outcome.log})
    logger.info(f"{stage}: ran")
    # A fresh dict, not a bare string: Prefect links results to task runs by object identity, and interned strings
    # such as "ran" would draw false dependency edges between tasks in the UI.
    return Completed(message="DVC: ran", data={"stage": stage, "status": outcome.status})


def stage_tags(stage: str) -> dict[str, str]:
    """The MLflow tags of a DVC stage's run, as the stage itself sets them: stage, task and method where they apply.

    `evaluate@sft_matched-ast` (a matrix stage: model-task), `evaluate_base@sqa`, `grpo@ast`, `prepare@sqa`, `report`.
    """
    name, _, item = stage.partition("@")
    tags = {"stage": name, "dvc_stage": stage}
    if name == "evaluate" and "-" in item:
        tags["method"], tags["task"] = item.rsplit("-", 1)
    elif name == "evaluate_base":
        tags |= {"stage": "evaluate", "method": "base", "task": item}
    elif name in ("sft", "sft_matched", "grpo", "mpgrpo"):
        tags |= {"method": name, "task": item}
    elif name == "pretrain":
        tags["method"] = "base"
    elif item in POOLS:
        tags["task"] = item
    return tags


def _run_stages(workdir: Path, nodes: Sequence[StageNode], parent_run_id: str | None,
                env: dict[str, str]) -> dict[str, str]:
    """Each stage in DVC's order, one at a time (one workspace, one DVC lock); upstream edges drawn for the UI."""
    states: dict[str, State] = {}
    results: dict[str, str] = {}
    for node in nodes:
        upstream = [states[u] for u in node.upstream if u in states]
        state = dvc_stage(node.name, str(workdir), parent_run_id, env, wait_for=upstream, return_state=True)
        states[node.name] = state
        if not state.is_completed():
            not_run = [n.name for n in nodes if n.name not in states]
            get_run_logger().error(f"stage {node.name} failed; not run: {', '.join(not_run) or 'none'}")
            state.result()  # raises the stage's error: the flow run fails with it
        results[node.name] = state.result()["status"]
    return results


@flow(name=FLOW_NAME, persist_result=False, log_prints=True)
def pipeline(
    overrides: list[str] | None = None,
    task: Literal["sqa", "ast"] | None = None,
    model: str | None = None,
    sft_learning_rate: float | None = None,
    grpo_learning_rate: float | None = None,
    grpo_beta: float | None = None,
    group_size: int | None = None,
    reward_weights: dict[str, float] | None = None,
    off_policy_samples: int | None = None,
    stages: list[str] | None = None,
    experiment_name: str | None = None,
) -> dict[str, Any]:
    """Run the DVC pipeline stage by stage.

    Args:
        overrides: `key.path=value` for any params.yaml key, e.g. `synth.sizes.ast.train=50` (as `dvc exp run -S`).
        task: run only what this task needs (drops the other task's stages and whatever depends on them).
        model: model.name_or_path: `tiny`, a local folder or a hub id.
        sft_learning_rate: SFT learning rate.
        grpo_learning_rate: GRPO and MP-GRPO learning rate.
        grpo_beta: KL coefficient of GRPO and MP-GRPO.
        group_size: completions per prompt (GRPO group).
        reward_weights: reward name -> weight, e.g. {"bleu": 1.0}.
        off_policy_samples: reference (off-policy) samples per MP-GRPO group.
        stages: DVC targets (e.g. `prepare@sqa`); their upstream stages run too. Empty: the whole dvc.yaml.
        experiment_name: name of the DVC experiment a run with overrides is saved as (default: the flow run's name).
    """
    shortcut_values = {name: value for name, value in locals().items() if name in SHORTCUTS}  # first: only params
    logger = get_run_logger()
    root = repo_root()
    os.environ.setdefault(tracking.ENV_ROOT, str(root))  # this process's own MLflow calls use the same store
    all_overrides = resolve_overrides(root / "params.yaml", overrides or [], shortcut_values)
    run_name = get_run_context().flow_run.name
    env = {"MLFLOW_TRACKING_URI": tracking.tracking_uri(), tracking.ENV_ROOT: str(root)}
    summary: dict[str, Any] = {"overrides": all_overrides}

    def plan(workdir: Path) -> list[StageNode]:
        nodes = stage_graph(workdir, stages or ())
        if task:
            nodes = select_for_task(nodes, task, TASKS)
        logger.info(f"stages, in order: {', '.join(n.name for n in nodes)}")
        return nodes

    tags = {"launcher": "prefect", "prefect_flow_run": run_name, "overrides": " ".join(all_overrides)[:5000]}
    if task:
        tags["task"] = task
    if all_overrides:
        exp = workspace.experiment_name(root, experiment_name or run_name)
        env[tracking.ENV_DVC_EXP] = exp
        parent = tracking.start_pipeline_run(run_name, {**tags, "dvc_experiment": exp})
        env[tracking.ENV_PARENT_RUN_ID] = parent or ""
        if parent is None:  # tracking off, or its server unreachable (policy continue): stages need not probe again
            env[tracking.ENV_TRACKING] = "off"
        try:
            with workspace.experiment_workspace(root, exp, logger.info) as workdir:
                workspace.write_overrides(workdir / "params.yaml", all_overrides)
                load_config(workdir / "params.yaml")  # the file as written must validate too
                summary["stages"] = _run_stages(workdir, plan(workdir), parent, env)
                logger.info(workspace.save_experiment(workdir, exp))
        except BaseException:
            tracking.end_run(parent, "FAILED")
            raise
        summary["dvc_experiment"] = exp
    else:
        parent = tracking.start_pipeline_run(run_name, tags)
        env[tracking.ENV_PARENT_RUN_ID] = parent or ""
        if parent is None:  # tracking off, or its server unreachable (policy continue): stages need not probe again
            env[tracking.ENV_TRACKING] = "off"
        try:
            with workspace.main_workspace(root, logger.info) as workdir:
                summary["stages"] = _run_stages(workdir, plan(workdir), parent, env)
        except BaseException:
            tracking.end_run(parent, "FAILED")
            raise
    statuses = summary.get("stages", {})
    ran = sorted(s for s, status in statuses.items() if status == "ran")
    counts = {"dvc_stages_ran": str(len(ran)), "dvc_stages_skipped": str(len(statuses) - len(ran))}
    tracking.end_run(parent, "FINISHED", counts, {"pipeline/stages.json": json.dumps(statuses, indent=1)})
    summary["mlflow_parent_run"] = parent
    logger.info(f"done: {summary}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the pipeline flow once (a temporary Prefect server starts "
                                     "unless PREFECT_API_URL points at one).")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--stage", dest="stages", action="append", default=[], metavar="TARGET")
    args = parser.parse_args(argv)
    pipeline(overrides=args.overrides, task=args.task, stages=args.stages or None)


if __name__ == "__main__":
    main()
