"""Granite Speech's audio LoRA through loading, training (finetune full / lora), GRPO's passes, saving and reloading.

A tiny Granite Speech with its adapter, laid out as the released checkpoints are (tests/tiny_granite.py), built once
per module. Its feature extractor runs on torchaudio where it imports, else on tests/torchaudio_stub.py (this
machine), so all of this is in the default suite:
  PYTHONPATH=. python -m pytest tests/test_granite_adapter.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from steps.core.config import config_from_dict
from steps.modeling import audio_adapter
from steps.modeling.audio_adapter import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, PEFT_PREFIX
from steps.modeling.batches import encode_for_training, model_inputs
from steps.modeling.families import adapter_for
from steps.modeling.generation import GenerationSettings, generate
from steps.modeling.loading import apply_finetune_switches, load_model_and_processor
from tests.tiny_granite import ADAPTER, lora_calls, token_logps, without_adapter

# Granite's extractor on torchaudio or its torch-only stand-in, for the whole module (tests/granite_fixtures.py)
pytestmark = pytest.mark.usefixtures("granite_extractor")


@pytest.fixture(scope="module")
def root(granite_root: Path) -> Path:
    return granite_root

# The paper's Granite params file: audio encoder frozen, projector and LLM trained (configs/granite_speech_3.3_2b.yaml).
GRANITE_MODEL = {"freeze_audio_encoder": True, "freeze_projector": False, "freeze_llm": False}
LORA = {"r": ADAPTER["r"], "alpha": ADAPTER["alpha"], "target_modules": ADAPTER["target_modules"]}




@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


def model_config(**model: Any) -> Any:
    return config_from_dict({"model": {**GRANITE_MODEL, **model}}).model


def load(folder: Path, **model: Any) -> tuple[Any, Any]:
    return load_model_and_processor(folder, model_config(**model))


def training_batch(processor: Any, model: Any, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    adapter = adapter_for(model)
    batch = encode_for_training(processor, adapter, [r["prompt"] for r in rows], [r["reference"] for r in rows],
                                [r["audio"] for r in rows])
    return model_inputs(batch, adapter)


# --- on disk ----------------------------------------------------------------------------------------------------------


def test_the_tiny_checkpoint_is_laid_out_as_the_released_one_and_loads_with_its_adapter_on(root: Path) -> None:
    base = root / "models" / "base"
    assert json.loads((base / "config.json").read_text())["has_lora_adapter"] is True
    settings = json.loads((base / ADAPTER_CONFIG_NAME).read_text())
    assert (settings["peft_type"], settings["r"], settings["lora_alpha"]) == ("LORA", 8, 4)
    assert sorted(settings["target_modules"]) == ["q_proj", "v_proj"]
    weights = load_file(base / "model.safetensors")
    assert {"language_model.model.layers.0.self_attn.q_proj.weight", "encoder.input_linear.weight"} <= set(weights)
    assert not any("lora" in k or "base_layer" in k for k in weights)  # the base holds no adapter tensor
    lora = load_file(base / ADAPTER_WEIGHTS_NAME)
    assert sorted(lora) == sorted(f"{PEFT_PREFIX}language_model.model.layers.0.self_attn.{m}.lora_{ab}.weight"
                                  for m in ("q_proj", "v_proj") for ab in "AB")

    model, _ = load(base)  # transformers' from_pretrained reads both files
    assert audio_adapter.audio_adapter_name(model) == "default" and audio_adapter.adapter_is_active(model)
    state = model.state_dict()
    for key, tensor in lora.items():  # the adapter's values, in place
        module, ab = key.removeprefix(PEFT_PREFIX).replace("language_model.model.", "model.language_model.").rsplit(
            ".lora_", 1)
        assert torch.equal(state[f"{module}.lora_{ab[0]}.default.weight"], tensor)
    assert torch.equal(state["model.language_model.layers.0.self_attn.q_proj.base_layer.weight"],
                       weights["language_model.model.layers.0.self_attn.q_proj.weight"])


def test_a_declared_adapter_that_is_missing_stops_with_the_file_names(root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "no_adapter"
    shutil.copytree(root / "models" / "base", broken)
    (broken / ADAPTER_CONFIG_NAME).unlink()
    (broken / ADAPTER_WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"has_lora_adapter: true .* adapter_config\.json"):
        load(broken)


# --- every pass with audio --------------------------------------------------------------------------------------------


def test_grpo_generation_reference_and_loss_passes_apply_the_adapter(root: Path, tmp_path: Path) -> None:
    from tests.helpers import grpo_micro_trainer as micro_trainer

    trainer = micro_trainer(root)  # beta 0.02: TRL loads a reference model from models/base itself
    model, ref = trainer.model, trainer.ref_model
    assert audio_adapter.adapter_is_active(model) and audio_adapter.adapter_is_active(ref)
    log: list[tuple[str, bool, bool]] = []
    handles = lora_calls(model, log, "policy") + lora_calls(ref, log, "reference")
    rows = [dict(r) for r in trainer.train_dataset.select([0, 1]) for _ in range(trainer.num_generations)]
    batch = trainer._prepare_inputs(rows)  # rollouts (generate) + reference log-probs
    batch["advantages"] = torch.linspace(-1.0, 1.0, len(rows))
    trainer.compute_loss(model, batch).backward()
    for handle in handles:
        handle.remove()
    assert {(tag, grad) for tag, _, grad in log} == {("policy", False), ("reference", False), ("policy", True)}
    assert all(active for _, active, _ in log)  # generation, reference and loss passes: adapter on in each

    # The reference log-probs are those of the model with its adapter, not of the base LLM.
    off = load(without_adapter(root / "models" / "base", tmp_path / "off"))[0].train(ref.training)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    audio = {k: batch[k] for k in trainer.adapter.feature_keys}
    tokens = batch["completion_mask"].bool()
    without, with_ref = token_logps(off, ids, mask, width, audio), token_logps(ref, ids, mask, width, audio)
    assert torch.allclose(with_ref[tokens], batch["ref_per_token_logps"][tokens], atol=1e-5)
    assert (with_ref[tokens] - without[tokens]).abs().max() > 1e-2

    # A text-only generate() switches the adapter off (transformers' rule); the next pass with audio has it on again.
    model.generate(input_ids=batch["prompt_ids"][:1, :3], max_new_tokens=1, do_sample=False)
    assert not audio_adapter.adapter_is_active(model)
    with torch.no_grad():
        trainer._get_per_token_logps_and_entropies(model, ids, mask, width, **audio)
    assert audio_adapter.adapter_is_active(model)


def test_grpo_keeps_the_conformers_batch_norm_on_its_running_statistics(root: Path) -> None:
    from steps.training.grpo_trainer import BATCH_NORMS
    from tests.helpers import grpo_micro_trainer as micro_trainer

    trainer = micro_trainer(root)
    model, ref = trainer.model, trainer.ref_model
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS)]
    assert norms and model.train().training and not any(m.training for m in norms)  # Trainer's train() keeps them
    rows = [dict(r) for r in trainer.train_dataset.select([0, 1]) for _ in range(trainer.num_generations)]
    batch = trainer._prepare_inputs(rows)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width, tokens = batch["completion_ids"].size(1), batch["completion_mask"].bool()
    audio = {k: batch[k] for k in trainer.adapter.feature_keys}
    # At step 0 the policy is its reference: the loss pass (training mode) scores what the reference pass scored ...
    policy = token_logps(model, ids, mask, width, audio)
    torch.testing.assert_close(policy[tokens], batch["ref_per_token_logps"][tokens], atol=1e-6, rtol=0)
    # ... which a batch norm on the batch's statistics does not
    for m in norms:
        torch.nn.Module.train(m, True)
    drifted = token_logps(model, ids, mask, width, audio)
    assert (drifted[tokens] - batch["ref_per_token_logps"][tokens]).abs().max() > 1e-5
    assert not ref.training or not any(m.training for m in ref.modules() if isinstance(m, BATCH_NORMS))


def test_sft_loss_applies_the_adapter(root: Path, speech_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    model, processor = load(root / "models" / "base")
    off, _ = load(without_adapter(root / "models" / "base", tmp_path / "off"))
    batch = training_batch(processor, model, speech_rows[:4])
    log: list[tuple[str, bool, bool]] = []
    handles = lora_calls(model, log, "sft")
    model.disable_adapters()  # as a text-only generate() would leave it
    loss = model.train()(**batch).loss
    for handle in handles:
        handle.remove()
    assert log and all(active for _, active, _ in log)
    with torch.no_grad():
        assert abs(loss.item() - off.train()(**batch).loss.item()) > 1e-3


# --- what trains ------------------------------------------------------------------------------------------------------


def gradients(root: Path, rows: list[dict[str, Any]], **model_settings: Any) -> dict[str, set[str]]:
    """Which parameter groups got a non-zero gradient from one SFT loss, and which are trainable."""
    cfg = model_config(**model_settings)
    model, processor = load_model_and_processor(root / "models" / "base", cfg)
    model = apply_finetune_switches(model, cfg)
    model.train()(**training_batch(processor, model, rows)).loss.backward()

    def group(name: str) -> str:
        if ".lora_" in name:
            return "audio_lora"
        for part in ("encoder", "projector", "language_model"):
            if name.startswith(f"model.{part}"):
                return part
        return name  # lm_head is tied to the embeddings (Granite's config): not a parameter of its own

    got = {group(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {group(n) for n, p in model.named_parameters() if p.requires_grad}
    return {"grad": got, "trainable": trainable}


def test_finetune_full_trains_the_adapter_with_the_llm_and_projector(root, speech_rows) -> None:
    # docs/real_models.md: full = every weight not frozen, the audio LoRA included (the encoder is frozen here).
    out = gradients(root, speech_rows[:4], finetune="full")
    assert out["grad"] == out["trainable"] == {"audio_lora", "language_model", "projector"}


def test_finetune_lora_trains_the_checkpoints_adapter_and_the_projector_only(root, speech_rows) -> None:
    # docs/real_models.md: lora = the checkpoint's own adapter (no second one); the LLM's base weights stay frozen.
    out = gradients(root, speech_rows[:4], finetune="lora", lora=LORA)
    assert out["grad"] == out["trainable"] == {"audio_lora", "projector"}
    model, _ = load(root / "models" / "base", finetune="lora", lora=LORA)
    model = apply_finetune_switches(model, model_config(finetune="lora", lora=LORA))
    assert not hasattr(model, "peft_config") or list(model.peft_config) == ["default"]  # no second adapter


def test_finetune_lora_that_does_not_describe_the_adapter_stops(root: Path) -> None:
    cfg = model_config(finetune="lora", lora={"r": 64, "alpha": 128, "target_modules": ["q_proj", "k_proj"]})
    model, _ = load_model_and_processor(root / "models" / "base", cfg)
    with pytest.raises(ValueError, match=r"says r=8, alpha=4, target_modules=\['q_proj', 'v_proj'\]"):
        apply_finetune_switches(model, cfg)


# --- save, reload -----------------------------------------------------------------------------------------------------


def trained(root: Path) -> tuple[Any, Any]:
    """The base model with every trainable weight moved, as training would leave it (adapter included)."""
    cfg = model_config(finetune="full")
    model, processor = load_model_and_processor(root / "models" / "base", cfg)
    model = apply_finetune_switches(model, cfg)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval(), processor


def saved(model: Any, processor: Any, folder: Path) -> Path:
    """What the training stages write (steps/training/runner.py): the model, the processor."""
    audio_adapter.save_model(model, folder)
    processor.save_pretrained(folder)
    return folder


def test_save_then_reload_keeps_the_layout_and_gives_identical_greedy_outputs(root, speech_rows, tmp_path) -> None:
    from steps.core.registry import MODEL_ARTIFACT, SpeechPythonModel

    model, processor = trained(root)
    folder = saved(model, processor, tmp_path / "sft")
    for name in (ADAPTER_WEIGHTS_NAME, "model.safetensors"):  # the released layout again
        assert load_file(folder / name).keys() == load_file(root / "models" / "base" / name).keys()

    rows = speech_rows[:4]
    prompts, audios = [r["prompt"] for r in rows], [r["audio"] for r in rows]
    settings = GenerationSettings(max_new_tokens=8)
    expected = generate(model, processor, prompts, audios, settings)
    reloaded, reloaded_processor = load(folder)  # evaluate's loader
    batch = training_batch(processor, model, rows)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded.eval()(**batch).logits)
    assert generate(reloaded, reloaded_processor, prompts, audios, settings) == expected

    pyfunc = SpeechPythonModel()  # the registered MLflow model's loading and answering
    pyfunc.load_context(type("Context", (), {"artifacts": {MODEL_ARTIFACT: str(folder)}})())
    import pandas as pd

    answers = pyfunc.predict(None, pd.DataFrame({"prompt": prompts, "audio": audios}), {"max_new_tokens": 8})
    assert answers == expected


def test_checkpoints_of_a_run_reload_the_adapter_exactly(root: Path, tmp_path: Path) -> None:
    """Trainer checkpoints (steps.training.checkpoints.save_in_model_layout) and how the Trainer loads them back for
    resuming and for the best model (a non-strict load_state_dict of model.safetensors)."""
    from steps.training.checkpoints import save_in_model_layout

    model, _ = trained(root)
    save_in_model_layout(model, lambda: model.save_pretrained(str(tmp_path / "checkpoint-2")))
    fresh, _ = load(root / "models" / "base")
    result = fresh.load_state_dict(load_file(tmp_path / "checkpoint-2" / "model.safetensors"), strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}  # tied to the embeddings
    state = fresh.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_transformers_own_save_would_lose_the_adapted_layers(root: Path, tmp_path: Path) -> None:
    """Why steps.modeling.audio_adapter.save_model exists (transformers 5.23): a reload of save_pretrained's output
    misses q_proj / v_proj (stored as `base_layer`) and initialises them at random. Fails once transformers fixes it:
    then save_model can go back to save_pretrained."""
    model, _ = trained(root)
    model.save_pretrained(str(tmp_path / "stock"))
    keys = load_file(tmp_path / "stock" / "model.safetensors").keys()
    assert any("q_proj.base_layer" in k for k in keys) and not any(k.endswith("q_proj.weight") for k in keys)


@pytest.mark.slow
def test_registered_mlflow_model_answers_as_the_saved_folder(root, speech_rows, tmp_path, monkeypatch) -> None:
    import mlflow
    import pandas as pd

    from steps.core import registry, tracking
    from steps.core.config import Config

    for var in (tracking.ENV_RUN_ID, tracking.ENV_PARENT_RUN_ID, tracking.ENV_TRACKING, "RANK"):
        monkeypatch.delenv(var, raising=False)
    store = tmp_path / "repo"
    (store / "mlruns").mkdir(parents=True)
    monkeypatch.setenv(tracking.ENV_ROOT, str(store))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlruns' / 'mlflow.db'}")
    model, processor = trained(root)
    folder = saved(model, processor, tmp_path / "sft")
    with tracking.stage_run(Config(), stage="sft", task="ast", method="sft") as run:
        uri = registry.register_model(run, folder, "ast", "sft")
    assert uri == "models:/speech-grpo-ast-sft/1"
    rows = speech_rows[:3]
    frame = pd.DataFrame({"prompt": [r["prompt"] for r in rows], "audio": [r["audio"] for r in rows]})
    answers = mlflow.pyfunc.load_model(uri).predict(frame, params={"max_new_tokens": 8})
    assert answers == generate(model, processor, list(frame["prompt"]), list(frame["audio"]),
                               GenerationSettings(max_new_tokens=8))
