"""Supervised fine-tuning on one task with TRL's SFTTrainer (the paper's baseline), and the equal-compute control
`sft_matched`: SFT continued from models/sft/<task> for as much compute as GRPO measured.

The prompt with its audio goes through the processor, the loss covers the answer (+ EOS) only, padding is on the
right (TRL's multimodal collator handles images only). Validation loss and BLEU every `eval_every` steps; the best
checkpoint on validation BLEU is kept (resuming, saving and registering: steps/training/runner.py).

sft_matched: max_steps = round(GRPO's measured `compute.<sft_matched.compute>` / SFT's figure per optimiser step)
(metrics/{grpo,sft}/<task>.train.json). With `flops` (the default) GRPO's figure is its total estimated FLOPs: loss
passes, rollouts and reference passes (steps/training/flops.py); with `train_tokens` its forward-only passes are
recorded beside it, not matched. Its summary records, under `matched`, the GRPO figures and how max_steps followed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from steps.core.config import Config, SftConfig
from steps.core.paths import RunPaths
from steps.core.tracking import StageRun
from steps.evaluation.metrics import corpus_bleu
from steps.modeling.batches import encode_for_training, model_inputs
from steps.modeling.families import FamilyAdapter, adapter_for
from steps.modeling.generation import GenerationSettings, generate
from steps.training.checkpoints import save_in_model_layout, write_validation_history
from steps.training.flops import compute_figure
from steps.training.runner import (
    NonFiniteGuard,
    StepMetrics,
    TrainerInputs,
    TrainingJob,
    TrainResult,
    compute_meter,
    decoding_name,
    run_training,
    trainer_kwargs,
    validation_settings,
)
from steps.training.selection import selection_score


@dataclass
class AudioSftCollator:
    """Rows -> a right-padded training batch with answer-only labels (steps.modeling.batches.encode_for_training).

    TRL's own multimodal collator handles images only, so the processor is called here on prompt + audio.
    """

    processor: Any
    adapter: FamilyAdapter

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = encode_for_training(self.processor, self.adapter, [r["prompt"] for r in rows],
                                    [r["reference"] for r in rows], [r["audio"] for r in rows],
                                    ids=[r["id"] for r in rows])
        return model_inputs(batch, self.adapter)


class ValidationBleu(TrainerCallback):
    """Validation BLEU, added to the eval metrics before the trainer picks the best checkpoint."""

    def __init__(self, processor: Any, validation: Any, settings: GenerationSettings, batch_size: int, seed: int,
                 history: list[dict[str, float]]) -> None:
        self.processor, self.settings, self.batch_size, self.seed, self.history = (processor, settings, batch_size,
                                                                                    seed, history)
        self.prompts, self.references = list(validation["prompt"]), list(validation["reference"])
        self.audios = list(validation["audio"])

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, metrics: Any = None,
                    **kwargs: Any) -> None:
        # The same seed at every evaluation: checkpoints are compared on the same random stream.
        hyps = generate(model, self.processor, self.prompts, self.audios, self.settings, self.batch_size,
                        seed=self.seed)
        # The trainer reads metric_for_best_model ("selection" -> "eval_selection") from this dict afterwards.
        metrics["eval_bleu"] = corpus_bleu(hyps, self.references)
        # The best checkpoint is the best on BLEU; among equal BLEU (e.g. 0 early on) the lower loss wins.
        metrics["eval_selection"] = selection_score({"eval_bleu": metrics["eval_bleu"],
                                                     "eval_loss": metrics.get("eval_loss", math.nan)})
        self.history.append({"step": state.global_step, "eval_loss": float(metrics.get("eval_loss", math.nan)),
                             "eval_bleu": metrics["eval_bleu"]})
        write_validation_history(Path(args.output_dir), self.history)
        print(f"sft: step {state.global_step}: validation loss {metrics.get('eval_loss', math.nan):.4f}, "
              f"BLEU {metrics['eval_bleu']:.2f} ({decoding_name(self.settings)}, {len(self.prompts)} examples)",
              flush=True)


def make_callbacks(cfg: Config, processor: Any, validation: Any, run: StageRun,
                   history: list[dict[str, float]], settings: SftConfig | None = None,
                   section: str = "sft") -> list[Any]:
    """Validation BLEU, the non-finite guard and per-step MLflow logging (`settings`: the section, default cfg.sft)."""
    s = settings or cfg.sft
    decoding = validation_settings(cfg, s.eval_decoding, s.max_new_tokens)
    return [ValidationBleu(processor, validation, decoding, s.eval_batch_size, cfg.seed, history),
            NonFiniteGuard(section), StepMetrics(run, section, evaluation=True)]


def trainer_args(cfg: Config, work_dir: Path, device: torch.device, settings: SftConfig | None = None) -> SFTConfig:
    """TRL's SFTConfig built from our `sft` section (or `settings`, e.g. sft_matched's), with the knobs every method
    shares (runner.trainer_kwargs)."""
    s = settings or cfg.sft
    return SFTConfig(
        **trainer_kwargs(s, work_dir, device, cfg.seed),
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accumulation,
        num_train_epochs=s.epochs,
        prediction_loss_only=True,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,  # never truncate: that would cut answers (or the audio placeholders) silently
    )


class AudioSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, with checkpoints saved in the model's own parameter names (see save_in_model_layout) and the
    training loss's tokens counted (runner.ComputeMeter).

    TRL's own `num_tokens` log is the same attention-mask sum, but it lives in the logs only and restarts at 0 on
    resume; GRPO's `num_input_tokens_seen` counts per generation batch, not per loss pass. Both trainers count here,
    in the loss, so that the figures mean the same thing.
    """

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        meter = compute_meter(self)
        if meter is not None and model.training:
            meter.add_train(self, inputs["attention_mask"])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        save_in_model_layout(self.model, lambda: super(AudioSFTTrainer, self)._save(output_dir, state_dict))


