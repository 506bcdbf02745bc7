"""steps.evaluation.significance: the two-sided paired bootstrap is calibrated under no difference, symmetric, and
sure of a clear effect; Holm on a hand-worked family; seeds as a random effect widen the interval when seeds disagree.

The simulated nulls draw each system's outputs from one pool of candidate outputs per example, so both "systems" come
from the same distribution; sacrebleu's statistics of the pool are extracted once, which keeps hundreds of simulated
test sets (each with its own bootstrap) to about a second.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from sacrebleu.metrics import BLEU

from steps.evaluation import significance as sig
from tests.helpers import two_systems

WORDS = ("der", "die", "das", "Hund", "Katze", "isst", "einen", "Apfel", "im", "Garten", "am", "Montag", "heute",
         "gern", "schnell", "Haus")
LEVELS = (-0.2, 0.0, 0.2)  # a seed's quality: how much more often it keeps a reference word


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    """Statistics of candidate outputs: (quality level, example, candidate, 10) for 150 examples, 4 candidates each."""
    rng = random.Random(0)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(4, 9))) for _ in range(150)]
    keep = [rng.uniform(0.35, 0.75) for _ in refs]  # examples differ in difficulty
    return np.stack([np.stack([sig.bleu_stats(
        [[" ".join(w if rng.random() < k + level else rng.choice(WORDS) for w in r.split())] for r, k in
         zip(refs, keep, strict=True)], refs) for _ in range(4)], 1) for level in LEVELS])


def null_rejections(pool: np.ndarray, *, n: int, seeds: int, seed_spread: bool, datasets: int, resamples: int = 300
                    ) -> dict[str, float]:
    """Fraction of simulated test sets where a and b, drawn alike, differ at p < 0.05 (fixed and random seeds)."""
    rng = np.random.default_rng(1)
    mid = LEVELS.index(0.0)
    hits = {"fixed": 0, "random": 0}
    for d in range(datasets):
        examples = rng.choice(pool.shape[1], n, replace=False)

        def system(examples: np.ndarray) -> np.ndarray:
            levels = rng.integers(0, len(LEVELS), seeds) if seed_spread else np.full(seeds, mid)
            return pool[levels[:, None], examples[None, :], rng.integers(0, pool.shape[2], (seeds, n))]

        a, b = system(examples), system(examples)
        for mode in hits:
            hits[mode] += sig._paired_test(a, b, resamples, d, 0.05, mode == "random")["p_value"] < 0.05
    return {mode: count / datasets for mode, count in hits.items()}


def test_false_positive_rate_under_no_difference_is_near_alpha(pool: np.ndarray) -> None:
    rate = null_rejections(pool, n=80, seeds=1, seed_spread=False, datasets=400)
    assert 0.02 <= rate["fixed"] <= 0.09, rate  # 400 nulls: +-0.011 standard error around 0.05
    assert rate["random"] == rate["fixed"]  # one seed: nothing to resample


def test_with_disagreeing_seeds_fixed_pooling_finds_differences_that_are_not_there(pool: np.ndarray) -> None:
    """Three seeds whose quality differs: taking the models as fixed rejects a true null most of the time; resampling
    seeds rejects far less often (not 0.05: three seeds are too few for any bootstrap to see their spread well)."""
    rate = null_rejections(pool, n=80, seeds=3, seed_spread=True, datasets=150)
    assert rate["fixed"] > 0.3 and rate["random"] < rate["fixed"] / 2, rate


def test_two_sided_p_is_symmetric_and_near_zero_for_a_clear_effect() -> None:
    a, b, refs = two_systems(n=40, seed=5)
    one, two = [[h] for h in a], [[h] for h in b]
    ab = sig.clustered_paired_bootstrap(one, two, refs, n_samples=500, seed=3)
    ba = sig.clustered_paired_bootstrap(two, one, refs, n_samples=500, seed=3)
    assert ab["delta"] == pytest.approx(-ba["delta"]) and ab["p_value"] == ba["p_value"]
    assert ab["delta_ci"] == pytest.approx([-x for x in reversed(ba["delta_ci"])])
    perfect = sig.clustered_paired_bootstrap(one, [[r] for r in refs], refs, n_samples=500, seed=3)
    assert perfect["p_value"] == 1 / 501 and perfect["delta_ci"][0] > 0  # the smallest p 500 resamples can give
    same = sig.clustered_paired_bootstrap(one, one, refs, n_samples=500, seed=3)
    assert same["delta"] == 0 and same["p_value"] == 1.0  # no observed difference is no evidence of one


def test_p_value_is_about_twice_sacrebleus_one_sided_statistic() -> None:
    a, b, refs = two_systems(n=60, seed=1)
    ours = sig.clustered_paired_bootstrap([[h] for h in a], [[h] for h in b], refs, n_samples=1000, seed=7)
    theirs = sig.paired_bootstrap(a, b, refs, n_samples=1000, seed=7)
    assert 1.5 < ours["p_value"] / theirs["p_value"] < 2.5
    assert ours["a"]["ci"] == pytest.approx(theirs["a"]["ci"], abs=1e-5)  # the same resamples of each system
    # the interval is dual to the test: it excludes 0 exactly when p < alpha (here both)
    assert ours["p_value"] < 0.05 and ours["delta_ci"][0] > 0


def test_holm_on_a_hand_worked_family() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> non-decreasing: 0.04 becomes 0.06
    assert sig.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert sig.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert sig.holm([0.02]) == [0.02] and sig.holm([]) == []


def test_minimal_detectable_effect_is_the_two_sided_test_at_alpha() -> None:
    assert sig.minimal_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert sig.minimal_detectable_effect(1.0, alpha=0.05 / 4) == pytest.approx(2.497705 + 0.841621, abs=1e-5)
    with pytest.raises(ValueError, match="alpha and power"):
        sig.minimal_detectable_effect(1.0, alpha=0)


def test_vectorised_bleu_equals_sacrebleu() -> None:
    rng = np.random.default_rng(0)
    total = np.sort(rng.integers(0, 30, (3000, 4)), axis=1)[:, ::-1]
    correct = np.minimum(total, rng.integers(0, 20, (3000, 4)) * (rng.random((3000, 4)) < 0.7))
    stats = np.concatenate([total[:, :1], rng.integers(0, 40, (3000, 1)), correct, total], 1)
    edge = [[0, 5, 0, 0, 0, 0, 0, 0, 0, 0], [3, 3, 0, 0, 0, 0, 3, 2, 1, 0], [2, 9, 2, 1, 0, 0, 2, 1, 0, 0],
            [9, 4, 5, 0, 0, 0, 9, 8, 7, 6]]  # empty, no match, an order with no n-gram, exp smoothing of 3 orders
    stats = np.concatenate([stats, edge])
    bleu = BLEU()
    expected = [bleu._compute_score_from_stats(list(map(int, row))).score for row in stats]
    assert sig.bleu_from_stats(stats) == pytest.approx(expected, abs=1e-9)


def _seeds(shifts: tuple[int, ...], n: int = 40) -> tuple[list[list[list[str]]], list[str]]:
    """One system's outputs for seeds that keep each reference word but drop the first `shift` words."""
    refs = [" ".join(random.Random(i).choices(WORDS, k=8)) for i in range(n)]
    return [[[" ".join(r.split()[shift + i % 2:])] for i, r in enumerate(refs)] for shift in shifts], refs


