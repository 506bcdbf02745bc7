"""Where the seed sweep keeps its runs: sweeps/runs/seed-<n>/<task>/{models,metrics}.

One folder per seed and task is one DVC stage's output (sweeps/dvc.yaml), so that DVC keeps every finished run
while another one trains, and adding a seed or changing one task's settings retrains nothing else. The training
(steps/training/seed_sweep.py) and the summary (steps/reporting/seed_tables.py) both find the runs here.
"""

from __future__ import annotations

from pathlib import Path


def seed_run_folder(runs_dir: Path, seed: int, task: str) -> Path:
    """One extra seed's models and metrics for one task (runs_dir is sweeps/runs)."""
    return runs_dir / f"seed-{seed}" / task
