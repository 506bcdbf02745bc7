"""The skeleton every post-training method shares (sft, sft_matched, grpo, mpgrpo): resume, load, train, keep the
best, save.

`run_training(job, build)` loads the job's train and validation splits, resumes from the work folder when its
fingerprint matches (steps/training/checkpoints.py), opens the stage's MLflow run, loads the starting model with the
`model` switches (LoRA, freezing), lets `build` make the method's transformers Trainer, evaluates the start model
(step 0), trains until the validation plateau or the step cap (selection.py), and saves the best evaluation (the
Trainer's `load_best_model_at_end`; the start model when nothing beat it) to the job's output folder, atomically,
with the resolved params; then writes the summary (metrics/<method>/<task>.train.json), registers the model in MLflow
and deletes the checkpoints. Under `accelerate launch` every process trains and the main process owns the files.

What training cost is measured the same way for every method (`ComputeMeter`, the summary's `compute`): the tokens
of every sequence in the optimiser's loss passes (forward + backward; the attention-mask sum of each batch the loss is
computed on: prompt, audio placeholder positions and completion, padding excluded), the wall seconds of the training
steps (data, generation and the optimiser included; validation, logging and checkpointing excluded), and for GRPO
the rollout tokens (completion tokens sampled for training, forward only); and the estimated FLOPs of all of it
(`compute.flops`: loss passes forward + backward, rollouts, reference passes; steps/training/flops.py). Each
validation entry of the summary records the cumulative `flops` and `train_seconds` at that evaluation.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from steps.core.config import RESOLVED_CONFIG_NAME, Config, to_dict
from steps.core.io import atomic_dir, write_json, write_yaml
from steps.core.tracking import StageRun, stage_run
from steps.data.splits import load_split, training_view
from steps.modeling.audio_adapter import save_model
from steps.modeling.generation import GenerationSettings
from steps.modeling.loading import (
    apply_finetune_switches,
    choose_device,
    load_model_and_processor,
    parameter_count,
    torch_threads,
)
from steps.training.checkpoints import (
    NonFiniteLossError,
    check_finite_gradients,
    checkpoint_step,
    existing_checkpoint,
    fingerprint,
    non_finite_message,
    prepare_work_dir,
    resumed_history,
    write_validation_history,
)
from steps.training.flops import FlopCounter
from steps.training.selection import PlateauStop, plateau, selection_score


@dataclass(frozen=True)
class TrainingJob:
    """One post-training run: which method on which task, from where to where.

    `settings` is the method's params section (`cfg.sft`, `cfg.grpo` or `cfg.mpgrpo`); its train_limit,
    eval_examples, threads and keep_checkpoints apply here, all of it goes into the checkpoints' fingerprint.
    """

    cfg: Config
    method: str  # sft | sft_matched | grpo | mpgrpo: the MLflow stage, the registered model's name, the messages
    task: str
    settings: Any
    init_dir: Path  # the model training starts from
    data_dir: Path  # data/prepared
    out_dir: Path  # the best model, written atomically
    work_dir: Path  # checkpoints: resumed after an interruption, deleted after success
    summary_path: Path | None = None  # metrics/<method>/<task>.train.json
    about: str = ""  # what the start message adds about the method (e.g. GRPO's group size)
    extra_summary: dict[str, Any] = field(default_factory=dict)  # more keys for the summary (sft_matched: `matched`)


@dataclass
class TrainerInputs:
    """What a method's `build` gets to make its Trainer."""

    model: Any
    processor: Any
    train: Any
    validation: Any
    run: StageRun
    history: list[dict[str, float]]  # validation results so far; the method's callbacks append to it


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
    compute: dict[str, Any] = field(default_factory=dict)  # ComputeMeter.figures()
    stopped: str = "max_steps"  # "plateau": stopped by PlateauStop; "max_steps": ran to its cap
    plateau: dict[str, Any] = field(default_factory=dict)  # the plateau state at the end (selection.Plateau)


def validation_settings(cfg: Config, decoding: str, max_new_tokens: int) -> GenerationSettings:
    """How validation decodes: `sampled` is the evaluation's decoding (the paper reports top-p 0.9, T 0.9), so the
    checkpoint kept is the best on the number the report shows; `greedy` is the mode."""
    if decoding == "greedy":
        return GenerationSettings(max_new_tokens=max_new_tokens)
    return GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True, temperature=cfg.evaluate.temperature,
                              top_p=cfg.evaluate.top_p)


