"""Supervised fine-tuning of the base SALLM on one task (the paper's baseline), with TRL's SFTTrainer.

Starts from models/base (the pretrain stage's model, or its pointer to a real checkpoint) and trains on
data/prepared/<task>/train: the prompt with its audio goes through the processor, the loss covers the answer (+ EOS)
only, padding is on the right. LoRA or full fine-tuning and the freeze switches come from `model` in params.yaml
(steps.modeling.loading.apply_finetune_switches); optimiser settings from `sft`.

Every `sft.eval_every` steps: validation loss and BLEU (`sft.eval_decoding`) on a fixed validation subset (the first
`sft.eval_examples` examples); the checkpoint kept is the best on validation BLEU (as in the paper). Resuming,
saving and registration are the shared skeleton's (steps/training/runner.py); the model is registered in MLflow as
`speech-grpo-<task>-sft`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from steps.core.config import Config
from steps.core.tracking import StageRun
from steps.evaluation.metrics import corpus_bleu
from steps.modeling.batches import encode_for_training, model_inputs
from steps.modeling.families import FamilyAdapter, adapter_for
from steps.modeling.generation import GenerationSettings, generate
from steps.training.checkpoints import save_in_model_layout, write_validation_history
from steps.training.runner import (
    NonFiniteGuard,
    StepMetrics,
    TrainerInputs,
    TrainingJob,
    TrainResult,
    decoding_name,
    run_training,
    trainer_kwargs,
    validation_settings,
)

# BLEU has 2 meaningful decimals; 1e-4 x loss only breaks ties between equal BLEU.
SELECTION_LOSS_WEIGHT = 1e-4


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
        metrics["eval_selection"] = metrics["eval_bleu"] - SELECTION_LOSS_WEIGHT * metrics.get("eval_loss", 0.0)
        self.history.append({"step": state.global_step, "eval_loss": float(metrics.get("eval_loss", math.nan)),
                             "eval_bleu": metrics["eval_bleu"]})
        write_validation_history(Path(args.output_dir), self.history)
        print(f"sft: step {state.global_step}: validation loss {metrics.get('eval_loss', math.nan):.4f}, "
              f"BLEU {metrics['eval_bleu']:.2f} ({decoding_name(self.settings)}, {len(self.prompts)} examples)",
              flush=True)


def make_callbacks(cfg: Config, processor: Any, validation: Any, run: StageRun,
                   history: list[dict[str, float]]) -> list[Any]:
    """Validation BLEU, the non-finite guard and per-step MLflow logging."""
    s = cfg.sft
    settings = validation_settings(cfg, s.eval_decoding, s.max_new_tokens)
    return [ValidationBleu(processor, validation, settings, s.eval_batch_size, cfg.seed, history),
            NonFiniteGuard("sft"), StepMetrics(run, "sft", evaluation=True)]


def trainer_args(cfg: Config, work_dir: Path, device: torch.device) -> SFTConfig:
    """TRL's SFTConfig built from our `sft` section (with the knobs every method shares, runner.trainer_kwargs)."""
    s = cfg.sft
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
    """TRL's SFTTrainer, with checkpoints saved in the model's own parameter names (see save_in_model_layout)."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        save_in_model_layout(self.model, lambda: super(AudioSFTTrainer, self)._save(output_dir, state_dict))


def run_sft(cfg: Config, task: str, base_dir: Path, data_dir: Path, out_dir: Path, work_dir: Path,
            metrics_path: Path | None = None, callbacks: list[Any] | None = None) -> TrainResult:
    """Fine-tune `base_dir` on data_dir/<task>/train and save the best-on-validation model to `out_dir`.

    `callbacks` are extra transformers TrainerCallbacks (tests use them to interrupt or poison training).
    """
    def build(inputs: TrainerInputs) -> AudioSFTTrainer:
        model = inputs.model
        extra = make_callbacks(cfg, inputs.processor, inputs.validation, inputs.run, inputs.history)
        return AudioSFTTrainer(model=model, args=trainer_args(cfg, work_dir, next(model.parameters()).device),
                               train_dataset=inputs.train, eval_dataset=inputs.validation,
                               processing_class=inputs.processor,
                               data_collator=AudioSftCollator(inputs.processor, adapter_for(model)),
                               callbacks=[*extra, *(callbacks or [])])

    job = TrainingJob(cfg, "sft", task, cfg.sft, base_dir, data_dir, out_dir, work_dir, metrics_path)
    return run_training(job, build)
