"""The sft stage: supervised fine-tuning of the base SALLM on one task (the paper's baseline), with TRL's SFTTrainer.

    python -m steps.sft --task sqa [--params params.yaml] [-S sft.max_steps=200 -S sft.lr=5e-4 ...]

Starts from models/base (the pretrain stage's model, or its pointer to a real checkpoint) and trains on
data/prepared/<task>/train: the prompt with its audio goes through the processor, the loss covers the answer (+ EOS)
only, padding is on the right. LoRA or full fine-tuning and the freeze switches come from `model` in params.yaml
(steps.model.apply_finetune_switches); optimiser settings from `sft`.

Every `sft.eval_every` steps: validation loss and BLEU (`sft.eval_decoding`) on a fixed validation subset (the first
`sft.eval_examples` examples); the checkpoint kept is the best on validation BLEU (as in the paper). Checkpoints live
in models/.work/sft/<task>: an interrupted run resumes from the last one (only when the config that made it is the
same; otherwise it starts afresh). A non-finite loss or gradient stops the run with `NonFiniteLossError` before the
optimiser step, so the checkpoints on disk stay good. Per-step metrics go to MLflow (steps/tracking.py), and the saved
model is registered there as `speech-grpo-<task>-sft` (steps/registry.py).

Outputs: models/sft/<task> (safetensors model + processor + resolved params; LoRA merged in), written atomically;
metrics/sft/<task>.train.json (best step, validation history, minutes, step resumed from).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steps.config import RESOLVED_CONFIG_NAME, Config, config_from_args, stage_parser, to_dict
from steps.io import atomic_dir, write_json, write_yaml
from steps.model import (
    FamilyAdapter,
    GenerationSettings,
    adapter_for,
    apply_finetune_switches,
    choose_device,
    encode_for_training,
    generate,
    load_model_and_processor,
    model_inputs,
    parameter_count,
    torch_threads,
)
from steps.prepare import load_split

TASKS = ("sqa", "ast")
FINGERPRINT_FILE = "fingerprint.json"
# BLEU has 2 meaningful decimals; 1e-4 x loss only breaks ties between equal BLEU.
SELECTION_LOSS_WEIGHT = 1e-4
HISTORY_FILE = "validation_history.json"


class NonFiniteLossError(RuntimeError):
    """The training loss or gradient became NaN or infinite; training stopped before the optimiser step."""


# --------------------------------------------------------------------------------------------------- data




def training_view(dataset: Any, limit: int | None = None) -> Any:
    """Only the columns training reads; audio as numpy (a Python list of floats per clip is slow to convert)."""
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    dataset = dataset.select_columns(["id", "prompt", "reference", "audio"])
    return dataset.with_format("numpy", columns=["audio"], output_all_columns=True)


@dataclass
class AudioSftCollator:
    """Rows -> a right-padded training batch with answer-only labels (steps.model.encode_for_training).

    TRL's own multimodal collator handles images only, so the processor is called here on prompt + audio.
    """

    processor: Any
    adapter: FamilyAdapter

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = encode_for_training(self.processor, self.adapter, [r["prompt"] for r in rows],
                                    [r["reference"] for r in rows], [r["audio"] for r in rows],
                                    ids=[r["id"] for r in rows])
        return model_inputs(batch, self.adapter)


# --------------------------------------------------------------------------------------------------- callbacks


def validation_settings(cfg: Config, decoding: str, max_new_tokens: int) -> GenerationSettings:
    """How validation decodes: `sampled` is the evaluation's decoding (the paper reports top-p 0.9, T 0.9), so the
    checkpoint kept is the best on the number the report shows; `greedy` is the mode."""
    if decoding == "greedy":
        return GenerationSettings(max_new_tokens=max_new_tokens)
    return GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True, temperature=cfg.evaluate.temperature,
                              top_p=cfg.evaluate.top_p)


def decoding_name(settings: GenerationSettings) -> str:
    return f"sampled T {settings.temperature} top-p {settings.top_p}" if settings.do_sample else "greedy"


def make_callbacks(processor: Any, validation: Any, settings: GenerationSettings, batch_size: int, seed: int,
                   run: Any, history: list[dict[str, float]]) -> list[Any]:
    """Validation BLEU (added to the eval metrics before the trainer picks the best checkpoint), the non-finite
    guard, and per-step MLflow logging. Built here so transformers is imported only when a stage runs."""
    from transformers import TrainerCallback

    from steps.listening import corpus_bleu

    prompts, references = list(validation["prompt"]), list(validation["reference"])
    audios = list(validation["audio"])

    class ValidationBleu(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, metrics: Any = None,
                        **kwargs: Any) -> None:
            # The same seed at every evaluation: checkpoints are compared on the same random stream.
            hyps = generate(model, processor, prompts, audios, settings, batch_size, seed=seed)
            # The trainer reads metric_for_best_model ("selection" -> "eval_selection") from this dict afterwards.
            metrics["eval_bleu"] = corpus_bleu(hyps, references)
            # The best checkpoint is the best on BLEU; among equal BLEU (e.g. 0 early on) the lower loss wins.
            metrics["eval_selection"] = metrics["eval_bleu"] - SELECTION_LOSS_WEIGHT * metrics.get("eval_loss", 0.0)
            history.append({"step": state.global_step, "eval_loss": float(metrics.get("eval_loss", math.nan)),
                            "eval_bleu": metrics["eval_bleu"]})
            write_validation_history(Path(args.output_dir), history)
            print(f"sft: step {state.global_step}: validation loss {metrics.get('eval_loss', math.nan):.4f}, "
                  f"BLEU {metrics['eval_bleu']:.2f} ({decoding_name(settings)}, {len(prompts)} examples)", flush=True)

    class NonFiniteGuard(TrainerCallback):
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                                  **kwargs: Any) -> None:
            check_finite_gradients(model, state.global_step + 1, args.output_dir)

    class StepMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float) and k != "epoch"}
            if "loss" in numbers and not math.isfinite(numbers["loss"]):
                raise NonFiniteLossError(non_finite_message("loss", state.global_step, args.output_dir))
            run.log_metrics(numbers, step=state.global_step)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            run.log_metrics({k: v for k, v in (metrics or {}).items() if isinstance(v, int | float)},
                            step=state.global_step)

    return [ValidationBleu(), NonFiniteGuard(), StepMetrics()]


def check_finite_gradients(model: torch.nn.Module, step: int, work_dir: str | Path, section: str = "sft") -> None:
    """Raise NonFiniteLossError if any gradient is NaN/inf (a NaN loss makes every gradient NaN).

    Called before the optimiser step, so the weights, and every checkpoint saved so far, are still good.
    """
    sums = [p.grad.detach().float().sum() for p in model.parameters() if p.grad is not None]
    if sums and not torch.isfinite(torch.stack(sums).sum()):
        raise NonFiniteLossError(non_finite_message("loss/gradient", step, work_dir, section))


def non_finite_message(what: str, step: int, work_dir: str | Path, section: str = "sft") -> str:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(work_dir)) if Path(work_dir).is_dir() else None
    kept = f"the last good checkpoint is kept at {last}" if last else "no checkpoint had been saved yet"
    return (f"non-finite {what} (NaN or inf) at training step {step}: training stopped before the optimiser step; "
            f"{kept}. Lower {section}.lr, raise {section}.warmup_ratio or check the data; a rerun with the same "
            "params resumes from that checkpoint")


# --------------------------------------------------------------------------------------------------- trainer


def fingerprint(cfg: Config, task: str, base_dir: Path) -> dict[str, Any]:
    """What a checkpoint depends on: resuming is only valid when all of it is unchanged."""
    weights = sorted(base_dir.glob("*.safetensors")) + sorted(base_dir.glob("*.json"))
    base_files = {p.name: p.stat().st_size for p in weights}
    data = {"task": task, "seed": cfg.seed, "sft": to_dict(cfg.sft), "model": to_dict(cfg.model),
            "base": str(base_dir.resolve()), "base_files": base_files}
    data["sha256"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return data


def prepare_work_dir(work_dir: Path, fp: dict[str, Any], label: str = "sft") -> str | None:
    """The checkpoint to resume from, or None; stale checkpoints (another config) are deleted, loudly."""
    from transformers.trainer_utils import get_last_checkpoint

    marker = work_dir / FINGERPRINT_FILE
    if work_dir.is_dir():
        old = json.loads(marker.read_text()).get("sha256") if marker.is_file() else None
        if old == fp["sha256"]:
            return get_last_checkpoint(str(work_dir))
        print(f"{label}: {work_dir} holds checkpoints of another config; starting afresh", flush=True)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json(marker, fp)
    return None


def write_validation_history(work_dir: Path, history: list[dict[str, float]]) -> None:
    """Validation results so far, beside the checkpoints: they survive an interruption, for the summary."""
    write_json(work_dir / HISTORY_FILE, history)


def resumed_history(work_dir: Path, resume: str | None) -> list[dict[str, float]]:
    """Validation results up to the checkpoint we resume from (later ones belong to the lost steps)."""
    path = work_dir / HISTORY_FILE
    if resume is None or not path.is_file():
        return []
    step = checkpoint_step(resume)
    return [h for h in json.loads(path.read_text()) if h["step"] <= step]


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimiser step of a Trainer checkpoint folder (`checkpoint-<step>`)."""
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def trainer_args(cfg: Config, work_dir: Path, device: torch.device) -> Any:
    """TRL's SFTConfig built from our `sft` section (the only place TRL/HF training knobs are set)."""
    from trl import SFTConfig

    s = cfg.sft
    on_cpu = device.type == "cpu"
    return SFTConfig(
        output_dir=str(work_dir),
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size,
        gradient_accumulation_steps=s.grad_accumulation,
        learning_rate=s.lr,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_ratio,  # a float in [0, 1) is a fraction of the total steps in transformers 5
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        logging_steps=s.logging_steps,
        logging_nan_inf_filter=False,  # the default hides a NaN loss behind the running mean
        eval_strategy="steps",
        eval_steps=s.eval_every,
        save_strategy="steps",
        save_steps=s.eval_every,
        save_total_limit=s.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="selection",  # eval_selection: BLEU, ties broken by loss
        greater_is_better=True,
        prediction_loss_only=True,
        report_to="none",  # our StepMetrics callback logs into the stage's MLflow run instead
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        gradient_checkpointing=False,  # TRL's SFTConfig turns it on by default: pure recompute cost on small models
        max_length=None,  # never truncate: that would cut answers (or the audio placeholders) silently
        use_cpu=on_cpu,
        bf16=not on_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def audio_sft_trainer_class() -> type:
    """TRL's SFTTrainer, with checkpoints saved in the model's own parameter names.

    transformers 5.23 saves a checkpoint with its keys reverted to the family's original layout (Qwen2-Audio:
    `language_model.model.*`) but loads it back for resuming and for the best model with a plain `load_state_dict`,
    which then matches no key and only warns: resumed training and "best" models silently keep the current weights.
    Saving checkpoints in the in-memory layout makes both loads exact. Final models are saved in the original layout.
    """
    from trl import SFTTrainer

    class AudioSFTTrainer(SFTTrainer):
        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            save_in_model_layout(self.model, lambda: super(AudioSFTTrainer, self)._save(output_dir, state_dict))

    return AudioSFTTrainer


def save_in_model_layout(model: Any, save: Callable[[], None]) -> None:
    """Run a Trainer's `_save` with `save_pretrained` writing the model's own key names (see the trainer above)."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):  # peft saves adapters under its own names: nothing to fix
        save()
        return
    model.save_pretrained = functools.partial(type(model).save_pretrained, model, save_original_format=False)
    try:
        save()
    finally:
        del model.save_pretrained  # back to the class's method


@dataclass
class TrainResult:
    """What a training stage (sft, grpo, mpgrpo) reports: where the model went and how training went."""

    model_dir: Path
    resumed_from_step: int
    global_step: int
    best_step: int | None
    best_bleu: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    train_minutes: float = 0.0
    trainable_parameters: int = 0


SftResult = TrainResult  # the name the sft stage and its tests use


def run_sft(cfg: Config, task: str, base_dir: Path, data_dir: Path, out_dir: Path, work_dir: Path,
            metrics_path: Path | None = None, callbacks: list[Any] | None = None) -> SftResult:
    """Fine-tune `base_dir` on data_dir/<task>/train and save the best-on-validation model to `out_dir`.

    `callbacks` are extra transformers TrainerCallbacks (tests use them to interrupt or poison training).
    """
    from steps.registry import register_model
    from steps.tracking import stage_run

    s = cfg.sft
    torch.manual_seed(cfg.seed)
    train = training_view(load_split(data_dir, task, "train"), s.train_limit)
    validation = training_view(load_split(data_dir, task, "validation"), s.eval_examples)
    fp = fingerprint(cfg, task, base_dir)
    resume = prepare_work_dir(work_dir, fp)
    history = resumed_history(work_dir, resume)
    with torch_threads(s.threads), stage_run(cfg, stage="sft", task=task, method="sft") as run:
        device = choose_device(cfg.model.device)
        model, processor = load_model_and_processor(base_dir, cfg.model, device=device)
        model = apply_finetune_switches(model, cfg.model)
        adapter = adapter_for(model)
        trainable = parameter_count(model, trainable_only=True)
        settings = validation_settings(cfg, s.eval_decoding, s.max_new_tokens)
        extra = make_callbacks(processor, validation, settings, s.eval_batch_size, cfg.seed, run, history)
        trainer_class = audio_sft_trainer_class()
        trainer = trainer_class(model=model, args=trainer_args(cfg, work_dir, device), train_dataset=train,
                                eval_dataset=validation, processing_class=processor,
                                data_collator=AudioSftCollator(processor, adapter),
                                callbacks=[*extra, *(callbacks or [])])
        resumed_from = checkpoint_step(resume) if resume else 0
        print(f"sft[{task}]: {len(train)} training examples, {len(validation)} validation, "
              f"{trainable / 1e6:.2f} M trainable parameters ({cfg.model.finetune}); "
              + (f"resuming from {resume} (step {resumed_from})" if resume else "starting from models/base"),
              flush=True)
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        minutes = (time.perf_counter() - start) / 60
        state = trainer.state
        best_step = checkpoint_step(state.best_model_checkpoint) if state.best_model_checkpoint else None
        # load_best_model_at_end has put the best checkpoint's weights into trainer.model.
        final = trainer.model
        if hasattr(final, "merge_and_unload"):  # LoRA: a plain model that every later stage loads the same way
            final = final.merge_and_unload()
        with atomic_dir(out_dir) as tmp:
            final.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            write_yaml(tmp / RESOLVED_CONFIG_NAME, to_dict(cfg))
        result = SftResult(model_dir=out_dir, resumed_from_step=resumed_from, global_step=state.global_step,
                           best_step=best_step, best_bleu=best_bleu(history, best_step), history=history,
                           train_minutes=round(minutes, 2), trainable_parameters=trainable)
        summary = summary_dict(result, task, len(train))
        if metrics_path is not None:
            write_json(metrics_path, summary)
            run.log_artifact(metrics_path)
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float) and v is not None})
        register_model(run, out_dir, task, "sft")  # MLflow model registry: speech-grpo-<task>-sft, a new version
        print(f"sft[{task}]: saved {out_dir} (best step {best_step}, validation BLEU {result.best_bleu}) after "
              f"{minutes:.1f} min", flush=True)
    if not s.keep_checkpoints:
        shutil.rmtree(work_dir, ignore_errors=True)
    return result


def best_bleu(history: list[dict[str, float]], best_step: int | None) -> float | None:
    return next((h["eval_bleu"] for h in history if h["step"] == best_step), None)


def summary_dict(result: SftResult, task: str, n_train: int) -> dict[str, Any]:
    return {
        "task": task, "n_train": n_train, "global_step": result.global_step,
        "resumed_from_step": result.resumed_from_step, "best_step": result.best_step,
        "best_validation_bleu": None if result.best_bleu is None else round(float(result.best_bleu), 2),
        "train_minutes": result.train_minutes, "trainable_parameters": result.trainable_parameters,
        "validation": result.history,
    }


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.params).resolve().parent
    models = root / cfg.paths.models
    run_sft(cfg, args.task, models / "base", root / cfg.paths.data / "prepared", models / "sft" / args.task,
            models / ".work" / "sft" / args.task, root / cfg.paths.metrics / "sft" / f"{args.task}.train.json")


if __name__ == "__main__":
    main()
