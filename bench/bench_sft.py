"""Benchmark: one SFT step of our TRL-based trainer, where its time goes, against a plain forward + backward floor.

    python bench/bench_sft.py [--task sqa] [--batch 16] [--steps 5]

The model and rows come from bench/workload.py (the default's models/base and data/prepared/<task>/train when
present, else a random-init stand-in of the default's sizes on espeak SQA rows). Both run one optimiser step per
batch of --batch rows on fresh copies of one model:
- `trainer`: AudioSFTTrainer (steps/training/sft_trainer.py) built as the sft stage builds it, driven by its own train
  loop (data loading and collation, TRL's loss and its token metrics, gradient clipping, AdamW, scheduler, callbacks);
  a step is the time between two `on_step_end` events, so everything the loop does counts.
- `floor`: the same collated batches -> model(**batch).loss -> backward -> clip_grad_norm_ -> AdamW, in plain PyTorch.
Parts: collation (audio features + tokens), forward (of which the encoder's and the LLM's forward, module hooks),
backward, optimiser step, and the rest of the step (TRL / Trainer overhead). SFT cannot share prefixes: every row has
its own prompt and audio. Target (issue 32): the trainer within 1.3x of the floor, or the table says what keeps it.
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
from transformers import TrainerCallback
from transformers.trainer_utils import IntervalStrategy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_grpo import Parts, watch_model  # noqa: E402
from bench.workload import default_workload  # noqa: E402
from steps.core.config import config_from_dict  # noqa: E402
from steps.modeling.families import adapter_for  # noqa: E402
from steps.training.sft_trainer import AudioSftCollator, AudioSFTTrainer, trainer_args  # noqa: E402

PARTS = ("collation (audio features)", "forward", "backward", "optimizer step")


class StepClock(TrainerCallback):
    """Seconds between consecutive step ends (the first step's from the start of training), and the optimiser step."""

    def __init__(self, parts: Parts) -> None:
        self.parts, self.steps, self.last = parts, [], None

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self.last = time.perf_counter()

    def on_pre_optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        self.optimizer_start = time.perf_counter()

    def on_optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        self.parts.seconds["optimizer step"] += time.perf_counter() - self.optimizer_start

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        self.steps.append(now - self.last)
        self.last = now
        if len(self.steps) == 1:  # warm-up step: its parts are not counted
            self.parts.clear()


def trainer_run(base: Any, processor: Any, data: Any, args: argparse.Namespace) -> tuple[list[float], Parts]:
    cfg = config_from_dict({"sft": {"batch_size": args.batch, "max_steps": args.steps + 1, "eval_every": 10_000,
                                    "logging_steps": 1, "threads": 0}, "model": {"device": "cpu"}})
    model = copy.deepcopy(base)
    parts = Parts()
    watch_model(parts, model)
    collator = AudioSftCollator(processor, adapter_for(model))
    clock = StepClock(parts)
    targs = trainer_args(cfg, Path("/tmp/bench_sft"), torch.device("cpu"))
    # no validation or checkpoint: the stage's happen every eval_every (75) steps, not in the steps timed here
    targs.eval_strategy = targs.save_strategy = IntervalStrategy.NO
    targs.load_best_model_at_end = False
    targs.disable_tqdm = True
    trainer = AudioSFTTrainer(model=model, args=targs,
                              train_dataset=data, eval_dataset=data.select(range(2)), processing_class=processor,
                              data_collator=parts.wrap("collation (audio features)", collator), callbacks=[clock])
    trainer.compute_loss = parts.wrap("forward", trainer.compute_loss)
    trainer.accelerator.backward = parts.wrap("backward", trainer.accelerator.backward)
    trainer.train()
    return clock.steps[1:], parts


def floor_run(base: Any, processor: Any, data: Any, args: argparse.Namespace) -> tuple[list[float], Parts]:
    model = copy.deepcopy(base).train()
    parts = Parts()
    watch_model(parts, model)
    collator = AudioSftCollator(processor, adapter_for(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    steps = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        with parts.part("collation (audio features)"):
            batch = collator([data[i] for i in range(step * args.batch, (step + 1) * args.batch)])
        with parts.part("forward"):
            loss = model(**batch).loss
        with parts.part("backward"):
            loss.backward()
        with parts.part("optimizer step"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        steps.append(time.perf_counter() - start)
        if step == 0:
            parts.clear()
    return steps[1:], parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sqa")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    base, processor, data, source = default_workload(args.task, "base", args.batch * (args.steps + 1))
    torch.manual_seed(0)
    results = {"trainer": trainer_run(base, processor, data, args), "floor": floor_run(base, processor, data, args)}
    n = args.steps
    mean = {k: statistics.mean(v[0]) for k, v in results.items()}
    print(f"\n## SFT step: {source}\nbatch {args.batch}, {torch.get_num_threads()} threads, mean of {n} steps after "
          "a warm-up\n")
    print("| part (seconds per step) | trainer (AudioSFTTrainer) | floor (plain PyTorch) |\n|---|---|---|")
    for name in PARTS:
        print(f"| {name} | " + " | ".join(f"{results[k][1].seconds.get(name, 0.0) / n:.3f}" for k in results) + " |")
        for inner in ("encoder", "LLM"):
            key = f"{name} / {inner}"
            if any(key in results[k][1].seconds for k in results):
                print(f"| &nbsp;&nbsp;of which {inner} forward | "
                      + " | ".join(f"{results[k][1].seconds.get(key, 0.0) / n:.3f}" for k in results) + " |")
    other = {k: mean[k] - sum(results[k][1].seconds.get(p, 0.0) for p in PARTS) / n for k in results}
    print("| other: TRL / Trainer overhead | " + " | ".join(f"{other[k]:.3f}" for k in results) + " |")
    print("| **step** | " + " | ".join(f"**{mean[k]:.3f}**" for k in results) + " |")
    print(f"\ntrainer / floor: {mean['trainer'] / mean['floor']:.2f} (issue 32: <= 1.3)")


if __name__ == "__main__":
    main()
