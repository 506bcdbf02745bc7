"""The evaluation's held-out conditions (`evaluate.conditions`): the test texts under conditions no training clip had,
decoded greedily beside the clean test split by steps/evaluation/evaluator.py.

- **spoken** (`conditions.spoken`, synthesised by synth as `conditions/<name>`): each test text spoken again by its
  own test speaker with one factor moved beyond everything training heard: another language's voice (an accent
  family never heard), a rate or a pitch below or above every training band;
- **noise** (`conditions.snr_db`): the test clips with noise mixed in here, at the prepared rate (the rate synth
  mixes training noise at), at SNRs beyond training's range, seeded per example;
- **train_voices**: the same test texts spoken clean by training speakers (synth's `test_train_voices`), the
  reference: `robustness_<name>` = BLEU under the condition / BLEU of the reference;
- **clean**: the clean test split's greedy answers on the same first `conditions.limit` texts (no extra decoding),
  so that every condition has its clean counterpart on the same texts.

Each condition is one greedy pass over the first `conditions.limit` test texts per model, two with `swapped` (the
listening check under that condition: each example's audio swapped for another's). A condition the prepared data
lacks (a real corpus has no spoken conditions) is skipped with a note. A spoken clip longer than the model's audio
window (slow speech: the tiny preset's window is the longest clip of train/validation/test) is left out of its
condition and counted (`conditions_dropped`), not cut.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steps.core.config import TRAIN_VOICES_SPLIT, Config, EvaluateConfig, condition_split
from steps.data.noise import add_noise, seeded_rng
from steps.data.splits import evaluation_set
from steps.evaluation.listening import swapped_indices
from steps.modeling.batches import audio_window_samples
from steps.modeling.generation import GenerationSettings, generate

CLEAN = "clean"  # the clean test split's answers on the conditions' texts
TRAIN_VOICES = "train_voices"
_CONDITION_ID = re.compile(r"^(?P<pool>[^-]+)-(?P<split>[^-]+)-(?P<index>\d+)$")


@dataclass
class ConditionSets:
    """The examples every condition is decoded on."""

    test: Any                                          # the first `limit` test examples (noise is mixed into these)
    reference: Any | None = None                       # their texts by training speakers (test_train_voices)
    spoken: dict[str, Any] = field(default_factory=dict)  # name -> that condition's first `limit` examples
    dropped: dict[str, int] = field(default_factory=dict)  # name -> clips left out: longer than the model's window


@dataclass
class ConditionAnswers:
    """Greedy hypotheses per condition, each list aligned with its own set's rows."""

    noise: dict[str, list[str]] = field(default_factory=dict)   # snr<k>[_swapped]: aligned with ConditionSets.test
    spoken: dict[str, list[str]] = field(default_factory=dict)  # <name>[_swapped]: with ConditionSets.spoken[name]
    train_voices: list[str] | None = None                       # with ConditionSets.reference
    seconds: float = 0.0


def condition_name(snr_db: float) -> str:
    return f"snr{snr_db:g}"


def source_test_id(condition_id: str) -> str:
    """The test example a condition's clip re-speaks: synth names them <pool>-<condition>-<i> beside <pool>-test-<i>."""
    match = _CONDITION_ID.match(condition_id)
    return f"{match['pool']}-test-{match['index']}" if match else condition_id


def condition_limit(ecfg: EvaluateConfig) -> int | None:
    """How many test texts each condition uses: `conditions.limit`, within `evaluate.limit`."""
    limits = [n for n in (ecfg.limit, ecfg.conditions.limit) if n is not None]
    return min(limits) if limits else None


def _first(dataset: Any, limit: int | None) -> Any:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def load_condition_sets(cfg: Config, data_dir: Path, task: str, test: Any) -> ConditionSets | None:
    """The sets the conditions decode (None unless the evaluation is on the test split and has a condition)."""
    ecfg = cfg.evaluate
    wanted = ecfg.conditions.spoken or ecfg.conditions.snr_db or ecfg.conditions.train_voices
    if ecfg.split != "test" or not wanted:
        return None
    limit = condition_limit(ecfg)
    sets = ConditionSets(test=_first(test, limit))
    if ecfg.conditions.train_voices and (data_dir / task / TRAIN_VOICES_SPLIT).is_dir():
        sets.reference = evaluation_set(data_dir, task, TRAIN_VOICES_SPLIT, limit)
    for name in ecfg.conditions.spoken:
        if (data_dir / task / condition_split(name)).is_dir():
            sets.spoken[name] = evaluation_set(data_dir, task, condition_split(name), limit)
        else:
            print(f"evaluate[{task}]: no prepared condition {condition_split(name)!r} (a real corpus, or synth without "
                  f"it): skipped", flush=True)
    return sets


def fit_window(sets: ConditionSets, processor: Any) -> ConditionSets:
    """The sets without the spoken clips longer than the processor's audio window (it would cut them silently, and
    the decoding refuses them); the numbers left out go to `dropped`."""
    limit = audio_window_samples(processor)
    if limit is None:
        return sets
    spoken, dropped = {}, {}
    for name, dataset in sets.spoken.items():
        keep = [i for i, audio in enumerate(dataset["audio"]) if len(audio) <= limit]
        if keep:  # a condition with no clip left is not decoded (nothing to score)
            spoken[name] = dataset.select(keep) if len(keep) < len(dataset) else dataset
        if len(keep) < len(dataset):
            dropped[name] = len(dataset) - len(keep)
            print(f"evaluate: condition {name}: {dropped[name]} of {len(dataset)} clips are longer than the model's "
                  "audio window; left out", flush=True)
    return ConditionSets(sets.test, sets.reference, spoken, dropped)


