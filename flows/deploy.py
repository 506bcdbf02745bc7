"""Deploy the pipeline to a Prefect `process` work pool: runs triggered from the UI execute on whichever machine runs a
worker for that pool (a GPU node), not in the process that created the deployment.

    prefect work-pool create speech-grpo --type process                            # once, against the server
    PREFECT_API_URL=http://SERVER:4200/api python -m flows.deploy --pool speech-grpo     # the deployment
    PREFECT_API_URL=http://SERVER:4200/api prefect worker start --pool speech-grpo      # on the GPU node
    prefect deployment run 'speech-grpo-pipeline/cluster' -p overrides='["seed=7"]'

No image and no remote storage: the code is the checkout at `--source` (default: this one), a path on the worker's
machine. The deployment's pull step only changes into that folder, so the worker's machine must have the checkout
there (a shared filesystem, or a clone at the same path) with the environment installed; the worker starts each flow
run as `python -m prefect.engine` with its own interpreter and environment. `--env KEY=VALUE` adds variables to
every flow run's environment (e.g. MLFLOW_TRACKING_URI); the worker's own environment is passed on as well.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flows.pipeline import FLOW_NAME, pipeline, repo_root

DEPLOYMENT_NAME = "cluster"
DEFAULT_POOL = "speech-grpo"
# Relative to the source folder: the worker changes into it and loads the flow from this file.
ENTRYPOINT = "flows/pipeline.py:pipeline"
DESCRIPTION = ("The speech-grpo DVC pipeline on a work pool, one task per stage. Parameters: overrides of params.yaml "
               "(key=value) and named shortcuts; a run with any is saved as a DVC experiment.")


def parse_env(assignments: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` strings -> a dict (raises ValueError on a malformed one)."""
    env: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--env {item!r}: expected KEY=VALUE")
        env[key.strip()] = value
    return env


def build_deployment(pool: str, source: Path, name: str = DEPLOYMENT_NAME, limit: int = 1,
                     env: Mapping[str, str] | None = None) -> Any:
    """The RunnerDeployment of the pipeline flow on `pool`, loading its code from the checkout at `source`.

    Nothing is contacted here. The storage is attached directly rather than through `flow.from_source(source)`,
    which would import the flow from `source` now, so `source` may be a path that exists only on the worker's machine.
    """
    from prefect.runner.storage import LocalStorage

    deployment = pipeline.to_deployment(
        name=name, work_pool_name=pool, tags=["speech-grpo"], description=DESCRIPTION,
        # One run at a time: further triggered runs wait (a run without overrides holds the main workspace anyway).
        concurrency_limit=limit,
        # working_dir: the flow run's process starts in the checkout, so `flows` and `steps` import from there.
        job_variables={"working_dir": str(source), **({"env": dict(env)} if env else {})},
    )
    deployment.entrypoint = ENTRYPOINT  # to_deployment makes it relative to the cwd; the checkout is the base
    deployment.storage = LocalStorage(str(source))
    return deployment


def deploy(pool: str, source: Path, name: str = DEPLOYMENT_NAME, limit: int = 1,
           env: Mapping[str, str] | None = None) -> str:
    """Create or update the deployment on the server in PREFECT_API_URL; returns its id. The pool must exist."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            work_pool = client.read_work_pool(pool)
        except ObjectNotFound:
            raise SystemExit(f"work pool {pool!r} does not exist on {client.api_url}; create it first: "
                             f"prefect work-pool create {pool} --type process") from None
    if work_pool.type != "process":
        raise SystemExit(f"work pool {pool!r} is of type {work_pool.type!r}; this deployment needs a 'process' pool "
                         f"(no image: the code is the checkout at {source})")
    return str(build_deployment(pool, source, name, limit, env).apply())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (type process; default: {DEFAULT_POOL})")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default: {DEPLOYMENT_NAME})")
    parser.add_argument("--source", type=Path, default=None,
                        help="the checkout's path on the worker's machine (default: this checkout)")
    parser.add_argument("--limit", type=int, default=1, help="flow runs of this deployment at once (default: 1)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable of every flow run (repeatable)")
    args = parser.parse_args(argv)
    try:
        env = parse_env(args.env)
    except ValueError as exc:
        parser.error(str(exc))
    source = (args.source or repo_root()).absolute()
    deployment_id = deploy(args.pool, source, args.name, args.limit, env)
    print(f"deployment '{FLOW_NAME}/{args.name}' ({deployment_id}) on work pool {args.pool!r}, code at {source}\n"
          f"start a worker where {source} exists:  prefect worker start --pool {args.pool}\n"
          f"trigger a run:  prefect deployment run '{FLOW_NAME}/{args.name}' -p overrides='[\"seed=7\"]'", flush=True)


if __name__ == "__main__":
    main()
