"""Learning curves to MLflow and to a CSV that a DVC plot reads; a small helper steps/tracking.py can absorb.

The tracking URI is $MLFLOW_TRACKING_URI or `sqlite:///<repo>/mlruns/mlflow.db` (absolute, so `dvc exp run --temp`
copies log to the same store); artifacts go under <repo>/mlruns/artifacts. A parent run id in
$MLFLOW_PARENT_RUN_ID (set by the pipeline flow) nests the stage's run under it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

EXPERIMENT = "speech-grpo"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become their string form (MLflow params are strings)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(data) if isinstance(data, list | tuple) else data}


class CurveLog:
    """Rows of (phase, step, minutes, metric...) logged to MLflow as they come and written to CSV at the end."""

    def __init__(self, root: Path, run_name: str, params: dict[str, Any], csv_path: Path,
                 fields: tuple[str, ...]) -> None:
        self.csv_path = csv_path
        self.fields = ("phase", "step", "minutes", *fields)
        self.rows: list[dict[str, Any]] = []
        self._mlflow: Any = None
        self._run: Any = None
        self._start(root, run_name, params)

    def _start(self, root: Path, run_name: str, params: dict[str, Any]) -> None:
        import mlflow

        (root / "mlruns").mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(tracking_uri(root))
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns" / "artifacts").resolve().as_uri())
        mlflow.set_experiment(EXPERIMENT)
        tags = {"stage": run_name}
        parent = os.environ.get("MLFLOW_PARENT_RUN_ID")
        if parent:
            tags["mlflow.parentRunId"] = parent
        self._run = mlflow.start_run(run_name=run_name, tags=tags)
        self._mlflow = mlflow
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow caps a params batch at 100
            mlflow.log_params(dict(items[i:i + 100]))

    def add(self, phase: str, step: int, minutes: float, **metrics: float | None) -> None:
        row = {"phase": phase, "step": step, "minutes": round(minutes, 3), **metrics}
        self.rows.append(row)
        # Under curve/ so that the final scores (log_metrics) keep the plain names: wer, bleu, ...
        for key, value in metrics.items():
            if value is not None:
                self._mlflow.log_metric(f"curve/{key}", float(value), step=step)
        self._mlflow.log_metric("curve/minutes", minutes, step=step)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def log_artifact(self, path: Path) -> None:
        self._mlflow.log_artifact(str(path))

    def write_csv(self) -> Path:
        from steps.io import atomic_write_text

        lines: list[str] = []

        class _Sink:
            def write(self, text: str) -> None:
                lines.append(text)

        writer = csv.DictWriter(_Sink(), fieldnames=list(self.fields), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.fields})
        return atomic_write_text(self.csv_path, "".join(lines))

    def close(self, status: str = "FINISHED") -> None:
        if self._run is not None:
            self._mlflow.end_run(status=status)
            self._run = None
