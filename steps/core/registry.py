"""MLflow model registry: trained models logged as pyfunc models, one registered model per task and method.

The sft, grpo and mpgrpo stages call `register_model` inside their `stage_run` block once the model folder is saved:
the folder (safetensors + processor files) becomes an MLflow pyfunc model of the stage's run, registered as
`speech-grpo-<task>-<method>` (e.g. `speech-grpo-sqa-grpo`); each training run adds a version. Loaded back, it
answers prompts about audio:

    import pandas as pd
    from steps.core.registry import load_registered
    model = load_registered("sqa", "grpo")                       # models:/speech-grpo-sqa-grpo/latest
    model.predict(pd.DataFrame({"prompt": ["Listen to the audio <|audio|> and answer the following question: "
                                           "what is said?"], "audio_path": ["clip.wav"]}))   # -> ["..."]

Input columns: `prompt` (with the `<|audio|>` placeholder) and either `audio` (float32 samples at the processor's
rate, 16 kHz) or `audio_path` (any file soundfile reads; mixed to mono and resampled with soxr). Decoding is greedy;
`params={"max_new_tokens": N}` sets the answer length. The pyfunc model carries a copy of the `steps` package
(`code_paths`), so it loads wherever the pinned dependencies are installed. Like tracking, registration never fails a
stage: an error is reported loudly once and the stage goes on; `SPEECH_GRPO_TRACKING=off` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd

from steps.core import artifact_md5, tracking

MODEL_ARTIFACT = "model"  # the model folder's key in the pyfunc model's artifacts
LOGGED_MODEL_NAME = "model"
DEFAULT_MAX_NEW_TOKENS = 64
PREDICT_BATCH_SIZE = 8
# Written next to the model for `mlflow models serve` and friends. Passed explicitly: inferring them would import the
# model in a subprocess and ask pip, which is slow and may reach for the network.
PIP_REQUIREMENTS = ("torch==2.13.0", "transformers==5.23.0", "peft==0.21.2", "mlflow==3.17.2", "soundfile==0.14.0",
                    "soxr==1.1.0", "numpy>=1.26", "pandas", "pyyaml>=6.0")  # peft: Granite Speech's audio LoRA
STEPS_DIR = Path(__file__).resolve().parents[1]  # the whole `steps` package travels with the model


def registered_name(task: str, method: str) -> str:
    """The registered model of one task and method, e.g. speech-grpo-sqa-grpo."""
    return f"speech-grpo-{task}-{method}"


# --- the pyfunc model -------------------------------------------------------------------------------------------------


def model_settings(model_dir: Path) -> Any:
    """How to load the folder: dtype and trust_remote_code from the resolved params saved in it; device auto."""
    import dataclasses

    import yaml

    from steps.core.config import RESOLVED_CONFIG_NAME, ModelConfig

    resolved = model_dir / RESOLVED_CONFIG_NAME
    raw = yaml.safe_load(resolved.read_text()) if resolved.is_file() else None
    section = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        return ModelConfig()
    # Only what changes how the weights load; the device is the loading machine's (the training one may differ).
    return dataclasses.replace(ModelConfig(), **{k: section[k] for k in ("dtype", "trust_remote_code") if k in section})


def read_audio(path: str | Path, rate: int) -> Any:
    """An audio file as mono float32 samples at `rate`."""
    from steps.data.audio import decode, resample, to_mono

    audio, rate_in = decode(path)
    return resample(to_mono(audio), rate_in, rate)


def audio_inputs(frame: pd.DataFrame, rate: int) -> list[Any]:
    """Each row's samples: its `audio` when given, else its `audio_path` read and resampled to `rate`."""
    if "audio" not in frame.columns and "audio_path" not in frame.columns:
        raise ValueError(f"input needs an `audio` column (float32 samples at {rate} Hz) or an `audio_path` column; "
                         f"got {list(frame.columns)}")
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        samples, path = row.get("audio"), row.get("audio_path")
        if samples is not None and len(samples) > 0:
            out.append(samples)
        elif isinstance(path, str) and path:
            out.append(read_audio(path, rate))
        else:
            raise ValueError(f"row {i}: neither `audio` samples nor an `audio_path`")
    return out


class SpeechPythonModel(mlflow.pyfunc.PythonModel):
    """The saved SALLM folder, loaded with steps.modeling, answering (prompt, audio) rows by greedy decoding."""

    def load_context(self, context: Any) -> None:
        from steps.modeling.loading import load_model_and_processor

        model_dir = Path(context.artifacts[MODEL_ARTIFACT])
        self.model, self.processor = load_model_and_processor(model_dir, model_settings(model_dir))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        from steps.modeling.batches import audio_extractor
        from steps.modeling.generation import GenerationSettings, generate

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "prompt" not in frame.columns:
            raise ValueError(f"input needs a `prompt` column (text with <|audio|>); got {list(frame.columns)}")
        audios = audio_inputs(frame, audio_extractor(self.processor).sampling_rate)
        settings = GenerationSettings(max_new_tokens=int((params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)))
        return generate(self.model, self.processor, [str(p) for p in frame["prompt"]], audios, settings,
                        batch_size=PREDICT_BATCH_SIZE)


