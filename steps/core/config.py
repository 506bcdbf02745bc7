"""Typed, validated configuration: params.yaml parsed into frozen dataclasses.

params.yaml is the single source of truth for every knob. `load_config` reads it, applies `-S key.path=value`
overrides (the syntax of `dvc exp run -S`), and builds the dataclasses below. Every problem (unknown key, wrong
type, bad value) is collected and reported at once in one `ConfigError`, each with its key path and a fix.

Adding a stage's section = one dataclass here (with an optional `problems()` method for value checks) and one
field on `Config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# The test texts spoken again by training speakers (synth.test_train_voices): the clean reference of the test's
# held-out conditions (evaluate.conditions). Prepared like a split; sources that lack it simply have none.
TRAIN_VOICES_SPLIT = "test_train_voices"
DATA_SPLITS: tuple[str, ...] = (*SPLITS, TRAIN_VOICES_SPLIT)
TASKS: tuple[str, ...] = ("sqa", "ast")  # what SFT, GRPO and the evaluation post-train and score
POOLS: tuple[str, ...] = (*TASKS, "pretrain")  # the data pools synth and prepare make (pretrain: ASR + AST)
RESOLVED_CONFIG_NAME = "resolved_params.yaml"
# The rewards steps.training.rewards registers, by name: listed here so that validating params.yaml needs no metric
# library (the synth stage must not depend on the metrics); a test keeps the two lists equal.
REWARD_NAMES: tuple[str, ...] = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "meteor", "exact_match")


class ConfigError(ValueError):
    """All the problems found in a configuration, one per line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} {noun}:\n{lines}")


# --- sections ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    """Where stage outputs live, relative to the repository root (the directory holding params.yaml)."""

    data: str = "data"
    models: str = "models"
    metrics: str = "metrics"
    reports: str = "reports"


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    train: int = 0
    validation: int = 0
    test: int = 0

    def problems(self) -> list[str]:
        return [f"{name}: must be >= 0, got {getattr(self, name)}" for name in SPLITS if getattr(self, name) < 0]


@dataclasses.dataclass(frozen=True)
class SynthSizes:
    ast: SplitSizes = SplitSizes(6000, 200, 300)
    sqa: SplitSizes = SplitSizes(2000, 200, 400)
    pretrain: SplitSizes = SplitSizes(8000, 200, 300)


# The espeak-ng timbre variants (voices/!v, 103 usable) split three ways, so that no split hears another's timbres.
TEST_VARIANTS: tuple[str, ...] = ("m2", "m5", "f3", "f5", "Andy", "Annie", "david", "linda", "quincy", "steph")
VALIDATION_VARIANTS: tuple[str, ...] = ("m4", "m6", "f4", "Alex", "belinda", "john", "paul", "shelby")
TRAIN_VARIANTS: tuple[str, ...] = (
    "", "m1", "m3", "m7", "m8", "f1", "f2", "Alicia", "Andrea", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene",
    "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "Reed", "RicishayMax",
    "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika", "anikaRobot", "announcer",
    "antonio", "aunty", "benjamin", "boris", "caleb", "croak", "ed", "edward", "edward2", "fast", "grandma", "grandpa",
    "gustave", "ian", "iven", "iven2", "iven3", "iven4", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "klatt6", "marcelo", "max", "michel", "miguel", "mike2", "norbert", "pablo", "pedro", "rob", "robert", "robosoft",
    "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro", "steph2",
    "steph3", "travis", "victor", "whisper", "whisperf", "zac",
)
NOISE_COLOURS: tuple[str, ...] = ("white", "pink", "brown")


Bands = tuple[tuple[int, int], ...]  # inclusive [lo, hi] ranges, e.g. ((140, 160), (180, 200))


@dataclasses.dataclass(frozen=True)
class SpeakerSet:
    """Who speaks one split: espeak accent voices crossed with timbre variants ("" = the voice's own), and the bands
    the speaking rate (words per minute) and pitch (espeak's 0-99) are drawn from: a band with probability
    proportional to its width, then a value uniformly within it. Bands let training surround the held-out values
    (interpolation) rather than the test lying beyond everything training heard."""

    voices: tuple[str, ...] = ()
    variants: tuple[str, ...] = ("",)
    rate_wpm: Bands = ((150, 190),)
    pitch: Bands = ((35, 65),)

    def problems(self) -> list[str]:
        out = []
        if not self.voices:
            out.append("voices: must list at least one espeak voice, e.g. [en-US]")
        if not self.variants:
            out.append("variants: list at least one variant; use [''] for the voice's default")
        for name, lowest, highest, unit in (("rate_wpm", 80, 450, " words per minute"), ("pitch", 0, 99,
                                                                                          " (espeak's scale)")):
            bands = getattr(self, name)
            if not bands:
                out.append(f"{name}: list at least one [min, max] band")
            for lo, hi in bands:
                if not lowest <= lo <= hi <= highest:
                    out.append(f"{name}: needs {lowest} <= min <= max <= {highest}{unit}, got [{lo}, {hi}]")
        return out


