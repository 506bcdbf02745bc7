"""Is system b's corpus BLEU different from baseline a's? Paired bootstrap tests, and the power they have.

- `paired_bootstrap`: sacrebleu's paired bootstrap resampling (the Moses test), one output per example.
- `clustered_paired_bootstrap`: the same test with examples as the resampled units, each with all its outputs (its
  sampled runs, or its outputs under several seeds), plus the minimal detectable effect at 80% power.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest, estimate_ci

from steps.evaluation.metrics import check_pairs


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
    mean +- ci), and the p-value of b vs a (small: the difference is unlikely to be chance).
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


# z_{1 - alpha/2} + z_{power} for a two-sided test at alpha 0.05 with 80% power: the normal approximation's factor.
MDE_FACTOR_80 = 1.959964 + 0.841621


def clustered_paired_bootstrap(
    hyps_a: Sequence[Sequence[str]], hyps_b: Sequence[Sequence[str]], refs: Sequence[str], n_samples: int = 1000,
    seed: int = 12345,
) -> dict[str, Any]:
    """Paired bootstrap of corpus BLEU with the examples as the resampled units (clusters).

    `hyps_a[i]` is every output system a gave for example i (each sampled run, or each seed's output), `hyps_b[i]`
    system b's; `refs[i]` is the reference. A resample draws examples with replacement and takes all the outputs of
    each, so outputs of one example, which are correlated (the same audio and question), are never counted as
    independent evidence; corpus BLEU comes from the sum of sacrebleu's sufficient statistics of the outputs drawn.
    The test statistic and p-value are sacrebleu's (|delta| against the centred resampled |delta|, (c + 1) / (n + 1));
    with one output per example the result equals `paired_bootstrap` (sacrebleu's test) to the last digit.

    Also returns `delta_se` (the standard deviation of the resampled signed delta) and `mde`, the smallest BLEU
    difference this test would detect with 80% power at alpha 0.05 (2.80 x delta_se, normal approximation), which
    covers the example spread and, through each example's outputs, the run-to-run spread.
    """
    if not (len(hyps_a) == len(hyps_b) == len(refs)) or not refs:
        raise ValueError(f"{len(hyps_a)} and {len(hyps_b)} examples' outputs for {len(refs)} references: they must "
                         "pair up, one entry per example")
    for i, (a, b) in enumerate(zip(hyps_a, hyps_b, strict=True)):
        if not a or not b:
            raise ValueError(f"example {i} has no output from {'a' if not a else 'b'}: every example needs one")
    check_pairs([h for outs in hyps_a for h in outs], [r for outs, r in zip(hyps_a, refs, strict=True) for _ in outs])
    bleu = BLEU()
    rng = np.random.default_rng(seed)  # drawn as sacrebleu draws, so one output per example reproduces its test
    idxs = rng.choice(len(refs), size=(n_samples, len(refs)), replace=True)

    def example_stats(outputs: Sequence[Sequence[str]]) -> np.ndarray:
        flat = [h for outs in outputs for h in outs]
        rows = np.array(bleu._extract_corpus_statistics(
            flat, [[r for outs, r in zip(outputs, refs, strict=True) for _ in outs]]), dtype="float32")
        if all(len(outs) == 1 for outs in outputs):
            return rows
        starts = np.cumsum([0, *[len(outs) for outs in outputs[:-1]]])
        return np.add.reduceat(rows, starts, axis=0)

    summary, resampled = {}, {}
    for name, outputs in (("a", hyps_a), ("b", hyps_b)):
        stats = example_stats(outputs)
        scores = np.array([bleu._compute_score_from_stats(s.sum(0)).score for s in stats[idxs]])
        mean, ci = estimate_ci(scores)
        # The observed score from exact integer counts, as sacrebleu's corpus_score (float32 sums are for resamples).
        observed = bleu._compute_score_from_stats(stats.astype(np.int64).sum(0).tolist()).score
        summary[name] = {"score": observed, "mean": float(mean),
                         "ci": float(ci), "ci_low": float(mean - ci), "ci_high": float(mean + ci),
                         "outputs": sum(len(o) for o in outputs)}
        resampled[name] = scores
    diff = abs(summary["b"]["score"] - summary["a"]["score"])
    sample_diffs = np.abs(resampled["b"] - resampled["a"])
    p_value = (int(np.sum(sample_diffs - sample_diffs.mean() > diff)) + 1) / (n_samples + 1)
    se = float(np.std(resampled["b"] - resampled["a"], ddof=1))
    return {"metric": "bleu", "a": summary["a"], "b": summary["b"],
            "delta": summary["b"]["score"] - summary["a"]["score"], "p_value": p_value, "delta_se": se,
            "mde": MDE_FACTOR_80 * se, "n_examples": len(refs), "n_samples": n_samples, "seed": seed,
            "clusters": "examples", "signature": str(bleu.get_signature())}
