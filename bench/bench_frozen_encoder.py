"""Benchmark: an SFT step with the audio encoder trained, frozen, and frozen with each clip's output kept.

    python bench/bench_frozen_encoder.py [--task sqa] [--batch 16] [--batches 4] [--epochs 3]

The model and rows come from bench/workload.py (the default's models/base and data/prepared/<task>/train when
present, else a random-init stand-in of the default's sizes). Each setting trains a fresh copy of one model for
--epochs passes over the same --batches batches (plain PyTorch: collate, forward, backward, clip, AdamW; the trainer
adds nothing that depends on the encoder, bench/bench_sft.py), as SFT's epochs revisit every clip. The first epoch is
a warm-up (it fills the kept outputs); the table is the mean over the later epochs' steps:
- `trained`: `model.freeze_audio_encoder: false`, the encoder runs forward and backward every step.
- `frozen, re-encoded`: frozen, each clip encoded again every epoch (kept outputs switched off).
- `frozen, outputs kept`: frozen as `apply_finetune_switches` sets it up (steps/modeling/encoder_speedups.py,
  `keep_frozen_encoder_outputs`): each clip encoded once.
A benchmark, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_grpo import Parts, watch_model  # noqa: E402
from bench.workload import default_workload  # noqa: E402
from steps.core.config import ModelConfig  # noqa: E402
from steps.modeling.families import adapter_for, get_submodule  # noqa: E402
from steps.modeling.loading import apply_finetune_switches  # noqa: E402
from steps.training.sft_trainer import AudioSftCollator  # noqa: E402

SETTINGS = ("trained", "frozen, re-encoded", "frozen, outputs kept")


def run(setting: str, base: Any, processor: Any, batches: list[list[dict[str, Any]]], epochs: int
        ) -> tuple[list[float], Parts, float]:
    model = apply_finetune_switches(copy.deepcopy(base), ModelConfig(freeze_audio_encoder=setting != "trained"))
    encoder = get_submodule(model, adapter_for(model).encoder)
    if setting == "frozen, re-encoded":
        encoder._kept.budget = 0
    model.train()
    parts = Parts()
    watch_model(parts, model)
    collator = AudioSftCollator(processor, adapter_for(model))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.01)
    steps: list[float] = []
    final_loss = float("nan")
    for epoch in range(epochs):
        for rows in batches:
            start = time.perf_counter()
            batch = collator(rows)
            with parts.part("forward"):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            final_loss = float(loss)
            if epoch:
                steps.append(time.perf_counter() - start)
        if epoch == 0:
            parts.clear()
    return steps, parts, final_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sqa")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    base, processor, data, source = default_workload(args.task, "base", args.batch * args.batches)
    rows = [data[i] for i in range(args.batch * args.batches)]
    batches = [rows[i:i + args.batch] for i in range(0, len(rows), args.batch)]
    results = {}
    for setting in SETTINGS:
        torch.manual_seed(0)
        results[setting] = run(setting, base, processor, batches, args.epochs)
    n = args.batches * (args.epochs - 1)
    print(f"\n## SFT step by audio-encoder setting: {source}\nbatch {args.batch}, {args.batches} batches x "
          f"{args.epochs} epochs (the first a warm-up), {torch.get_num_threads()} threads, mean of {n} steps\n")
    print("| setting | step (s) | encoder forward (s) | LLM forward (s) | speed-up vs trained | loss after |")
    print("|---|---|---|---|---|---|")
    trained = statistics.mean(results["trained"][0])
    for setting, (steps, parts, loss) in results.items():
        mean = statistics.mean(steps)
        encoder = parts.seconds.get("forward / encoder", 0.0) / n
        llm = parts.seconds.get("forward / LLM", 0.0) / n
        print(f"| {setting} | {mean:.3f} | {encoder:.3f} | {llm:.3f} | {trained / mean:.2f}x | {loss:.4f} |")


if __name__ == "__main__":
    main()
