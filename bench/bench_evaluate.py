"""Evaluation throughput (utterances/s) of the tiny preset: batched generation (KV cache) vs batch size 1, and the
evaluate stage's five passes with the audio encoder's output reused across them or not.

    python bench/bench_evaluate.py [--examples 64] [--batch-sizes 1 8 32] [--new-tokens 32] [--threads 2]
                                   [--model models/base] [--task ast]

Uses the first `--examples` clips of data/prepared/<task>/test when they exist, else espeak clips made on the fly.
Without `--model` the model is a freshly built tiny preset with random weights: speed does not depend on training,
but an untrained model rarely stops early, so every answer runs the full `--new-tokens` (a fair worst case for both
columns). Greedy decoding, as the evaluate stage's greedy pass. A benchmark, not a test: numbers depend on the
machine and on whatever else runs on it. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.core.config import ModelConfig, TinyModelConfig
from steps.modeling.generation import GenerationSettings, generate
from steps.modeling.loading import load_model_and_processor, parameter_count

ROOT = Path(__file__).resolve().parents[1]


def clips(task: str, n: int) -> tuple[list[str], list[Any], list[str]]:
    """(prompts, audios, references) of n test examples: prepared data if there, else synthesised here."""
    path = ROOT / "data" / "prepared" / task / "test"
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path)).select(range(n))
        return list(ds["prompt"]), list(ds["audio"]), list(ds["reference"])
    from tests.tiny_sallm import make_rows

    rows = make_rows(n)
    return [r["prompt"] for r in rows], [r["audio"] for r in rows], [r["reference"] for r in rows]


def build_model(model_dir: str | None, texts: list[str], prompts: list[str], audios: list[Any]) -> tuple[Any, Any]:
    if model_dir:
        return load_model_and_processor(model_dir, ModelConfig(device="cpu"))
    from steps.modeling.tiny import build_tiny, window_seconds_for

    corpus = [p.replace("<|audio|>", " ") for p in prompts] + texts
    window = window_seconds_for(max(len(a) for a in audios) / 16000)
    return build_tiny(TinyModelConfig(), corpus * 5, window, seed=0)


def throughput(model: Any, processor: Any, prompts: list[str], audios: list[Any], batch_size: int,
               settings: GenerationSettings) -> tuple[float, float]:
    """(utterances per second, seconds) for one pass over the examples, after a short warm-up."""
    generate(model, processor, prompts[:batch_size], audios[:batch_size], settings, batch_size)
    start = time.perf_counter()
    generate(model, processor, prompts, audios, settings, batch_size)
    seconds = time.perf_counter() - start
    return len(prompts) / seconds, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="a model folder (default: a fresh random tiny preset)")
    parser.add_argument("--task", default="ast", choices=["ast", "sqa"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prompts, audios, refs = clips(args.task, args.examples)
    model, processor = build_model(args.model, refs, prompts, audios)
    model.eval()
    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    print(f"{args.examples} {args.task} test clips, {parameter_count(model) / 1e6:.2f} M parameters, greedy, "
          f"max {args.new_tokens} new tokens, KV cache on, {args.threads} threads, "
          f"model: {args.model or 'fresh tiny preset (random weights)'}\n")
    print("| batch size | utterances/s | seconds | speed-up vs the first row |")
    print("|---:|---:|---:|---:|")
    base = None
    for batch_size in args.batch_sizes:
        rate, seconds = throughput(model, processor, prompts, audios, batch_size, settings)
        base = base or rate
        print(f"| {batch_size} | {rate:.1f} | {seconds:.1f} | {rate / base:.1f}x |", flush=True)
    print("\n(Batches are sorted by clip length, as in steps.modeling.generation.generate, to waste little padding.)")
    reuse_table(model, processor, prompts, audios, args)


def reuse_table(model: Any, processor: Any, prompts: list[str], audios: list[Any], args: argparse.Namespace) -> None:
    """The evaluate stage's five passes over the same clips, with the audio encoder's output reused or not."""
    import datasets

    from steps.core.config import EvaluateConfig
    from steps.evaluation.evaluator import decode_all

    dataset = datasets.Dataset.from_dict({"prompt": prompts, "audio": [list(map(float, a)) for a in audios]})
    batch_size = max(args.batch_sizes)
    print(f"\nThe evaluate stage's passes (2 sampled, greedy, greedy and sampled on swapped audio), batch size "
          f"{batch_size}:\n")
    print("| encoder output reused | seconds | encoder runs (batches) | reused | speed-up |")
    print("|---|---:|---:|---:|---:|")
    plain = None
    for cache_mb in (0, 1024):
        ecfg = EvaluateConfig(sampled_runs=2, max_new_tokens=args.new_tokens, batch_size=batch_size,
                              encoder_cache_mb=cache_mb)
        decoded = decode_all(model, processor, dataset, ecfg, seed=0)
        plain = plain or decoded
        passes = ("sampled", "greedy", "swapped", "swapped_sampled")
        same = all(getattr(decoded, name) == getattr(plain, name) for name in passes)
        calls = decoded.encoder_calls
        print(f"| {'yes' if cache_mb else 'no'}{'' if same else ' (answers DIFFER)'} | {decoded.seconds:.1f} | "
              f"{calls['misses']} | {calls['hits']} | {plain.seconds / decoded.seconds:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
