"""Config sections of scoring: `evaluate` (one model on one task), `report` (every evaluation) and `sweep` (seeds)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from steps.core.config.loader import above, at_least, within
from steps.core.config.model import THREADS_NOTE
from steps.core.config.names import MODELS


@dataclasses.dataclass(frozen=True)
class HeldOutConditions:
    """Test conditions the models never trained on, each decoded greedily beside the clean test split.

    `spoken`: the spoken conditions of `synth.conditions` to decode (the test texts re-spoken by the test speakers
    with one factor moved beyond training: other languages' voices, rates, pitches); a condition the prepared data
    lacks (a real corpus) is skipped. `snr_db`: the test clips with `noise`-coloured noise mixed in at each SNR (dB,
    over the whole clip, at prepare.sample_rate; seeded per example); each must lie beyond `synth.train_noise.snr_db`
    (below its lowest or above its highest). `swapped`: every condition also with its audio swapped (the listening
    check under that condition). `train_voices`: the same test texts spoken clean by training speakers (the synth
    split `test_train_voices`), the reference each condition is measured against. `limit`: the first N test texts of
    every condition and of the reference (null = all): each condition costs one greedy pass over them per model,
    two with `swapped`.
    """

    spoken: tuple[str, ...] = ("other_languages", "slow", "fast", "low_pitch", "high_pitch")
    snr_db: tuple[float, ...] = (3.0, 0.0)
    noise: Literal["white", "pink", "brown"] = "white"
    train_voices: bool = True
    swapped: bool = True
    limit: int | None = at_least(2, 120, " test texts (the listening check swaps audio) or null")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The evaluate stage (steps/evaluation/evaluator.py): one model on one task's `split`.

    Decoding: `sampled_runs` runs of the paper's sampling (top-p, temperature), reported as mean and std, plus greedy;
    the listening check decodes greedily again with every example's audio swapped for another's. `extra_models`
    names further checkpoints (name: folder) that `--model NAME` can evaluate. `langs` gives each task's reference
    language (sacrebleu's default tokenizer and ROUGE's tokenizer follow it); `wer_tasks` get WER too.
    `encoder_cache_mb`: CPU memory for reusing the audio encoder's output across those passes (0 = encode every time).
    """

    split: Literal["train", "validation", "test"] = "test"
    limit: int | None = at_least(2, None, " examples (the listening check swaps audio) or null")
    sampled_runs: int = at_least(0, 2)
    temperature: float = above(0, 0.9)
    top_p: float = within(0, 1, 0.9, "(]")
    greedy: bool = True
    listening: bool = True
    max_new_tokens: int = at_least(1, 48)
    batch_size: int = at_least(1, 32)
    bleu_tokenize: str | None = None
    lowercase: bool = False
    bertscore_model: str | None = None
    langs: dict[str, str] = dataclasses.field(default_factory=lambda: {"sqa": "en", "ast": "de", "asr": "en"})
    wer_tasks: tuple[str, ...] = ("asr",)
    extra_models: dict[str, str] = dataclasses.field(default_factory=dict)
    threads: int = at_least(0, 0, THREADS_NOTE)
    encoder_cache_mb: int = at_least(0, 1024, " (0 = no reuse)")
    conditions: HeldOutConditions = HeldOutConditions()

    def problems(self) -> list[str]:
        out = []
        if self.sampled_runs == 0 and not self.greedy:
            out.append("sampled_runs/greedy: nothing to decode; set sampled_runs >= 1 or greedy: true")
        clash = sorted(set(self.extra_models) & set(MODELS))
        if clash:
            out.append(f"extra_models: {clash} are pipeline model names; give extra checkpoints other names")
        return out


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """The report stage (steps/reporting/): tables, significance, listening check and plots over every evaluation.

    `bootstrap_samples` resamples for the paired bootstrap test (seeded with the top-level `seed`); `examples`
    example predictions per task in reports/examples.md (the same ids for every method); `why` the reason for each of
    our settings that differs from the paper (or that it leaves open), keyed by params key as in the report's
    settings table (e.g. `grpo.lr`); an mpgrpo setting inherited from grpo takes grpo's reason.
    """

    bootstrap_samples: int = at_least(100, 1000, " resamples (sacrebleu's default: 1000)")
    examples: int = at_least(0, 5)
    why: dict[str, str] = dataclasses.field(default_factory=dict)

    def problems(self) -> list[str]:
        return [f"why.{key}: give a reason (a non-empty string), got {reason!r}" for key, reason in self.why.items()
                if not isinstance(reason, str) or not reason.strip()]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The seed sweep (steps/training/seed_sweep.py, `dvc repro sweeps/dvc.yaml`): post-training repeated with other
    seeds. `seeds` are the extra seeds (the pipeline's own `seed` is the first of the summary); each reruns every
    post-training method for every task from the same base model and data, then greedy evaluation with the listening
    check and `sampled_runs` sampled passes."""

    seeds: tuple[int, ...] = (1, 2)
    sampled_runs: int = at_least(0, 1)

    def problems(self) -> list[str]:
        out = []
        if not self.seeds:
            out.append("seeds: list at least one extra seed, e.g. [1, 2]")
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            out.append(f"seeds: must be distinct integers >= 0, got {self.seeds}")
        return out
