"""Start the MLflow UI on 127.0.0.1 over the pipeline's store (the same one steps/core/tracking.py logs to), and print
the address of the SFT vs GRPO comparison: the page to open first.

    python -m flows.mlflow_ui [--port 5000]

Before the server starts it writes two saved views of the runs page (flows/mlflow_views.py): "SFT vs GRPO: test
scores" (the evaluate runs of each task side by side: BLEU, the paper's other metrics, swapped-audio BLEU, the held-out
conditions) and "SFT vs GRPO: training curves" (validation BLEU, loss, reward, KL by step), both chosen from the runs
that made the workspace's metrics files. It prints their URLs; the first is the one to open.

The server is `mlflow ui --backend-store-uri sqlite:///<repo>/mlruns/mlflow.db --default-artifact-root
<repo>/mlruns/artifacts --host 127.0.0.1 --port 5000 --workers 1`. With `MLFLOW_TRACKING_URI` set to a tracking
server, nothing starts here: the views are written to that server and its URLs printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from steps.core import tracking
from steps.core.tracking_probe import is_server


def command(port: int) -> list[str]:
    mlflow = Path(sys.executable).parent / "mlflow"
    return [str(mlflow) if mlflow.exists() else "mlflow", "ui", "--backend-store-uri", tracking.tracking_uri(),
            "--default-artifact-root", tracking.artifact_root(), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]


def announce(base_url: str) -> str | None:
    """Write the saved views and print where they are; the comparison's URL (None when the store could not be read)."""
    from flows import mlflow_views

    try:
        pairs = mlflow_views.setup(base_url)
    except Exception as exc:  # the UI is still worth starting (e.g. an empty store): say why there is no view
        print(f"WARNING: could not write the comparison views ({type(exc).__name__}: {exc}); open {base_url} and the "
              f"experiment {os.environ.get('MLFLOW_EXPERIMENT_NAME') or tracking.DEFAULT_EXPERIMENT!r}",
              file=sys.stderr, flush=True)
        return None
    print("\nOpen the comparison of SFT and GRPO (test scores per task, side by side):\n"
          f"    {pairs[0][1]}\n", flush=True)
    for view, url in pairs[1:]:
        print(f"{view.name}:\n    {url}\n", flush=True)
    print("Both are also in the page's Views menu and linked at the top of the experiment page.\n", flush=True)
    return pairs[0][1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = tracking.tracking_uri()
    if is_server(uri):
        announce(uri)
        return
    announce(f"http://127.0.0.1:{args.port}")
    cmd = command(args.port)
    print(" ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)  # become the server: Ctrl-C stops it directly


if __name__ == "__main__":
    main()
