"""False-positive rates of the report's paired bootstrap under no difference, simulated (docs/statistics.md).

    python bench/null_rates.py [--datasets 300] [--resamples 400] [--examples 400]

Two "systems" drawn from one distribution: a pool of 1000 made-up references, each with candidate outputs at a few
quality levels (each keeps a reference word with a per-example probability, shifted by the level, else writes a random
word). A simulated test set draws `--examples` references; each seed of each system outputs one random candidate per
example, at the middle level ("seeds agree": seeds differ by their outputs only) or at a level drawn per seed ("seeds
disagree": seeds differ in quality too). Prints, per scenario, the share of test sets where the two-sided test says
p < 0.05 with the seeds fixed and with the seeds resampled (a random effect), the mean standard error of the delta
each gives, and the seeds' BLEU spread. Seeded: the same numbers every run. A simulation, not a test (those are in
tests/test_significance.py, smaller).
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from steps.evaluation.significance import _paired_test, bleu_from_stats, bleu_stats

WORDS = ("der", "die", "das", "Hund", "Katze", "isst", "einen", "Apfel", "im", "Garten", "am", "Montag", "heute",
         "gern", "schnell", "Haus")
LEVELS = (-0.04, -0.02, 0.0, 0.02, 0.04)


def candidate_pool(n_refs: int = 1000, candidates: int = 4, seed: int = 0) -> np.ndarray:
    """sacrebleu statistics of candidate outputs: (level, reference, candidate, 10)."""
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(4, 9))) for _ in range(n_refs)]
    keep = [rng.uniform(0.35, 0.75) for _ in refs]
    return np.stack([np.stack([bleu_stats(
        [[" ".join(w if rng.random() < k + level else rng.choice(WORDS) for w in r.split())] for r, k in
         zip(refs, keep, strict=True)], refs) for _ in range(candidates)], 1) for level in LEVELS])


def rates(pool: np.ndarray, *, n: int, seeds: int, disagree: bool, datasets: int, resamples: int,
          seed: int = 5) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits, ses, spread = {"fixed": 0, "random": 0}, {"fixed": [], "random": []}, []
    for d in range(datasets):
        examples = rng.choice(pool.shape[1], n, replace=False)

        def system(examples: np.ndarray) -> np.ndarray:
            levels = rng.integers(0, len(LEVELS), seeds) if disagree else np.full(seeds, LEVELS.index(0.0))
            return pool[levels[:, None], examples[None, :], rng.integers(0, pool.shape[2], (seeds, n))]

        a, b = system(examples), system(examples)
        if seeds > 1:
            spread.append(float(np.std(bleu_from_stats(a.sum(1)), ddof=1)))
        for mode in hits:
            out = _paired_test(a, b, resamples, d, 0.05, mode == "random")
            hits[mode] += out["p_value"] < 0.05
            ses[mode].append(out["delta_se"])
    return {"fixed": hits["fixed"] / datasets, "random": hits["random"] / datasets,
            "se_fixed": float(np.mean(ses["fixed"])), "se_random": float(np.mean(ses["random"])),
            "seed_std": float(np.mean(spread)) if spread else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--examples", type=int, default=400)
    args = parser.parse_args()
    pool = candidate_pool()
    print(f"{args.datasets} simulated test sets of {args.examples} examples, {args.resamples} resamples each\n")
    print("| seeds | seeds differ in quality | seed BLEU std | p < 0.05, seeds fixed | p < 0.05, seeds random "
          "| SE of delta, fixed / random |")
    print("|---|---|---|---|---|---|")
    for seeds, disagree in ((1, False), (3, False), (3, True), (10, True)):
        r = rates(pool, n=args.examples, seeds=seeds, disagree=disagree, datasets=args.datasets,
                  resamples=args.resamples)
        print(f"| {seeds} | {'yes' if disagree else 'no'} | {r['seed_std']:.2f} | {r['fixed']:.3f} | "
              f"{r['random']:.3f} | {r['se_fixed']:.2f} / {r['se_random']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
