"""The listening check: score a model on test examples with each example's audio swapped for another's.

A model that listens collapses on swapped audio (WER near 100%, BLEU near chance); one that guesses answers from the
text prompt alone scores the same either way. The evaluate stage calls `score_listening` for any model and task.

    >>> scores = score_listening(model, processor, test_dataset, task="asr")   # {'wer': .., 'wer_swapped': ..}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from steps.evaluation.metrics import TASK_METRIC, task_score
from steps.modeling.generation import GenerationSettings, generate

# Columns that describe the audio itself and so travel with it when audio is swapped.
AUDIO_COLUMNS = ("audio", "sampling_rate", "duration")


def swapped_indices(n: int, seed: int) -> np.ndarray:
    """A random permutation with no fixed points (Sattolo's algorithm: one cycle through all n), deterministic."""
    if n < 2:
        raise ValueError(f"need at least 2 examples to swap audio, got {n}")
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: what makes every element move
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def swap_audio(dataset: Any, seed: int = 0) -> Any:
    """The same examples (prompts, references) with every example's audio taken from another example.

    Works on a `datasets.Dataset` or a list of dicts; returns the same kind.
    """
    perm = swapped_indices(len(dataset), seed)
    if isinstance(dataset, list):
        return [{**row, **{c: dataset[int(j)][c] for c in AUDIO_COLUMNS if c in row}}
                for row, j in zip(dataset, perm, strict=True)]
    columns = [c for c in AUDIO_COLUMNS if c in dataset.column_names]
    moved = dataset.select_columns(columns).select(perm.tolist())
    rest = dataset.remove_columns(columns)
    from datasets import concatenate_datasets

    return concatenate_datasets([rest, moved], axis=1).select_columns(dataset.column_names)


def score_listening(model: Any, processor: Any, dataset: Any, task: str,
                    settings: GenerationSettings | None = None, batch_size: int = 16, seed: int = 0,
                    progress: bool = False) -> dict[str, Any]:
    """The task's metric with the right audio and with swapped audio, plus the hypotheses for inspection.

    Returns e.g. {'wer': 8.1, 'wer_swapped': 97.4, 'n': 100, 'hypotheses': [...], 'hypotheses_swapped': [...]}.
    """
    if task not in TASK_METRIC:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(TASK_METRIC)}")
    metric = TASK_METRIC[task]
    settings = settings or GenerationSettings()
    prompts, references = list(dataset["prompt"]), list(dataset["reference"])
    audios = list(dataset["audio"])
    perm = swapped_indices(len(audios), seed)
    hyps = generate(model, processor, prompts, audios, settings, batch_size, seed=seed, progress=progress)
    hyps_swapped = generate(model, processor, prompts, [audios[j] for j in perm], settings, batch_size, seed=seed,
                            progress=progress)
    return {
        metric: task_score(task, hyps, references),
        f"{metric}_swapped": task_score(task, hyps_swapped, references),
        "n": len(references),
        "hypotheses": hyps,
        "hypotheses_swapped": hyps_swapped,
    }
