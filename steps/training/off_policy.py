"""Where mixed-policy GRPO's off-policy texts come from: each example's reference, or another model's recorded
output read from a JSONL file keyed by example id (`grpo.off_policy_source`, `grpo.off_policy_field`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.core.config import GrpoConfig
from steps.core.io import read_jsonl


@dataclass
class OffPolicySource:
    """Where an example's off-policy text comes from: its reference, or another model's recorded output."""

    kind: str  # "reference" | a JSONL path
    texts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, gcfg: GrpoConfig, root: Path) -> OffPolicySource:
        if gcfg.off_policy_source == "reference":
            return cls("reference")
        path = Path(gcfg.off_policy_source).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise FileNotFoundError(f"off_policy_source {path} does not exist: give a JSONL of recorded outputs "
                                    "(e.g. metrics/<model>/<task>.predictions.jsonl) or `reference`")
        texts: dict[str, str] = {}
        for i, row in enumerate(read_jsonl(path)):
            if "id" not in row or gcfg.off_policy_field not in row:
                raise ValueError(f"{path}: line {i + 1} lacks `id` or `{gcfg.off_policy_field}` "
                                 "(set off_policy_field to the column holding the text)")
            texts[str(row["id"])] = str(row[gcfg.off_policy_field])
        return cls(str(path), texts)

    def text_for(self, row: dict[str, Any]) -> str:
        if self.kind == "reference":
            return str(row["reference"])
        key = str(row["id"])
        if key not in self.texts:
            raise KeyError(f"{self.kind} has no output for example {key!r}: record outputs for every training "
                           "example, or use off_policy_source: reference")
        return self.texts[key]
