"""What the GRPO and SFT benchmarks run on: the default's model and SQA data, or a stand-in of the same shape.

With models/<init>/<task> and data/prepared/<task>/train present (after `dvc repro`), those are used. Without them
(a fresh clone), a random-init model of params.yaml's `model.tiny` sizes is built (saved and reloaded through
load_model_and_processor, so it runs with the same model-level speedups as a trained one) on SQA-like rows spoken by
espeak: sample_qa passages with the default's prompt templates, i.e. the same prompt + audio lengths as the default's
SQA (~120 prompt positions). Speed does not depend on the weights, except through how long a model's answers are:
a random model never says EOS, so its completions are as long as the limit; the benches cap them near the default
SQA's measured mean (7.2 tokens).
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from steps.core.config import Config, load_config  # noqa: E402

RATE = 16000
VOICES = ("en-US", "en", "en-GB-scotland", "en-029")


def sqa_rows(cfg: Config, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n SQA rows (id, prompt, reference, audio) like data/prepared/sqa/train, spoken by espeak."""
    import soxr

    from steps.data.grammar import sample_qa
    from steps.data.tts import Speaker

    rng = random.Random(seed)
    templates = cfg.prepare.tasks["sqa"].prompts["sqa"]
    tts = Speaker.get()
    rows = []
    for i in range(n):
        qa = sample_qa(rng)
        audio = tts.say(qa.passage, voice=VOICES[i % len(VOICES)], rate_wpm=rng.randint(140, 200),
                        pitch=rng.randint(25, 75))
        audio = soxr.resample(audio, tts.sample_rate, RATE).astype(np.float32)
        rows.append({"id": f"bench-{i:04d}", "prompt": templates[i % len(templates)].replace("{question}", qa.question),
                     "reference": qa.answer, "audio": audio})
    return rows


def as_dataset(rows: list[dict[str, Any]]) -> Any:
    import datasets

    columns = {k: [r[k] for r in rows] for k in ("id", "prompt", "reference")}
    columns["audio"] = [r["audio"].tolist() for r in rows]
    return datasets.Dataset.from_dict(columns).with_format("numpy", columns=["audio"], output_all_columns=True)


def default_workload(task: str, init: str, n_rows: int) -> tuple[Any, Any, Any, str]:
    """(model, processor, training rows as a dataset, a description of where they came from)."""
    from steps.data.splits import load_split, training_view
    from steps.modeling.loading import load_model_and_processor
    from steps.modeling.tiny import build_tiny, save, window_seconds_for

    cfg = load_config(ROOT / "params.yaml")
    model_dir = ROOT / cfg.paths.models / "base" if init == "base" else ROOT / cfg.paths.models / init / task
    data_dir = ROOT / cfg.paths.data / "prepared"
    if model_dir.is_dir() and (data_dir / task / "train").exists():
        model, processor = load_model_and_processor(model_dir, cfg.model)
        data = training_view(load_split(data_dir, task, "train"), n_rows)
        return model, processor, data, f"{model_dir.relative_to(ROOT)} on data/prepared/{task}/train"
    if task != "sqa":
        raise SystemExit(f"{model_dir} or {data_dir / task / 'train'} is missing: run `dvc repro`, or bench the "
                         "stand-in, which speaks SQA rows only (--task sqa)")
    rows = sqa_rows(cfg, n_rows)
    texts = [t for r in rows for t in (r["prompt"].replace("<|audio|>", " "), r["reference"])] * 4
    window = window_seconds_for(max(len(r["audio"]) / RATE for r in rows))
    model, processor = build_tiny(cfg.model.tiny, texts, window, seed=0)
    folder = Path(tempfile.mkdtemp(prefix="bench_model_"))
    save(model, processor, folder)
    model, processor = load_model_and_processor(folder, cfg.model)
    return model, processor, as_dataset(rows), (f"random-init model.tiny sizes on {n_rows} espeak SQA rows "
                                                f"(no {model_dir.relative_to(ROOT)} here)")
