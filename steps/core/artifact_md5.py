"""Which MLflow run wrote which file: every file a stage logs is tagged `md5/<artifact path>` with the md5 dvc.lock
records for it, so the runs behind the workspace's current outputs can be found (the UI's comparison view, the
registry's @report alias)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def file_md5(path: str | Path) -> str:
    """The file's md5: the hash dvc.lock records for a file output (DVC 3 hashes the bytes as they are)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def md5_tag(name: str, artifact_path: str | None = None) -> str:
    """The tag holding the md5 of an artifact logged as `artifact_path/name`: `md5/evaluation/sqa.json`."""
    return "md5/" + "/".join(p for p in (artifact_path, name) if p)


def runs_for_file(client: Any, exp_id: str, path: Path, artifact_path: str | None = None,
                  filter_string: str = "") -> list[Any]:
    """The active runs that logged this very file (same name and bytes) as an artifact, newest first."""
    if not path.is_file():
        return []
    clause = f"tags.`{md5_tag(path.name, artifact_path)}` = '{file_md5(path)}'"
    query = f"{clause} and {filter_string}" if filter_string else clause
    return list(client.search_runs([exp_id], filter_string=query, order_by=["attributes.start_time DESC"]))
