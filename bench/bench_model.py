"""Speed of the tiny preset: encoder and full forward, training step per pretrain phase, generation with and
without the KV cache, peak memory. Prints a markdown table. A benchmark, not a test: numbers depend on the machine
and on whatever else runs on it.

    python bench/bench_model.py [--batch 8] [--seconds 3] [--window 8] [--threads 2] [--repeats 5]

The model has the default `model.tiny` sizes and random weights (speed does not depend on training); the audio is
noise of the given length. "fast" rows use the pretrain stage's forward on real frames only; "stock" rows use
Qwen2AudioForConditionalGeneration's forward, which runs the encoder on the whole window; "real frames" rows use
that forward with encode_real_frames_only (steps/modeling/encoder_speedups.py) on the encoder, as every loaded
Qwen2-Audio model runs it (SFT, GRPO, evaluate).
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.core.config import TinyModelConfig
from steps.modeling.batches import encode_for_training, encode_prompts, model_inputs
from steps.modeling.encoder_speedups import encode_real_frames_only
from steps.modeling.families import adapter_for, get_submodule
from steps.modeling.generation import GenerationSettings, generate
from steps.modeling.loading import parameter_count
from steps.modeling.tiny import build_tiny
from steps.training.ctc import CharVocab, ctc_loss, encode_audio
from steps.training.pretraining import Tokenised, sallm_batch, sallm_loss
from steps.training.pretraining_clips import Clip, extract_features, pad_features

PROMPT = "Transcribe the audio <|audio|>"
ANSWER = "On Monday Emma takes the big bags in the office."
CORPUS = [PROMPT.replace("<|audio|>", " "), ANSWER, "Am Montag nimmt Emma die großen Taschen im Büro."] * 50


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds over `repeats` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    model, processor = build_tiny(TinyModelConfig(), CORPUS, args.window)
    adapter = adapter_for(model)
    cropped = copy.deepcopy(model)
    encode_real_frames_only(get_submodule(cropped, adapter.encoder))
    audios = [(0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32) for _ in range(args.batch)]
    prompts, answers = [PROMPT] * args.batch, [ANSWER] * args.batch
    rows: list[tuple[str, float, str]] = []

    stock_batch = model_inputs(encode_for_training(processor, adapter, prompts, answers, audios), adapter)
    feats = extract_features(processor, audios)
    clips = [Clip(m, f, ANSWER, "asr", PROMPT, ANSWER) for m, f in feats]
    vocab = CharVocab([ANSWER])
    head = torch.nn.Linear(model.config.audio_config.d_model, len(vocab))
    encoder = model.model.audio_tower
    texts = Tokenised(processor)

    def fast_encode() -> tuple[torch.Tensor, torch.Tensor]:
        padded, frames = pad_features(clips, None, None)
        return encode_audio(encoder, padded, frames)

    def stock_encode() -> None:
        encoder(stock_batch["input_features"])

    model.eval()
    with torch.no_grad():
        rows.append(("encoder forward, stock (whole window)", timed(stock_encode, args.repeats), "s/batch"))
        rows.append(("encoder forward, fast (real frames only)", timed(fast_encode, args.repeats), "s/batch"))
        rows.append(("full forward, stock (whole window)", timed(lambda: model(**stock_batch), args.repeats),
                     "s/batch"))
        rows.append(("full forward, real frames only", timed(lambda: cropped(**stock_batch), args.repeats),
                     "s/batch"))
    model.train()
    cropped.train()
    cropped_opt = torch.optim.AdamW([p for p in cropped.parameters() if p.requires_grad], lr=1e-5)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad] + list(head.parameters()), lr=1e-5)

    def phase1_step() -> None:
        pooled, lengths = fast_encode()
        loss = ctc_loss(head, pooled, lengths, [vocab.encode(ANSWER)] * args.batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def phase2_step() -> None:
        pooled, lengths = fast_encode()
        sides = [texts.get(adapter, PROMPT, ANSWER)] * args.batch
        ids, att, labels = sallm_batch(sides, lengths, model.config.audio_token_id,
                                                processor.tokenizer.pad_token_id)
        loss = sallm_loss(model, pooled, lengths, ids, att, labels)
        loss = loss + 0.3 * ctc_loss(head, pooled, lengths, [vocab.encode(ANSWER)] * args.batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def stock_step() -> None:
        loss = model(**stock_batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    def cropped_step() -> None:
        loss = cropped(**stock_batch).loss
        cropped_opt.zero_grad()
        loss.backward()
        cropped_opt.step()

    rows.append(("train step, phase 1 (encoder + CTC, fast)", timed(phase1_step, args.repeats), "s/step"))
    rows.append(("train step, phase 2 (SALLM + CTC, fast)", timed(phase2_step, args.repeats), "s/step"))
    rows.append(("train step, stock forward (whole window)", timed(stock_step, args.repeats), "s/step"))
    rows.append(("train step, real frames only (SFT/GRPO path)", timed(cropped_step, args.repeats), "s/step"))
    model.eval()
    # Force the full length: a random model may emit EOS at once, which would flatter the numbers.
    model.generation_config.min_new_tokens = args.new_tokens
    for cache in (True, False):
        settings = GenerationSettings(max_new_tokens=args.new_tokens, use_cache=cache)
        seconds = timed(lambda s=settings: generate(model, processor, prompts, audios, s, args.batch),
                        max(1, args.repeats // 2))
        rows.append((f"generate {args.new_tokens} tokens, KV cache {'on' if cache else 'off'}",
                     args.batch * args.new_tokens / seconds, "tokens/s"))
    encode_prompts(processor, adapter, prompts[:1], audios[:1])  # keeps the processor path in the peak
    rows.append(("peak memory (process RSS on CPU, allocated on GPU)", peak_memory_mib(), "MiB"))

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"\ntiny preset: {parameter_count(model) / 1e6:.2f} M parameters, batch {args.batch} x {args.seconds:g} s "
          f"clips, window {args.window} s, {device}\n")
    print("| measurement | value | unit |\n|---|---:|---|")
    for name, value, unit in rows:
        print(f"| {name} | {value:.3f} | {unit} |" if value < 100 else f"| {name} | {value:.0f} | {unit} |")


if __name__ == "__main__":
    main()
