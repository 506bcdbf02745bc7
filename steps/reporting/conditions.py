"""The report's robustness section: each method on test conditions it never trained on (evaluate.conditions).

Per method, greedy BLEU on: the clean test split (held-out speakers), the same texts spoken clean by training speakers
(the reference), the held-out speakers' clips with noise at each SNR, and each noisy condition with swapped audio
(a model that listens still drops far there). Robustness at k dB = BLEU(held-out speakers, k dB) / BLEU(training
speakers, clean); the target is at least `ROBUSTNESS_TARGET` at `TARGET_SNR_DB` for every method (README).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from steps.reporting.evaluations import LABELS, Evaluation
from steps.reporting.markdown import fmt, md_table

ROBUSTNESS_TARGET = 0.85  # within 15% of the same texts spoken clean by training speakers
TARGET_SNR_DB = 20.0
_SNR = re.compile(r"^snr(-?\d+(?:\.\d+)?)$")


def noise_conditions(evals: Mapping[str, Evaluation]) -> list[str]:
    """The noisy condition names every evaluation has, in SNR order from clean to noisy (snr20, snr10, ...)."""
    names = [set(n for n in (e.metrics.get("conditions") or {}) if _SNR.match(n)) for e in evals.values()]
    common = set.intersection(*names) if names else set()
    return sorted(common, key=lambda n: -float(_SNR.match(n).group(1)))  # type: ignore[union-attr]


def conditions_rows(evals: Mapping[str, Evaluation]) -> dict[str, Any]:
    """{"snr": [...], "rows": [per method: clean, train_voices, each condition and its swapped, robustness]}."""
    snrs = noise_conditions(evals)
    colours = sorted({str(e.metrics["conditions_noise"]) for e in evals.values() if e.metrics.get("conditions_noise")})
    rows = []
    for method, ev in evals.items():
        conditions = ev.metrics.get("conditions") or {}
        if not conditions:
            continue
        bleu = {name: (scores or {}).get("bleu") for name, scores in conditions.items()}
        reference = bleu.get("train_voices")
        row: dict[str, Any] = {"method": method, "clean": ev.metrics.get("bleu"), "train_voices": reference,
                               "n_train_voices": (conditions.get("train_voices") or {}).get("n")}
        for name in snrs:
            row[name] = bleu.get(name)
            row[f"{name}_swapped"] = bleu.get(f"{name}_swapped")
            row[f"robustness_{name}"] = (bleu[name] / reference if reference and bleu.get(name) is not None
                                         else None)
        target = f"robustness_snr{TARGET_SNR_DB:g}"
        row["meets_target"] = row[target] >= ROBUSTNESS_TARGET if row.get(target) is not None else None
        rows.append(row)
    return {"snr": snrs, "noise": ", ".join(colours) or "n/a", "rows": rows, "target": ROBUSTNESS_TARGET,
            "target_snr_db": TARGET_SNR_DB}


def conditions_markdown(section: Mapping[str, Any] | None, heading: str | None = "### Conditions never trained on"
                        ) -> list[str]:
    if not section or not section.get("rows"):
        return []
    snrs: Sequence[str] = section["snr"]
    header = ["", "held-out speakers, clean", "training speakers, clean"]
    for name in snrs:
        db = name[3:]
        header += [f"{db} dB", f"{db} dB, swapped audio", f"{db} dB / training speakers"]
    rows = []
    for row in section["rows"]:
        cells = [LABELS.get(row["method"], row["method"]), fmt(row["clean"]), fmt(row["train_voices"])]
        for name in snrs:
            ratio = row.get(f"robustness_{name}")
            cells += [fmt(row.get(name)), fmt(row.get(f"{name}_swapped")),
                      "n/a" if ratio is None else f"{ratio:.2f}"]
        rows.append(cells)
    met = [r for r in section["rows"] if r.get("meets_target")]
    judged = [r for r in section["rows"] if r.get("meets_target") is not None]
    target = (f"Target: at {section['target_snr_db']:g} dB at least {section['target']:.2f} of the training speakers' "
              f"clean BLEU for every method: met by {len(met)} of {len(judged)}"
              + (f" ({', '.join(LABELS.get(r['method'], r['method']) for r in met)})." if met else "."))
    out = [heading, ""] if heading else []
    return [*out,
            "Greedy BLEU. Held-out speakers: accents, timbre variants and rate/pitch ranges no training clip "
            f"used; noise: {section['noise']}, added to those clips at SNRs training never used "
            "(`evaluate.conditions`); "
            "training speakers: the same test texts spoken by training speakers, clean.", "",
            md_table(header, rows), "", target, ""]
