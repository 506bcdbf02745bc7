"""Serve the pipeline as a Prefect deployment against a local Prefect server (runs triggered from the UI or CLI).

    prefect server start --host 127.0.0.1                 # terminal 1; UI at http://127.0.0.1:4200
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve        # terminal 2
    prefect deployment run 'speech-grpo-pipeline/speech-grpo' -p overrides='["synth.sizes.ast.train=50"]'

`global_limit=1`: one flow run at a time for this deployment; further triggered runs wait for a slot (they would
otherwise only share the DVC cache, but two full pipelines on one small machine help nobody).
"""

from __future__ import annotations

import argparse

from flows.pipeline import pipeline

DEPLOYMENT_NAME = "speech-grpo"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default: {DEPLOYMENT_NAME})")
    parser.add_argument("--limit", type=int, default=1, help="flow runs of this deployment at once (default: 1)")
    args = parser.parse_args(argv)
    pipeline.serve(name=args.name, global_limit=args.limit, tags=["speech-grpo"],
                   description="The speech-grpo DVC pipeline, one task per stage. Parameters: overrides of "
                               "params.yaml (key=value) and named shortcuts; a run with any is saved as a DVC "
                               "experiment.")


if __name__ == "__main__":
    main()
