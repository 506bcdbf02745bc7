"""The sft stage on a micro SALLM and a few espeak clips: collator, learning, resume, NaN guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from steps.core.config import ConfigError, config_from_dict
from steps.modeling.batches import IGNORE_INDEX
from steps.modeling.families import adapter_for
from steps.training.checkpoints import FINGERPRINT_FILE, NonFiniteLossError, check_finite_gradients, prepare_work_dir
from steps.training.sft_trainer import AudioSftCollator, run_sft
from tests.helpers import TASK, micro_paths, sft_micro_config, stop_at, validation_loss
from tests.tiny_sallm import workspace


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


# --- fast -------------------------------------------------------------------------------------------------------------


def test_collator_labels_cover_the_answer_only_and_pad_right(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    rows = [{**r, "audio": r["audio"]} for r in speech_rows[:3]]
    batch = AudioSftCollator(processor, adapter_for(model))(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "input_features", "feature_attention_mask"}
    tok = processor.tokenizer
    for row, labels, att in zip(rows, batch["labels"], batch["attention_mask"], strict=True):
        answer = labels[labels != IGNORE_INDEX]
        assert tok.decode(answer, skip_special_tokens=True).strip() == row["reference"]
        n_real = int(att.sum())
        assert att[:n_real].all() and not att[n_real:].any()  # right padding


def test_sft_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"sft": {"lr": 0, "batch_size": 0, "epochs": 0, "max_steps": -1, "warmup_ratio": 1.5}})
    text = str(err.value)
    for key in ("sft.lr", "sft.batch_size", "sft.epochs/max_steps", "sft.warmup_ratio"):
        assert key in text


def test_checkpoints_of_another_config_are_discarded(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "checkpoint-5").mkdir(parents=True)
    (work / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (work / FINGERPRINT_FILE).write_text(json.dumps({"sha256": "same"}))
    assert prepare_work_dir(work, {"sha256": "same"}, "sft") == str(work / "checkpoint-5")
    assert prepare_work_dir(work, {"sha256": "other"}, "sft") is None
    assert not (work / "checkpoint-5").exists()


def test_non_finite_gradient_raises_with_a_clear_message(tmp_path: Path) -> None:
    layer = torch.nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    check_finite_gradients(layer, 1, tmp_path, "sft")  # finite: nothing happens
    layer.weight.grad[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* at training step 3"):
        check_finite_gradients(layer, 3, tmp_path, "sft")


# --- training ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_lowers_validation_loss_and_changes_parameters(tmp_path: Path, speech_rows) -> None:
    from safetensors.torch import load_file

    root = workspace(tmp_path, speech_rows)
    paths = micro_paths(root)
    result = run_sft(sft_micro_config(keep_checkpoints=False), TASK, paths)
    assert result.global_step == 20 and result.resumed_from_step == 0
    assert validation_loss(paths.model("sft", TASK), speech_rows) < validation_loss(paths.base_model, speech_rows)
    before = load_file(paths.base_model / "model.safetensors")
    after = load_file(paths.model("sft", TASK) / "model.safetensors")
    assert before.keys() == after.keys()  # saved in the same (original) layout as the base
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    assert all(torch.isfinite(t).all() for t in after.values())
    summary = json.loads(paths.train_summary("sft", TASK).read_text())
    assert summary["best_step"] in (10, 20) and [h["step"] for h in summary["validation"]] == [10, 20]
    assert (paths.model("sft", TASK) / "resolved_params.yaml").is_file()
    assert not paths.work("sft", TASK).exists()  # checkpoints are removed after success



def test_sft_with_a_frozen_encoder_trains_the_rest_and_encodes_each_clip_once(tmp_path: Path, speech_rows) -> None:
    """`model.freeze_audio_encoder` (the real-model configs set it): the encoder's weights stay, the rest trains, and
    each clip is encoded once over the run's epochs and validation passes (keep_frozen_encoder_outputs)."""
    import dataclasses

    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class KeptOutputs(TrainerCallback):
        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            kept = model.model.audio_tower._kept
            self.counts = (kept.hits, kept.misses, len(kept.rows))

    root = workspace(tmp_path, speech_rows)
    paths = micro_paths(root)
    micro = sft_micro_config()
    cfg = dataclasses.replace(micro, model=dataclasses.replace(micro.model, freeze_audio_encoder=True))
    probe = KeptOutputs()
    result = run_sft(cfg, TASK, paths, callbacks=[probe])
    assert result.global_step == 20
    before = load_file(paths.base_model / "model.safetensors")
    after = load_file(paths.model("sft", TASK) / "model.safetensors")
    encoder = [k for k in before if "audio_tower" in k]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before if "language_model" in k)
    assert validation_loss(paths.model("sft", TASK), speech_rows) < validation_loss(paths.base_model, speech_rows)
    hits, misses, kept = probe.counts
    clips = len({r["id"] for r in speech_rows})
    assert misses <= clips and kept == misses and hits >= 20 * 4 - misses  # 20 steps x 4 rows, each clip encoded once


def first_step_recorder() -> Any:
    """A callback recording the step at which each training step begins."""
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps.append(state.global_step)

    return FirstStep()


@pytest.mark.slow
def test_resume_after_interruption_continues_from_the_checkpoint_step(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    paths = micro_paths(root)
    cfg = sft_micro_config(max_steps=16, eval_every=5)
    with pytest.raises(KeyboardInterrupt):
        run_sft(cfg, TASK, paths, callbacks=[stop_at(7)])
    assert (paths.work("sft", TASK) / "checkpoint-5").is_dir() and not paths.model("sft", TASK).exists()
    first = first_step_recorder()
    result = run_sft(cfg, TASK, paths, callbacks=[first])
    assert result.resumed_from_step == 5
    assert first.steps[0] == 5 and result.global_step == 16
    assert [h["step"] for h in result.history] == [5, 10, 15, 16]  # step 5's validation came from the first run


def poison_after(step: int) -> Any:
    """From `step` on, the LLM's final norm outputs NaN: the loss and every gradient become NaN."""
    from transformers import TrainerCallback

    class PoisonAfter(TrainerCallback):
        handle: Any = None

        def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step >= step and self.handle is None:
                norm = model.model.language_model.norm
                self.handle = norm.register_forward_hook(lambda mod, inp, out: out * float("nan"))

    return PoisonAfter()


def test_nan_guard_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path, speech_rows) -> None:
    from safetensors.torch import load_file

    root = workspace(tmp_path, speech_rows)
    paths = micro_paths(root)
    with pytest.raises(NonFiniteLossError, match=r"at training step 8.*checkpoint-5"):
        run_sft(sft_micro_config(max_steps=16, eval_every=5), TASK, paths, callbacks=[poison_after(7)])
    kept = paths.work("sft", TASK) / "checkpoint-5" / "model.safetensors"
    assert kept.is_file() and not (paths.work("sft", TASK) / "checkpoint-10").exists()
    assert all(torch.isfinite(t).all() for t in load_file(kept).values())
    assert not paths.model("sft", TASK).exists()
