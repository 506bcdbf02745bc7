"""The listening check: score a model on test examples with each example's audio swapped for another's.

A model that listens collapses on swapped audio (WER near 100%, BLEU near chance); one that guesses answers from the
text prompt alone scores the same either way. The evaluate stage calls `score_listening` for any model and task.

    >>> scores = score_listening(model, processor, test_dataset, task="asr")   # {'wer': .., 'wer_swapped': ..}
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from steps.model import GenerationSettings, generate

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


# --------------------------------------------------------------------------------------------------- metrics


def normalize_for_wer(text: str) -> str:
    """Lower case, no punctuation, single spaces: WER counts words, not formatting."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER in percent (total edits / total reference words)."""
    import jiwer

    refs = [normalize_for_wer(r) for r in references]
    hyps = [normalize_for_wer(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        raise ValueError("no non-empty references to score WER against")
    return 100.0 * jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (13a tokenisation, cased), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


TASK_METRIC = {"asr": "wer", "ast": "bleu", "sqa": "bleu"}


def task_score(task: str, hypotheses: Sequence[str], references: Sequence[str]) -> float:
    metric = TASK_METRIC[task]
    return word_error_rate(hypotheses, references) if metric == "wer" else corpus_bleu(hypotheses, references)


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
