"""Benchmark: one GRPO step of our TRL-based trainer, broken into its parts, against a minimal plain-PyTorch step.

    python bench/bench_grpo.py [--model models/sft/sqa] [--task sqa] [--prompts 4] [--generations 8] [--steps 5]

Both steps run on the same model (a fresh copy each), the same prompts and audio, the same group size, completion
limit, reward (sentence BLEU) and KL reference, one optimiser step each:
- ours: AudioGRPOTrainer._prepare_inputs (generation, rewards, reference log-probs) + compute_loss + backward + step;
  the parts are timed by wrapping the trainer's own methods.
- plain: processor -> model.generate (sampling) -> decode -> sacrebleu -> group advantages -> reference log-probs
  -> policy log-probs -> clipped loss -> backward -> AdamW step, written directly in PyTorch; twice: as written
  (the encoder runs on every row) and with the same model-level saving ours has (encode_each_clip_once in
  steps/modeling/encoder_speedups.py: a group's G rows share one clip, encoded once), so the ratio to the latter
  measures the framework alone.
Prints a table of mean seconds per step (after one warm-up step) and the ratio ours / plain (target <= 1.3).
Run it on an idle machine: two timed jobs on 2 cores distort each other.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.core.config import config_from_dict, load_config  # noqa: E402
from steps.data.splits import load_split, training_view  # noqa: E402
from steps.modeling.batches import encode_prompts, model_inputs  # noqa: E402
from steps.modeling.encoder_speedups import encode_each_clip_once  # noqa: E402
from steps.modeling.families import adapter_for, get_submodule  # noqa: E402
from steps.modeling.loading import load_model_and_processor  # noqa: E402
from steps.training.grpo_trainer import build_trainer  # noqa: E402
from steps.training.rewards import bleu_reward  # noqa: E402


def timed(store: dict[str, list[float]], name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store[name].append(time.perf_counter() - start)

    return wrapper


def our_step(trainer: Any, rows: list[dict[str, Any]], parts: dict[str, list[float]]) -> float:
    start = time.perf_counter()
    inputs = trainer._prepare_inputs(rows)
    t0 = time.perf_counter()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    parts["loss + backward + step"].append(time.perf_counter() - t0)
    return time.perf_counter() - start


def instrument(trainer: Any) -> dict[str, list[float]]:
    parts: dict[str, list[float]] = defaultdict(list)
    trainer._generate_single_turn = timed(parts, "generation", trainer._generate_single_turn)
    trainer._calculate_rewards = timed(parts, "reward", trainer._calculate_rewards)
    original = trainer._get_per_token_logps_and_entropies

    def logps(model: Any, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():  # the loss pass is timed with the backward
            return original(model, *args, **kwargs)
        name = "reference log-probs" if model is trainer.ref_model else "old-policy log-probs"
        return timed(parts, name, original)(model, *args, **kwargs)

    trainer._get_per_token_logps_and_entropies = logps
    return parts


def token_logps(model: Any, ids: torch.Tensor, mask: torch.Tensor, audio: dict[str, torch.Tensor],
                n_completion: int) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask, **audio).logits[:, -n_completion - 1:-1]
    return torch.gather(logits.log_softmax(-1), 2, ids[:, -n_completion:].unsqueeze(-1)).squeeze(-1)


def plain_step(model: Any, ref: Any, optimizer: Any, processor: Any, rows: list[dict[str, Any]], groups: int,
               max_new: int, beta: float, eps: float) -> float:
    """A minimal GRPO step, in plain PyTorch: what any implementation must do at least."""
    adapter = adapter_for(model)
    tok = processor.tokenizer
    reward = bleu_reward()
    start = time.perf_counter()
    batch = model_inputs(encode_prompts(processor, adapter, [r["prompt"] for r in rows], [r["audio"] for r in rows]),
                         adapter)
    audio = {k: batch[k] for k in adapter.feature_keys}
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=max_new)
    prompt_len = batch["input_ids"].size(1)
    completion = out[:, prompt_len:]
    eos = (completion == tok.eos_token_id).int()
    after_eos = (eos.cumsum(1) - eos) > 0
    completion_mask = (~after_eos).float() * (completion != tok.pad_token_id).float().clamp(min=eos.float())
    texts = tok.batch_decode(completion, skip_special_tokens=True)
    rewards = torch.tensor(reward(None, texts, reference=[r["reference"] for r in rows]))
    grouped = rewards.view(-1, groups)
    advantages = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1, 1)
    ids = out
    mask = torch.cat([batch["attention_mask"], completion_mask.long()], dim=1)
    n = completion.size(1)
    with torch.no_grad():
        ref_logps = token_logps(ref, ids, mask, audio, n)
    logps = token_logps(model, ids, mask, audio, n)
    ratio = torch.exp(logps - logps.detach())
    loss_tok = -torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)
    kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
    loss = ((loss_tok + beta * kl) * completion_mask).sum() / completion_mask.sum().clamp(min=1)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "sft" / "sqa"))
    parser.add_argument("--task", default="sqa")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-completion", type=int, default=48)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    base_cfg = load_config(ROOT / "params.yaml")
    section = {"init": "sft", "prompts_per_step": args.prompts, "num_generations": args.generations,
               "max_completion_length": args.max_completion, "max_steps": args.steps + 1, "beta": 0.02,
               "eval_every": 1000}
    cfg = config_from_dict({"grpo": section, "model": {"device": "cpu"}})
    data = training_view(load_split(ROOT / base_cfg.paths.data / "prepared", args.task, "train"))
    model, processor = load_model_and_processor(args.model, cfg.model)
    base = copy.deepcopy(model)  # before the trainer switches its encoder to encode each clip once
    trainer = build_trainer(cfg, "grpo", model, processor, data, data.select(range(4)), Path("/tmp/bench_grpo"),
                            ROOT, [])
    trainer.create_optimizer_and_scheduler(num_training_steps=args.steps + 1)
    trainer.model.train()
    parts = instrument(trainer)

    plain_model = copy.deepcopy(base)
    ref = copy.deepcopy(base).eval()
    optimizer = torch.optim.AdamW(plain_model.parameters(), lr=1e-5)
    shared_model, shared_ref = copy.deepcopy(base), copy.deepcopy(base).eval()
    for m in (shared_model, shared_ref):
        encode_each_clip_once(get_submodule(m, adapter_for(m).encoder))
    shared_optimizer = torch.optim.AdamW(shared_model.parameters(), lr=1e-5)
    ours, plain, shared = [], [], []
    for step in range(args.steps + 1):
        rows = [dict(r) for r in data.select(range(step * args.prompts, (step + 1) * args.prompts))
                for _ in range(args.generations)]
        torch.manual_seed(step)
        t_ours = our_step(trainer, rows, parts)
        torch.manual_seed(step)
        t_plain = plain_step(plain_model, ref, optimizer, processor, rows, args.generations, args.max_completion,
                             0.02, 0.2)
        torch.manual_seed(step)
        t_shared = plain_step(shared_model, shared_ref, shared_optimizer, processor, rows, args.generations,
                              args.max_completion, 0.02, 0.2)
        if step == 0:  # warm-up
            parts.clear()
            continue
        ours.append(t_ours)
        plain.append(t_plain)
        shared.append(t_shared)
    print(f"\nGRPO step on {args.model} ({args.prompts} prompts x {args.generations} completions, "
          f"<= {args.max_completion} tokens, {torch.get_num_threads()} threads), mean of {args.steps} steps\n")
    print("| part | seconds / step |\n|---|---|")
    for name in ("generation", "reward", "old-policy log-probs", "reference log-probs", "loss + backward + step"):
        values = parts.get(name, [])
        print(f"| {name} | {sum(values) / args.steps:.3f} |" if values else f"| {name} | not run |")
    mean_ours, mean_plain, mean_shared = statistics.mean(ours), statistics.mean(plain), statistics.mean(shared)
    print(f"| **our full step** | **{mean_ours:.3f}** |")
    print(f"| plain PyTorch step, encoder on every row | {mean_plain:.3f} |")
    print(f"| plain PyTorch step, each clip encoded once (as ours) | {mean_shared:.3f} |")
    print(f"\nratio ours / plain (each clip once): {mean_ours / mean_shared:.2f} (target <= 1.3); "
          f"ours / plain as written: {mean_ours / mean_plain:.2f}")


if __name__ == "__main__":
    main()
