"""Start the MLflow UI on 127.0.0.1 over the pipeline's store (the same one steps/core/tracking.py logs to).

    python -m flows.mlflow_ui [--port 5000]     # then open http://127.0.0.1:5000, experiment "speech-grpo"

Equivalent to `mlflow ui --backend-store-uri sqlite:///<repo>/mlruns/mlflow.db --default-artifact-root
<repo>/mlruns/artifacts --host 127.0.0.1 --port 5000 --workers 1` (`MLFLOW_TRACKING_URI` overrides the store).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from steps.core import tracking


def command(port: int) -> list[str]:
    mlflow = Path(sys.executable).parent / "mlflow"
    return [str(mlflow) if mlflow.exists() else "mlflow", "ui", "--backend-store-uri", tracking.tracking_uri(),
            "--default-artifact-root", tracking.artifact_root(), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    cmd = command(args.port)
    print(" ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)  # become the server: Ctrl-C stops it directly


if __name__ == "__main__":
    main()
