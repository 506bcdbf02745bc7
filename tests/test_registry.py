"""steps/core/registry.py: a micro SALLM logged as a pyfunc model, registered, loaded back and generating from audio.

    pytest tests/test_registry.py      # ~15 s: a temporary SQLite store per test, the micro model built once
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from steps.core import registry, tracking
from steps.core.config import Config
from steps.data.audio import write_wav
from tests.tiny_sallm import RATE, build_micro


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (tracking.ENV_RUN_ID, tracking.ENV_PARENT_RUN_ID, tracking.ENV_DVC_EXP, tracking.ENV_TRACKING,
                "DVC_STAGE", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "MLFLOW_EXPERIMENT_NAME", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_warned", False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, speech_rows: list[dict[str, Any]]) -> Path:
    """A saved micro SALLM folder, as the sft stage leaves models/sft/<task>."""
    from steps.modeling.tiny import save

    model, processor = build_micro(speech_rows)
    return save(model, processor, tmp_path_factory.mktemp("sft") / "sqa")


# --- no store ---------------------------------------------------------------------------------------------------------


def test_registered_names() -> None:
    assert registry.registered_name("sqa", "grpo") == "speech-grpo-sqa-grpo"
    assert registry.registered_name("ast", "mpgrpo") == "speech-grpo-ast-mpgrpo"


def test_tracking_off_registers_nothing(monkeypatch, tmp_path, model_dir) -> None:
    monkeypatch.setenv(tracking.ENV_TRACKING, "off")
    monkeypatch.setenv(tracking.ENV_ROOT, str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    with tracking.stage_run(Config(), stage="sft", task="sqa", method="sft") as run:
        assert registry.register_model(run, model_dir, "sqa", "sft") is None
    assert registry.register_model(tracking.StageRun("some-run-id"), model_dir, "sqa", "sft") is None
    assert not (tmp_path / "mlruns").exists()


def test_only_the_first_process_of_a_multi_gpu_launch_registers(monkeypatch, model_dir) -> None:
    monkeypatch.setenv("RANK", "1")  # a store that does not exist: reaching it would warn
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/no-such-dir/mlflow.db")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.register_model(tracking.StageRun("some-run-id"), model_dir, "sqa", "sft") is None
    monkeypatch.setenv("RANK", "0")
    assert registry.is_main_process()


def test_audio_inputs_take_samples_or_a_resampled_file(tmp_path) -> None:
    tone = np.sin(np.linspace(0, 200 * np.pi, 8000)).astype(np.float32) * 0.5  # 1 s at 8 kHz
    write_wav(tmp_path / "tone.wav", tone, 8000)
    frame = pd.DataFrame({"prompt": ["a <|audio|>", "b <|audio|>"], "audio": [np.zeros(100, np.float32), None],
                          "audio_path": [None, str(tmp_path / "tone.wav")]})
    samples = registry.audio_inputs(frame, RATE)
    assert len(samples[0]) == 100 and len(samples[1]) == RATE
    with pytest.raises(ValueError, match="audio_path"):
        registry.audio_inputs(pd.DataFrame({"prompt": ["x"]}), RATE)


# --- real store -------------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path, monkeypatch) -> tuple[Path, Any]:
    """A fresh SQLite store under tmp_path/repo/mlruns, the way tracking.py lays out the default one."""
    from mlflow.tracking import MlflowClient

    root = tmp_path / "repo"
    (root / "mlruns").mkdir(parents=True)
    monkeypatch.setenv(tracking.ENV_ROOT, str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    return root, MlflowClient(tracking_uri=tracking.tracking_uri())


def test_register_load_and_generate_from_audio(store, model_dir, speech_rows, tmp_path) -> None:
    import mlflow

    root, client = store
    uris = []
    for _ in range(2):
        with tracking.stage_run(Config(), stage="sft", task="sqa", method="sft") as run:
            uris.append(registry.register_model(run, model_dir, "sqa", "sft"))
    assert uris == ["models:/speech-grpo-sqa-sft/1", "models:/speech-grpo-sqa-sft/2"]
    version = client.get_model_version("speech-grpo-sqa-sft", "2")
    assert version.run_id == run.run_id and version.tags["method"] == "sft"
    assert client.get_registered_model("speech-grpo-sqa-sft").tags == {"task": "sqa", "method": "sft"}
    # The weights were copied under the store's artifact root, not left pointing at the model folder.
    copied = list((root / "mlruns" / "artifacts").rglob("model.safetensors"))
    assert len(copied) == 2

    model = mlflow.pyfunc.load_model("models:/speech-grpo-sqa-sft/latest")
    row = speech_rows[1]
    answers = model.predict(pd.DataFrame({"prompt": [row["prompt"]], "audio": [row["audio"]]}),
                            params={"max_new_tokens": 5})
    assert isinstance(answers, list) and len(answers) == 1 and isinstance(answers[0], str)

    write_wav(tmp_path / "clip.wav", row["audio"], RATE)
    again = registry.load_registered("sqa", "sft", version=1)
    from_file = again.predict(pd.DataFrame({"prompt": [row["prompt"]], "audio_path": [str(tmp_path / "clip.wav")]}),
                              params={"max_new_tokens": 5})
    assert len(from_file) == 1 and isinstance(from_file[0], str)


def test_a_registration_error_warns_and_the_stage_goes_on(store, model_dir, capsys) -> None:
    with tracking.stage_run(Config(), stage="sft", task="sqa", method="sft") as run, \
            pytest.warns(RuntimeWarning, match="registering the model"):
        assert registry.register_model(run, model_dir.parent / "missing", "sqa", "sft") is None
    assert "WARNING: MLflow tracking failed while registering" in capsys.readouterr().err