def decoding_name(settings: GenerationSettings) -> str:
    return f"sampled T {settings.temperature} top-p {settings.top_p}" if settings.do_sample else "greedy"


def trainer_kwargs(settings: Any, work_dir: Path, device: torch.device, seed: int) -> dict[str, Any]:
    """The TrainingArguments SFT and GRPO share, from their params section (the only place these knobs are set):
    checkpoints every `eval_every` steps, the best on validation BLEU kept, logging to our callbacks only."""
    on_cpu = device.type == "cpu"
    return dict(
        output_dir=str(work_dir),
        per_device_eval_batch_size=settings.eval_batch_size,
        learning_rate=settings.lr,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # a float in [0, 1) is a fraction of the total steps in transformers 5
        max_steps=settings.max_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        logging_steps=settings.logging_steps,
        logging_nan_inf_filter=False,  # the default hides a NaN loss behind the running mean
        eval_strategy="steps",
        eval_steps=settings.eval_every,
        save_strategy="steps",
        save_steps=settings.eval_every,
        save_total_limit=settings.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="selection",  # eval_selection: validation BLEU (SFT breaks ties by loss)
        greater_is_better=True,
        report_to="none",  # our StepMetrics callback logs into the stage's MLflow run instead
        remove_unused_columns=False,
        gradient_checkpointing=False,  # TRL turns it on by default: pure recompute cost on small models
        use_cpu=on_cpu,
        bf16=not on_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


class NonFiniteGuard(TrainerCallback):
    """Stops training with NonFiniteLossError before an optimiser step on NaN/inf gradients."""

    def __init__(self, section: str) -> None:
        self.section = section

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        check_finite_gradients(model, state.global_step + 1, args.output_dir, self.section)


class StepMetrics(TrainerCallback):
    """Every number the Trainer logs goes to the stage's MLflow run at its step; a non-finite loss stops training.

    `evaluation`: also log the metrics a callback adds at evaluation (SFT's validation BLEU is added to them after
    the Trainer has logged its own).
    """

    def __init__(self, run: StageRun, section: str, evaluation: bool = False) -> None:
        self.run, self.section, self.evaluation = run, section, evaluation

    def numbers(self, logs: Any) -> dict[str, float]:
        return {k: float(v) for k, v in (logs or {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"}

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        numbers = self.numbers(logs)
        if "loss" in numbers and not math.isfinite(numbers["loss"]):
            raise NonFiniteLossError(non_finite_message("loss", state.global_step, args.output_dir, self.section))
        self.run.log_metrics(numbers, step=state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if self.evaluation:
            self.run.log_metrics(self.numbers(metrics), step=state.global_step)


class ComputeMeter(TrainerCallback, ExportableState):
    """What training cost, counted the same way for every method (the module docstring says what is counted).

    The trainers call `add_train` from their loss and GRPO `add_rollout` from its generation; the counts are global
    (summed over processes). The state rides in each checkpoint's trainer_state.json (`restore` reads it back when a
    run resumes), so a resumed run's figures cover every step of the final model's run.
    """

    COUNTS = ("train_tokens", "train_sequences", "rollout_tokens", "train_steps", "train_seconds")

    def __init__(self, history: list[dict[str, float]] | None = None, work_dir: Path | None = None) -> None:
        self.train_tokens = self.train_sequences = self.rollout_tokens = self.train_steps = 0
        self.train_seconds = 0.0
        self._mark: float | None = None
        self.flops = FlopCounter()  # hooks on the models (`watch`), active from each step's begin to its end
        self.history, self.work_dir = history, work_dir  # validation entries get the cumulative flops / seconds
        self._reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    def watch(self, trainer: Any) -> None:
        """Count the FLOPs of the trainer's model and of its reference model (GRPO with beta > 0), summed over
        the trainer's processes."""
        accelerator = trainer.accelerator
        for model in (trainer.model, getattr(trainer, "ref_model", None)):
            if model is not None:
                self.flops.watch(accelerator.unwrap_model(model))
        if accelerator.num_processes > 1:
            self._reduce = lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {**{k: getattr(self, k) for k in self.COUNTS}, "flops": self.flops.state()}}

    def restore(self, checkpoint: str | Path) -> None:
        path = Path(checkpoint) / "trainer_state.json"
        saved = json.loads(path.read_text()).get("stateful_callbacks", {}) if path.is_file() else {}
        for key, value in (saved.get(type(self).__name__) or {}).get("attributes", {}).items():
            if key in self.COUNTS:
                setattr(self, key, value)
            elif key == "flops":
                self.flops.load(value)

    def add_train(self, trainer: Any, attention_mask: torch.Tensor) -> None:
        """One loss pass over these sequences (every process calls it: the sums are global)."""
        local = torch.stack([attention_mask.sum(), torch.tensor(attention_mask.size(0), device=attention_mask.device)])
        tokens, sequences = trainer.accelerator.reduce(local.to(torch.long), reduction="sum").tolist()
        self.train_tokens += int(tokens)
        self.train_sequences += int(sequences)

    def add_rollout(self, trainer: Any, tokens: int) -> None:
        device = trainer.accelerator.device
        self.rollout_tokens += int(trainer.accelerator.reduce(torch.tensor(tokens, device=device), reduction="sum"))

    # Wall time: from one step's end (or training's start) to the next's, minus validation, logging and saving.
    def _restart(self, *args: Any, **kwargs: Any) -> None:
        self._mark = time.perf_counter()

    on_train_begin = on_log = on_save = _restart

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The method's validation callback (before this one) has appended this evaluation's entry.
        if self.history and self.history[-1].get("step") == state.global_step:
            self.history[-1].update(flops=round(self.flops.total), train_seconds=round(self.train_seconds, 2))
            if self.work_dir is not None and state.is_world_process_zero:
                write_validation_history(self.work_dir, self.history)
        self._restart()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._mark is None:
            self._restart()
        self.flops.active = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.flops.active = False
        self.flops.end_step(self._reduce)
        now = time.perf_counter()
        self.train_seconds += now - (self._mark if self._mark is not None else now)
        self.train_steps += 1
        self._mark = now

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.flops.close()

    def figures(self) -> dict[str, Any]:
        """The summary's `compute`: the counts, the train tokens per optimiser step and the FLOPs."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.COUNTS}
        out["train_seconds"] = round(self.train_seconds, 2)
        out["train_tokens_per_step"] = round(self.train_tokens / self.train_steps, 2) if self.train_steps else 0.0
        return {**out, "flops": self.flops.figures()}


def compute_meter(trainer: Any) -> ComputeMeter | None:
    """The trainer's ComputeMeter (run_training adds one), or None (a trainer built directly, as in tests)."""
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ComputeMeter)), None)


def run_training(job: TrainingJob, build: Callable[[TrainerInputs], Any],
                 extra_outputs: Callable[[], list[Path]] | None = None) -> TrainResult:
    """Train with the Trainer `build` makes and save the best-on-validation model (see the module docstring).

    `extra_outputs` writes the method's further metrics files once training is done and returns their paths (logged
    to MLflow with the summary).
    """
    cfg, s = job.cfg, job.settings
    torch.manual_seed(cfg.seed)
    train = training_view(load_split(job.data_dir, job.task, "train"), s.train_limit)
    validation = training_view(load_split(job.data_dir, job.task, "validation"), s.eval_examples)
    fp = fingerprint(cfg, job.method, job.task, s, job.init_dir)
    device = choose_device(cfg.model.device)
    # Under torchrun / accelerate launch one process owns the files, all train. On CPU the state must be asked for as
    # CPU: a plain PartialState() sees one process there (measured with torchrun, accelerate 1.15), and every rank
    # would then write the work folder at once.
    processes = PartialState(cpu=device.type == "cpu")
    with processes.main_process_first():
        resume = (prepare_work_dir(job.work_dir, fp, job.method) if processes.is_main_process
                  else existing_checkpoint(job.work_dir))
    history = resumed_history(job.work_dir, resume)
    label = f"{job.method}[{job.task}]"
    with torch_threads(s.threads), stage_run(cfg, stage=job.method, task=job.task, method=job.method) as run:
        model, processor = load_model_and_processor(job.init_dir, cfg.model, device=device)
        model = apply_finetune_switches(model, cfg.model)
        trainable = parameter_count(model, trainable_only=True)
        trainer = build(TrainerInputs(model, processor, train, validation, run, history))
        # the start model is a candidate (step 0); a resumed run has its evaluation already
        trainer.args.eval_on_start = s.start_candidate and resume is None
        stop = PlateauStop(history, s.patience, s.min_delta, label)
        trainer.add_callback(stop)  # after the method's validation callback, which adds the evaluation it reads
        meter = ComputeMeter(history, job.work_dir)
        if resume:
            meter.restore(resume)
        meter.watch(trainer)
        trainer.add_callback(meter)  # last: SFT's validation BLEU (a callback) runs before the meter restarts its clock
        resumed_from = checkpoint_step(resume) if resume else 0
        print(f"{label}: {len(train)} training examples{job.about}, {len(validation)} validation, "
              f"{trainable / 1e6:.2f} M trainable parameters ({cfg.model.finetune}), from {job.init_dir}"
              + (f"; resuming from {resume} (step {resumed_from})" if resume else ""), flush=True)
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        minutes = (time.perf_counter() - start) / 60
        state = trainer.state
        best_step = checkpoint_step(state.best_model_checkpoint) if state.best_model_checkpoint else None
        if not processes.is_main_process:
            return TrainResult(job.out_dir, resumed_from, state.global_step, None, None)
        keep_start = start_wins(history, best_step)
        with atomic_dir(job.out_dir) as tmp:
            if keep_start:  # no checkpoint beat the start model on validation: the output is the start model
                shutil.copytree(job.init_dir, tmp, dirs_exist_ok=True)
                best_step = 0
            else:  # load_best_model_at_end has put the best checkpoint's weights into trainer.model
                final = trainer.accelerator.unwrap_model(trainer.model)
                if hasattr(final, "merge_and_unload"):  # LoRA: a plain model every later stage loads the same way
                    final = final.merge_and_unload()
                save_model(final, tmp)  # save_pretrained; an audio LoRA as the released checkpoints lay it out
                processor.save_pretrained(tmp)
            write_yaml(tmp / RESOLVED_CONFIG_NAME, to_dict(cfg))
        best = next((h["eval_bleu"] for h in history if h["step"] == best_step), None)
        reached = plateau(history, s.patience, s.min_delta) if history else None
        result = TrainResult(job.out_dir, resumed_from, state.global_step, best_step, best, history,
                             round(minutes, 2), trainable, meter.figures(),
                             stopped="plateau" if stop.stopped_at is not None else "max_steps",
                             plateau=reached.as_dict(s.patience, s.min_delta) if reached else {})
        summary = summary_dict(result, job, len(train))
        if job.summary_path is not None:
            write_json(job.summary_path, summary)
            for path in [job.summary_path, *(extra_outputs() if extra_outputs else [])]:
                run.log_artifact(path)
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
                        | {f"compute/{k}": v for k, v in result.compute.items() if not isinstance(v, dict)}
                        | {f"compute/flops/{k}": v for k, v in result.compute.get("flops", {}).items()})
        if run.active:  # tracking on: the registry imports mlflow and pandas, only once a model is saved
            from steps.core.registry import register_model

            register_model(run, job.out_dir, job.task, job.method)  # MLflow registry: speech-grpo-<task>-<method>
        print(f"{label}: saved {job.out_dir} (best step {best_step}, validation BLEU {best}) after {minutes:.1f} min",
              flush=True)
    if not s.keep_checkpoints:
        shutil.rmtree(job.work_dir, ignore_errors=True)
    return result


def start_wins(history: list[dict[str, float]], best_step: int | None) -> bool:
    """Whether the start model (step 0) scores at least the best checkpoint's selection score (or no checkpoint was
    kept): then it is the run's output."""
    start = next((h for h in history if h["step"] == 0), None)
    trained = next((h for h in history if h["step"] == best_step), None) if best_step else None
    return start is not None and (trained is None or selection_score(start) >= selection_score(trained))


def summary_dict(result: TrainResult, job: TrainingJob, n_train: int) -> dict[str, Any]:
    """metrics/<method>/<task>.train.json: the best step and validation history, minutes, the step resumed from, and
    what training cost (`compute`, ComputeMeter.figures)."""
    return {
        "method": job.method, "task": job.task, "n_train": n_train, "global_step": result.global_step,
        "resumed_from_step": result.resumed_from_step, "best_step": result.best_step, "stopped": result.stopped,
        "plateau": result.plateau,
        "best_validation_bleu": None if result.best_bleu is None else round(float(result.best_bleu), 2),
        "train_minutes": result.train_minutes, "trainable_parameters": result.trainable_parameters,
        "init": str(job.init_dir), "compute": result.compute, **job.extra_summary, "validation": result.history,
    }
