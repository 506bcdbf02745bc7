"""Config sections of the data stages: `synth` (the offline spoken corpus) and `prepare` (decode, resample, format)."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from steps.core.config import voices
from steps.core.config.loader import at_least, within
from steps.core.config.names import DATA_SPLITS, POOLS


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    train: int = at_least(0, 0)
    validation: int = at_least(0, 0)
    test: int = at_least(0, 0)


@dataclasses.dataclass(frozen=True)
class SynthSizes:
    ast: SplitSizes = SplitSizes(6000, 400, 300)
    sqa: SplitSizes = SplitSizes(2000, 400, 400)
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
        for name in ("rate_wpm", "pitch"):
            if not getattr(self, name):
                out.append(f"{name}: list at least one [min, max] band")
            out += _band_problems(name, getattr(self, name))
        return out


def bands_overlap(a: Bands, b: Bands) -> bool:
    return any(lo <= bhi and blo <= hi for lo, hi in a for blo, bhi in b)


def _bands(bands: Bands) -> str:
    return "[" + ", ".join(f"[{lo}, {hi}]" for lo, hi in bands) + "]"


_RANGES = {"rate_wpm": (80, 450, " words per minute"), "pitch": (0, 99, " (espeak's scale)")}


def _band_problems(name: str, bands: Bands) -> list[str]:
    lowest, highest, unit = _RANGES[name]
    return [f"{name}: needs {lowest} <= min <= max <= {highest}{unit}, got [{lo}, {hi}]"
            for lo, hi in bands if not lowest <= lo <= hi <= highest]


def beyond(bands: Bands, trained: Bands) -> bool:
    """Every band lies wholly below or wholly above everything `trained` covers (not between its bands either)."""
    low, high = min(lo for lo, _ in trained), max(hi for _, hi in trained)
    return all(hi < low or lo > high for lo, hi in bands)


HeldOutSplit = Literal["disjoint", "shared"]


def held_out_speakers(speakers: SpeakerSet, split: str, how: HeldOutSplit) -> tuple[str, ...]:
    """The espeak speakers ('voice+variant') of validation or test, drawn from one held-out population.

    `disjoint`: the accent x variant pairs are dealt in a checkerboard (voice i, variant j to validation when i + j
    is even, else to test), so the two splits share no speaker yet every accent has the same number of speakers in
    both and every variant (with two accents or more) appears in both. `shared`: both splits use every pair.
    """
    pairs = [(i, j, voice + (f"+{variant}" if variant else "")) for i, voice in enumerate(speakers.voices)
             for j, variant in enumerate(speakers.variants)]
    if how == "shared":
        return tuple(name for _, _, name in pairs)
    parity = 0 if split == "validation" else 1
    return tuple(name for i, j, name in pairs if (i + j) % 2 == parity)


_CONDITION_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class SpokenCondition:
    """A test condition synthesised like the test split: every test text spoken again by its own test speaker with
    the factors set here redrawn per clip, the rest (accent voice, timbre variant, rate, pitch) kept from the test
    clip, so the condition and the clean test differ in that factor only. An empty field keeps the test clip's."""

    voices: tuple[str, ...] = ()
    rate_wpm: Bands = ()
    pitch: Bands = ()

    def problems(self) -> list[str]:
        out = []
        if not (self.voices or self.rate_wpm or self.pitch):
            out.append("voices/rate_wpm/pitch: all empty; set the factor the condition moves, e.g. rate_wpm: "
                       "[[100, 120]]")
        for name in ("rate_wpm", "pitch"):
            out += _band_problems(name, getattr(self, name))
        return out


DEFAULT_CONDITIONS: dict[str, SpokenCondition] = {
    "other_languages": SpokenCondition(voices=voices.OTHER_LANGUAGE_VOICES),
    "slow": SpokenCondition(rate_wpm=((115, 130),)),
    "fast": SpokenCondition(rate_wpm=((215, 240),)),
    "low_pitch": SpokenCondition(pitch=((5, 15),)),
    "high_pitch": SpokenCondition(pitch=((85, 95),)),
}


