"""Every path of a run, computed in one place from `paths` in params.yaml and the repository root.

Stages, the seed sweep and the report ask a `RunPaths` for a folder instead of joining names themselves:

    paths = RunPaths.of(cfg, root)
    paths.model("sft", "sqa")          # models/sft/sqa          (paths.model("base", task): models/base)
    paths.start_model(cfg, "grpo", t)  # where a method starts: grpo.init picks models/base or models/sft/<task>
    paths.train_summary("grpo", "sqa") # metrics/grpo/sqa.train.json

`under(folder)` is the same run with models and metrics written elsewhere (a sweep's seed folder) while the data
and the base model stay the pipeline's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from steps.core.config import GRPO_METHODS, MODELS, Config


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: Path  # the repository root: relative paths in params.yaml (extra models, sources) resolve here
    synth: Path  # data/synth: the synth stage's corpus
    prepared: Path  # data/prepared: one folder per task, one dataset per split
    models: Path  # models/<method>/<task>
    metrics: Path  # metrics/<model>/<task>.*
    reports: Path
    base_model: Path  # the pretrain stage's model (models/base), also for a sweep that writes elsewhere

    @classmethod
    def of(cls, cfg: Config, root: str | Path) -> RunPaths:
        root = Path(root)
        data, models = root / cfg.paths.data, root / cfg.paths.models
        return cls(root, data / "synth", data / "prepared", models, root / cfg.paths.metrics,
                   root / cfg.paths.reports, models / "base")

    @classmethod
    def for_params(cls, cfg: Config, params: str | Path) -> RunPaths:
        """The run of a stage's command line: the root is the folder holding its params file."""
        return cls.of(cfg, Path(params).resolve().parent)

    @property
    def sweeps(self) -> Path:
        """The seed sweep's folder (sweeps/dvc.yaml lives there)."""
        return self.root / "sweeps"

    def under(self, folder: Path) -> RunPaths:
        """This run's data and base model, with models and metrics under `folder`."""
        return dataclasses.replace(self, models=folder / "models", metrics=folder / "metrics")

    # -- models ----------------------------------------------------------------------------------------------------
    def model(self, name: str, task: str, extra: dict[str, str] | None = None) -> Path:
        """Where model `name` lives for `task`: base, a method, or an `evaluate.extra_models` name (`extra`)."""
        if name == "base":
            return self.base_model
        if name in MODELS:
            return self.models / name / task
        if extra and name in extra:
            path = Path(extra[name]).expanduser()
            return path if path.is_absolute() else self.root / path
        raise ValueError(f"unknown model {name!r}: use one of {[*MODELS, *(extra or {})]} "
                         "(list further checkpoints under evaluate.extra_models in params.yaml)")

    def start_model(self, cfg: Config, method: str, task: str) -> Path:
        """The model a method starts from: SFT from base; sft_matched from SFT; GRPO from base or SFT (`init`)."""
        if method == "sft":
            return self.base_model
        if method == "sft_matched":
            return self.model("sft", task)
        if method in GRPO_METHODS:
            return self.base_model if getattr(cfg, method).init == "base" else self.model("sft", task)
        raise ValueError(f"{method!r} is not a post-training method")

    def work(self, method: str, task: str) -> Path:
        """Checkpoints while a method trains (resumed after an interruption, deleted after success)."""
        return self.models / ".work" / method / task

    # -- metrics ---------------------------------------------------------------------------------------------------
    def metrics_of(self, name: str) -> Path:
        return self.metrics / name

    def train_summary(self, method: str, task: str) -> Path:
        return train_summary_file(self.metrics, method, task)

    def curve(self, method: str, task: str) -> Path:
        return curve_file(self.metrics, method, task)

    def evaluation(self, name: str, task: str) -> Path:
        return evaluation_file(self.metrics, name, task)

    def predictions(self, name: str, task: str) -> Path:
        return predictions_file(self.metrics, name, task)


# The layout of a metrics folder, also for readers that get one folder (the report; a sweep seed's metrics).
def train_summary_file(metrics: Path, method: str, task: str) -> Path:
    return metrics / method / f"{task}.train.json"


def curve_file(metrics: Path, method: str, task: str) -> Path:
    return metrics / method / f"{task}.curve.csv"


def evaluation_file(metrics: Path, name: str, task: str) -> Path:
    return metrics / name / f"{task}.json"


def predictions_file(metrics: Path, name: str, task: str) -> Path:
    return metrics / name / f"{task}.predictions.jsonl"
