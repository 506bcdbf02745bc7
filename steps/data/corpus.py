"""The spoken corpus, synthesised offline with espeak-ng (the synth stage), so the default needs no download.

Pools (each `data/synth/<pool>/<split>.jsonl` plus `audio.zip`, one 16-bit WAV member per clip at `synth.sample_rate`,
16 kHz: espeak speaks at 22050 Hz and every clip is resampled before any noise is mixed in, so training noise and the
test's noise (mixed at prepare's 16 kHz by the evaluation) are the noise their SNR says; one archive instead of 17,500
files, because DVC walks every file of an output at each `dvc repro`, and the walk
was 0.8 s of a 2.4 s no-op run):
- `ast`: English sentences with their German translations (speech translation, En->De).
- `sqa`: spoken passages with a text question and an open-format answer (spoken QA, as in LibriSQA).
- `pretrain`: ASR and AST examples on sentences disjoint from the task pools, no QA: the tiny base model learns to
  listen and translate, but, like the paper's base model, has never been taught spoken QA.

Training has its own speakers (`synth.train`); validation and test draw theirs from one held-out population
(`synth.held_out`: accent voices, timbre variants, rate and pitch bands, all disjoint from training's), each split
its own half of its accent x variant speakers (`held_out_split: disjoint`, `steps.core.config.held_out_speakers`)
with the same make-up, so that what validation decides holds for the test. No sentence of a validation or test
passage occurs in training or pretraining (`plan_corpus`), so validation and test scores measure generalisation to
unseen speakers and texts. A fraction of every training clip gets white, pink or brown noise (`synth.train_noise`).
The task pools also hold `test_train_voices`, the test texts spoken clean by training speakers (the reference of the
evaluation's held-out conditions), and `conditions/<name>` for each of `synth.conditions`: the test texts spoken
again by their test speakers with one factor moved beyond everything training heard (another language's voice, a
rate or a pitch beyond training's bands), clip i beside test clip i. Everything, the WAV bytes included, is
deterministic under `seed` (see `_speak_shard` and `steps.data.tts.Speaker.say`).

    python -m steps.synth [--params params.yaml] [-S synth.sizes.ast.train=500]
"""

from __future__ import annotations

import hashlib
import random
import re
import time
import zipfile
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from steps.core.config import (
    POOLS,
    RESOLVED_CONFIG_NAME,
    SPLITS,
    TASKS,
    TRAIN_VOICES_SPLIT,
    Bands,
    Config,
    SpeakerSet,
    SpokenCondition,
    TrainNoise,
    condition_split,
    held_out_speakers,
    to_dict,
)
from steps.core.io import atomic_dir, write_jsonl, write_yaml
from steps.data import grammar
from steps.data.audio import resample, wav_bytes

# Splits are drawn test first, so a sentence that could appear in several splits lands in the held-out one.
_DRAW_ORDER: tuple[str, ...] = ("test", "validation", "train")
_HELD_OUT: tuple[str, ...] = ("test", "validation")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Clips per fresh worker process: fixed (not derived from synth.workers) so the audio does not depend on it.
_SHARD_SIZE = 500
AUDIO_ARCHIVE = "audio.zip"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed member timestamp: the same clips give the same archive bytes


def _distinct(draw: Callable[[], tuple[str | None, dict[str, Any]]], n: int, taken: set[str], what: str
              ) -> list[dict]:
    """Draw `n` items whose key text is not in `taken` (and add them to it); a key of None is a rejected draw."""
    rows: list[dict[str, Any]] = []
    attempts = 0
    while len(rows) < n:
        key, row = draw()
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"synth: could only draw {len(rows)} distinct {what} items of {n}; the grammar is too "
                               f"small for synth.sizes: lower them")
        if key is None or key in taken:
            continue
        taken.add(key)
        rows.append(row)
    return rows


def sentences(text: str) -> list[str]:
    """The sentences of a passage (the grammar ends each with a full stop or a question mark)."""
    return [part for part in _SENTENCE_END.split(text.strip()) if part]


def _sentence_group(pool: str, split: str) -> str:
    """Which sentences may be shared: a task's test split with itself, its validation split with itself, and all of
    training and pretraining (every split of the pretrain pool) with each other; never across these groups."""
    return split if pool in TASKS and split in _HELD_OUT else "train"


def _in_bands(rng: random.Random, bands: Bands) -> int:
    """A band with probability proportional to its width, then a value uniformly within it."""
    lo, hi = rng.choices(bands, weights=[b - a + 1 for a, b in bands])[0]
    return rng.randint(lo, hi)


