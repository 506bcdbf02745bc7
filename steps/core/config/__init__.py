"""Typed, validated configuration: params.yaml parsed into frozen dataclasses.

params.yaml is the single source of truth for every knob. `load_config` reads it, applies `-S key.path=value`
overrides (the syntax of `dvc exp run -S`) and builds `Config`; every problem (unknown key with a did-you-mean, wrong
type, value out of its declared limits) is reported at once in one `ConfigError`, each with its key path and a fix.

- loader.py: the generic part (conversion, limits declared on fields, overrides, did-you-mean);
- names.py: splits, tasks, methods, rewards; data.py, model.py, training.py, evaluation.py: the sections;
- root.py: `Config`, loading, and the command line every stage shares.

Adding a section = one dataclass in the module of its concern (limits on its fields, a `problems()` method only for
checks that relate fields) and one field on `Config`.
"""

from steps.core.config.data import (
    DEFAULT_CONDITIONS,
    Bands,
    HeldOutSplit,
    PrepareConfig,
    SourceConfig,
    SpeakerSet,
    SplitSizes,
    SpokenCondition,
    SynthConfig,
    SynthSizes,
    TaskDataConfig,
    TrainNoise,
    bands_overlap,
    beyond,
    held_out_speakers,
)
from steps.core.config.evaluation import EvaluateConfig, HeldOutConditions, ReportConfig, SweepConfig
from steps.core.config.loader import ConfigError, apply_override, to_dict
from steps.core.config.model import (
    CtcPhaseConfig,
    LoraSettings,
    ModelConfig,
    PretrainConfig,
    SallmPhaseConfig,
    SpecAugmentConfig,
    TinyModelConfig,
)
from steps.core.config.names import (
    CONDITIONS_DIR,
    DATA_SPLITS,
    GRPO_METHODS,
    METHODS,
    MODELS,
    ONLY_ON,
    POOLS,
    RESOLVED_CONFIG_NAME,
    REWARD_NAMES,
    SFT_METHODS,
    SPLITS,
    TASKS,
    TRAIN_VOICES_SPLIT,
    condition_split,
    trained_on,
)
from steps.core.config.root import (
    Config,
    PathsConfig,
    config_from_args,
    config_from_dict,
    inherit_grpo_keys,
    inherit_sft_keys,
    load_config,
    stage_parser,
)
from steps.core.config.training import SFT_MATCHED_OWN_KEYS, GrpoConfig, PostTrainingConfig, SftConfig, SftMatchedConfig
from steps.core.config.voices import (
    HELD_OUT_VARIANTS,
    HELD_OUT_VOICES,
    NOISE_COLOURS,
    OTHER_LANGUAGE_VOICES,
    TRAIN_VARIANTS,
    TRAIN_VOICES,
)

__all__ = [
    "CONDITIONS_DIR",
    "DATA_SPLITS",
    "DEFAULT_CONDITIONS",
    "GRPO_METHODS",
    "HELD_OUT_VARIANTS",
    "HELD_OUT_VOICES",
    "METHODS",
    "MODELS",
    "NOISE_COLOURS",
    "ONLY_ON",
    "OTHER_LANGUAGE_VOICES",
    "POOLS",
    "RESOLVED_CONFIG_NAME",
    "REWARD_NAMES",
    "SFT_MATCHED_OWN_KEYS",
    "SFT_METHODS",
    "SPLITS",
    "TASKS",
    "TRAIN_VARIANTS",
    "TRAIN_VOICES",
    "TRAIN_VOICES_SPLIT",
    "Bands",
    "Config",
    "ConfigError",
    "CtcPhaseConfig",
    "EvaluateConfig",
    "GrpoConfig",
    "HeldOutConditions",
    "HeldOutSplit",
    "LoraSettings",
    "ModelConfig",
    "PathsConfig",
    "PostTrainingConfig",
    "PrepareConfig",
    "PretrainConfig",
    "ReportConfig",
    "SallmPhaseConfig",
    "SftConfig",
    "SftMatchedConfig",
    "SourceConfig",
    "SpeakerSet",
    "SpecAugmentConfig",
    "SplitSizes",
    "SpokenCondition",
    "SweepConfig",
    "SynthConfig",
    "SynthSizes",
    "TaskDataConfig",
    "TinyModelConfig",
    "TrainNoise",
    "apply_override",
    "bands_overlap",
    "beyond",
    "condition_split",
    "config_from_args",
    "config_from_dict",
    "held_out_speakers",
    "inherit_grpo_keys",
    "inherit_sft_keys",
    "load_config",
    "stage_parser",
    "to_dict",
    "trained_on"
]
