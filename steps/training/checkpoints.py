"""Checkpoints of a training run: when resuming is valid, what history survives, and how checkpoints are saved.

A run's checkpoints live in a work folder (models/.work/<method>/<task>) beside a fingerprint of everything they
depend on; a rerun with the same fingerprint resumes from the last checkpoint, any other config starts afresh. A
non-finite loss or gradient stops training before the optimiser step (`NonFiniteLossError`), so every checkpoint on
disk stays good.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.trainer_utils import get_last_checkpoint

from steps.core.config import Config, to_dict
from steps.core.io import write_json

FINGERPRINT_FILE = "fingerprint.json"
HISTORY_FILE = "validation_history.json"


class NonFiniteLossError(RuntimeError):
    """The training loss or gradient became NaN or infinite; training stopped before the optimiser step."""


def fingerprint(cfg: Config, method: str, task: str, settings: Any, init_dir: Path) -> dict[str, Any]:
    """What a checkpoint depends on: resuming is only valid when all of it is unchanged."""
    files = sorted(init_dir.glob("*.safetensors")) + sorted(init_dir.glob("*.json"))
    data = {"method": method, "task": task, "seed": cfg.seed, "settings": to_dict(settings),
            "model": to_dict(cfg.model), "init": str(init_dir.resolve()),
            "init_files": {p.name: p.stat().st_size for p in files}}
    data["sha256"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return data


def prepare_work_dir(work_dir: Path, fp: dict[str, Any], label: str) -> str | None:
    """The checkpoint to resume from, or None; stale checkpoints (another config) are deleted, loudly."""
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


def existing_checkpoint(work_dir: Path) -> str | None:
    """The last checkpoint in `work_dir` (None: none), for the processes that do not own the work folder."""
    return get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None


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


def check_finite_gradients(model: torch.nn.Module, step: int, work_dir: str | Path, section: str) -> None:
    """Raise NonFiniteLossError if any gradient is NaN/inf (a NaN loss makes every gradient NaN).

    Called before the optimiser step, so the weights, and every checkpoint saved so far, are still good.
    """
    sums = [p.grad.detach().float().sum() for p in model.parameters() if p.grad is not None]
    if sums and not torch.isfinite(torch.stack(sums).sum()):
        raise NonFiniteLossError(non_finite_message("loss/gradient", step, work_dir, section))


def non_finite_message(what: str, step: int, work_dir: str | Path, section: str) -> str:
    last = existing_checkpoint(Path(work_dir))
    kept = f"the last good checkpoint is kept at {last}" if last else "no checkpoint had been saved yet"
    return (f"non-finite {what} (NaN or inf) at training step {step}: training stopped before the optimiser step; "
            f"{kept}. Lower {section}.lr, raise {section}.warmup_ratio or check the data; a rerun with the same "
            "params resumes from that checkpoint")


def save_in_model_layout(model: Any, save: Callable[[], None]) -> None:
    """Run a Trainer's `_save` with `save_pretrained` writing the model's own key names.

    transformers 5.23 saves a checkpoint with its keys reverted to the family's original layout (Qwen2-Audio:
    `language_model.model.*`) but loads it back for resuming and for the best model with a plain `load_state_dict`,
    which then matches no key and only warns: resumed training and "best" models silently keep the current weights.
    Saving checkpoints in the in-memory layout makes both loads exact. Final models are saved in the original layout.
    """
    if not isinstance(model, PreTrainedModel):  # peft saves adapters under its own names: nothing to fix
        save()
        return
    model.save_pretrained = functools.partial(type(model).save_pretrained, model, save_original_format=False)
    try:
        save()
    finally:
        del model.save_pretrained  # back to the class's method
