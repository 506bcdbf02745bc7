"""Every setting the paper states (or leaves open) next to ours, with the reason params.yaml gives for ours."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steps.core.config import Config, ConfigError, to_dict
from steps.reporting.evaluations import CURVE_METHODS


@dataclass(frozen=True)
class PaperSetting:
    key: str  # a params.yaml key path
    label: str
    paper: Any  # None: the paper does not state it
    paper_text: str


MODEL_SETTINGS = (
    PaperSetting("model.name_or_path", "model", "granite-speech-3.3-2b", "Granite Speech 3.3 2B"),
    PaperSetting("prepare.tasks.sqa.source", "SQA data", "librisqa", "LibriSQA Part I"),
    PaperSetting("prepare.tasks.ast.source", "AST data", "covost2", "CoVoST2 En->De"),
    PaperSetting("model.finetune", "fine-tuning", None, "not stated"),
)
# Compared for both the grpo and the mpgrpo section (keys relative to the section).
GRPO_SETTINGS = (
    PaperSetting("init", "starting model", "base", "the base model"),
    PaperSetting("num_generations", "group size", 8, "8"),
    PaperSetting("beta", "KL coefficient beta", 0.02, "0.02"),
    PaperSetting("temperature", "rollout temperature", 1.0, "1.0"),
    PaperSetting("max_completion_length", "max completion length", 200, "200 tokens"),
    PaperSetting("lr", "learning rate", 1e-6, "1e-6"),
    PaperSetting("loss_type", "loss", "dapo", "DAPO (token-level)"),
    PaperSetting("reward_weights", "reward", {"bleu": 1.0}, "BLEU"),
    PaperSetting("reward_options", "reward details", None, "sentence BLEU; tokenisation, casing, smoothing not stated"),
    PaperSetting("advantage_std_floor", "advantage std floor", 0, "none: (r - mean) / std (LEAF: 1/3)"),
    PaperSetting("max_steps", "training steps", None, "not stated (GRPO on 2B: up to 24 h on 4x H100)"),
)
LATER_SETTINGS = (
    PaperSetting("mpgrpo.num_off_policy", "MP-GRPO off-policy samples per group", 1, "1 (7 on-policy + 1)"),
    PaperSetting("mpgrpo.off_policy_source", "MP-GRPO off-policy sample", "reference", "the reference"),
    PaperSetting("evaluate.temperature", "evaluation temperature", 0.9, "0.9"),
    PaperSetting("evaluate.top_p", "evaluation top-p", 0.9, "0.9"),
    PaperSetting("evaluate.sampled_runs", "sampled evaluation runs", None, "not stated (LEAF: 5)"),
    PaperSetting("sft.max_steps", "SFT steps", None, "searched over 1-10 epochs"),
    PaperSetting("grpo.eval_decoding", "checkpoint selection", None, "best on validation; decoding not stated"),
)


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _same(ours: Any, paper: Any) -> bool:
    if ours is None and paper == 0:
        return True  # a numeric option switched off (advantage_std_floor: null) is the paper's 0
    if isinstance(ours, int | float) and isinstance(paper, int | float) and not isinstance(ours, bool):
        return math.isclose(ours, paper, rel_tol=1e-9)
    if isinstance(paper, str) and isinstance(ours, str):
        return paper.lower() in ours.lower()  # a hub id, or a data path naming the corpus
    return ours == paper


def settings_vs_paper(cfg: Config) -> list[dict[str, Any]]:
    """Every setting the paper states (or leaves open) next to ours, read from the resolved config, with the reason
    params.yaml gives for ours (`report.why`, keyed like the table's params keys)."""
    resolved = to_dict(cfg)
    per_section = [PaperSetting(f"{section}.{s.key}", f"{section}: {s.label}", s.paper, s.paper_text)
                   for section in CURVE_METHODS for s in GRPO_SETTINGS]
    settings = (*MODEL_SETTINGS, *per_section, *LATER_SETTINGS)
    known = [s.key for s in settings]
    unknown = sorted(set(cfg.report.why) - set(known))
    if unknown:
        raise ConfigError("params", [f"report.why.{k}: not a setting the report compares with the paper; use one of "
                                     f"{', '.join(known)}" for k in unknown])
    rows = []
    for s in settings:
        ours = _lookup(resolved, s.key)
        if s.key.endswith(".source") and isinstance(ours, Mapping):
            # The paper's corpus only when the source is real data whose path names it.
            ours = f"{ours.get('kind')}: {ours.get('path')}"
            status = "same" if not ours.startswith("synthetic") and _same(ours, s.paper) else "differs"
        elif s.paper is None:
            status = "left open"
        else:
            status = "same" if _same(ours, s.paper) else "differs"
        rows.append({"key": s.key, "setting": s.label, "paper": s.paper_text, "ours": ours, "status": status,
                     "why": _reason(cfg.report.why, resolved, s.key)})
    return rows


def _reason(why: Mapping[str, str], resolved: Mapping[str, Any], key: str) -> str:
    """`report.why[key]`; an mpgrpo or grpo_base setting inherited unchanged from grpo takes grpo's reason."""
    if key in why:
        return why[key]
    section, _, rest = key.partition(".")
    if section in ("mpgrpo", "grpo_base") and _lookup(resolved, key) == _lookup(resolved, f"grpo.{rest}"):
        return why.get(f"grpo.{rest}", "")
    return ""
