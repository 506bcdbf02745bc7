"""The listening check: deterministic audio swaps without fixed points, and the task metrics."""

from __future__ import annotations

import numpy as np
import pytest

from steps.evaluation.listening import swap_audio, swapped_indices
from steps.evaluation.metrics import corpus_bleu


@pytest.mark.parametrize("n", [2, 3, 10, 101])
def test_swapped_indices_is_a_derangement(n: int) -> None:
    perm = swapped_indices(n, seed=5)
    assert sorted(perm.tolist()) == list(range(n))
    assert not np.any(perm == np.arange(n))
    assert np.array_equal(perm, swapped_indices(n, seed=5))


def test_swap_needs_two_examples() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        swapped_indices(1, seed=0)


def rows(n: int) -> list[dict]:
    return [{"id": str(i), "prompt": f"p{i} <|audio|>", "reference": f"r{i}", "audio": [float(i)] * (i + 1),
             "duration": float(i)} for i in range(n)]


def test_swap_audio_moves_audio_only_on_lists_and_datasets() -> None:
    import datasets

    data = rows(5)
    for swapped in (swap_audio(data, seed=1), swap_audio(datasets.Dataset.from_list(data), seed=1)):
        swapped = list(swapped)
        assert [r["reference"] for r in swapped] == [r["reference"] for r in data]
        assert [r["prompt"] for r in swapped] == [r["prompt"] for r in data]
        for row in swapped:
            assert row["audio"][0] != float(row["id"])  # another example's audio...
            assert row["duration"] == row["audio"][0]  # ...with its duration
    assert list(swap_audio(data, 1)) == list(swap_audio(data, 1))


def test_bleu_is_sacrebleu_corpus_bleu() -> None:
    assert corpus_bleu(["Die Katze isst einen Apfel."], ["Die Katze isst einen Apfel."]) == pytest.approx(100.0)
    assert corpus_bleu(["Hund"], ["Die Katze isst einen Apfel."]) < 5
