"""A damaged model.safetensors stops a stage with the file, its folder and the fix, not safetensors' bare
`SafetensorError: invalid header length` (steps/modeling/loading.py: check_safetensors)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from steps.core.config import ModelConfig
from steps.modeling.loading import CorruptWeightsError, check_safetensors, load_model_and_processor


@pytest.fixture
def model_dir(tmp_path):
    """A repo-like tree: dvc.yaml at the root, a model folder where the sft stage puts SQA's model."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    folder = tmp_path / "models" / "sft" / "sqa"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    save_file({"a": torch.randn(64, 8), "b": torch.zeros(3, dtype=torch.int64)}, folder / "model.safetensors")
    return folder


def test_a_whole_file_passes(model_dir):
    check_safetensors(model_dir)


@pytest.mark.parametrize("cut", ["truncated", "header", "tiny", "appended"])
def test_a_damaged_file_is_named_with_its_folder_and_the_fix(model_dir, cut):
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) - 100],  # a copy or download cut short: the tensors' bytes end early
               "header": data[:8] + b"\xff" * 40 + data[48:],  # the JSON header overwritten
               "tiny": data[:5],
               "appended": data + b"\0" * 16}[cut]
    path.write_bytes(damaged)
    with pytest.raises(CorruptWeightsError) as info:
        check_safetensors(model_dir)
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt" in message
    assert "`dvc checkout --force models/sft/sqa`" in message and f"in {model_dir.parents[2]}" in message
    assert "`dvc repro --force --single-item sft@sqa`" in message


def test_loading_a_truncated_model_fails_before_transformers_does(model_dir):
    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptWeightsError, match="models/sft/sqa"):
        load_model_and_processor(model_dir, ModelConfig())
