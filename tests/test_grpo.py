"""The grpo / mpgrpo stages on a micro SALLM and a few espeak clips: audio in every pass, mixed policy, the loss."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from steps.core.config import Config, ConfigError, config_from_dict
from steps.training.checkpoints import NonFiniteLossError
from steps.training.curves import curve_csv
from steps.training.grpo_trainer import AudioGRPOTrainer, run_grpo
from steps.training.sft_trainer import run_sft
from tests.helpers import (
    TASK,
    grpo_micro_config,
    grpo_micro_trainer,
    micro_paths,
    run_grpo_micro,
    sft_micro_config,
    state_of,
)
from tests.tiny_sallm import workspace


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


# --- settings and curves ---------------------------------------------------------------------------------------------


def test_grpo_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"grpo": {"num_generations": 1, "reward_weights": {"blue": 1.0}, "beta": -1}})
    text = str(err.value)
    assert "grpo.num_generations" in text and "Did you mean 'bleu'" in text and "grpo.beta" in text


def test_mpgrpo_takes_every_key_it_leaves_out_from_grpo() -> None:
    cfg = config_from_dict({"grpo": {"lr": 0.003, "num_generations": 6}, "mpgrpo": {"num_off_policy": 2}})
    assert cfg.mpgrpo.lr == 0.003 and cfg.mpgrpo.num_generations == 6 and cfg.mpgrpo.num_off_policy == 2
    assert cfg.grpo.num_off_policy == 0


def test_each_method_trains_with_its_own_section() -> None:
    from steps.core.config import GRPO_METHODS
    from steps.training.grpo_trainer import section_config

    cfg = Config()
    assert all(section_config(cfg, m) is getattr(cfg, m) for m in GRPO_METHODS)
    # GRPO from the base is plain GRPO: no off-policy sample (it once trained with mpgrpo's section, one per group)
    assert (cfg.grpo_base.num_off_policy, cfg.mpgrpo.num_off_policy) == (0, 1)
    with pytest.raises(ValueError, match="method must be one of"):
        section_config(cfg, "sft")


def test_curve_csv_merges_points_of_a_step() -> None:
    text = curve_csv([{"step": 1, "reward": 0.5}, {"step": 1, "kl": 0.01}, {"step": 2, "val_bleu": 3.0}])
    rows = list(csv.DictReader(text.splitlines()))
    assert rows[0]["reward"] == "0.5" and rows[0]["kl"] == "0.01" and rows[1]["val_bleu"] == "3.0"


# --- the trainer ------------------------------------------------------------------------------------------------------


def encoder_calls(model: Any) -> tuple[list[bool], Any]:
    """Record, per audio-encoder call, whether grad was enabled (the loss pass is the one with grad)."""
    calls: list[bool] = []
    handle = model.model.audio_tower.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    return calls, handle


def test_audio_reaches_the_loss_pass_and_the_encoder_gets_gradient(tmp_path: Path, speech_rows) -> None:
    trainer = grpo_micro_trainer(workspace(tmp_path, speech_rows))
    model = trainer.model
    calls, handle = encoder_calls(model)
    ref_calls, ref_handle = encoder_calls(trainer.ref_model)
    batch = trainer._prepare_inputs([dict(r) for r in trainer.train_dataset.select(range(2)) for _ in range(4)])
    assert "input_features" in batch and batch["input_features"].size(0) == 8
    assert calls == [False]  # generation saw the audio (once: the KV cache keeps it)
    assert ref_calls and not any(ref_calls)  # the reference model's log-probs (beta > 0) saw it too (in chunks)
    # An untrained model scores 0 on every completion (zero advantages, zero gradient): give the rows advantages.
    batch["advantages"] = torch.linspace(-1.0, 1.0, 8)
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    handle.remove()
    ref_handle.remove()
    # the loss pass ran the encoder, with grad (the no-grad calls before it: generation, then grpo.shared_prefix's
    # first-use check, shared and plain)
    assert calls == [False, False, False, True]
    grads = [p.grad for p in model.model.audio_tower.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_loss_changes_when_the_audio_is_swapped(tmp_path: Path, speech_rows) -> None:
    trainer = grpo_micro_trainer(workspace(tmp_path, speech_rows))
    batch = trainer._prepare_inputs([dict(r) for r in trainer.train_dataset.select(range(2)) for _ in range(4)])
    with torch.no_grad():
        real = trainer.compute_loss(trainer.model, batch)
        logps_real, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1), batch["completion_ids"].size(1),
            input_features=batch["input_features"], feature_attention_mask=batch["feature_attention_mask"])
        swapped = dict(batch)
        swapped["input_features"] = batch["input_features"].flip(0)
        swapped["feature_attention_mask"] = batch["feature_attention_mask"].flip(0)
        logps_swapped, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1), batch["completion_ids"].size(1),
            input_features=swapped["input_features"], feature_attention_mask=swapped["feature_attention_mask"])
    assert torch.isfinite(real)
    mask = batch["completion_mask"].bool()
    assert not torch.allclose(logps_real[mask], logps_swapped[mask])


def test_mixed_policy_puts_the_reference_into_each_group_with_its_reward(tmp_path: Path, speech_rows) -> None:
    trainer = grpo_micro_trainer(workspace(tmp_path, speech_rows), method="mpgrpo", max_completion_length=64)
    rows = [dict(r) for r in trainer.train_dataset.select(range(2)) for _ in range(4)]
    batch = trainer._generate_and_score_completions(rows)
    off = batch["off_policy_mask"].tolist()
    assert off == [False, False, False, True] * 2
    tok = trainer.processing_class.tokenizer
    for i in (3, 7):
        ids = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        assert tok.decode(ids, skip_special_tokens=True) == rows[i]["reference"]
        assert ids[-1] == tok.eos_token_id
    # The reference has BLEU 1, the best in its group: the largest advantage of the group.
    adv = batch["advantages"].view(2, 4)
    assert torch.all(adv[:, 3] >= adv[:, :3].max(dim=1).values)
    assert trainer._metrics["train"]["rewards/off_policy/mean"][-1] == pytest.approx(1.0)


def test_too_long_off_policy_text_keeps_the_on_policy_sample(tmp_path: Path, speech_rows) -> None:
    trainer = grpo_micro_trainer(workspace(tmp_path, speech_rows), method="mpgrpo", max_completion_length=2)
    rows = [dict(r) for r in trainer.train_dataset.select(range(2)) for _ in range(4)]
    batch = trainer._generate_and_score_completions(rows)
    assert not batch["off_policy_mask"].any()
    assert trainer._metrics["train"]["offpolicy/too_long"][-1] == 2.0


# --- the stage --------------------------------------------------------------------------------------------------------


def test_grpo_stage_trains_saves_and_writes_curves(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    # chrF gives an untrained model graded rewards (its BLEU is 0 for every completion: no advantage, no update).
    result = run_grpo_micro(root, reward_weights={"chrf": 1.0})
    before, after = state_of(root / "models" / "base"), state_of(result.model_dir)
    assert result.global_step == 2 and result.best_step == 2
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert any("audio_tower" in k for k in changed) and any("language_model" in k for k in changed)
    summary = json.loads((root / "metrics" / "grpo" / f"{TASK}.train.json").read_text())
    assert summary["global_step"] == 2 and summary["validation"][0]["step"] == 2
    curve = list(csv.DictReader((root / "metrics" / "grpo" / f"{TASK}.curve.csv").open()))
    assert [r["step"] for r in curve] == ["1", "2"]
    assert all(r["reward"] != "" and r["kl"] != "" and r["entropy"] != "" for r in curve)
    assert not (root / "models" / ".work" / "grpo" / TASK).exists()


@pytest.mark.slow
def test_one_step_with_the_default_bleu_reward_moves_the_weights(tmp_path: Path, speech_rows) -> None:
    """The pipeline's own reward (unsmoothed sentence BLEU) gives a gradient: from a model that has learnt the clips
    (micro SFT, 200 steps) its samples earn different BLEU within a group, so one step updates the weights."""
    assert grpo_micro_config().grpo.reward_weights == Config().grpo.reward_weights == {"bleu": 1.0}
    assert grpo_micro_config().grpo.reward_options == Config().grpo.reward_options
    root = workspace(tmp_path, speech_rows)
    run_sft(sft_micro_config(max_steps=200, eval_every=200, lr=1e-2), TASK, micro_paths(root))
    result = run_grpo_micro(root, init="sft", max_steps=1, eval_every=1, max_completion_length=32, max_new_tokens=32)
    step = next(csv.DictReader((root / "metrics" / "grpo" / f"{TASK}.curve.csv").open()))
    assert float(step["reward_std"]) > 0.05 and float(step["frac_reward_zero_std"]) < 1.0
    before, after = state_of(root / "models" / "sft" / TASK), state_of(result.model_dir)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("audio_tower" in k for k in changed) and any("language_model" in k for k in changed)


def test_mpgrpo_with_no_off_policy_samples_equals_grpo(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    grpo = state_of(run_grpo_micro(root, "grpo", reward_weights={"chrf": 1.0}).model_dir)
    section = {**to_plain(grpo_micro_config(reward_weights={"chrf": 1.0}).grpo), "num_off_policy": 0}
    plain = run_grpo(config_from_dict({"grpo": section, "mpgrpo": {"num_off_policy": 0}}), "mpgrpo", TASK,
                     micro_paths(root))
    mixed, base = state_of(plain.model_dir), state_of(root / "models" / "base")
    assert any(not torch.equal(grpo[k], base[k]) for k in grpo)  # training did move the weights
    assert all(torch.equal(grpo[k], mixed[k]) for k in grpo)


def to_plain(section: Any) -> dict[str, Any]:
    from steps.core.config import to_dict

    return to_dict(section)


def poison_gradients_after(step: int) -> Any:
    """NaN gradients from optimiser step `step` on (NaN weights would break sampling before any loss is computed)."""
    from transformers import TrainerCallback

    class Poison(TrainerCallback):
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step >= step:
                next(p for p in model.parameters() if p.grad is not None).grad.fill_(float("nan"))

    return Poison()


def test_nan_guard_stops_grpo_with_a_clear_message(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    with pytest.raises(NonFiniteLossError, match=r"grpo\.lr"):
        run_grpo_micro(root, callbacks=[poison_gradients_after(1)], max_steps=3, eval_every=1,
                       reward_weights={"chrf": 1.0})
    assert not (root / "models" / "grpo" / TASK).exists()  # no half-written output


def test_switching_off_dropout_leaves_the_tiny_preset_as_it_is(tiny_sallm) -> None:
    import copy

    from steps.training.grpo_trainer import switch_off_dropout

    model, _ = tiny_sallm
    assert switch_off_dropout(copy.deepcopy(model)) == 0  # no dropout anywhere: GRPO on the presets is unchanged


def test_trainer_class_is_built_on_trl_grpo_trainer() -> None:
    from trl import GRPOTrainer

    assert issubclass(AudioGRPOTrainer, GRPOTrainer)


def test_the_reference_model_encodes_real_frames_only_as_the_policy(tmp_path: Path, speech_rows) -> None:
    """TRL builds the reference model itself (beta > 0), past loading's crop of the padded audio window: the trainer
    applies it, so the reference pass does not run the encoder over the whole window."""
    from steps.modeling.encoder_speedups import _EachClipOnce, _RealFramesOnly

    trainer = grpo_micro_trainer(workspace(tmp_path, speech_rows))
    for model in (trainer.model, trainer.ref_model):
        encoder = model.model.audio_tower
        assert isinstance(encoder, _RealFramesOnly) and isinstance(encoder, _EachClipOnce)
