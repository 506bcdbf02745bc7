"""The spoken corpus, synthesised offline with espeak-ng (the synth stage), so the default needs no download.

Pools (each `data/synth/<pool>/<split>.jsonl` plus `audio.zip`, one 16-bit WAV member per clip at espeak's 22050 Hz;
one archive instead of 17,500 files, because DVC walks every file of an output at each `dvc repro`, and the walk
was 0.8 s of a 2.4 s no-op run):
- `ast`: English sentences with their German translations (speech translation, En->De).
- `sqa`: spoken passages with a text question and an open-format answer (spoken QA, as in LibriSQA).
- `pretrain`: ASR and AST examples on sentences disjoint from the task pools, no QA: the tiny base model learns to
  listen and translate, but, like the paper's base model, has never been taught spoken QA.

Train, validation and test each have their own voices (`synth.{train,validation,test}_voices`), so validation and
test scores measure generalisation to unseen speakers. Everything, the WAV bytes included, is deterministic under
`seed` (see `_speak_shard` and `steps.data.tts.Speaker.say`).

    python -m steps.synth [--params params.yaml] [-S synth.sizes.ast.train=500]
"""

from __future__ import annotations

import hashlib
import random
import time
import zipfile
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from steps.core.config import RESOLVED_CONFIG_NAME, SPLITS, Config, SplitSizes, to_dict
from steps.core.io import atomic_dir, write_jsonl, write_yaml
from steps.data import grammar
from steps.data.audio import wav_bytes

POOLS: tuple[str, ...] = ("ast", "sqa", "pretrain")
# Splits are drawn test first, so a sentence that could appear in several splits lands in the held-out one.
_DRAW_ORDER: tuple[str, ...] = ("test", "validation", "train")
# Clips per fresh worker process: fixed (not derived from synth.workers) so the audio does not depend on it.
_SHARD_SIZE = 500
AUDIO_ARCHIVE = "audio.zip"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed member timestamp: the same clips give the same archive bytes


def _distinct(draw: Callable[[], tuple[str, dict[str, Any]]], n: int, taken: set[str], what: str) -> list[dict]:
    """Draw `n` items whose key text is not in `taken` (and add them to it)."""
    rows: list[dict[str, Any]] = []
    attempts = 0
    while len(rows) < n:
        key, row = draw()
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"synth: could only draw {len(rows)} distinct {what} items of {n}; the grammar is too "
                               f"small for synth.sizes: lower them")
        if key in taken:
            continue
        taken.add(key)
        rows.append(row)
    return rows


def plan_corpus(cfg: Config) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every utterance to synthesise, with its text fields and speaker settings (no audio yet)."""
    rng = random.Random(cfg.seed)
    sizes = cfg.synth.sizes
    plan: dict[str, dict[str, list[dict[str, Any]]]] = {pool: {} for pool in POOLS}
    english_taken: set[str] = set()
    passages_taken: set[str] = set()

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

    for pool, draw, taken in (("ast", ast_item, english_taken), ("sqa", sqa_item, passages_taken),
                              ("pretrain", pretrain_item, english_taken)):
        pool_sizes: SplitSizes = getattr(sizes, pool)
        for split in _DRAW_ORDER:
            rows = _distinct(draw, getattr(pool_sizes, split), taken, pool)
            voices = getattr(cfg.synth, f"{split}_voices")
            for i, row in enumerate(rows):
                variant = rng.choice(cfg.synth.variants)
                row["id"] = f"{pool}-{split}-{i:05d}"
                row["speaker"] = rng.choice(voices) + (f"+{variant}" if variant else "")
                row["rate_wpm"] = rng.randint(*cfg.synth.rate_wpm)
                row["pitch"] = rng.randint(*cfg.synth.pitch)
                row["audio"] = f"{AUDIO_ARCHIVE}/{row['id']}.wav"
            plan[pool][split] = rows
    return plan


def _noise_seed(seed: int, ident: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{ident}".encode()).digest()[:8], "little")


def _speak_shard(jobs: list[tuple[dict[str, Any], float | None, int]]) -> list[tuple[str, float, bytes]]:
    """Worker: synthesise a shard of rows; returns (id, duration in seconds, WAV bytes) per row.

    libespeak-ng carries state from one utterance to the next (the same text comes out slightly different after
    different predecessors), so each shard runs in a fresh process, in a fixed order: the audio is then
    byte-identical under the seed whatever the number of workers.
    """
    from steps.data.tts import Speaker, add_noise

    tts = Speaker.get()
    done = []
    for row, snr_db, seed in jobs:
        clip_seed = _noise_seed(seed, row["id"])
        audio = tts.say(row["text"], voice=row["speaker"], rate_wpm=row["rate_wpm"], pitch=row["pitch"], seed=clip_seed)
        if snr_db is not None:
            audio = add_noise(audio, snr_db, np.random.default_rng(clip_seed))
        done.append((row["id"], audio.shape[0] / tts.sample_rate, wav_bytes(audio, tts.sample_rate)))
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
                jobs = [(row, cfg.synth.noise_snr_db, cfg.seed) for split in SPLITS for row in splits.get(split, [])]
                shards = [jobs[i:i + _SHARD_SIZE] for i in range(0, len(jobs), _SHARD_SIZE)]
                durations: dict[str, float] = {}
                # imap, not imap_unordered: members in plan order, so the archive does not depend on timing.
                for done in pool.imap(_speak_shard, shards):
                    for ident, seconds, wav in done:
                        # Stored, not deflated: WAV barely compresses and readers then seek straight to a clip.
                        archive.writestr(zipfile.ZipInfo(f"{ident}.wav", _ZIP_DATE), wav)
                        durations[ident] = seconds
                    bar.update(len(done))
                for split in SPLITS:
                    rows = splits.get(split, [])
                    for row in rows:
                        row["duration"] = round(durations[row["id"]], 3)
                    write_jsonl(tmp / f"{split}.jsonl", rows)
                write_yaml(tmp / RESOLVED_CONFIG_NAME, to_dict(cfg))
    elapsed = time.perf_counter() - started
    print(f"synth: {total} clips in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} clips/s) -> {out_root}")
    return out_root

