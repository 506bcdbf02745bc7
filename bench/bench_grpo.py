"""Benchmark: one GRPO step, where its time goes, with and without shared prefixes, against a plain-PyTorch floor.

    python bench/bench_grpo.py [--task sqa] [--prompts 16] [--generations 8] [--max-completion N] [--steps 3]
                               [--real-prompts 4] [--skip-real]

Section 1, the default's shape (bench/workload.py: the default's SQA model and data when present, else a random-init
stand-in of the same sizes and prompt + audio lengths; 16 prompts x 8 completions), one optimiser step each, on
fresh copies of one model, the same prompts, audio and seed:
- `off`: AudioGRPOTrainer with grpo.shared_prefix: false (the step before issue 32, but for the processor, which
  now runs once per distinct prompt + clip either way): every row runs its prompt through the LLM;
- `on`: the same trainer with grpo.shared_prefix: true (steps/modeling/shared_prefix.py): each distinct prompt and its
  audio run once per log-prob pass and once per rollout prefill;
- `floor`: the same step written directly in PyTorch with the same savings (the processor and the encoder once per
  clip, shared prefixes, one prefill per prompt, TRL's fused LM head): processor -> generate -> decode -> sacrebleu
  -> advantages -> reference log-probs -> policy log-probs -> clipped loss + KL -> backward -> AdamW. What any
  implementation must do at least.
Parts: audio features (the processor), generation, reward, reference/old-policy log-probs, loss forward, backward,
optimiser step, each with the audio encoder's and the LLM's forward time inside it (module hooks), and the rest of the
step (TRL / Python overhead); LLM positions counts the rows x positions the LLM ran in the log-prob passes and in
generation. The trainer's parts are timed by wrapping its own methods. The first step is a warm-up (and runs the
shared-prefix first-use check); means over the next --steps.

Section 2, a real model's shape: a tiny-width Qwen2-Audio (Qwen2-Audio's 30 s window: 128 mel bins, 3000 frames,
750 audio positions per clip) with 40-token answers, --real-prompts x --generations rows: the log-prob passes as the
trainer calls them (reference forward, loss forward + backward) and 40-token generation, plain vs shared. On CPU
TRL's fused LM head scores every position of the sequence (on a Triton device only the completion's), so there the
plain pass also pays the LM head over the prompt.

A benchmark, not a test: run it on an idle machine (two timed jobs on 2 cores distort each other).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import default_workload  # noqa: E402
from steps.core.config import config_from_dict, load_config  # noqa: E402
from steps.modeling.batches import model_inputs  # noqa: E402
from steps.modeling.encoder_speedups import encode_each_clip_once  # noqa: E402
from steps.modeling.families import adapter_for, get_submodule  # noqa: E402
from steps.modeling.shared_prefix import enable_shared_prefix, encode_prompts_once, prefill_once  # noqa: E402
from steps.training.grpo_trainer import build_trainer  # noqa: E402
from steps.training.rewards import bleu_reward  # noqa: E402

PARTS = ("audio features", "generation", "reward", "reference / old-policy log-probs", "loss forward", "backward",
         "optimizer step")
VARIANTS = ("off", "on", "floor")
BETA, EPSILON = 0.02, 0.2


class Parts:
    """Wall time per part of a step, and inside each part the encoder's and the LLM's forward time (module hooks)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.positions: dict[str, int] = defaultdict(int)
        self.current = "other"
        self._starts: list[float] = []

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        outer, self.current = self.current, name
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.current = outer

    def wrap(self, name: str | Callable[[], str | None], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            label = name() if callable(name) else name
            if label is None:
                return fn(*args, **kwargs)
            with self.part(label):
                return fn(*args, **kwargs)

        return wrapper

    def watch(self, module: torch.nn.Module, label: str, count_positions: bool = False) -> None:
        def pre(_: Any, args: Any, kwargs: Any) -> None:
            self._starts.append(time.perf_counter())
            if count_positions:
                x = kwargs.get("inputs_embeds")
                self.positions[self.current] += int(x.shape[0] * x.shape[1]) if x is not None else 0

        def post(*_: Any) -> None:
            self.seconds[f"{self.current} / {label}"] += time.perf_counter() - self._starts.pop()

        module.register_forward_pre_hook(pre, with_kwargs=True)
        module.register_forward_hook(post)

    def clear(self) -> None:
        self.seconds.clear()
        self.positions.clear()


def watch_model(parts: Parts, model: Any) -> None:
    parts.watch(get_submodule(model, adapter_for(model).encoder), "encoder")
    parts.watch(get_submodule(model, adapter_for(model).llm[0]), "LLM", count_positions=True)


# --- section 1: the default's shape -----------------------------------------------------------------------------------


def grpo_section(args: argparse.Namespace) -> dict[str, Any]:
    return {"init": "sft", "prompts_per_step": args.prompts, "num_generations": args.generations,
            "max_completion_length": args.max_completion, "max_steps": args.steps + 1, "beta": BETA,
            "epsilon": EPSILON, "eval_every": 1000, "threads": 0}


def trainer_variant(args: argparse.Namespace, base: Any, processor: Any, data: Any, shared: bool
                    ) -> tuple[Any, Parts]:
    cfg = config_from_dict({"grpo": {**grpo_section(args), "shared_prefix": shared}, "model": {"device": "cpu"}})
    trainer = build_trainer(cfg, "grpo", copy.deepcopy(base), processor, data, data.select(range(4)),
                            Path("/tmp/bench_grpo"), ROOT, [])
    trainer.create_optimizer_and_scheduler(num_training_steps=args.steps + 1)
    trainer.model.train()
    parts = Parts()
    watch_model(parts, trainer.model)
    watch_model(parts, trainer.ref_model)
    trainer._tokenize_prompts = parts.wrap("audio features", trainer._tokenize_prompts)
    trainer._generate_single_turn = parts.wrap("generation", trainer._generate_single_turn)
    trainer._calculate_rewards = parts.wrap("reward", trainer._calculate_rewards)
    trainer._get_per_token_logps_and_entropies = parts.wrap(
        lambda: None if torch.is_grad_enabled() else "reference / old-policy log-probs",
        trainer._get_per_token_logps_and_entropies)
    trainer.compute_loss = parts.wrap("loss forward", trainer.compute_loss)
    return trainer, parts


def trainer_step(trainer: Any, parts: Parts, rows: list[dict[str, Any]]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    inputs = trainer._prepare_inputs(rows)
    loss = trainer.compute_loss(trainer.model, inputs)
    with parts.part("backward"):
        loss.backward()
    with parts.part("optimizer step"):
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    return time.perf_counter() - start, inputs["completion_ids"]


class Floor:
    """The GRPO step in plain PyTorch, with the model-level savings the trainer has (module docstring)."""

    def __init__(self, base: Any, processor: Any, args: argparse.Namespace) -> None:
        from trl.trainer.utils import add_fused_lm_head

        self.model, self.ref = copy.deepcopy(base).train(), copy.deepcopy(base).eval()
        self.processor, self.args = processor, args
        self.adapter = adapter_for(base)
        for m in (self.model, self.ref):
            encode_each_clip_once(get_submodule(m, self.adapter.encoder))
            add_fused_lm_head(m, outputs=("log_probs",))
            enable_shared_prefix(m)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        self.reward = bleu_reward()
        self.parts = Parts()
        watch_model(self.parts, self.model)
        watch_model(self.parts, self.ref)

    def logps(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, audio: dict[str, torch.Tensor],
              width: int) -> torch.Tensor:
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :-width] = -100
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True,
                    shared_prefix_length=ids.size(1) - width, **audio)
        return out.log_probs[:, -width:]

    def step(self, rows: list[dict[str, Any]]) -> float:
        tok, parts, model = self.processor.tokenizer, self.parts, self.model
        start = time.perf_counter()
        with parts.part("audio features"):
            batch = model_inputs(encode_prompts_once(self.processor, self.adapter, [r["prompt"] for r in rows],
                                                     [r["audio"] for r in rows]), self.adapter)
        audio = {k: batch[k] for k in self.adapter.feature_keys}
        with parts.part("generation"), torch.no_grad(), prefill_once(model):
            out = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0,
                                 max_new_tokens=self.args.max_completion, pad_token_id=tok.pad_token_id)
        completion = out[:, batch["input_ids"].size(1):]
        eos = (completion == tok.eos_token_id).int()
        completion_mask = ((eos.cumsum(1) - eos) == 0).long()
        with parts.part("reward"):
            texts = tok.batch_decode(completion, skip_special_tokens=True)
            rewards = torch.tensor(self.reward(None, texts, reference=[r["reference"] for r in rows]))
            grouped = rewards.view(-1, self.args.generations)
            adv = ((grouped - grouped.mean(1, keepdim=True)) / grouped.std(1, keepdim=True).clamp(min=0.1)).view(-1, 1)
        mask = torch.cat([batch["attention_mask"], completion_mask], dim=1)
        width = completion.size(1)
        with parts.part("reference / old-policy log-probs"), torch.no_grad():
            ref = self.logps(self.ref, out, mask, audio, width)
        with parts.part("loss forward"):
            logps = self.logps(model, out, mask, audio, width)
            ratio = torch.exp(logps - logps.detach())
            token_loss = -torch.min(ratio * adv, ratio.clamp(1 - EPSILON, 1 + EPSILON) * adv)
            kl = torch.exp(ref - logps) - (ref - logps) - 1
            loss = ((token_loss + BETA * kl) * completion_mask).sum() / completion_mask.sum().clamp(min=1)
        with parts.part("backward"):
            loss.backward()
        with parts.part("optimizer step"):
            self.optimizer.step()
            self.optimizer.zero_grad()
        return time.perf_counter() - start


