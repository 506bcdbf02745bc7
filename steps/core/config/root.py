"""The whole configuration (`Config`: one field per params.yaml section), how it is loaded, and the command line every
stage shares."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from steps.core.config.data import PrepareConfig, SynthConfig
from steps.core.config.evaluation import EvaluateConfig, ReportConfig, SweepConfig
from steps.core.config.loader import ConfigError, apply_override, at_least, build, did_you_mean, to_dict
from steps.core.config.model import ModelConfig, PretrainConfig
from steps.core.config.training import SFT_MATCHED_OWN_KEYS, GrpoConfig, SftConfig, SftMatchedConfig


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    """Where stage outputs live, relative to the repository root (the directory holding params.yaml); every path of
    a run is computed from these by steps/core/paths.py."""

    data: str = "data"
    models: str = "models"
    metrics: str = "metrics"
    reports: str = "reports"


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = at_least(0, 1234)
    paths: PathsConfig = PathsConfig()
    synth: SynthConfig = SynthConfig()
    prepare: PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    sft: SftConfig = SftConfig()
    sft_matched: SftMatchedConfig = SftMatchedConfig()
    grpo: GrpoConfig = GrpoConfig()
    mpgrpo: GrpoConfig = GrpoConfig(num_off_policy=1)
    grpo_base: GrpoConfig = GrpoConfig(init="base")
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    sweep: SweepConfig = SweepConfig()

    def problems(self) -> list[str]:
        out = []
        if self.seed in self.sweep.seeds:
            out.append(f"sweep.seeds: {self.seed} is the pipeline's own seed (top-level `seed`), already the first "
                       "seed of the sweep; list other seeds")
        return out + self._held_out_condition_problems()

    def _held_out_condition_problems(self) -> list[str]:
        out = []
        conditions, noise = self.evaluate.conditions, self.synth.train_noise
        if noise.fraction > 0 and noise.snr_db:
            low, high = min(noise.snr_db), max(noise.snr_db)
            inside = sorted(s for s in conditions.snr_db if low <= s <= high)
            if inside:
                out.append(f"evaluate.conditions.snr_db: {inside} dB lie within synth.train_noise.snr_db's range "
                           f"[{low:g}, {high:g}]; a held-out test condition needs an SNR below {low:g} or above "
                           f"{high:g} dB")
        unknown = sorted(set(conditions.spoken) - set(self.synth.conditions))
        if unknown:
            out.append(f"evaluate.conditions.spoken: {unknown} are not in synth.conditions "
                       f"({sorted(self.synth.conditions)}); add them there or remove them here")
        if noise.fraction > 0 and self.synth.sample_rate != self.prepare.sample_rate:
            out.append(f"synth.sample_rate: {self.synth.sample_rate} Hz but prepare.sample_rate is "
                       f"{self.prepare.sample_rate} Hz; training noise is mixed at synth's rate and test noise at "
                       "prepare's, and resampling between them filters the noise (a different SNR): make them equal")
        return out


def load_config(params_path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> Config:
    """Read params.yaml, apply overrides, validate everything, and return the typed config."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise ConfigError(str(params_path), ["file not found; run from the repository root or pass --params FILE"])
    try:
        raw = yaml.safe_load(params_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(params_path), [f"not valid YAML: {exc}"]) from exc
    for assignment in overrides:
        apply_override(raw, assignment)
    return config_from_dict(raw, source=str(params_path))


def config_from_dict(raw: dict[str, Any], source: str = "the configuration") -> Config:
    errors: list[str] = []
    raw = inherit_sft_keys(inherit_grpo_keys(raw))
    cfg = build(Config, raw, "", errors)
    if not errors:
        errors += _unknown_why_keys(cfg)
    if errors:
        raise ConfigError(source, errors)
    return cfg


def _unknown_why_keys(cfg: Config) -> list[str]:
    """`report.why` keys that name no params key. Checked when params.yaml is loaded, so a typo stops the first
    stage rather than the report, the last (the report further checks that the key is one it compares)."""
    resolved = to_dict(cfg)
    out = []
    for key in cfg.report.why:
        node: Any = resolved
        for depth, part in enumerate(key.split(".")):
            here = ".".join(key.split(".")[:depth]) or "the top level"
            if not isinstance(node, dict):
                out.append(f"report.why.{key}: {here} is a setting, not a section; name the setting itself")
                break
            if part not in node:
                out.append(f"report.why.{key}: '{part}' is not a key of {here}.{did_you_mean(part, list(node))}")
                break
            node = node[part]
    return out


def _inherit(raw: dict[str, Any], parent: str, child: str, fields: set[str], own: dict[str, Any]) -> dict[str, Any]:
    """Section `child` holds only what differs from `parent`: every key it leaves out comes from `own` (the child's
    own defaults), else from `parent`. An unknown parent key is reported once, under the parent."""
    base, mine = raw.get(parent, {}), raw.get(child)
    if not isinstance(base, dict) or not (mine is None or isinstance(mine, dict)):
        return raw  # a wrong type is reported by the builder
    return {**raw, child: {**{k: v for k, v in base.items() if k in fields}, **own, **(mine or {})}}


def inherit_grpo_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """`mpgrpo` and `grpo_base` = `grpo` plus what they override; mpgrpo's num_off_policy is 1 unless grpo or mpgrpo
    sets it, grpo_base's init is `base` unless grpo_base sets it."""
    if "grpo" not in raw:
        return raw
    fields = {f.name for f in dataclasses.fields(GrpoConfig)}
    out = _inherit(raw, "grpo", "mpgrpo", fields, {})
    if out is not raw:
        out["mpgrpo"].setdefault("num_off_policy", Config.mpgrpo.num_off_policy)
    return _inherit(out, "grpo", "grpo_base", fields, {"init": "base"})


def inherit_sft_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """`sft_matched` = `sft` plus what it overrides (with defaults of its own for SFT_MATCHED_OWN_KEYS)."""
    fields = {f.name for f in dataclasses.fields(SftConfig)}
    own = {key: getattr(SftMatchedConfig, key) for key in SFT_MATCHED_OWN_KEYS}
    return _inherit(raw, "sft", "sft_matched", fields, own)


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """The command line every stage shares: `--params FILE` and repeatable `-S key.path=value`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params key, e.g. -S prepare.workers=1 (repeatable)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The config a stage's command line names. A bad params file ends the command with its problems listed (exit
    status 1), not with a traceback that buries them."""
    try:
        return load_config(args.params, args.overrides)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}\nNothing was run; fix the file (or the -S override) and rerun.") from exc