def bands_overlap(a: Bands, b: Bands) -> bool:
    return any(lo <= bhi and blo <= hi for lo, hi in a for blo, bhi in b)


def _bands(bands: Bands) -> str:
    return "[" + ", ".join(f"[{lo}, {hi}]" for lo, hi in bands) + "]"


@dataclasses.dataclass(frozen=True)
class TrainNoise:
    """Noise mixed into a `fraction` of the training clips (every pool's train split): a colour and an SNR (dB,
    over the whole clip) drawn per clip from the lists. Held-out test conditions use SNRs not listed here."""

    fraction: float = 0.75
    snr_db: tuple[float, ...] = (6.0, 12.0, 18.0, 24.0, 30.0)
    colours: tuple[str, ...] = NOISE_COLOURS

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.fraction <= 1:
            out.append(f"fraction: must be within [0, 1], got {self.fraction}")
        if self.fraction > 0 and not self.snr_db:
            out.append("snr_db: list at least one SNR in dB, or set fraction: 0")
        unknown = sorted(set(self.colours) - set(NOISE_COLOURS))
        if unknown:
            out.append(f"colours: unknown {unknown}; use some of {list(NOISE_COLOURS)}")
        if self.fraction > 0 and not self.colours:
            out.append(f"colours: list at least one of {list(NOISE_COLOURS)}, or set fraction: 0")
        return out


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """The offline spoken corpus (espeak-ng). Train, validation and test each have their own speakers: accent voices,
    timbre variants and rate/pitch ranges are disjoint between splits, so checkpoint selection and the test measure
    voices the models never heard. `train_noise` makes training noisy; the test's noisy conditions are the
    evaluation's (`evaluate.conditions`). Sentences of validation and test never occur in training or pretraining."""

    train: SpeakerSet = SpeakerSet(("en-US", "en", "en-GB-scotland", "en-029", "en-GB-x-gbcwmd"), TRAIN_VARIANTS,
                                   ((140, 160), (180, 200)), ((25, 40), (60, 75)))
    validation: SpeakerSet = SpeakerSet(("en-GB-x-gbclan",), VALIDATION_VARIANTS, ((161, 169),), ((41, 49),))
    test: SpeakerSet = SpeakerSet(("en-GB-x-rp", "en-US-nyc"), TEST_VARIANTS, ((170, 179),), ((50, 59),))
    train_noise: TrainNoise = TrainNoise()
    test_train_voices: bool = True
    workers: int = 2
    sizes: SynthSizes = SynthSizes()

    def speakers(self, split: str) -> SpeakerSet:
        return getattr(self, split)

    def problems(self) -> list[str]:
        out = []
        for attr in ("voices", "variants"):
            for a, b in (("validation", "train"), ("test", "train"), ("test", "validation")):
                shared = sorted(set(getattr(self.speakers(a), attr)) & set(getattr(self.speakers(b), attr)))
                if shared:
                    out.append(f"{a}.{attr}: {shared} also in {b}.{attr}; each split must have its own speakers")
        for attr in ("rate_wpm", "pitch"):
            for a, b in (("validation", "train"), ("test", "train"), ("test", "validation")):
                mine, theirs = getattr(self.speakers(a), attr), getattr(self.speakers(b), attr)
                if bands_overlap(mine, theirs):
                    out.append(f"{a}.{attr}: {_bands(mine)} overlaps {b}.{attr} {_bands(theirs)}; held-out "
                               "speakers need values the other splits never used")
        if self.workers < 1:
            out.append(f"workers: must be >= 1, got {self.workers}")
        return out