def default_shape(args: argparse.Namespace) -> None:
    base, processor, data, source = default_workload(args.task, "sft", args.prompts * (args.steps + 1))
    if args.max_completion is None:
        trained = not source.startswith("random")
        args.max_completion = load_config(ROOT / "params.yaml").grpo.max_completion_length if trained else 8
    torch.manual_seed(0)
    off, off_parts = trainer_variant(args, base, processor, data, shared=False)
    on, on_parts = trainer_variant(args, base, processor, data, shared=True)
    floor = Floor(base, processor, args)
    totals: dict[str, list[float]] = {v: [] for v in VARIANTS}
    same: list[bool] = []
    for step in range(args.steps + 1):
        rows = [dict(r) for r in data.select(range(step * args.prompts, (step + 1) * args.prompts))
                for _ in range(args.generations)]
        rows.sort(key=lambda r: r["id"])  # TRL's layout: each prompt's G rows together
        completions: dict[str, torch.Tensor] = {}
        seconds: dict[str, float] = {}
        for variant in VARIANTS[step % 3:] + VARIANTS[:step % 3]:  # rotated: no variant always runs first
            torch.manual_seed(step)
            if variant == "floor":
                seconds[variant] = floor.step(rows)
            else:
                trainer, trainer_parts = (off, off_parts) if variant == "off" else (on, on_parts)
                seconds[variant], completions[variant] = trainer_step(trainer, trainer_parts, rows)
        same.append(torch.equal(completions["off"], completions["on"]))
        if step == 0:  # warm-up (and the first-use check)
            for p in (off_parts, on_parts, floor.parts):
                p.clear()
            continue
        for name in VARIANTS:
            totals[name].append(seconds[name])
    weights_on = dict(on.model.named_parameters())
    drift = max(float((weights_on[k] - w).abs().max()) for k, w in off.model.named_parameters())
    parts = dict(zip(VARIANTS, (off_parts, on_parts, floor.parts), strict=True))
    n = args.steps
    print(f"\n## GRPO step, default shape: {source}\n{args.prompts} prompts x {args.generations} completions, "
          f"<= {args.max_completion} tokens, {torch.get_num_threads()} threads, mean of {n} steps after a warm-up.\n"
          f"off and on sampled the same completions at steps {[i for i, ok in enumerate(same) if ok]} of "
          f"0..{n} (from equal weights at step 0; each optimiser step leaves them apart by rounding, which AdamW "
          f"scales up where a gradient is ~0: max |weight difference| after {n + 1} steps {drift:.1e})\n")
    print("| part (seconds per step) | off (trainer, grpo.shared_prefix: false) | on (trainer, shared_prefix: true) "
          "| floor (plain PyTorch, shared) |\n|---|---|---|---|")
    mean = {v: statistics.mean(totals[v]) for v in VARIANTS}
    for name in PARTS:
        print(f"| {name} | " + " | ".join(f"{parts[v].seconds.get(name, 0.0) / n:.3f}" for v in VARIANTS) + " |")
        for inner in ("encoder", "LLM"):
            key = f"{name} / {inner}"
            if any(key in parts[v].seconds for v in VARIANTS):
                print(f"| &nbsp;&nbsp;of which {inner} forward | "
                      + " | ".join(f"{parts[v].seconds.get(key, 0.0) / n:.3f}" for v in VARIANTS) + " |")
    other = {v: mean[v] - sum(parts[v].seconds.get(p, 0.0) for p in PARTS) / n for v in VARIANTS}
    print("| other: TRL / Python overhead | " + " | ".join(f"{other[v]:.3f}" for v in VARIANTS) + " |")
    print("| **step** | " + " | ".join(f"**{mean[v]:.3f}**" for v in VARIANTS) + " |")
    logprob_parts = ("reference / old-policy log-probs", "loss forward")
    for label, keys in (("LLM positions, log-prob passes", logprob_parts), ("LLM positions, generation",
                                                                            ("generation",))):
        print(f"| {label} | " + " | ".join(f"{sum(parts[v].positions.get(k, 0) for k in keys) // n}"
                                           for v in VARIANTS) + " |")
    print(f"\nspeed-up on vs off: {mean['off'] / mean['on']:.2f}x (issue 32: >= 2.5x, target 4x); "
          f"on / floor: {mean['on'] / mean['floor']:.2f} (1.0 = no framework overhead)")


