"""Number formats and markdown tables shared by report.md, sweeps/seeds.md and the README."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def fmt_p(p: float | None) -> str:
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def delta_cell(t: Mapping[str, Any]) -> str:
    ci = t.get("delta_ci95")
    return f"{t['delta']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def mde_cell(t: Mapping[str, Any]) -> str:
    return fmt(t.get("mde")) + (f" / {fmt(t['mde_holm'])}" if t.get("mde_holm") is not None else "")
