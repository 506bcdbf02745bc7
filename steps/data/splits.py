"""The prepared splits (data/prepared/<pool>/<split>, written by the prepare stage) as the later stages read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_split(data_dir: Path, pool: str, split: str) -> Any:
    """data/prepared/<pool>/<split> as a `datasets.Dataset`, for the stages that read prepare's output.

    Caching is disabled first: otherwise a later `.filter()`/`.map()` writes cache-*.arrow files into this folder,
    which is a DVC output, and the next `dvc repro` would see it modified and rerun everything after it.
    """
    import datasets

    path = data_dir / pool / split
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found; run the prepare stage first (`dvc repro prepare@{pool}`)")
    datasets.disable_caching()
    return datasets.load_from_disk(str(path))


def training_view(dataset: Any, limit: int | None = None) -> Any:
    """Only the columns training reads; audio as numpy (a Python list of floats per clip is slow to convert)."""
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    dataset = dataset.select_columns(["id", "prompt", "reference", "audio"])
    return dataset.with_format("numpy", columns=["audio"], output_all_columns=True)


def evaluation_set(data_dir: Path, task: str, split: str, limit: int | None = None) -> Any:
    """The columns the evaluation reads of one split, its first `limit` examples (None: all)."""
    dataset = load_split(data_dir, task, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.select_columns(["id", "prompt", "reference", "audio"])