def _speaker(rng: random.Random, speakers: SpeakerSet, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A speaker of `speakers`: one of `names` ('voice+variant') when given, else any voice with any variant."""
    if names is None:
        variant = rng.choice(speakers.variants)
        name = rng.choice(speakers.voices) + (f"+{variant}" if variant else "")
    else:
        name = rng.choice(names)
    return {"speaker": name, "rate_wpm": _in_bands(rng, speakers.rate_wpm), "pitch": _in_bands(rng, speakers.pitch)}


def _split_speakers(cfg: Config, split: str) -> tuple[str, ...] | None:
    """The 'voice+variant' speakers a held-out split draws from (None for train: every voice x variant)."""
    return None if split == "train" else held_out_speakers(cfg.synth.held_out, split, cfg.synth.held_out_split)


def _under_condition(rng: random.Random, row: dict[str, Any], condition: SpokenCondition) -> dict[str, Any]:
    """The test row's speaker with the condition's factors redrawn: another voice (the timbre variant kept), a rate
    or a pitch from the condition's bands."""
    _, plus, variant = row["speaker"].partition("+")
    out = {"speaker": row["speaker"], "rate_wpm": row["rate_wpm"], "pitch": row["pitch"]}
    if condition.voices:
        out["speaker"] = rng.choice(condition.voices) + plus + variant
    if condition.rate_wpm:
        out["rate_wpm"] = _in_bands(rng, condition.rate_wpm)
    if condition.pitch:
        out["pitch"] = _in_bands(rng, condition.pitch)
    return out


def _training_noise(rng: random.Random, noise: TrainNoise) -> dict[str, Any] | None:
    if noise.fraction <= 0 or rng.random() >= noise.fraction:
        return None
    return {"colour": rng.choice(noise.colours), "snr_db": float(rng.choice(noise.snr_db))}


def plan_corpus(cfg: Config) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every utterance to synthesise, with its text fields, speaker settings and noise (no audio yet).

    Splits are drawn test first, every pool's, then validation, then train, so that an item that could land in
    several goes to the held-out one; an item is redrawn when one of its sentences belongs to another sentence group
    (`_sentence_group`): no sentence of a validation or test passage is heard in training or pretraining.
    """
    rng = random.Random(cfg.seed)
    sizes = cfg.synth.sizes
    plan: dict[str, dict[str, list[dict[str, Any]]]] = {pool: {} for pool in POOLS}
    english_taken: set[str] = set()
    passages_taken: set[str] = set()
    owner: dict[str, str] = {}  # sentence -> the sentence group that spoke it first

    def ast_item() -> tuple[str, dict[str, Any]]:
        pair = grammar.sample_translation(rng)
        return pair.en, {"text": pair.en, "translation": pair.de}

    def sqa_item() -> tuple[str, dict[str, Any]]:
        qa = grammar.sample_qa(rng)
        row = {"text": qa.passage, "question": qa.question, "answer": qa.answer, "kind": qa.kind}
        return qa.passage + "\n" + qa.question, row

    def pretrain_item() -> tuple[str, dict[str, Any]]:
        key, row = ast_item()
        row["task"] = "asr" if rng.random() < 0.5 else "ast"
        return key, row

    draws = {"ast": (ast_item, english_taken), "sqa": (sqa_item, passages_taken),
             "pretrain": (pretrain_item, english_taken)}
    for split in _DRAW_ORDER:
        speakers, names = cfg.synth.speakers(split), _split_speakers(cfg, split)
        for pool in POOLS:
            item, taken = draws[pool]
            group = _sentence_group(pool, split)

            def draw(item: Callable[[], tuple[str, dict[str, Any]]] = item, group: str = group
                     ) -> tuple[str | None, dict[str, Any]]:
                key, row = item()
                if any(owner.get(s, group) != group for s in sentences(row["text"])):
                    return None, row  # speaks a sentence of another group: redraw
                return key, row

            rows = _distinct(draw, getattr(getattr(sizes, pool), split), taken, pool)
            for i, row in enumerate(rows):
                for sentence in sentences(row["text"]):
                    owner.setdefault(sentence, group)
                row["id"] = f"{pool}-{split}-{i:05d}"
                row |= _speaker(rng, speakers, names)
                row["noise"] = _training_noise(rng, cfg.synth.train_noise) if split == "train" else None
                row["audio"] = f"{AUDIO_ARCHIVE}/{row['id']}.wav"
            plan[pool][split] = rows
    for pool in TASKS:  # the test texts again, spoken clean by training speakers
        rows = plan[pool]["test"] if cfg.synth.test_train_voices else []
        again = [{**row, "id": f"{pool}-{TRAIN_VOICES_SPLIT}-{i:05d}", "test_id": row["id"],
                  **_speaker(rng, cfg.synth.train), "noise": None,
                  "audio": f"{AUDIO_ARCHIVE}/{pool}-{TRAIN_VOICES_SPLIT}-{i:05d}.wav"} for i, row in enumerate(rows)]
        plan[pool][TRAIN_VOICES_SPLIT] = again
    for pool in TASKS:  # the test texts again under each held-out condition, clip i beside test clip i
        for name, condition in cfg.synth.conditions.items():
            split = condition_split(name)
            plan[pool][split] = [{**row, "id": f"{pool}-{name}-{i:05d}", "test_id": row["id"],
                                  **_under_condition(rng, row, condition), "noise": None,
                                  "audio": f"{AUDIO_ARCHIVE}/{pool}-{name}-{i:05d}.wav"}
                                 for i, row in enumerate(plan[pool]["test"])]
    # Splits in a fixed order (train first, as the archive always had them), not the order they were drawn in.
    return {pool: {split: splits[split] for split in sorted(splits, key=_split_rank)} for pool, splits in plan.items()}


def _split_rank(split: str) -> tuple[int, str]:
    order = (*SPLITS, TRAIN_VOICES_SPLIT)
    return (order.index(split), "") if split in order else (len(order), split)


def _noise_seed(seed: int, ident: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{ident}".encode()).digest()[:8], "little")


def speak(row: dict[str, Any], seed: int, sample_rate: int, noisy: bool = True) -> np.ndarray:
    """One planned row's clip at `sample_rate` (float32), with its noise unless `noisy` is false; the same for the
    same arguments in a fresh process (see `_speak_shard`).

    The noise is mixed in after resampling from espeak's 22050 Hz, at the rate the evaluation mixes the test's noise:
    mixed before, resampling to 16 kHz removed the white noise above 8 kHz and made every training SNR ~1.4 dB
    higher than its label.
    """
    from steps.data.noise import add_noise
    from steps.data.tts import Speaker

    tts = Speaker.get()
    clip_seed = _noise_seed(seed, row["id"])
    audio = tts.say(row["text"], voice=row["speaker"], rate_wpm=row["rate_wpm"], pitch=row["pitch"], seed=clip_seed)
    audio = resample(audio, tts.sample_rate, sample_rate)
    if noisy and row.get("noise"):
        audio = add_noise(audio, row["noise"]["snr_db"], np.random.default_rng(clip_seed), row["noise"]["colour"])
    return audio


def _speak_shard(jobs: list[tuple[dict[str, Any], int, int]]) -> list[tuple[str, float, bytes]]:
    """Worker: synthesise a shard of (row, seed, sample rate) jobs; returns (id, duration in seconds, WAV bytes).

    libespeak-ng carries state from one utterance to the next (the same text comes out slightly different after
    different predecessors), so each shard runs in a fresh process, in a fixed order: the audio is then
    byte-identical under the seed whatever the number of workers.
    """
    done = []
    for row, seed, sample_rate in jobs:
        audio = speak(row, seed, sample_rate)
        done.append((row["id"], audio.shape[0] / sample_rate, wav_bytes(audio, sample_rate)))
    return done


def run_synth(cfg: Config, out_root: Path) -> Path:
    """Synthesise every pool into `out_root/<pool>`, each folder written atomically."""
    plan = plan_corpus(cfg)
    total = sum(len(rows) for splits in plan.values() for rows in splits.values())
    started = time.perf_counter()
    ctx = get_context("spawn")  # a fresh engine per shard: see _speak_shard
    with ctx.Pool(cfg.synth.workers, maxtasksperchild=1) as pool, tqdm(total=total, desc="synth", unit="clip") as bar:
        for pool_name, splits in plan.items():
            with atomic_dir(out_root / pool_name) as tmp, zipfile.ZipFile(tmp / AUDIO_ARCHIVE, "w") as archive:
                jobs = [(row, cfg.seed, cfg.synth.sample_rate) for rows in splits.values() for row in rows]
                shards = [jobs[i:i + _SHARD_SIZE] for i in range(0, len(jobs), _SHARD_SIZE)]
                durations: dict[str, float] = {}
                # imap, not imap_unordered: members in plan order, so the archive does not depend on timing.
                for done in pool.imap(_speak_shard, shards):
                    for ident, seconds, wav in done:
                        # Stored, not deflated: WAV barely compresses and readers then seek straight to a clip.
                        archive.writestr(zipfile.ZipInfo(f"{ident}.wav", _ZIP_DATE), wav)
                        durations[ident] = seconds
                    bar.update(len(done))
                for split, rows in splits.items():
                    for row in rows:
                        row["duration"] = round(durations[row["id"]], 3)
                    write_jsonl(tmp / f"{split}.jsonl", rows)
                write_yaml(tmp / RESOLVED_CONFIG_NAME, to_dict(cfg))
    elapsed = time.perf_counter() - started
    print(f"synth: {total} clips in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} clips/s) -> {out_root}")
    return out_root

