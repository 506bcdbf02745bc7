"""Decode, resample and format one pool's examples into HF datasets (the prepare stage, run per pool).

For each split, raw examples come from the task's source adapter (steps/data/sources.py); their audio is decoded with
soundfile, mixed to mono and resampled to `prepare.sample_rate` with soxr on `prepare.workers` threads; the text
is normalised (Unicode NFC, whitespace) and formatted into a prompt from the task's templates, chosen
deterministically per example. Output, written atomically:

    data/prepared/<task>/<split>/      (also conditions/<name>/, the synthetic corpus's held-out conditions)
                                        HF dataset (save_to_disk): id, task, audio (float32, 16 kHz), sampling_rate,
                                        prompt (with one <|audio|>), question, reference, transcript, speaker,
                                        duration, source
    data/prepared/<task>/report.json   counts per split and every skipped example with its file and reason

Unreadable, corrupt, empty, silent, too short or too long clips and empty references are skipped and listed; the
stage fails when a referenced file does not exist, a required column is missing, or more than
`prepare.max_bad_fraction` of a split is bad (then the report goes to data/prepared/<task>.failed-report.json).
Later stages read the result with `steps.data.splits.load_split`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from steps.core.config import (
    DATA_SPLITS,
    RESOLVED_CONFIG_NAME,
    Config,
    ConfigError,
    TaskDataConfig,
    to_dict,
)
from steps.core.io import atomic_dir, write_json, write_yaml
from steps.data.audio import AudioLimits, load_job
from steps.data.sources import RawExample, SourceError, condition_splits, example_task, iter_examples

log = logging.getLogger(__name__)
AUDIO_PLACEHOLDER = "<|audio|>"
REFERENCE_FIELD = {"sqa": "answer", "ast": "translation", "asr": "text"}


class PrepareError(RuntimeError):
    pass


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def choose_template(templates: tuple[str, ...], example_id: str) -> str:
    """A stable choice per example (hashlib, not hash(): Python salts string hashes per process)."""
    digest = hashlib.sha256(example_id.encode("utf-8")).digest()
    return templates[int.from_bytes(digest[:4], "little") % len(templates)]


def format_example(ex: RawExample, pool: str, task_cfg: TaskDataConfig) -> tuple[dict[str, Any] | None, str | None]:
    """Text side of one example: (fields, None) or (None, reason to skip)."""
    task = example_task(ex, pool)
    text = {k: normalise_text(v) for k, v in ex.text.items()}
    reference = text.get(REFERENCE_FIELD[task], "")
    if not reference:
        return None, f"empty reference ({REFERENCE_FIELD[task]})"
    question = text.get("question", "") if task == "sqa" else ""
    if task == "sqa" and not question:
        return None, "empty question"
    templates = task_cfg.prompts.get(task)
    if not templates:
        raise ConfigError("params", [f"prepare.tasks.{pool}.prompts.{task}: no templates for {task} examples"])
    prompt = choose_template(templates, ex.id).replace("{question}", question)
    fields = {"id": ex.id, "task": task, "prompt": prompt, "question": question, "reference": reference,
              "transcript": text.get("text", ""), "speaker": ex.speaker, "source": ex.origin}
    return fields, None


def _to_table(rows: list[dict[str, Any]], audios: list[np.ndarray], sample_rate: int) -> pa.Table:
    """Build the Arrow table directly from numpy: Python float lists of a whole corpus would cost gigabytes."""
    offsets = np.zeros(len(audios) + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in audios], out=offsets[1:])
    values = np.concatenate(audios) if audios else np.zeros(0, dtype=np.float32)
    audio = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))
    columns: dict[str, Any] = {"id": [r["id"] for r in rows], "task": [r["task"] for r in rows], "audio": audio,
                               "sampling_rate": pa.array([sample_rate] * len(rows), type=pa.int32())}
    for name in ("prompt", "question", "reference", "transcript", "speaker"):
        columns[name] = [r[name] for r in rows]
    columns["duration"] = pa.array([round(a.shape[0] / sample_rate, 3) for a in audios], type=pa.float32())
    columns["source"] = [r["source"] for r in rows]
    return pa.table(columns)


def prepare_split(raws: list[RawExample], pool: str, cfg: Config, workers: Executor | None,
                  split: str) -> tuple[pa.Table, list[dict[str, str]]]:
    """Decode and format one split; returns the table and the skipped examples."""
    task_cfg = cfg.prepare.tasks[pool]
    limits = AudioLimits(cfg.prepare.min_seconds, cfg.prepare.max_seconds, cfg.prepare.silence_dbfs)
    skipped: list[dict[str, str]] = []
    formatted: list[tuple[RawExample, dict[str, Any]]] = []
    for ex in raws:
        fields, reason = format_example(ex, pool, task_cfg)
        if fields is None:
            skipped.append({"split": split, "id": ex.id, "file": ex.audio_path or "", "reason": reason or ""})
        else:
            formatted.append((ex, fields))
    jobs = [(ex.audio_path, ex.audio_bytes, cfg.prepare.sample_rate, limits) for ex, _ in formatted]
    rows, audios = [], []
    results = workers.map(load_job, jobs) if workers else map(load_job, jobs)
    for (ex, fields), (audio, error) in tqdm(zip(formatted, results, strict=True), total=len(jobs),
                                             desc=f"prepare {pool}/{split}", unit="clip"):
        if audio is None:
            skipped.append({"split": split, "id": ex.id, "file": ex.audio_path or "", "reason": error or ""})
            continue
        rows.append(fields)
        audios.append(audio)
    return _to_table(rows, audios, cfg.prepare.sample_rate), skipped


def run_prepare(cfg: Config, pool: str, root: Path, out_dir: Path) -> Path:
    """Prepare every configured split of `pool` into `out_dir` (atomically)."""
    import datasets

    if pool not in cfg.prepare.tasks:
        raise ConfigError("params", [f"prepare.tasks.{pool}: missing; configured tasks: {sorted(cfg.prepare.tasks)}"])
    source = cfg.prepare.tasks[pool].source
    report: dict[str, Any] = {"task": pool, "source": source.kind, "path": source.path, "splits": {}, "skipped": []}
    started = time.perf_counter()
    n_clips = 0
    # Threads, not processes: libsndfile and soxr release the GIL, and threads avoid pickling every decoded clip
    # back through a pipe (measured slower than one process on 2 cores).
    workers = ThreadPoolExecutor(cfg.prepare.workers) if cfg.prepare.workers > 1 else None
    try:
        with atomic_dir(out_dir) as tmp:
            for split in (*DATA_SPLITS, *condition_splits(source, root)):
                try:
                    raws = iter_examples(source, split, pool, root)
                except SourceError as exc:
                    raise PrepareError(f"prepare {pool}/{split}: {exc}") from exc
                if not raws:
                    log.warning("prepare %s/%s: no examples (split not configured or empty)", pool, split)
                    continue
                table, skipped = prepare_split(raws, pool, cfg, workers, split)
                n_clips += len(raws)
                report["splits"][split] = {"read": len(raws), "kept": table.num_rows, "skipped": len(skipped)}
                report["skipped"].extend(skipped)
                print(f"prepare {pool}/{split}: kept {table.num_rows} of {len(raws)}, skipped {len(skipped)}")
                bad_fraction = len(skipped) / len(raws)
                if bad_fraction > cfg.prepare.max_bad_fraction:
                    failed = write_json(out_dir.with_name(f"{out_dir.name}.failed-report.json"), report)
                    raise PrepareError(
                        f"prepare {pool}/{split}: {len(skipped)} of {len(raws)} examples are bad "
                        f"({bad_fraction:.1%} > prepare.max_bad_fraction={cfg.prepare.max_bad_fraction}); "
                        f"see {failed} for each file and reason, fix the data or raise the limit")
                # An explicit fingerprint: by default datasets hashes the whole table (seconds per split).
                ids = "\n".join(table.column("id").to_pylist())
                fingerprint = hashlib.sha256(f"{pool}/{split}\n{ids}".encode()).hexdigest()[:16]
                dataset = datasets.Dataset(datasets.table.InMemoryTable(table), fingerprint=fingerprint)
                dataset.save_to_disk(str(tmp / split))
            write_json(tmp / "report.json", report)
            write_yaml(tmp / RESOLVED_CONFIG_NAME, to_dict(cfg))
    finally:
        if workers is not None:
            workers.shutdown(cancel_futures=True)
    elapsed = time.perf_counter() - started
    print(f"prepare {pool}: {n_clips} clips in {elapsed:.1f} s ({n_clips / max(elapsed, 1e-9):.0f} clips/s), "
          f"{len(report['skipped'])} skipped -> {out_dir}")
    return out_dir