def noisy_audio(dataset: Any, snr_db: float, colour: str, seed: int) -> list[np.ndarray]:
    """Every clip of `dataset` with `colour` noise at `snr_db`, the noise seeded by (seed, example id, SNR)."""
    return [add_noise(np.asarray(audio, dtype=np.float32), snr_db, seeded_rng(seed, ex_id, snr_db), colour)
            for ex_id, audio in zip(dataset["id"], dataset["audio"], strict=True)]


def _greedy_pair(model: Any, processor: Any, prompts: list[str], audios: list[Any], ecfg: EvaluateConfig, seed: int,
                 name: str, into: dict[str, list[str]]) -> None:
    """Greedy on the audios (into `into[name]`), and with `swapped` on each example's audio swapped for another's."""
    greedy = GenerationSettings(max_new_tokens=ecfg.max_new_tokens)
    into[name] = generate(model, processor, prompts, audios, greedy, ecfg.batch_size, progress=True)
    if ecfg.conditions.swapped and len(audios) > 1:
        perm = swapped_indices(len(audios), seed)
        into[f"{name}_swapped"] = generate(model, processor, prompts, [audios[int(j)] for j in perm], greedy,
                                           ecfg.batch_size, progress=True)


def decode_conditions(model: Any, processor: Any, sets: ConditionSets, ecfg: EvaluateConfig, seed: int
                      ) -> ConditionAnswers:
    """Greedy on every held-out condition: the spoken ones, the noisy ones, and the reference."""
    conditions = ecfg.conditions
    out = ConditionAnswers()
    start = time.perf_counter()
    for name, dataset in sets.spoken.items():
        _greedy_pair(model, processor, list(dataset["prompt"]), list(dataset["audio"]), ecfg, seed, name, out.spoken)
    prompts = list(sets.test["prompt"])
    for snr_db in conditions.snr_db:
        audios = noisy_audio(sets.test, snr_db, conditions.noise, seed)
        _greedy_pair(model, processor, prompts, audios, ecfg, seed, condition_name(snr_db), out.noise)
    if sets.reference is not None:
        greedy = GenerationSettings(max_new_tokens=ecfg.max_new_tokens)
        out.train_voices = generate(model, processor, list(sets.reference["prompt"]), list(sets.reference["audio"]),
                                    greedy, ecfg.batch_size, progress=True)
    out.seconds = time.perf_counter() - start
    return out


def condition_references(sets: ConditionSets) -> dict[str, list[str]]:
    """Each condition's references: the test subset's for clean and noise, each spoken set's and the reference's own
    (their rows may differ from the test's where prepare skipped a clip)."""
    out = {CLEAN: list(sets.test["reference"])}
    out |= {name: list(dataset["reference"]) for name, dataset in sets.spoken.items()}
    if sets.reference is not None:
        out[TRAIN_VOICES] = list(sets.reference["reference"])
    return out


def condition_hypotheses(answers: ConditionAnswers, greedy: list[str] | None, n_clean: int
                         ) -> dict[str, tuple[list[str], str]]:
    """name -> (hypotheses, the key of their references in `condition_references`)."""
    out: dict[str, tuple[list[str], str]] = {}
    if greedy is not None:
        out[CLEAN] = (greedy[:n_clean], CLEAN)
    for name, hyps in answers.spoken.items():
        out[name] = (hyps, name.removesuffix("_swapped"))
    for name, hyps in answers.noise.items():
        out[name] = (hyps, CLEAN)
    if answers.train_voices is not None:
        out[TRAIN_VOICES] = (answers.train_voices, TRAIN_VOICES)
    return out


def robustness(bleu: dict[str, float | None]) -> dict[str, float]:
    """BLEU under each condition (not the swapped ones, not the reference) over the reference's clean BLEU."""
    reference = bleu.get(TRAIN_VOICES)
    if not reference:
        return {}
    return {name: value / reference for name, value in bleu.items()
            if value is not None and name != TRAIN_VOICES and not name.endswith("_swapped")}


def condition_predictions(sets: ConditionSets, answers: ConditionAnswers) -> dict[str, dict[str, str]]:
    """test id -> {condition: greedy hypothesis} for the predictions file (spoken ones and the reference matched to
    their test example through the id)."""
    out: dict[str, dict[str, str]] = {}
    for name, hyps in answers.noise.items():
        for ex_id, hyp in zip(sets.test["id"], hyps, strict=True):
            out.setdefault(ex_id, {})[name] = hyp
    for name, hyps in answers.spoken.items():
        for ex_id, hyp in zip(sets.spoken[name.removesuffix("_swapped")]["id"], hyps, strict=True):
            out.setdefault(source_test_id(ex_id), {})[name] = hyp
    if answers.train_voices is not None and sets.reference is not None:
        for ex_id, hyp in zip(sets.reference["id"], answers.train_voices, strict=True):
            out.setdefault(source_test_id(ex_id), {})[TRAIN_VOICES] = hyp
    return out
