"""What the test modules share (no test module imports another): the micro configs of each trainer, the paths of a
micro workspace (tests/tiny_sallm.workspace), and callbacks that interrupt training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from steps.core.config import Config, config_from_dict
from steps.core.paths import RunPaths

TASK = "ast"  # the task tests.tiny_sallm.workspace prepares by default

# The whole pipeline at toy sizes: every stage runs its real code (pretraining, SFT, GRPO, MP-GRPO, evaluation,
# report), a few steps each. The scores mean nothing; the point is that outputs travel and are recognised.
TOY_SIZES = [
    *(f"synth.sizes.{pool}.{split}={n}" for pool in ("ast", "sqa") for split, n in (("train", 24), ("validation", 8),
                                                                                     ("test", 8))),
    "synth.sizes.pretrain.train=48", "synth.sizes.pretrain.validation=8", "synth.sizes.pretrain.test=8",
    "pretrain.ctc.steps=20", "pretrain.ctc.batch_size=8", "pretrain.ctc.warmup_steps=2",
    "pretrain.sallm.steps=20", "pretrain.sallm.batch_size=8", "pretrain.sallm.warmup_steps=2",
    "pretrain.eval_every=20", "pretrain.curve_examples=8", "pretrain.max_new_tokens=16",
    "sft.max_steps=4", "sft.batch_size=4", "sft.eval_every=2", "sft.eval_examples=8", "sft.max_new_tokens=16",
    "grpo.max_steps=2", "grpo.prompts_per_step=2", "grpo.num_generations=4", "grpo.eval_every=2",
    "grpo.eval_examples=8", "grpo.max_completion_length=16", "grpo.max_new_tokens=16",
    "evaluate.sampled_runs=1", "evaluate.max_new_tokens=16",
    "report.bootstrap_samples=100",
]


def micro_paths(root: Path) -> RunPaths:
    """The paths of a workspace laid out by tests.tiny_sallm.workspace (the default `paths` under `root`)."""
    return RunPaths.of(Config(), root)


# Micro runs train to max_steps (patience None) and keep their best checkpoint (start_candidate False: an untrained
# micro model's validation BLEU is ~0 at every step, so its start would win every tie); tests/test_selection.py covers
# the plateau and the start model.
def sft_micro_config(**sft: Any) -> Config:
    settings = {"max_steps": 20, "eval_every": 10, "batch_size": 4, "lr": 3e-3, "warmup_ratio": 0.0,
                "eval_examples": 8, "eval_batch_size": 8, "max_new_tokens": 12, "threads": 1, "patience": None,
                "start_candidate": False, **sft}
    return config_from_dict({"sft": settings, "evaluate": {"sampled_runs": 2, "max_new_tokens": 12, "batch_size": 8}})


def grpo_micro_config(**grpo: Any) -> Config:
    settings = {"init": "base", "max_steps": 2, "eval_every": 2, "prompts_per_step": 2, "num_generations": 4,
                "lr": 1e-3, "max_completion_length": 8, "eval_examples": 4, "eval_batch_size": 4,
                "max_new_tokens": 8, "threads": 1, "beta": 0.02, "patience": None,
                "start_candidate": False, **grpo}
    return config_from_dict({"grpo": settings, "mpgrpo": {"num_off_policy": 1}})


def run_grpo_micro(root: Path, method: str = "grpo", callbacks: list[Any] | None = None, **grpo: Any) -> Any:
    from steps.training.grpo_trainer import run_grpo

    return run_grpo(grpo_micro_config(**grpo), method, TASK, micro_paths(root), callbacks)


def grpo_micro_trainer(root: Path, method: str = "grpo", **grpo: Any) -> Any:
    """The audio GRPO trainer of a micro workspace, in training mode (as inside Trainer.train: rollouts are built
    in training mode), without training."""
    from steps.data.splits import load_split, training_view
    from steps.modeling.loading import load_model_and_processor
    from steps.training.grpo_trainer import build_trainer

    cfg = grpo_micro_config(**grpo)
    paths = micro_paths(root)
    model, processor = load_model_and_processor(paths.start_model(cfg, method, TASK), cfg.model)
    train = training_view(load_split(paths.prepared, TASK, "train"))
    validation = training_view(load_split(paths.prepared, TASK, "validation"), 4)
    trainer = build_trainer(cfg, method, model, processor, train, validation, root / "work", root, [])
    trainer.model.train()
    return trainer


def state_of(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor a saved model holds."""
    from safetensors.torch import load_file

    return {k: v for p in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(p).items()}


def validation_loss(model_dir: Path, rows: list[dict[str, Any]]) -> float:
    """The LM loss of the saved model on `rows` (answer-only labels, as SFT trains)."""
    from steps.modeling.batches import encode_for_training, model_inputs
    from steps.modeling.families import adapter_for
    from steps.modeling.loading import load_model_and_processor

    model, processor = load_model_and_processor(model_dir, sft_micro_config().model)
    adapter = adapter_for(model)
    batch = encode_for_training(processor, adapter, [r["prompt"] for r in rows], [r["reference"] for r in rows],
                                [r["audio"] for r in rows])
    with torch.no_grad():
        return float(model(**model_inputs(batch, adapter)).loss)


def stop_at(step: int) -> Any:
    """A callback that simulates an interruption (Ctrl-C) once training reaches `step`."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= step:
                raise KeyboardInterrupt

    return StopAt()


def two_systems(n: int = 40, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Two systems' outputs (b keeps more of each reference than a) and the references: seeded word soup."""
    import random

    rng = random.Random(seed)
    words = ["der", "Hund", "die", "Katze", "isst", "einen", "Apfel", "im", "Garten", "am", "Montag", "heute"]
    refs = [" ".join(rng.choices(words, k=rng.randint(4, 8))) for _ in range(n)]
    a = [" ".join(w for w in r.split() if rng.random() < 0.6) or "der" for r in refs]
    b = [" ".join(w for w in r.split() if rng.random() < 0.75) or "der" for r in refs]
    return a, b, refs


def evaluate_run(root: Path, task: str, method: str, bleu: float) -> str:
    """An evaluate stage's run: metrics, the metrics file as artifact (md5-tagged); returns the run id."""
    path = root / "metrics" / method / f"{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bleu": bleu, "task": task, "model": method}))
    from steps.core import tracking

    with tracking.stage_run(Config(), stage="evaluate", task=task, method=method) as run:
        run.log_metrics({"bleu": bleu, "bleu_swapped": 1.0, "bleu_snr20": bleu / 2, "n": 8})
        run.log_artifact(path, "evaluation")
    return run.run_id


def through_a_checkpoint(meter: Any, folder: Path) -> Any:
    """A ComputeMeter restored from a checkpoint folder whose trainer_state.json holds `meter`'s state."""
    from steps.training.runner import ComputeMeter

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"stateful_callbacks": {"ComputeMeter": meter.state()}}))
    restored = ComputeMeter()
    restored.restore(folder)
    return restored
