"""Builders for model tests: a few espeak clips in the prepared-dataset layout and a very small tiny-preset SALLM.

The session fixtures `speech_rows` and `tiny_sallm` (tests/conftest.py) are built from these once per test session.
Everything is generated offline and seeded; nothing downloads.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from steps.core.config import TinyModelConfig

RATE = 16000
ASR_PROMPT = "Transcribe the audio <|audio|>"
AST_PROMPT = "<|audio|> listen to the speech and translate it into German."
VOICES = ("en-US+f1", "en-GB-x-rp+m3", "en+f2")

# Small enough that a few dozen training steps run in about a second on one core.
MICRO = TinyModelConfig(vocab_size=320, num_mel_bins=80, encoder_layers=1, encoder_dim=32, encoder_heads=2,
                        encoder_ffn_dim=64, llm_layers=1, llm_dim=32, llm_heads=2, llm_kv_heads=1, llm_ffn_dim=64,
                        max_position_embeddings=512)


def make_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n examples (alternating asr / ast) with the columns of data/prepared/<pool>/<split>."""
    import soxr

    from steps.data.grammar import sample_translation
    from steps.data.tts import Speaker

    rng = random.Random(seed)
    tts = Speaker.get()
    rows = []
    for i in range(n):
        pair = sample_translation(rng)
        voice = VOICES[i % len(VOICES)]
        audio = soxr.resample(tts.say(pair.en, voice=voice, rate_wpm=170, pitch=50), tts.sample_rate, RATE)
        audio = audio.astype(np.float32)
        task = "asr" if i % 2 == 0 else "ast"
        rows.append({
            "id": f"fixture-{i:03d}", "task": task, "audio": audio, "sampling_rate": RATE,
            "prompt": ASR_PROMPT if task == "asr" else AST_PROMPT, "question": "",
            "reference": pair.en if task == "asr" else pair.de, "transcript": pair.en, "speaker": voice,
            "duration": round(len(audio) / RATE, 3), "source": "fixture",
        })
    return rows


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    import datasets

    columns = {k: [r[k] for r in rows] for k in rows[0]}
    columns["audio"] = [r["audio"].tolist() for r in rows]
    return datasets.Dataset.from_dict(columns)


def workspace(root: Path, rows: list[dict[str, Any]], task: str = "ast") -> Path:
    """models/base (an untrained micro SALLM) and data/<task>/{train,validation,test} = the same rows."""
    from steps.modeling.tiny import save

    for split in ("train", "validation", "test"):
        to_dataset(rows).save_to_disk(str(root / "data" / "prepared" / task / split))
    model, processor = build_micro(rows)
    save(model, processor, root / "models" / "base")
    return root


def write_prepared(root: Path, rows: list[dict[str, Any]], pool: str = "pretrain") -> Path:
    """Save rows as <root>/<pool>/{train,validation,test}: test gets the last third, the others the rest."""
    cut = max(4, len(rows) // 3)  # at least two of each task: the listening check swaps within a task
    train, test = rows[:-cut], rows[-cut:]
    for split, part in (("train", train), ("validation", test), ("test", test)):
        to_dataset(part).save_to_disk(str(root / pool / split))
    return root


def build_micro(rows: list[dict[str, Any]], seed: int = 0) -> tuple[Any, Any]:
    from steps.modeling.tiny import build_tiny, window_seconds_for

    texts = [t for r in rows for t in (r["prompt"].replace("<|audio|>", " "), r["reference"], r["transcript"])]
    window = window_seconds_for(max(r["duration"] for r in rows))
    return build_tiny(MICRO, texts, window, seed=seed)
