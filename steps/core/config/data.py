"""Config sections of the data stages: `synth` (the offline spoken corpus) and `prepare` (decode, resample, format)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from steps.core.config.loader import at_least, within
from steps.core.config.names import DATA_SPLITS, POOLS
from steps.core.config.voices import NOISE_COLOURS, TEST_VARIANTS, TRAIN_VARIANTS, VALIDATION_VARIANTS


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    train: int = at_least(0, 0)
    validation: int = at_least(0, 0)
    test: int = at_least(0, 0)


@dataclasses.dataclass(frozen=True)
class SynthSizes:
    ast: SplitSizes = SplitSizes(6000, 200, 300)
    sqa: SplitSizes = SplitSizes(2000, 200, 400)
    pretrain: SplitSizes = SplitSizes(8000, 200, 300)


Bands = tuple[tuple[int, int], ...]  # inclusive [lo, hi] ranges, e.g. ((140, 160), (180, 200))


@dataclasses.dataclass(frozen=True)
class SpeakerSet:
    """Who speaks one split: espeak accent voices crossed with timbre variants ("" = the voice's own), and the bands
    the speaking rate (words per minute) and pitch (espeak's 0-99) are drawn from: a band with probability
    proportional to its width, then a value uniformly within it."""

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
        for name, lowest, highest, unit in (("rate_wpm", 80, 450, " words per minute"),
                                            ("pitch", 0, 99, " (espeak's scale)")):
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

    fraction: float = within(0, 1, 0.75)
    snr_db: tuple[float, ...] = (6.0, 12.0, 18.0, 24.0, 30.0)
    colours: tuple[str, ...] = NOISE_COLOURS

    def problems(self) -> list[str]:
        out = []
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
    """The offline spoken corpus (espeak-ng, steps/data/corpus.py). Train, validation and test each have their own
    speakers (accent voices, timbre variants and rate/pitch bands disjoint between splits); `train_noise` makes
    training noisy; the test's noisy conditions are the evaluation's (`evaluate.conditions`)."""

    train: SpeakerSet = SpeakerSet(("en-US", "en", "en-GB-scotland", "en-029", "en-GB-x-gbcwmd"), TRAIN_VARIANTS,
                                   ((140, 160), (180, 200)), ((25, 40), (60, 75)))
    validation: SpeakerSet = SpeakerSet(("en-GB-x-gbclan",), VALIDATION_VARIANTS, ((161, 169),), ((41, 49),))
    test: SpeakerSet = SpeakerSet(("en-GB-x-rp", "en-US-nyc"), TEST_VARIANTS, ((170, 179),), ((50, 59),))
    train_noise: TrainNoise = TrainNoise()
    test_train_voices: bool = True
    workers: int = at_least(1, 2)
    sizes: SynthSizes = SynthSizes()

    def speakers(self, split: str) -> SpeakerSet:
        return getattr(self, split)

    def problems(self) -> list[str]:
        out = []
        pairs = (("validation", "train"), ("test", "train"), ("test", "validation"))
        for attr in ("voices", "variants"):
            for a, b in pairs:
                shared = sorted(set(getattr(self.speakers(a), attr)) & set(getattr(self.speakers(b), attr)))
                if shared:
                    out.append(f"{a}.{attr}: {shared} also in {b}.{attr}; each split must have its own speakers")
        for attr in ("rate_wpm", "pitch"):
            for a, b in pairs:
                mine, theirs = getattr(self.speakers(a), attr), getattr(self.speakers(b), attr)
                if bands_overlap(mine, theirs):
                    out.append(f"{a}.{attr}: {_bands(mine)} overlaps {b}.{attr} {_bands(theirs)}; held-out "
                               "speakers need values the other splits never used")
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
    limit: int | None = at_least(1, None, " (a number of examples per split) or null")

    def problems(self) -> list[str]:
        out = []
        if not self.path:
            out.append("path: empty; give the folder, file or dataset id to read")
        unknown = sorted(set(self.splits) - set(DATA_SPLITS))
        if unknown:
            out.append(f"splits: unknown split names {unknown}; use {list(DATA_SPLITS)}")
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

    sample_rate: int = within(1000, 192000, 16000, note=" Hz, e.g. 16000")
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    silence_dbfs: float = -60.0
    max_bad_fraction: float = within(0, 1, 0.05)
    workers: int = at_least(1, 2)
    tasks: dict[str, TaskDataConfig] = dataclasses.field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.min_seconds < self.max_seconds:
            out.append(f"min_seconds/max_seconds: need 0 <= min < max, got {self.min_seconds}/{self.max_seconds}")
        unknown = sorted(set(self.tasks) - set(POOLS))
        if unknown:
            out.append(f"tasks: unknown task names {unknown}; use {list(POOLS)}")
        return out

