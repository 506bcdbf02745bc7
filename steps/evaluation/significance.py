"""Is system b's corpus BLEU different from baseline a's? Two-sided paired bootstrap tests, Holm's correction, power.

- `paired_bootstrap`: sacrebleu's own paired bootstrap (the Moses test, `sacrebleu --paired-bs`), one output per
  example. Kept as the reference it is; the report does not use its p-value, which is in effect one-sided (below).
- `clustered_paired_bootstrap`: the report's test. Examples are the resampled units (clusters), each with all its
  outputs (its sampled runs); two-sided p-value; a confidence interval of the difference dual to the test; the minimal
  detectable effect of that test.
- `seed_paired_bootstrap`: the same with several trained models (seeds) per system. Seeds are a random effect: a
  resample draws seeds with replacement and examples with replacement (crossed, Owen's "pigeonhole" bootstrap), so the
  interval covers the next training run, not only the next test set. `seeds="fixed"` keeps every seed once (the old
  pooling, which treats the trained models as the only ones there could be).
- `holm`: Holm's step-down adjustment of a family of p-values; `minimal_detectable_effect`: the normal approximation.

Why two-sided and centred on the observed delta: sacrebleu counts resamples with |d*| - mean|d*| > |d|. With a clear
difference |d*| ~ d*, so that is d* - d > |d|: one tail, about half the two-sided p-value. Here a resample counts when
|d* - d| >= |d| (the bootstrap distribution of d* - d stands in for that of d - true delta under no difference), and
p = (count + 1) / (resamples + 1), so that no test reports p = 0 (Davison & Hinkley 1997, ch. 4). Under no difference
its false-positive rate is near alpha (tests/test_significance.py simulates it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from statistics import NormalDist
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest, estimate_ci

from steps.evaluation.metrics import check_pairs

ALPHA = 0.05
POWER = 0.8


@contextmanager
def _sacrebleu_seed(seed: int) -> Iterator[None]:
    # sacrebleu's PairedTest reads its seed from SACREBLEU_SEED only (also for the baseline's confidence interval).
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = old


_PAIRED_METRICS: dict[str, Callable[[], Any]] = {"bleu": BLEU, "chrf": CHRF}


def paired_bootstrap(
    hyps_a: list[str], hyps_b: list[str], refs: list[str], metric: str = "bleu", n_samples: int = 1000,
    seed: int = 12345,
) -> dict[str, Any]:
    """sacrebleu's paired bootstrap test of system b against baseline a (as `sacrebleu --paired-bs`).

    Returns each system's corpus score, bootstrap mean and 95% CI (sacrebleu's half-width `ci`, and the interval
    mean +- ci), and sacrebleu's p-value of b vs a (in effect one-sided: see the module docstring).
    """
    if metric not in _PAIRED_METRICS:
        raise ValueError(f"metric must be one of {sorted(_PAIRED_METRICS)}, got {metric!r}")
    check_pairs(hyps_a, refs)
    check_pairs(hyps_b, refs)
    with _sacrebleu_seed(seed):
        test = PairedTest([("a", list(hyps_a)), ("b", list(hyps_b))], {metric: _PAIRED_METRICS[metric]()},
                          references=[list(refs)], test_type="bs", n_samples=n_samples)
        signatures, results = test()
    (name,) = [key for key in results if key != "System"]
    res_a, res_b = results[name]

    def summary(res: Any) -> dict[str, float]:
        return {"score": res.score, "mean": float(res.mean), "ci": float(res.ci),
                "ci_low": float(res.mean - res.ci), "ci_high": float(res.mean + res.ci)}

    return {"metric": metric, "a": summary(res_a), "b": summary(res_b), "p_value": float(res_b.p_value),
            "n_samples": n_samples, "seed": seed, "signature": str(signatures[name])}


# --- the pieces -------------------------------------------------------------------------------------------------------


def minimal_detectable_effect(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at `alpha` detects with probability `power`, for an estimate with
    standard error `se` (normal approximation: (z_{1-alpha/2} + z_power) x se; 2.80 x se at 0.05 and 0.8)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * se


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the k-th smallest of m is multiplied by (m - k + 1),
    made non-decreasing along that order and capped at 1. An adjusted p below alpha rejects with the family-wise error
    rate held at alpha (Holm 1979), whatever the dependence between the tests."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def two_sided_p(deltas: np.ndarray, delta: float) -> float:
    """(resamples with |d* - d| >= |d|, plus one) / (resamples plus one)."""
    return (int(np.sum(np.abs(deltas - delta) >= abs(delta))) + 1) / (len(deltas) + 1)


def delta_interval(deltas: np.ndarray, delta: float, alpha: float = ALPHA) -> tuple[float, float]:
    """d +- the (1 - alpha) quantile of |d* - d|: the interval dual to `two_sided_p` (it excludes 0 about when
    p < alpha), so the interval and the test never tell different stories."""
    half = float(np.quantile(np.abs(deltas - delta), 1 - alpha))
    return delta - half, delta + half


_BLEU = BLEU()  # sacrebleu's corpus BLEU: 13a tokenisation, exp smoothing, no effective order


def bleu_stats(outputs: Sequence[Sequence[str]], refs: Sequence[str]) -> np.ndarray:
    """sacrebleu's sufficient statistics of each example's outputs summed: (examples, 10) int64 (hypothesis length,
    reference length, matches of 1-4-grams, hypothesis 1-4-grams)."""
    flat = [h for outs in outputs for h in outs]
    rows = np.array(_BLEU._extract_corpus_statistics(
        flat, [[r for outs, r in zip(outputs, refs, strict=True) for _ in outs]]), dtype=np.int64).reshape(-1, 10)
    starts = np.cumsum([0, *[len(outs) for outs in outputs[:-1]]])
    return np.add.reduceat(rows, starts, axis=0) if len(outputs) else rows


def bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU of summed statistics (..., 10), vectorised; equal to sacrebleu's `BLEU._compute_score_from_stats`
    (tests/test_significance.py checks it on random counts and on the edge cases), thousands of resamples at once."""
    stats = np.asarray(stats, dtype=np.float64)
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    correct, total = stats[..., 2:6], stats[..., 6:10]
    no_match = correct == 0
    # sacrebleu's 'exp' smoothing: the k-th order with no match gets precision 100 / (2^k x total)
    smooth = 2.0 ** np.cumsum(no_match, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(no_match, 100.0 / (smooth * total), 100.0 * correct / total)
        log_p = np.log(precision)
        log_sum = log_p[..., 0] + log_p[..., 1] + log_p[..., 2] + log_p[..., 3]  # sacrebleu's order of summation
        bp = np.where(sys_len < ref_len, np.exp(1.0 - ref_len / sys_len), 1.0)
        score = bp * np.exp(log_sum / 4)
    # sacrebleu gives 0 when no n-gram matches at all, when an order has no n-gram (a corpus of tiny hypotheses)
    # and when the hypotheses are empty
    defined = (no_match.sum(-1) < 4) & (total > 0).all(-1) & (sys_len > 0)
    return np.where(defined, score, 0.0)


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """(resamples, draws) indices -> (resamples, size) how often each index was drawn."""
    rows = draws.shape[0]
    flat = (draws + size * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(np.float64)


def _paired_test(stats_a: np.ndarray, stats_b: np.ndarray, n_samples: int, seed: int, alpha: float,
                 resample_seeds: bool) -> dict[str, Any]:
    """The paired bootstrap on (seeds, examples, 10) statistics of each system; the same draws for both systems.

    A resample draws examples with replacement (as sacrebleu draws) and, with `resample_seeds`, then seeds with
    replacement; system x's resampled statistics are sum_s sum_i w_s v_i stats_x[s, i]. Examples are drawn first so
    that the fixed-seed and the random-seed test of one seed share the example draws.
    """
    n_seeds, n_examples = stats_a.shape[:2]
    rng = np.random.default_rng(seed)
    example_w = _counts(rng.choice(n_examples, size=(n_samples, n_examples), replace=True), n_examples)
    seed_w = _counts(rng.choice(n_seeds, size=(n_samples, n_seeds), replace=True), n_seeds) if resample_seeds else None
    summary, resampled = {}, {}
    for name, stats in (("a", stats_a), ("b", stats_b)):
        counts = stats.astype(np.float64)  # exact: integer counts far below 2**53
        if seed_w is not None:  # (resamples, examples) @ (examples, seeds x 10), then weighted over the seeds
            per_seed = example_w @ counts.transpose(1, 0, 2).reshape(n_examples, -1)
            sums = np.einsum("bk,bkd->bd", seed_w, per_seed.reshape(n_samples, n_seeds, -1))
        else:
            sums = example_w @ counts.sum(0)
        scores = bleu_from_stats(sums)
        mean, ci = estimate_ci(scores)
        # the observed score through sacrebleu itself, from exact integer counts (as its corpus_score)
        observed = _BLEU._compute_score_from_stats(stats.astype(np.int64).sum((0, 1)).tolist()).score
        summary[name] = {"score": observed, "mean": float(mean), "ci": float(ci), "ci_low": float(mean - ci),
                         "ci_high": float(mean + ci)}
        resampled[name] = scores
    delta = summary["b"]["score"] - summary["a"]["score"]
    deltas = resampled["b"] - resampled["a"]
    se = float(np.std(deltas, ddof=1))
    low, high = delta_interval(deltas, delta, alpha)
    return {"metric": "bleu", "a": summary["a"], "b": summary["b"], "delta": delta,
            "delta_ci": [low, high], "p_value": two_sided_p(deltas, delta), "test": "two-sided", "alpha": alpha,
            "delta_se": se, "mde": minimal_detectable_effect(se, alpha), "power": POWER,
            "n_examples": n_examples, "n_samples": n_samples, "seed": seed, "signature": str(_BLEU.get_signature())}


def _check_outputs(hyps_a: Sequence[Sequence[str]], hyps_b: Sequence[Sequence[str]], refs: Sequence[str],
                   where: str = "") -> None:
    if not (len(hyps_a) == len(hyps_b) == len(refs)) or not refs:
        raise ValueError(f"{where}{len(hyps_a)} and {len(hyps_b)} examples' outputs for {len(refs)} references: they "
                         "must pair up, one entry per example")
    for i, (a, b) in enumerate(zip(hyps_a, hyps_b, strict=True)):
        if not a or not b:
            raise ValueError(f"{where}example {i} has no output from {'a' if not a else 'b'}: every example needs one")
    check_pairs([h for outs in hyps_a for h in outs], [r for outs, r in zip(hyps_a, refs, strict=True) for _ in outs])


# --- the tests --------------------------------------------------------------------------------------------------------


def clustered_paired_bootstrap(
    hyps_a: Sequence[Sequence[str]], hyps_b: Sequence[Sequence[str]], refs: Sequence[str], n_samples: int = 1000,
    seed: int = 12345, alpha: float = ALPHA,
) -> dict[str, Any]:
    """Two-sided paired bootstrap of corpus BLEU with the examples as the resampled units (clusters).

    `hyps_a[i]` is every output system a gave for example i (each sampled run), `hyps_b[i]` system b's; `refs[i]` is
    the reference. A resample draws examples with replacement and takes all the outputs of each, so outputs of one
    example, which are correlated (the same audio and question), are never counted as independent evidence; corpus
    BLEU comes from the sum of sacrebleu's sufficient statistics of the outputs drawn.

    Returns each system's corpus BLEU (`a`, `b`: score, bootstrap mean, sacrebleu's 95% CI, outputs), `delta` (b - a),
    `delta_ci` (the (1 - alpha) interval dual to the test), the two-sided `p_value`, `delta_se` (the standard deviation
    of the resampled delta) and `mde`: the smallest difference this test detects with 80% power at `alpha`.
    """
    _check_outputs(hyps_a, hyps_b, refs)
    out = _paired_test(bleu_stats(hyps_a, refs)[None], bleu_stats(hyps_b, refs)[None], n_samples, seed, alpha,
                       resample_seeds=False)
    out["a"]["outputs"] = sum(len(o) for o in hyps_a)
    out["b"]["outputs"] = sum(len(o) for o in hyps_b)
    return {**out, "clusters": "examples"}


def seed_paired_bootstrap(
    hyps_a: Sequence[Sequence[Sequence[str]]], hyps_b: Sequence[Sequence[Sequence[str]]], refs: Sequence[str],
    n_samples: int = 1000, seed: int = 12345, alpha: float = ALPHA, seeds: str = "random",
) -> dict[str, Any]:
    """Two-sided paired bootstrap of BLEU pooled over several trained models (seeds) of each system.

    `hyps_a[s][i]` is every output seed s of system a gave for example i; seed s of a and seed s of b are paired (b's
    seed-s model was trained from a's, or with the same seed). seeds "random": a resample draws seeds with replacement
    and, independently, examples with replacement, and takes every output of each drawn (seed, example): the trained
    models are a sample of the models the recipe could give, and the interval and p-value include their spread.
    seeds "fixed": every seed once, examples resampled (the models taken as given; narrower when seeds disagree).
    Give every seed the same number of outputs per example, or the seed with more runs weighs more.
    Returns what `clustered_paired_bootstrap` returns, plus `n_seeds` and `seeds`.
    """
    if seeds not in ("random", "fixed"):
        raise ValueError(f"seeds must be 'random' or 'fixed', got {seeds!r}")
    if not hyps_a or len(hyps_a) != len(hyps_b):
        raise ValueError(f"{len(hyps_a)} seeds of a and {len(hyps_b)} of b: they must pair up, at least one")
    for s, (a, b) in enumerate(zip(hyps_a, hyps_b, strict=True)):
        _check_outputs(a, b, refs, f"seed {s}: ")
    stats_a = np.stack([bleu_stats(a, refs) for a in hyps_a])
    stats_b = np.stack([bleu_stats(b, refs) for b in hyps_b])
    out = _paired_test(stats_a, stats_b, n_samples, seed, alpha, resample_seeds=seeds == "random")
    out["a"]["outputs"] = sum(len(o) for a in hyps_a for o in a)
    out["b"]["outputs"] = sum(len(o) for b in hyps_b for o in b)
    return {**out, "clusters": "seeds x examples" if seeds == "random" else "examples", "n_seeds": len(hyps_a),
            "seeds": seeds}