def run_sft(cfg: Config, task: str, paths: RunPaths, callbacks: list[Any] | None = None, *, method: str = "sft",
            settings: SftConfig | None = None, extra_summary: dict[str, Any] | None = None) -> TrainResult:
    """Fine-tune the method's start model on the task's train split and save the best-on-validation model to
    paths.model(method, task).

    `callbacks` are extra transformers TrainerCallbacks (tests use them to interrupt or poison training). `method`
    and `settings` name the stage and its section (run_sft_matched: sft_matched, with the matched max_steps).
    """
    s = settings or cfg.sft
    work_dir = paths.work(method, task)

    def build(inputs: TrainerInputs) -> AudioSFTTrainer:
        model = inputs.model
        extra = make_callbacks(cfg, inputs.processor, inputs.validation, inputs.run, inputs.history, s, method)
        return AudioSFTTrainer(model=model, args=trainer_args(cfg, work_dir, next(model.parameters()).device, s),
                               train_dataset=inputs.train, eval_dataset=inputs.validation,
                               processing_class=inputs.processor,
                               data_collator=AudioSftCollator(inputs.processor, adapter_for(model)),
                               callbacks=[*extra, *(callbacks or [])])

    job = TrainingJob(cfg, method, task, s, paths.start_model(cfg, method, task), paths.prepared,
                      paths.model(method, task), work_dir, paths.train_summary(method, task),
                      extra_summary=extra_summary or {})
    return run_training(job, build)


# --- sft_matched: SFT continued for GRPO's compute ----------------------------------------------------------------


def measured_compute(path: Path, figure: str, stage: str) -> dict[str, Any]:
    """The `compute` of a training summary (metrics/<method>/<task>.train.json), which must hold `figure`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: sft_matched matches the compute measured there; run the {stage} "
                                f"stage first (`dvc repro {stage}`)")
    compute = json.loads(path.read_text(encoding="utf-8")).get("compute") or {}
    if compute_figure(compute, figure) is None or not compute.get("train_steps"):
        raise ValueError(f"{path} has no measured compute.{figure} (written before the stages measured compute?): "
                         f"rerun the {stage} stage (`dvc repro -f {stage}`)")
    return compute


def matched_steps(cfg: Config, task: str, paths: RunPaths) -> tuple[int, dict[str, Any]]:
    """sft_matched's max_steps, round(GRPO's figure / SFT's figure per step), and the record of how it followed."""
    figure = cfg.sft_matched.compute
    grpo_path, sft_path = paths.train_summary("grpo", task), paths.train_summary("sft", task)
    grpo = measured_compute(grpo_path, figure, f"grpo@{task}")
    sft = measured_compute(sft_path, figure, f"sft@{task}")
    per_step = compute_figure(sft, figure) / sft["train_steps"]
    if per_step <= 0:
        raise ValueError(f"{sft_path}: compute.{figure} is {sft[figure]}: nothing to match a step against")
    steps = max(1, round(compute_figure(grpo, figure) / per_step))
    return steps, {"compute": figure, "grpo": grpo, "grpo_metrics": str(grpo_path), "sft_metrics": str(sft_path),
                   f"sft_{figure}_per_step": round(per_step, 2), "max_steps": steps}


def run_sft_matched(cfg: Config, task: str, paths: RunPaths, callbacks: list[Any] | None = None) -> TrainResult:
    """Continue SFT from models/sft/<task> for the compute GRPO measured (see the module docstring); writes
    metrics/sft_matched/<task>.train.json."""
    steps, matched = matched_steps(cfg, task, paths)
    figure = matched["compute"]
    grpo_figure = compute_figure(matched["grpo"], figure)
    print(f"sft_matched[{task}]: {steps} steps = GRPO's {figure} {grpo_figure:.4g} / SFT's "
          f"{matched[f'sft_{figure}_per_step']:.4g} per step", flush=True)
    settings = matched_settings(cfg, steps, matched)
    return run_sft(cfg, task, paths, callbacks, method="sft_matched", settings=settings,
                   extra_summary={"matched": matched})


def matched_settings(cfg: Config, steps: int, matched: dict[str, Any]) -> SftConfig:
    """sft_matched's section with GRPO's protocol: its learning-rate schedule, its stopping rule and as many
    evaluations over the matched compute as GRPO had over its own (GRPO's train_steps / eval_every), so that neither
    method gets more checkpoints to choose from or a kinder schedule; the learning rate is sft_matched's own.
    What was taken is recorded in `matched`."""
    grpo = cfg.grpo
    evaluations = max(1, matched["grpo"]["train_steps"] // grpo.eval_every)
    eval_every = max(1, round(steps / evaluations))
    settings = dataclasses.replace(cfg.sft_matched, max_steps=steps, eval_every=eval_every,
                                   lr_scheduler=grpo.lr_scheduler, warmup_ratio=grpo.warmup_ratio,
                                   patience=grpo.patience, min_delta=grpo.min_delta,
                                   start_candidate=grpo.start_candidate)
    matched["protocol"] = {"from": "grpo", "lr_scheduler": grpo.lr_scheduler, "warmup_ratio": grpo.warmup_ratio,
                           "patience": grpo.patience, "min_delta": grpo.min_delta, "eval_every": eval_every,
                           "grpo_evaluations": evaluations, "lr": settings.lr}
    return settings