def test_seeds_as_a_random_effect_widen_the_interval_when_seeds_disagree() -> None:
    a, refs = _seeds((2, 2, 2))
    agree, _ = _seeds((1, 1, 1))
    disagree, _ = _seeds((0, 1, 2))  # seeds from as good as the agreeing ones' best to as bad as the baseline
    runs = {(outs_name, mode): sig.seed_paired_bootstrap(a, outs, refs, n_samples=400, seed=2, seeds=mode)
            for outs_name, outs in (("agree", agree), ("disagree", disagree)) for mode in ("fixed", "random")}

    def width(key: tuple[str, str]) -> float:
        low, high = runs[key]["delta_ci"]
        return high - low

    assert width(("disagree", "random")) > 2 * width(("disagree", "fixed"))
    assert runs[("disagree", "random")]["mde"] > runs[("disagree", "fixed")]["mde"]
    assert runs[("disagree", "random")]["p_value"] > runs[("disagree", "fixed")]["p_value"]
    # agreeing seeds: resampling them changes little (their outputs are the same)
    assert width(("agree", "random")) == pytest.approx(width(("agree", "fixed")), rel=0.35)
    assert runs[("disagree", "random")]["clusters"] == "seeds x examples" and runs[("agree", "fixed")]["n_seeds"] == 3
    with pytest.raises(ValueError, match="seeds of a"):
        sig.seed_paired_bootstrap(a, agree[:2], refs)
    with pytest.raises(ValueError, match="seed 1: example 0 has no output"):
        sig.seed_paired_bootstrap(a, [agree[0], [[], *agree[1][1:]], agree[2]], refs)