@dataclasses.dataclass(frozen=True)
class TrainNoise:
    """Noise mixed into a `fraction` of the training clips (every pool's train split): a colour and an SNR (dB,
    over the whole clip) drawn per clip from the lists. Held-out test conditions use SNRs not listed here."""

    fraction: float = within(0, 1, 0.75)
    snr_db: tuple[float, ...] = (6.0, 12.0, 18.0, 24.0, 30.0)
    colours: tuple[str, ...] = voices.NOISE_COLOURS

    def problems(self) -> list[str]:
        out = []
        if self.fraction > 0 and not self.snr_db:
            out.append("snr_db: list at least one SNR in dB, or set fraction: 0")
        unknown = sorted(set(self.colours) - set(voices.NOISE_COLOURS))
        if unknown:
            out.append(f"colours: unknown {unknown}; use some of {list(voices.NOISE_COLOURS)}")
        if self.fraction > 0 and not self.colours:
            out.append(f"colours: list at least one of {list(voices.NOISE_COLOURS)}, or set fraction: 0")
        return out


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """The offline spoken corpus (espeak-ng, steps/data/corpus.py).

    `train` speaks every pool's training split. `held_out` is one population that validation and test both draw from
    (accent voices, timbre variants, rate and pitch bands, all disjoint from training's), dealt by `held_out_split`
    (`held_out_speakers`): so decisions taken on validation are about the speakers the test measures. `train_noise`
    makes training noisy; clips are resampled to `sample_rate` before any noise is mixed in, the rate the evaluation
    mixes the test's noise at (prepare.sample_rate, checked equal). `conditions` (tasks only): the test texts spoken
    again with one factor moved beyond everything training heard (a voice no split uses; a rate or pitch wholly
    below or above training's bands), decoded by the evaluation beside the clean test (`evaluate.conditions`).
    """

    train: SpeakerSet = SpeakerSet(voices.TRAIN_VOICES, voices.TRAIN_VARIANTS, ((140, 160), (180, 200)),
                                   ((25, 40), (60, 75)))
    held_out: SpeakerSet = SpeakerSet(voices.HELD_OUT_VOICES, voices.HELD_OUT_VARIANTS, ((161, 179),), ((41, 59),))
    held_out_split: HeldOutSplit = "disjoint"
    train_noise: TrainNoise = TrainNoise()
    test_train_voices: bool = True
    conditions: dict[str, SpokenCondition] = dataclasses.field(default_factory=lambda: dict(DEFAULT_CONDITIONS))
    sample_rate: int = within(8000, 48000, 16000, note=" Hz; the rate noise is mixed at, = prepare.sample_rate")
    workers: int = at_least(1, 2)
    sizes: SynthSizes = SynthSizes()

    def speakers(self, split: str) -> SpeakerSet:
        """Who may speak `split`: the training set, or the held-out population (validation, test)."""
        return self.train if split == "train" else self.held_out

    def problems(self) -> list[str]:
        out = []
        for attr in ("voices", "variants"):
            shared = sorted(set(getattr(self.held_out, attr)) & set(getattr(self.train, attr)))
            if shared:
                out.append(f"held_out.{attr}: {shared} also in train.{attr}; held-out speakers must be new to "
                           "training")
        for attr in ("rate_wpm", "pitch"):
            mine, theirs = getattr(self.held_out, attr), getattr(self.train, attr)
            if bands_overlap(mine, theirs):
                out.append(f"held_out.{attr}: {_bands(mine)} overlaps train.{attr} {_bands(theirs)}; held-out "
                           "speakers need values training never used")
        if self.held_out_split == "disjoint" and len(self.held_out.voices) * len(self.held_out.variants) < 2:
            out.append("held_out_split: disjoint needs at least 2 voice x variant pairs in held_out (one per split); "
                       "add a voice or variant, or use shared")
        for name, condition in self.conditions.items():
            out += self._condition_problems(name, condition)
        return out

    def _condition_problems(self, name: str, condition: SpokenCondition) -> list[str]:
        out = []
        key = f"conditions.{name}"
        if not _CONDITION_NAME.fullmatch(name) or name.startswith("snr") or name in ("clean", "train_voices"):
            out.append(f"{key}: name a condition in lower case, digits and _ (not snr..., clean or train_voices, "
                       "which the evaluation's own conditions use), e.g. slow")
        heard = sorted(set(condition.voices) & (set(self.train.voices) | set(self.held_out.voices)))
        if heard:
            out.append(f"{key}.voices: {heard} already speak train or held_out; a held-out accent needs a voice "
                       "no split uses")
        for attr in ("rate_wpm", "pitch"):
            bands, trained = getattr(condition, attr), getattr(self.train, attr)
            if bands and trained and not beyond(bands, trained):
                out.append(f"{key}.{attr}: {_bands(bands)} is not beyond train.{attr} {_bands(trained)}; a held-out "
                           f"condition needs values below {min(lo for lo, _ in trained)} or above "
                           f"{max(hi for _, hi in trained)}")
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

