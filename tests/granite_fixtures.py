"""Fixtures of the Granite Speech tests (a pytest plugin, tests/conftest.py): the feature extractor's backend and a
micro workspace with a tiny Granite Speech (and its audio adapter) as models/base, built once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_granite import granite_workspace
from tests.torchaudio_stub import granite_extractor_backend


@pytest.fixture(scope="module")
def granite_extractor() -> Iterator[str]:
    """Granite's feature extractor on torchaudio where it imports, else on the torch-only stand-in."""
    with granite_extractor_backend() as backend:
        yield backend


@pytest.fixture(scope="module")
def granite_root(tmp_path_factory: pytest.TempPathFactory, speech_rows: list[dict[str, Any]]) -> Path:
    """A micro workspace with a tiny Granite Speech (and its audio adapter) as models/base."""
    return granite_workspace(tmp_path_factory.mktemp("granite"), speech_rows)
