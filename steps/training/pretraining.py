"""Build the tiny preset and train it into a base that listens (models/base; the pretrain stage).

With `model.name_or_path: tiny`: build tokenizer + processor + random Qwen2-Audio-architecture model from the
prepared data, then phase 1 (`pretrain.ctc`, ctc.py): the audio encoder alone, CTC over characters on its pooled
output; phase 2 (`pretrain.sallm`): the whole SALLM, answer-only LM loss on an ASR/AST mix + `ctc_weight` x CTC.
Why two phases: a random-initialised SALLM trained on the LM loss alone learns the text prior and ignores the audio
(measured: WER 86-103%). Training runs the encoder on each batch's real frames only (pretraining_clips.py; equal to
the stock forward, tested). A real checkpoint is not trained: models/base gets a pointer file (id + revision).

Outputs: models/base, metrics/base/pretrain.json (WER/BLEU with real and swapped audio on held-out test voices),
metrics/base/learning_curve.csv; the MLflow run "pretrain" (the curve as `curve/<score>` by step).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from steps.core.config import RESOLVED_CONFIG_NAME, Config, ModelConfig, PretrainConfig, to_dict
from steps.core.io import atomic_dir, atomic_write_text, write_json, write_yaml
from steps.core.paths import RunPaths
from steps.core.tracking import StageRun, stage_run
from steps.data.splits import load_split
from steps.evaluation.listening import score_listening
from steps.evaluation.metrics import task_score
from steps.modeling.batches import IGNORE_INDEX, chat_prompt
from steps.modeling.families import adapter_for
from steps.modeling.generation import GenerationSettings, generate
from steps.modeling.loading import POINTER_FILE, TINY_PRESET, parameter_count, torch_threads
from steps.modeling.tiny import build_tiny, save, window_seconds_for
from steps.training.ctc import CharVocab, ctc_loss, ctc_wer, encode_audio
from steps.training.pretraining_clips import (
    Clip,
    corpus_texts,
    length_sorted_batches,
    load_clips,
    longest_clip_seconds,
    pad_features,
    phase2_items,
)

log = logging.getLogger(__name__)
CURVE_FIELDS = ("train_loss", "train_ctc", "ctc_wer", "wer", "bleu")


# --- phase 2's forward: the stock modules on pre-encoded audio --------------------------------------------------------


@dataclass
class TextSide:
    """Token ids around the audio for one (clip, task) pair."""

    before: list[int]
    after: list[int]
    answer: list[int]


class Tokenised:
    """Caches the chat-formatted prompt and answer token ids per (prompt, answer)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tok = processor.tokenizer
        self.adapter_cache: dict[tuple[str, str], TextSide] = {}
        self.audio_token = processor.audio_token

    def get(self, adapter: Any, prompt: str, answer: str) -> TextSide:
        key = (prompt, answer)
        if key not in self.adapter_cache:
            text = chat_prompt(self.processor, adapter, prompt)
            before, after = text.split(self.audio_token)
            ids = lambda s: self.tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
            self.adapter_cache[key] = TextSide(ids(before), ids(after), [*ids(answer), self.tok.eos_token_id])
        return self.adapter_cache[key]


def sallm_batch(sides: Sequence[TextSide], n_audio: torch.Tensor, audio_id: int, pad_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids with n audio tokens per example, attention mask, answer-only labels."""
    rows, labels = [], []
    for side, n in zip(sides, n_audio.tolist(), strict=True):
        prompt = side.before + [audio_id] * n + side.after
        rows.append(prompt + side.answer)
        labels.append([IGNORE_INDEX] * len(prompt) + side.answer)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lb)] = torch.tensor(lb)
        att[i, : len(r)] = 1
    return ids, att, lab


def sallm_loss(model: nn.Module, pooled: torch.Tensor, n_audio: torch.Tensor, ids: torch.Tensor, att: torch.Tensor,
               labels: torch.Tensor) -> torch.Tensor:
    """Answer-only LM loss of the stock Qwen2-Audio modules on pre-encoded audio."""
    inner = model.model
    audio = inner.multi_modal_projector(pooled)
    keep = torch.arange(audio.shape[1])[None, :] < n_audio[:, None]
    embeds = inner.get_input_embeddings()(ids)
    audio_mask = (ids == model.config.audio_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(audio_mask, audio[keep].to(embeds.dtype))
    hidden = inner.language_model(inputs_embeds=embeds, attention_mask=att).last_hidden_state
    logits = model.lm_head(hidden[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


# --- evaluation -------------------------------------------------------------------------------------------------------


@dataclass
class HeldOut:
    """The curve's held-out subset: ASR and AST examples from the test voices."""

    asr: Any
    ast: Any


def held_out_sets(test: Any, n: int) -> HeldOut:
    asr = test.filter(lambda t: t == "asr", input_columns="task")
    ast = test.filter(lambda t: t == "ast", input_columns="task")
    return HeldOut(asr.select(range(min(n, len(asr)))), ast.select(range(min(n, len(ast)))))


def curve_scores(model: nn.Module, processor: Any, held: HeldOut, cfg: PretrainConfig) -> dict[str, float]:
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens)
    out = {}
    for task, ds in (("asr", held.asr), ("ast", held.ast)):
        if len(ds):
            hyps = generate(model, processor, list(ds["prompt"]), list(ds["audio"]), settings, cfg.eval_batch_size)
            out["wer" if task == "asr" else "bleu"] = task_score(task, hyps, list(ds["reference"]))
    return out