# --- section 2: a real model's shape ----------------------------------------------------------------------------------


def real_shape_model() -> Any:
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "encoder_layers": 2,
                      "encoder_attention_heads": 2, "encoder_ffn_dim": 128, "d_model": 64,
                      "max_source_positions": 1500, "dropout": 0.0, "attention_dropout": 0.0},
        text_config={"model_type": "qwen2", "vocab_size": 2048, "hidden_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
                     "max_position_embeddings": 2048, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None},
        audio_token_index=5)
    model = Qwen2AudioForConditionalGeneration(config).train()
    encode_each_clip_once(model.model.audio_tower)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    return enable_shared_prefix(model)


def real_shape(args: argparse.Namespace) -> None:
    from transformers import GenerationConfig

    model = real_shape_model()
    prompts, group, answer = args.real_prompts, args.generations, 40
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(prompts, 128, 3000, generator=gen).repeat_interleave(group, 0)
    feature_mask = torch.ones(prompts * group, 3000, dtype=torch.long)
    n_audio = int(model.model.audio_tower._get_feat_extract_output_lengths(torch.tensor(3000))[1])
    text = torch.randint(20, 2048, (prompts, 12), generator=gen).repeat_interleave(group, 0)
    prompt = torch.cat([text[:, :6], torch.full((prompts * group, n_audio), 5), text[:, 6:]], dim=1)
    completion = torch.randint(20, 2048, (prompts * group, answer), generator=gen)
    ids = torch.cat([prompt, completion], 1)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :-answer] = -100
    audio = {"input_features": features, "feature_attention_mask": feature_mask}
    parts = Parts()
    parts.watch(model.model.audio_tower, "encoder")
    parts.watch(model.model.language_model, "LLM", count_positions=True)

    def scored(shared: bool) -> Any:
        extra = {"shared_prefix_length": prompt.size(1)} if shared else {}
        return model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, **audio, **extra)

    config = GenerationConfig(do_sample=True, max_new_tokens=answer, min_new_tokens=answer, pad_token_id=0,
                              eos_token_id=1)
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "shared": []}
    references: dict[str, torch.Tensor] = {}
    for repeat in range(args.real_repeats + 1):  # the first round is a warm-up
        for variant, shared in (("plain", False), ("shared", True))[:: 1 if repeat % 2 else -1]:  # alternated
            parts.clear()
            with parts.part("reference log-probs"), torch.no_grad():
                references[variant] = scored(shared).log_probs[:, -answer:]
            with parts.part("loss forward"):
                logps = scored(shared).log_probs[:, -answer:]
            with parts.part("backward"):
                (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
            model.zero_grad()
            with parts.part(f"generation ({answer} tokens)"), torch.no_grad():
                torch.manual_seed(0)
                with prefill_once(model) if shared else contextlib.nullcontext():
                    model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **audio,
                                   generation_config=config)
            if repeat:
                runs[variant].append({**parts.seconds, "LLM positions, log-prob passes": (
                    parts.positions["reference log-probs"] + parts.positions["loss forward"]),
                    "LLM positions, generation": parts.positions[f"generation ({answer} tokens)"]})
    results = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    diff = float((references["plain"] - references["shared"]).abs().max())
    print(f"\n## A real model's shape: tiny-width Qwen2-Audio (d=64, 2+2 layers), {prompts} prompts x {group}: "
          f"{prompt.size(1)} prompt positions ({n_audio} audio) + {answer}-token answers\n")
    print(f"| part (seconds, median of {args.real_repeats}) | plain | shared | plain / shared |\n|---|---|---|---|")
    for key in results["plain"]:
        a, b = results["plain"][key], results["shared"].get(key, 0.0)
        fmt = (lambda x: f"{int(x)}") if "positions" in key else (lambda x: f"{x:.3f}")
        print(f"| {key} | {fmt(a)} | {fmt(b)} | {a / b if b else float('nan'):.2f}x |")
    print(f"\nmax |log-prob difference| plain vs shared: {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sqa")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-completion", type=int, default=None,
                        help="completion limit; default: grpo.max_completion_length with the default's trained model, "
                             "8 with the random stand-in (~ the default SQA's mean answer, 7.2 tokens: it never stops)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--real-prompts", type=int, default=4)
    parser.add_argument("--real-repeats", type=int, default=3)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    args = parser.parse_args()
    if not args.skip_default:
        default_shape(args)
    if not args.skip_real:
        real_shape(args)


if __name__ == "__main__":
    main()