def signature() -> Any:
    """Columns prompt + (audio | audio_path), a string per row out, and the max_new_tokens parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema([ColSpec(DataType.string, "prompt"),
                     ColSpec(Array(DataType.float), "audio", required=False),
                     ColSpec(DataType.string, "audio_path", required=False)])
    params = ParamSchema([ParamSpec("max_new_tokens", DataType.long, DEFAULT_MAX_NEW_TOKENS)])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(DataType.string)]), params=params)


# --- register / load --------------------------------------------------------------------------------------------------


def register_model(run: Any, model_dir: Path, task: str, method: str) -> str | None:
    """Log `model_dir` to the stage's run as a pyfunc model and register it as speech-grpo-<task>-<method>.

    `run` is the `StageRun` handle of `steps.core.tracking.stage_run`. Returns the new version's URI
    (`models:/speech-grpo-sqa-sft/3`), or None when tracking is off or failed (reported once; the stage goes on), and
    in every process of a multi-GPU launch but the first, and for the seed sweep's models.
    """
    if (not tracking.tracking_enabled() or run is None or run.run_id is None or not is_main_process()
            or tracking.in_seed_sweep()):
        return None
    name = registered_name(task, method)
    try:
        return _log_and_register(run.run_id, Path(model_dir), name, {"task": task, "method": method})
    except Exception as exc:
        tracking._warn_once(f"registering the model {name!r}", exc)
        return None


def is_main_process() -> bool:
    """False in the other processes of a multi-GPU launch (torchrun/accelerate set RANK): one registration per run."""
    return os.environ.get("RANK", "0") == "0"


def _log_and_register(run_id: str, model_dir: Path, name: str, tags: dict[str, str]) -> str:
    from mlflow.tracking import MlflowClient

    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    mlflow.set_tracking_uri(tracking.tracking_uri())
    active = mlflow.active_run()
    # Inside stage_run the stage's run is the active one; any other caller gets it resumed for the logging.
    scope = (contextlib.nullcontext() if active is not None and active.info.run_id == run_id
             else mlflow.start_run(run_id=run_id, nested=active is not None))
    with scope, warnings.catch_warnings():
        # No input example on purpose: MLflow would load the model and run it at logging time (a 7B model, too).
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL_NAME, python_model=SpeechPythonModel(), artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(STEPS_DIR)], pip_requirements=list(PIP_REQUIREMENTS), signature=signature(),
            registered_model_name=name, tags=tags)
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    for key, value in tags.items():
        client.set_registered_model_tag(name, key, value)
        client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(name, version, "model_dir", str(model_dir.resolve()))
    print(f"registry: logged {model_dir} as models:/{name}/{version}", flush=True)
    return f"models:/{name}/{version}"


def load_registered(task: str, method: str, version: str | int = "latest") -> Any:
    """The registered model of `task` and `method` as an MLflow pyfunc model.

    `version`: a number, `latest`, or an alias written `@report` (the version the current report describes).
    """
    mlflow.set_tracking_uri(tracking.tracking_uri())
    ref = str(version)
    sep = "" if ref.startswith("@") else "/"
    return mlflow.pyfunc.load_model(f"models:/{registered_name(task, method)}{sep}{ref}")


# --- the report's versions --------------------------------------------------------------------------------------------

REPORT_ALIAS = "report"


def report_alias() -> str:
    """`report` for the workspace's report; `report-<experiment>` for a DVC experiment's, so it does not move it."""
    exp = tracking.dvc_experiment_name()
    if not exp:
        return REPORT_ALIAS
    return f"{REPORT_ALIAS}-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in exp)[:200]


def alias_reported(run: Any, metrics_dir: Path, methods_by_task: dict[str, list[str]]) -> dict[str, str]:
    """Point the alias `report` of speech-grpo-<task>-<method> at the version the report describes.

    That version is the one whose training run logged the very metrics/<method>/<task>.train.json the report read
    (same md5: `tracking.runs_for_file`). Where no version matches (tracking was off when it trained, or a run from
    before the md5 tags), the alias is removed rather than left on a version the report does not describe.
    Returns {registered name: version}. Like all tracking, never fails the stage.
    """
    if not tracking.tracking_enabled() or run is None or run.run_id is None or tracking.in_seed_sweep():
        return {}
    from mlflow.tracking import MlflowClient

    alias = report_alias()
    done: dict[str, str] = {}
    try:
        client = MlflowClient(tracking_uri=tracking.tracking_uri())
        exp_id = tracking.experiment_id(client)
        for task, methods in methods_by_task.items():
            for method in methods:
                name = registered_name(task, method)
                summary = metrics_dir / method / f"{task}.train.json"
                if method == "base" or not summary.is_file():
                    continue
                version = _version_of(client, exp_id, name, summary, task, method)
                if version is not None:
                    client.set_registered_model_alias(name, alias, version)
                    done[name] = version
                elif _has_alias(client, name, alias):
                    client.delete_registered_model_alias(name, alias)
    except Exception as exc:
        tracking._warn_once(f"setting the registry alias {alias!r}", exc)
    for name, version in done.items():
        print(f"registry: models:/{name}@{alias} -> version {version}", flush=True)
    return done


def _version_of(client: Any, exp_id: str, name: str, summary: Path, task: str, method: str) -> str | None:
    for train_run in artifact_md5.runs_for_file(client, exp_id, summary,
                                            filter_string=f"tags.task = '{task}' and tags.method = '{method}'"):
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{train_run.info.run_id}'")
        if versions:
            return str(max(int(v.version) for v in versions))
    return None


def _has_alias(client: Any, name: str, alias: str) -> bool:
    try:
        client.get_model_version_by_alias(name, alias)
    except Exception:  # no such alias, or no such registered model
        return False
    return True