# --- the stage --------------------------------------------------------------------------------------------------------


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to 10% at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Clock:
    """Wall time spent training (evaluation excluded), in minutes."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._since: float | None = None

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> None:
        if self._since is not None:
            self.spent += time.perf_counter() - self._since
            self._since = None

    @property
    def minutes(self) -> float:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return (self.spent + running) / 60


class LearningCurve:
    """Held-out scores during pretraining: into the stage's MLflow run as they come (`curve/<name>` by step, so the
    final scores keep the plain names) and, at the end, into the CSV a DVC plot reads."""

    def __init__(self, run: StageRun, csv_path: Path, fields: tuple[str, ...] = CURVE_FIELDS) -> None:
        self.run, self.csv_path = run, csv_path
        self.fields = ("phase", "step", "minutes", *fields)
        self.rows: list[dict[str, Any]] = []

    def add(self, phase: str, step: int, minutes: float, **metrics: float | None) -> None:
        self.rows.append({"phase": phase, "step": step, "minutes": round(minutes, 3), **metrics})
        logged = {f"curve/{key}": value for key, value in metrics.items() if value is not None}
        self.run.log_metrics({**logged, "curve/minutes": minutes}, step=step)

    def write_csv(self) -> Path:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.fields), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.fields})
        return atomic_write_text(self.csv_path, buffer.getvalue())


def optimiser_step(opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor, params: list[nn.Parameter],
                   grad_clip: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()


def run_phase(name: str, steps: int, eval_every: int, clock: Clock, train_step: Callable[[], dict[str, float]],
              checkpoint: Callable[[int, dict[str, float]], str]) -> None:
    """`steps` optimiser steps of one phase; every `eval_every` steps and at the end, `checkpoint` (not timed)."""
    clock.start()
    bar = tqdm(range(steps), desc=name, unit="step")
    for step in bar:
        losses = train_step()
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if v is not None})
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            clock.stop()
            bar.write(checkpoint(step + 1, losses) + f" at {clock.minutes:.1f} min")
            clock.start()
    clock.stop()


@dataclass
class Pretraining:
    """The state both phases share: the model, its data and what measures it."""

    cfg: Config
    model: Any
    processor: Any
    clips: list[Clip]
    held: HeldOut
    held_clips: list[Clip]
    vocab: CharVocab
    head: nn.Module  # the CTC head on the encoder's pooled output (discarded after pretraining)
    rng: np.random.Generator
    curve: LearningCurve
    clock: Clock

    @property
    def encoder(self) -> nn.Module:
        return self.model.model.audio_tower


def train_encoder_ctc(p: Pretraining) -> None:
    """Phase 1: the encoder alone, CTC on its pooled output."""
    pcfg, encoder, clips = p.cfg.pretrain, p.encoder, p.clips
    params = [q for q in encoder.parameters() if q.requires_grad] + list(p.head.parameters())
    opt = torch.optim.AdamW(params, lr=pcfg.ctc.lr, weight_decay=pcfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(pcfg.ctc.warmup_steps, pcfg.ctc.steps))
    batches = length_sorted_batches([c.frames for c in clips], pcfg.ctc.batch_size, p.rng)
    targets = [p.vocab.encode(c.transcript) for c in clips]

    def train_step() -> dict[str, float]:
        idx = next(batches)
        feats, frames = pad_features([clips[i] for i in idx], pcfg.spec_augment, p.rng)
        pooled, lengths = encode_audio(encoder, feats, frames)
        loss = ctc_loss(p.head, pooled, lengths, [targets[i] for i in idx])
        optimiser_step(opt, sched, loss, params, pcfg.grad_clip)
        return {"ctc": loss.item()}

    def checkpoint(step: int, losses: dict[str, float]) -> str:
        encoder.eval()
        p.curve.add("ctc", step, p.clock.minutes, train_ctc=losses["ctc"],
                    ctc_wer=ctc_wer(encoder, p.head, p.vocab, p.held_clips))
        encoder.train()
        return f"phase 1 step {step}: ctc {losses['ctc']:.3f}, held-out CTC WER {p.curve.rows[-1]['ctc_wer']:.1f}%"

    run_phase("pretrain phase 1 (encoder, CTC)", pcfg.ctc.steps, pcfg.eval_every, p.clock, train_step, checkpoint)


def train_sallm(p: Pretraining) -> None:
    """Phase 2: the whole SALLM, answer-only LM loss on an ASR/AST mix plus the CTC loss as an auxiliary."""
    pcfg, encoder, clips, model, rng = p.cfg.pretrain, p.encoder, p.clips, p.model, p.rng
    scfg = pcfg.sallm
    enc_group = [q for q in encoder.parameters() if q.requires_grad] + list(p.head.parameters())
    enc_ids = {id(q) for q in enc_group}
    rest = [q for q in model.parameters() if q.requires_grad and id(q) not in enc_ids]
    opt = torch.optim.AdamW([{"params": enc_group, "lr": scfg.encoder_lr}, {"params": rest, "lr": scfg.llm_lr}],
                            weight_decay=pcfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(scfg.warmup_steps, scfg.steps))
    items = phase2_items(clips, scfg.asr_fraction)
    batches = length_sorted_batches([clips[it.clip].frames for it in items], scfg.batch_size, rng)
    texts = Tokenised(p.processor)
    adapter = adapter_for(model)
    prompts_by_task = {t: sorted({c.prompt for c in clips if c.task == t}) for t in ("asr", "ast")}
    if not prompts_by_task["asr"]:
        raise ValueError("the pretrain pool has no asr examples: cannot teach transcription")
    audio_id, pad_id = model.config.audio_token_id, p.processor.tokenizer.pad_token_id
    params = enc_group + rest

    def train_step() -> dict[str, float]:
        chosen = [items[i] for i in next(batches)]
        batch_clips = [clips[it.clip] for it in chosen]
        sides = []
        for it, clip in zip(chosen, batch_clips, strict=True):
            if it.task == "asr":
                # AST clips used for ASR borrow an ASR prompt; the choice is seeded.
                prompt = clip.prompt if clip.task == "asr" else prompts_by_task["asr"][
                    int(rng.integers(len(prompts_by_task["asr"])))]
                sides.append(texts.get(adapter, prompt, clip.transcript))
            else:
                sides.append(texts.get(adapter, clip.prompt, clip.translation))
        feats, frames = pad_features(batch_clips, pcfg.spec_augment, rng)
        pooled, lengths = encode_audio(encoder, feats, frames)
        ids, att, labels = sallm_batch(sides, lengths, audio_id, pad_id)
        lm = sallm_loss(model, pooled, lengths, ids, att, labels)
        loss, aux = lm, None
        if scfg.ctc_weight > 0:
            aux = ctc_loss(p.head, pooled, lengths, [p.vocab.encode(c.transcript) for c in batch_clips])
            loss = lm + scfg.ctc_weight * aux
        optimiser_step(opt, sched, loss, params, pcfg.grad_clip)
        return {"lm": lm.item(), "ctc": None if aux is None else aux.item()}

    def checkpoint(step: int, losses: dict[str, float]) -> str:
        scores = curve_scores(model, p.processor, p.held, pcfg)
        encoder.eval()
        scores["ctc_wer"] = ctc_wer(encoder, p.head, p.vocab, p.held_clips)
        model.train()
        p.curve.add("sallm", pcfg.ctc.steps + step, p.clock.minutes, train_loss=losses["lm"], train_ctc=losses["ctc"],
                    **scores)
        return (f"phase 2 step {step}: lm {losses['lm']:.3f}, held-out "
                + ", ".join(f"{k} {v:.1f}" for k, v in scores.items()))

    run_phase("pretrain phase 2 (SALLM)", scfg.steps, pcfg.eval_every, p.clock, train_step, checkpoint)


def listening_check(model: Any, processor: Any, test: Any, cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """WER (ASR) and BLEU (AST) on every held-out test example, with the real and with swapped audio; samples."""
    pcfg = cfg.pretrain
    settings = GenerationSettings(max_new_tokens=pcfg.max_new_tokens)
    full = held_out_sets(test, len(test))
    metrics: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    for task, ds in (("asr", full.asr), ("ast", full.ast)):
        if len(ds):
            result = score_listening(model, processor, ds, task, settings, pcfg.eval_batch_size, seed=cfg.seed)
            metric = "wer" if task == "asr" else "bleu"
            metrics[metric] = round(result[metric], 2)
            metrics[f"{metric}_swapped"] = round(result[f"{metric}_swapped"], 2)
            metrics[f"n_{task}"] = result["n"]
            samples[task] = [{"reference": r, "hypothesis": h, "hypothesis_swapped": s} for r, h, s in
                             zip(ds["reference"][:8], result["hypotheses"][:8], result["hypotheses_swapped"][:8],
                                 strict=True)]
    return metrics, samples


def run_pretrain(cfg: Config, paths: RunPaths) -> Path:
    """Build and pretrain the tiny preset (or pass a real checkpoint on); returns the base model's folder."""
    data_dir, model_dir, metrics_dir = paths.prepared, paths.base_model, paths.metrics_of("base")
    if cfg.model.name_or_path != TINY_PRESET:
        return pass_checkpoint_on(cfg, model_dir, metrics_dir)
    pcfg = cfg.pretrain
    with torch_threads(pcfg.threads):
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        stage_start = time.perf_counter()
        window = cfg.model.tiny.window_seconds or window_seconds_for(longest_clip_seconds(data_dir))
        model, processor = build_tiny(cfg.model.tiny, corpus_texts(data_dir), window, seed=cfg.seed)
        train = load_split(data_dir, "pretrain", "train")
        test = load_split(data_dir, "pretrain", "test")
        clips = load_clips(train, processor)
        held = held_out_sets(test, pcfg.curve_examples)
        held_clips = load_clips(held.asr, processor)
        vocab = CharVocab([c.transcript for c in clips])
        print(f"pretrain: window {window} s, {len(clips)} training clips, {len(test)} test clips, "
              f"{parameter_count(model) / 1e6:.2f} M parameters, CTC alphabet {len(vocab) - 1} chars; "
              f"setup {time.perf_counter() - stage_start:.0f} s")
        head = nn.Linear(model.model.audio_tower.config.d_model, len(vocab))
        with stage_run(cfg, stage="pretrain", method="base") as run:
            p = Pretraining(cfg, model, processor, clips, held, held_clips, vocab, head, rng,
                            LearningCurve(run, metrics_dir / "learning_curve.csv"), Clock())
            model.train()
            train_encoder_ctc(p)
            train_sallm(p)
            model.eval()
            scores, samples = listening_check(model, processor, test, cfg)
            metrics: dict[str, Any] = {"train_minutes": round(p.clock.minutes, 2), "window_seconds": window,
                                       "parameters": parameter_count(model), **scores,
                                       "stage_minutes": round((time.perf_counter() - stage_start) / 60, 2)}
            with atomic_dir(model_dir) as tmp:
                save(model, processor, tmp)
                write_yaml(tmp / RESOLVED_CONFIG_NAME, to_dict(cfg))
            metrics_dir.mkdir(parents=True, exist_ok=True)
            write_json(metrics_dir / "pretrain.json", metrics)
            write_json(metrics_dir / "samples.json", samples)
            write_yaml(metrics_dir / RESOLVED_CONFIG_NAME, to_dict(cfg))
            p.curve.write_csv()
            run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
            run.log_artifact(metrics_dir / "learning_curve.csv")
            run.log_artifact(metrics_dir / "samples.json")
            print("pretrain: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    return model_dir


def pass_checkpoint_on(cfg: Config, model_dir: Path, metrics_dir: Path) -> Path:
    """A real checkpoint is not pretrained here: models/base points at it (id + revision)."""
    model_cfg: ModelConfig = cfg.model
    if model_cfg.revision is None and not Path(model_cfg.name_or_path).exists():
        log.warning("model.revision is not set: the base model %s is not pinned to a commit", model_cfg.name_or_path)
    pointer = {"name_or_path": model_cfg.name_or_path, "revision": model_cfg.revision,
               "trust_remote_code": model_cfg.trust_remote_code}
    with atomic_dir(model_dir) as tmp:
        write_json(tmp / POINTER_FILE, pointer)
        write_yaml(tmp / RESOLVED_CONFIG_NAME, to_dict(cfg))
    write_json(metrics_dir / "pretrain.json", {"pretrained": False, "base": model_cfg.name_or_path,
                                               "revision": model_cfg.revision})
    atomic_write_text(metrics_dir / "learning_curve.csv", "phase,step,minutes," + ",".join(CURVE_FIELDS) + "\n")
    print(f"pretrain: real checkpoint {model_cfg.name_or_path} passed on as {model_dir}/{POINTER_FILE}")
    return model_dir