SourceKind = Literal["synthetic", "covost2", "hf", "manifest"]


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where a task's raw examples come from; see steps/data/sources.py for each kind's layout.

    `splits` maps our split names to the source's (a TSV suffix, an HF split, a manifest file); `columns` maps our
    fields (audio, text, question, answer, translation, speaker) to the source's column names.
    """

    kind: SourceKind = "synthetic"
    path: str = ""
    audio_dir: str = ""
    splits: dict[str, str] = dataclasses.field(default_factory=dict)
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    limit: int | None = None

    def problems(self) -> list[str]:
        out = []
        if not self.path:
            out.append("path: empty; give the folder, file or dataset id to read")
        unknown = sorted(set(self.splits) - set(DATA_SPLITS))
        if unknown:
            out.append(f"splits: unknown split names {unknown}; use {list(DATA_SPLITS)}")
        if self.limit is not None and self.limit <= 0:
            out.append(f"limit: must be a positive number of examples per split or null, got {self.limit}")
        return out


@dataclasses.dataclass(frozen=True)
class TaskDataConfig:
    """One task's data: its source and the prompt templates (each holds the `<|audio|>` placeholder once)."""

    source: SourceConfig = SourceConfig()
    prompts: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if not self.prompts:
            out.append("prompts: give at least one template list, keyed by example type (sqa, ast or asr)")
        for kind, templates in self.prompts.items():
            if not templates:
                out.append(f"prompts.{kind}: empty; give at least one template")
            for i, t in enumerate(templates):
                if t.count("<|audio|>") != 1:
                    out.append(f"prompts.{kind}[{i}]: must contain '<|audio|>' exactly once, got {t!r}")
                if "{question}" in t and kind != "sqa":
                    out.append(f"prompts.{kind}[{i}]: only sqa templates may use {{question}}")
            if kind == "sqa" and any("{question}" not in t for t in templates):
                out.append("prompts.sqa: every template must contain {question}")
        return out


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Decode, resample and format: the same for every task."""

    sample_rate: int = 16000
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    silence_dbfs: float = -60.0
    max_bad_fraction: float = 0.05
    workers: int = 2
    tasks: dict[str, TaskDataConfig] = dataclasses.field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if not 1000 <= self.sample_rate <= 192000:
            out.append(f"sample_rate: expected a rate in Hz such as 16000, got {self.sample_rate}")
        if not 0 <= self.min_seconds < self.max_seconds:
            out.append(f"min_seconds/max_seconds: need 0 <= min < max, got {self.min_seconds}/{self.max_seconds}")
        if not 0 <= self.max_bad_fraction <= 1:
            out.append(f"max_bad_fraction: must be within [0, 1], got {self.max_bad_fraction}")
        if self.workers < 1:
            out.append(f"workers: must be >= 1, got {self.workers}")
        unknown = sorted(set(self.tasks) - set(POOLS))
        if unknown:
            out.append(f"tasks: unknown task names {unknown}; use {list(POOLS)}")
        return out


@dataclasses.dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the offline `tiny` preset, a random-initialised Qwen2-Audio-architecture SALLM (modeling/tiny.py)."""

    vocab_size: int = 600
    num_mel_bins: int = 80
    encoder_layers: int = 4
    encoder_dim: int = 192
    encoder_heads: int = 4
    encoder_ffn_dim: int = 768
    llm_layers: int = 3
    llm_dim: int = 192
    llm_heads: int = 4
    llm_kv_heads: int = 4
    llm_ffn_dim: int = 512
    max_position_embeddings: int = 1024
    # The encoder's input window in whole seconds; null derives it from the longest clip in the prepared data.
    window_seconds: int | None = None

    def problems(self) -> list[str]:
        out = []
        for name in ("vocab_size", "num_mel_bins", "encoder_layers", "encoder_dim", "encoder_heads", "encoder_ffn_dim",
                     "llm_layers", "llm_dim", "llm_heads", "llm_kv_heads", "llm_ffn_dim", "max_position_embeddings"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.encoder_dim % max(self.encoder_heads, 1):
            out.append(f"encoder_dim: {self.encoder_dim} must be divisible by encoder_heads={self.encoder_heads}")
        if self.llm_dim % max(self.llm_heads, 1):
            out.append(f"llm_dim: {self.llm_dim} must be divisible by llm_heads={self.llm_heads}")
        if self.llm_heads % max(self.llm_kv_heads, 1):
            out.append(f"llm_kv_heads: llm_heads={self.llm_heads} must be a multiple of it, got {self.llm_kv_heads}")
        if self.vocab_size < 300:
            out.append(f"vocab_size: byte-level BPE needs >= 300 (256 bytes + special tokens), got {self.vocab_size}")
        if self.window_seconds is not None and not 1 <= self.window_seconds <= 30:
            out.append(f"window_seconds: must be within [1, 30] or null, got {self.window_seconds}")
        return out


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LLM's linear layers (peft); `target_modules` are module names inside the LLM only."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def problems(self) -> list[str]:
        out = []
        if self.r < 1:
            out.append(f"r: must be >= 1, got {self.r}")
        if self.alpha <= 0:
            out.append(f"alpha: must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            out.append(f"dropout: must be within [0, 1), got {self.dropout}")
        if not self.target_modules:
            out.append("target_modules: list at least one module name, e.g. [q_proj, v_proj]")
        return out


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which SALLM the pipeline trains and what of it trains (steps/modeling/loading.py).

    `name_or_path` is `tiny` (the offline preset, built and pretrained by the pretrain stage), a local folder or a
    hub id (Granite Speech, Qwen2-Audio). `finetune: lora` trains LoRA adapters on the LLM; the freeze switches say
    whether the audio encoder / projector / LLM base weights train (in LoRA mode the LLM base is always frozen).
    """

    name_or_path: str = "tiny"
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    finetune: Literal["full", "lora"] = "full"
    freeze_audio_encoder: bool = False
    freeze_projector: bool = False
    freeze_llm: bool = False
    lora: LoraSettings = LoraSettings()
    tiny: TinyModelConfig = TinyModelConfig()

    def problems(self) -> list[str]:
        out = []
        if not self.name_or_path:
            out.append("name_or_path: empty; use 'tiny', a local model folder or a hub id")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            out.append(f"device: expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.finetune == "full" and self.freeze_audio_encoder and self.freeze_projector and self.freeze_llm:
            out.append("freeze_*: everything is frozen and finetune is 'full': nothing would train; "
                       "unfreeze a part or use finetune: lora")
        return out


@dataclasses.dataclass(frozen=True)
class CtcPhaseConfig:
    """Pretrain phase 1: the audio encoder alone, CTC over characters on its pooled output (what the LLM sees)."""

    steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 100

    def problems(self) -> list[str]:
        out = [f"{n}: must be >= 0, got {getattr(self, n)}" for n in ("steps", "warmup_steps") if getattr(self, n) < 0]
        if self.batch_size < 1:
            out.append(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            out.append(f"lr: must be > 0, got {self.lr}")
        return out


@dataclasses.dataclass(frozen=True)
class SallmPhaseConfig:
    """Pretrain phase 2: the whole SALLM, answer-only LM loss on an ASR/AST mix plus `ctc_weight` x the CTC loss."""

    steps: int = 1000
    batch_size: int = 16
    llm_lr: float = 2e-3
    encoder_lr: float = 1e-3
    warmup_steps: int = 50
    ctc_weight: float = 0.3
    asr_fraction: float = 0.5

    def problems(self) -> list[str]:
        out = [f"{n}: must be >= 0, got {getattr(self, n)}" for n in ("steps", "warmup_steps") if getattr(self, n) < 0]
        if self.batch_size < 1:
            out.append(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.llm_lr <= 0 or self.encoder_lr < 0:
            out.append(f"llm_lr/encoder_lr: need llm_lr > 0 and encoder_lr >= 0, got {self.llm_lr}/{self.encoder_lr}")
        if self.ctc_weight < 0:
            out.append(f"ctc_weight: must be >= 0, got {self.ctc_weight}")
        if not 0 <= self.asr_fraction <= 1:
            out.append(f"asr_fraction: must be within [0, 1], got {self.asr_fraction}")
        return out


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    """Masking of the log-mel input during pretraining (SpecAugment-style); widths in mel bins / frames (10 ms)."""

    freq_masks: int = 2
    freq_width: int = 10
    time_masks_per_second: float = 1.0
    time_width: int = 10

    def problems(self) -> list[str]:
        return [f"{n}: must be >= 0, got {getattr(self, n)}"
                for n in ("freq_masks", "freq_width", "time_masks_per_second", "time_width") if getattr(self, n) < 0]


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """The pretrain stage (steps/training/pretraining.py): trains the tiny preset into a base that listens.

    The budget is in optimiser steps (deterministic); the wall time it takes is measured and reported.
    """

    ctc: CtcPhaseConfig = CtcPhaseConfig()
    sallm: SallmPhaseConfig = SallmPhaseConfig()
    spec_augment: SpecAugmentConfig = SpecAugmentConfig()
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 300
    curve_examples: int = 48
    eval_batch_size: int = 32
    max_new_tokens: int = 40
    threads: int = 0

    def problems(self) -> list[str]:
        out = []
        if self.eval_every < 1:
            out.append(f"eval_every: must be >= 1 step, got {self.eval_every}")
        if self.curve_examples < 1 or self.eval_batch_size < 1 or self.max_new_tokens < 1:
            out.append("curve_examples, eval_batch_size, max_new_tokens: must all be >= 1")
        if self.threads < 0:
            out.append(f"threads: must be >= 0 (0 = torch's default), got {self.threads}")
        if self.grad_clip <= 0:
            out.append(f"grad_clip: must be > 0, got {self.grad_clip}")
        return out


@dataclasses.dataclass(frozen=True)
class SftConfig:
    """The sft stage (steps/training/sft.py): TRL's SFTTrainer on one task's train split, starting from models/base.

    `max_steps` > 0 overrides `epochs`. Validation every `eval_every` optimiser steps on the first `eval_examples`
    of the validation split: loss, and BLEU with `eval_decoding` (`sampled`: the evaluation's decoding,
    evaluate.temperature/top_p, seeded with `seed`, as the paper reports; or `greedy`); the checkpoint kept is the
    best on that BLEU.
    Checkpoints go to `<paths.models>/.work/sft/<task>` (resumed after an interruption, deleted after success).
    """

    lr: float = 5e-4
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup", "cosine_with_min_lr"] = "cosine"
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_steps: int = 300
    batch_size: int = 16
    grad_accumulation: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    train_limit: int | None = None
    eval_every: int = 75
    eval_examples: int = 200
    eval_decoding: Literal["sampled", "greedy"] = "greedy"
    eval_batch_size: int = 32
    max_new_tokens: int = 48
    logging_steps: int = 1
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    threads: int = 0

    def problems(self) -> list[str]:
        out = []
        if self.lr <= 0:
            out.append(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            out.append(f"warmup_ratio: must be within [0, 1), got {self.warmup_ratio}")
        if self.max_steps <= 0 and self.epochs <= 0:
            out.append(f"epochs/max_steps: set epochs > 0 or max_steps > 0, got {self.epochs}/{self.max_steps}")
        for name in ("batch_size", "grad_accumulation", "eval_every", "eval_examples", "eval_batch_size",
                     "max_new_tokens", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.train_limit is not None and self.train_limit < 1:
            out.append(f"train_limit: must be a positive number of examples or null (all), got {self.train_limit}")
        if self.max_grad_norm <= 0:
            out.append(f"max_grad_norm: must be > 0, got {self.max_grad_norm}")
        if self.threads < 0:
            out.append(f"threads: must be >= 0 (0 = torch's default), got {self.threads}")
        return out


@dataclasses.dataclass(frozen=True)
class SftMatchedConfig(SftConfig):
    """The sft_matched stage (steps/training/sft.py): SFT continued from models/sft/<task> for the compute GRPO used.

    The equal-compute control of GRPO (which runs `grpo.max_steps` more optimiser steps on top of SFT): the section
    holds only what differs from `sft`, every key it leaves out is taken from there. `max_steps` is not read: the
    stage sets it to round(GRPO's measured `compute` figure / SFT's measured figure per optimiser step), from
    metrics/grpo/<task>.train.json and metrics/sft/<task>.train.json. `compute`: `train_tokens` (tokens through the
    training loss, forward + backward) or `train_seconds` (wall seconds of the training steps).
    """

    lr: float = 1e-4
    eval_every: int = 40
    compute: Literal["train_tokens", "train_seconds"] = "train_tokens"


# The keys sft_matched sets itself when its section leaves them out (every other key comes from `sft`).
SFT_MATCHED_OWN_KEYS: tuple[str, ...] = ("lr", "eval_every", "compute")


@dataclasses.dataclass(frozen=True)
class GrpoConfig:
    """The grpo and mpgrpo stages (steps/training/grpo.py): TRL's GRPOTrainer with audio, one task's train split.

    `init` picks the starting model: `base` (the paper) or `sft` (models/sft/<task>). Each optimiser step samples
    `num_generations` completions for each of `prompts_per_step` prompts (per process). `loss_type` dapo normalises
    over all completion tokens of the batch (the paper's setting). Validation BLEU (greedy) every `eval_every` steps;
    the checkpoint kept is the best on it. The `mpgrpo` section holds only what differs from `grpo`: every key it
    leaves out is taken from `grpo`.

    Mixed-policy (LUFFY-style): `num_off_policy` of each group's `num_generations` completions are replaced by an
    off-policy text: the reference (`off_policy_source: reference`) or a recorded output of another model, read from a
    JSONL file keyed by example id (`off_policy_source: path/to/file.jsonl`, field `off_policy_field`). Their tokens
    get behaviour probability 1 and no clipping; `policy_shaping_gamma` (e.g. 0.1) applies LUFFY's f(x) = x/(x+gamma)
    to their probability ratio. An off-policy text longer than `max_completion_length` tokens is not truncated: that
    example keeps its on-policy sample (counted in MLflow as offpolicy/too_long).

    `advantage_std_floor` (scale_rewards: group only): advantages are (r - mean) / max(std, floor) over the group
    instead of / (std + 1e-4), so a group whose rewards differ by little (smoothed sentence BLEU of wrong answers
    always differs a little) does not get full-size advantages from noise. LEAF's re-implementation used 1/3.

    `shared_prefix`: each group's prompt and audio go through the LLM once per log-prob pass and once per rollout
    prefill, not num_generations times (steps/modeling/shared_prefix.py); the same log-probs and gradients up to float
    rounding, checked against the plain pass at first use (a mismatch falls back to it, loudly).
    """

    init: Literal["base", "sft"] = "sft"
    lr: float = 2e-5
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant_with_warmup"
    warmup_ratio: float = 0.0
    max_steps: int = 20
    prompts_per_step: int = 16
    num_generations: int = 8
    beta: float = 0.02
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 48
    loss_type: Literal["dapo", "grpo", "bnpo", "dr_grpo"] = "dapo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    scale_rewards: Literal["group", "batch", "none"] = "group"
    advantage_std_floor: float | None = 0.1
    reward_weights: dict[str, float] = dataclasses.field(default_factory=lambda: {"bleu": 1.0})
    reward_options: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=lambda: {"bleu": {"smooth_method": "none"}})
    num_off_policy: int = 0
    off_policy_source: str = "reference"
    off_policy_field: str = "greedy"
    policy_shaping_gamma: float | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    train_limit: int | None = None
    eval_every: int = 10
    eval_examples: int = 200
    eval_decoding: Literal["sampled", "greedy"] = "greedy"
    eval_batch_size: int = 32
    max_new_tokens: int = 48
    logging_steps: int = 1
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    deepspeed: str | None = None
    threads: int = 0
    shared_prefix: bool = True

    def problems(self) -> list[str]:
        out = []
        if self.lr <= 0:
            out.append(f"lr: must be > 0, got {self.lr}")
        if self.advantage_std_floor is not None and (self.advantage_std_floor <= 0 or self.scale_rewards != "group"):
            out.append(f"advantage_std_floor: needs scale_rewards: group and a value > 0 (e.g. 0.333), got "
                       f"{self.advantage_std_floor} with scale_rewards {self.scale_rewards!r}; null turns it off")
        if not 0 <= self.warmup_ratio < 1:
            out.append(f"warmup_ratio: must be within [0, 1), got {self.warmup_ratio}")
        for name in ("max_steps", "prompts_per_step", "max_completion_length", "eval_every", "eval_examples",
                     "eval_batch_size", "max_new_tokens", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            out.append(f"num_generations: GRPO needs >= 2 completions per prompt, got {self.num_generations}")
        if not 0 <= self.num_off_policy < max(self.num_generations, 1):
            out.append(f"num_off_policy: must be within [0, num_generations) = [0, {self.num_generations}), "
                       f"got {self.num_off_policy}")
        if self.beta < 0:
            out.append(f"beta: must be >= 0 (0 = no KL term, no reference model), got {self.beta}")
        if self.temperature <= 0:
            out.append(f"temperature: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            out.append(f"top_p: must be within (0, 1], got {self.top_p}")
        if self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high <= 0):
            out.append(f"epsilon/epsilon_high: must be > 0, got {self.epsilon}/{self.epsilon_high}")
        if self.policy_shaping_gamma is not None and self.policy_shaping_gamma <= 0:
            out.append(f"policy_shaping_gamma: must be > 0 (LUFFY uses 0.1) or null, got {self.policy_shaping_gamma}")
        if not self.off_policy_source.strip():
            out.append("off_policy_source: use `reference` or the path of a JSONL file of recorded outputs")
        if self.train_limit is not None and self.train_limit < 1:
            out.append(f"train_limit: must be a positive number of examples or null (all), got {self.train_limit}")
        if self.max_grad_norm <= 0:
            out.append(f"max_grad_norm: must be > 0, got {self.max_grad_norm}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            out.append(f"vllm_gpu_memory_utilization: must be within (0, 1], got {self.vllm_gpu_memory_utilization}")
        if self.threads < 0:
            out.append(f"threads: must be >= 0 (0 = torch's default), got {self.threads}")
        for name, weight in self.reward_weights.items():
            if name not in REWARD_NAMES:
                close = _did_you_mean(name, sorted(REWARD_NAMES))
                out.append(f"reward_weights.{name}: unknown reward; known: {sorted(REWARD_NAMES)}{close}")
            elif weight < 0:
                out.append(f"reward_weights.{name}: must be >= 0, got {weight}")
        if self.reward_weights and not any(w > 0 for w in self.reward_weights.values()):
            out.append("reward_weights: at least one weight must be > 0")
        # Options of a known reward that has no weight are unused (the default's BLEU options stay valid when an
        # ablation weights other rewards); an unknown name is a typo.
        for name in self.reward_options:
            if name not in REWARD_NAMES:
                close = _did_you_mean(name, sorted(REWARD_NAMES))
                out.append(f"reward_options.{name}: unknown reward; known: {sorted(REWARD_NAMES)}{close}")
        return out


@dataclasses.dataclass(frozen=True)
class HeldOutConditions:
    """Test conditions the models never trained on, each decoded greedily beside the clean test split.

    `snr_db`: the test clips with `noise`-coloured noise mixed in at each SNR (dB, over the whole clip; seeded per
    example), each also with its audio swapped (`swapped`), the listening check under noise. `train_voices`: the same
    test texts spoken clean by training speakers (the synth split `test_train_voices`), the reference that held-out
    speakers and noise are measured against. SNRs must not be among `synth.train_noise.snr_db`.
    """

    snr_db: tuple[float, ...] = (20.0, 10.0)
    noise: Literal["white", "pink", "brown"] = "white"
    train_voices: bool = True
    swapped: bool = True


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The evaluate stage (steps/evaluation/evaluate.py): one model on one task's `split`.

    Decoding: `sampled_runs` runs of the paper's sampling (top-p, temperature), reported as mean and std, plus greedy;
    the listening check decodes greedily again with every example's audio swapped for another's. `extra_models`
    names further checkpoints (name: folder) that `--model NAME` can evaluate. `langs` gives each task's reference
    language (sacrebleu's default tokenizer and ROUGE's tokenizer follow it); `wer_tasks` get WER too.
    `encoder_cache_mb`: CPU memory for reusing the audio encoder's output across those passes (0 = encode every time).
    """

    split: Literal["train", "validation", "test"] = "test"
    limit: int | None = None
    sampled_runs: int = 2
    temperature: float = 0.9
    top_p: float = 0.9
    greedy: bool = True
    listening: bool = True
    max_new_tokens: int = 48
    batch_size: int = 32
    bleu_tokenize: str | None = None
    lowercase: bool = False
    bertscore_model: str | None = None
    langs: dict[str, str] = dataclasses.field(default_factory=lambda: {"sqa": "en", "ast": "de", "asr": "en"})
    wer_tasks: tuple[str, ...] = ("asr",)
    extra_models: dict[str, str] = dataclasses.field(default_factory=dict)
    threads: int = 0
    encoder_cache_mb: int = 1024
    conditions: HeldOutConditions = HeldOutConditions()

    def problems(self) -> list[str]:
        out = []
        if self.encoder_cache_mb < 0:
            out.append(f"encoder_cache_mb: must be >= 0 (0 = no reuse), got {self.encoder_cache_mb}")
        if self.limit is not None and self.limit < 2:
            out.append(f"limit: must be >= 2 examples (the listening check swaps audio) or null, got {self.limit}")
        if self.sampled_runs < 0:
            out.append(f"sampled_runs: must be >= 0, got {self.sampled_runs}")
        if self.sampled_runs == 0 and not self.greedy:
            out.append("sampled_runs/greedy: nothing to decode; set sampled_runs >= 1 or greedy: true")
        if self.temperature <= 0:
            out.append(f"temperature: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            out.append(f"top_p: must be within (0, 1], got {self.top_p}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        clash = sorted(set(self.extra_models) & {"base", "sft", "grpo", "mpgrpo", "sft_matched"})
        if clash:
            out.append(f"extra_models: {clash} are pipeline model names; give extra checkpoints other names")
        if self.threads < 0:
            out.append(f"threads: must be >= 0 (0 = torch's default), got {self.threads}")
        return out


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """The report stage (steps/reporting/): tables, significance, listening check and plots over every evaluation.

    `bootstrap_samples` resamples for sacrebleu's paired bootstrap test (seeded with the top-level `seed`);
    `examples` example predictions per task in reports/examples.md (the same ids for every method); `why` the reason
    for each of our settings that differs from the paper (or that it leaves open), keyed by params key as in the
    report's settings table (e.g. `grpo.lr`); an mpgrpo setting inherited from grpo takes grpo's reason.
    """

    bootstrap_samples: int = 1000
    examples: int = 5
    why: dict[str, str] = dataclasses.field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if self.bootstrap_samples < 100:
            out.append(f"bootstrap_samples: use >= 100 resamples (sacrebleu's default: 1000), "
                       f"got {self.bootstrap_samples}")
        if self.examples < 0:
            out.append(f"examples: must be >= 0, got {self.examples}")
        out += [f"why.{key}: give a reason (a non-empty string), got {reason!r}" for key, reason in self.why.items()
                if not isinstance(reason, str) or not reason.strip()]
        return out


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The seed sweep (training/seed_sweep.py, `dvc repro sweeps/dvc.yaml`): post-training repeated with other seeds.

    `seeds` are the extra seeds; the pipeline's own run (top-level `seed`) is the first seed of the summary, so
    three seeds cost two extra post-training runs. Each extra seed reruns sft, grpo and mpgrpo for every task from
    the same base model and data, then greedy evaluation with the listening check (`sampled_runs` sampled passes).
    """

    seeds: tuple[int, ...] = (1, 2)
    sampled_runs: int = 1

    def problems(self) -> list[str]:
        out = []
        if not self.seeds:
            out.append("seeds: list at least one extra seed, e.g. [1, 2]")
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            out.append(f"seeds: must be distinct integers >= 0, got {self.seeds}")
        if self.sampled_runs < 0:
            out.append(f"sampled_runs: must be >= 0, got {self.sampled_runs}")
        return out


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 1234
    paths: PathsConfig = PathsConfig()
    synth: SynthConfig = SynthConfig()
    prepare: PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    sft: SftConfig = SftConfig()
    sft_matched: SftMatchedConfig = SftMatchedConfig()
    grpo: GrpoConfig = GrpoConfig()
    mpgrpo: GrpoConfig = GrpoConfig(num_off_policy=1)
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    sweep: SweepConfig = SweepConfig()

    def problems(self) -> list[str]:
        out = [] if self.seed >= 0 else [f"seed: must be >= 0, got {self.seed}"]
        if self.seed in self.sweep.seeds:
            out.append(f"sweep.seeds: {self.seed} is the pipeline's own seed (top-level `seed`), already the first "
                       "seed of the sweep; list other seeds")
        trained = set(self.synth.train_noise.snr_db) if self.synth.train_noise.fraction > 0 else set()
        heard = sorted(set(self.evaluate.conditions.snr_db) & trained)
        if heard:
            out.append(f"evaluate.conditions.snr_db: {heard} dB also in synth.train_noise.snr_db; a held-out test "
                       "condition needs an SNR training never used")
        return out


# --- parsing ----------------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Convert a YAML value to `tp`, appending a message to `errors` (and returning None) when it does not fit."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, errors)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            result = _convert(arg, value, path, trial)
            if not trial:
                return result
        errors.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return None
    if origin is Literal:
        if value in get_args(tp):
            return value
        hint = _did_you_mean(str(value), [str(a) for a in get_args(tp)])
        errors.append(f"{path}: expected {_type_name(tp)}, got {value!r}.{hint}")
        return None
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            errors.append(f"{path}: expected a list, got {value!r}")
            return None
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]", errors) for i, v in enumerate(value))
        if len(value) != len(args):
            errors.append(f"{path}: expected a list of {len(args)} values, got {len(value)}: {value!r}")
            return None
        return tuple(_convert(a, v, f"{path}[{i}]", errors) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {value!r}")
            return None
        return {_convert(key_tp, k, f"{path}", errors): _convert(val_tp, v, f"{path}.{k}", errors)
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 (PyYAML) reads 5e-6 as a string (it wants 5.0e-6); what a user means is the number.
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    errors.append(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return None


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    """The closest option, also matching the parts of snake_case names ('voises' -> 'train_voices')."""
    def score(option: str) -> float:
        parts = [option, *option.split("_")]
        return max(difflib.SequenceMatcher(None, word.lower(), p.lower()).ratio() for p in parts)

    best = max(options, key=score, default=None)
    return f" Did you mean '{best}'?" if best is not None and score(best) >= 0.6 else ""


def _build(cls: Any, raw: Any, path: str, errors: list[str]) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and bad values go to `errors`."""
    where = path or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            hint = _did_you_mean(str(key), names)
            errors.append(f"{_join(path, str(key))}: unknown key.{hint} Valid keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in raw:
            before = len(errors)
            value = _convert(hints[name], raw[name], _join(path, name), errors)
            if len(errors) == before:  # a broken value keeps its (valid) default so the other checks still run
                kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "problems", None)
    if check is not None:
        errors.extend(f"{_join(path, p)}" for p in check())
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.path=value` override in place; the value is parsed as YAML (so 3, 0.5, true, [a, b] work)."""
    if "=" not in assignment:
        raise ConfigError("the command line", [f"override {assignment!r}: expected key.path=value"])
    key_path, _, text = assignment.partition("=")
    keys = key_path.strip().split(".")
    if keys[:2] == ["report", "why"] and len(keys) > 3:
        keys = [*keys[:2], ".".join(keys[2:])]  # report.why is keyed by whole params keys: `-S report.why.grpo.lr=..`
    node = raw
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = yaml.safe_load(text) if text.strip() else ""


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
    cfg = _build(Config, raw, "", errors)
    if not errors:
        errors += _unknown_why_keys(cfg)
    if errors:
        raise ConfigError(source, errors)
    return cfg


def _unknown_why_keys(cfg: Config) -> list[str]:
    """`report.why` keys that name no params key. Checked when params.yaml is loaded, so a typo stops the first
    stage rather than the report, the last (report.py further checks that the key is one it compares)."""
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
                out.append(f"report.why.{key}: '{part}' is not a key of {here}.{_did_you_mean(part, list(node))}")
                break
            node = node[part]
    return out


def inherit_grpo_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """`mpgrpo` holds only what differs from `grpo`: fill in every key it leaves out from `grpo`."""
    grpo, mpgrpo = raw.get("grpo"), raw.get("mpgrpo")
    if not isinstance(grpo, dict) or not (mpgrpo is None or isinstance(mpgrpo, dict)):
        return raw  # a wrong type is reported by the builder
    fields = {f.name for f in dataclasses.fields(GrpoConfig)}
    # An unknown grpo key is reported once, under grpo, not again under the mpgrpo that would inherit it.
    merged = {**{k: v for k, v in grpo.items() if k in fields}, **(mpgrpo or {})}
    merged.setdefault("num_off_policy", GrpoConfig(num_off_policy=1).num_off_policy)
    return {**raw, "mpgrpo": merged}


def inherit_sft_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """`sft_matched` holds only what differs from `sft`: fill in every key it leaves out from `sft` (and, for the keys
    it has defaults of its own for, from those)."""
    sft, matched = raw.get("sft", {}), raw.get("sft_matched")
    if not isinstance(sft, dict) or not (matched is None or isinstance(matched, dict)):
        return raw  # a wrong type is reported by the builder
    fields = {f.name for f in dataclasses.fields(SftConfig)}
    # An unknown sft key is reported once, under sft, not again under the sft_matched that would inherit it.
    own = {key: getattr(SftMatchedConfig, key) for key in SFT_MATCHED_OWN_KEYS}
    merged = {**{k: v for k, v in sft.items() if k in fields}, **own, **(matched or {})}
    return {**raw, "sft_matched": merged}


def to_dict(cfg: Any) -> Any:
    """Plain YAML-friendly data (tuples become lists) for saving a resolved config."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    return cfg


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

