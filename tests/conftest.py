"""Shared fixtures: tiny, generated, seeded. Nothing here downloads anything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spin-waiting threads starve other processes

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.granite_fixtures"]  # the Granite Speech fixtures, for the modules that ask for them


def sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def speech_rows() -> list[dict[str, Any]]:
    """Eight espeak clips (alternating asr / ast) in the prepared-dataset layout, made once per session."""
    from tests.tiny_sallm import make_rows

    return make_rows(8)


@pytest.fixture(scope="session")
def tiny_sallm(speech_rows: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(model, processor) of a micro tiny preset; a fresh copy is cheap to build, so tests may train it."""
    from tests.tiny_sallm import build_micro

    return build_micro(speech_rows)


# --- MLflow: a real SQLite store, and no tracking settings leaking in from the environment --------------------------


@pytest.fixture
def clean_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No run, parent, experiment or tracking switch from the environment (a DVC or Prefect run's variables)."""
    from steps.core import tracking

    for var in (tracking.ENV_RUN_ID, tracking.ENV_PARENT_RUN_ID, tracking.ENV_DVC_EXP, tracking.ENV_TRACKING,
                "DVC_STAGE", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_warned", False)


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite store per session (creating the schema is the slow part), copied per test."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(mlflow_template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    """A repository root with its own MLflow store (SQLite under mlruns/), and a client on it."""
    import shutil

    from mlflow.tracking import MlflowClient

    from steps.core import tracking

    root = tmp_path / "repo"
    (root / "mlruns").mkdir(parents=True)
    shutil.copy(mlflow_template_db, root / "mlruns" / "mlflow.db")
    monkeypatch.setenv(tracking.ENV_ROOT, str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")  # restored at teardown
    return root, MlflowClient(tracking_uri=tracking.tracking_uri())

