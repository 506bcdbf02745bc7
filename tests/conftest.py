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
