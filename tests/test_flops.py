"""steps/training/flops.py: the estimated FLOPs of every pass, checked against numbers computed by hand (the config's
dimensions, the batches' masks and completion lengths) and against torch's own FLOP counter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from steps.modeling.batches import encode_for_training, model_inputs
from steps.modeling.encoder_speedups import encode_real_frames_only
from steps.modeling.families import adapter_for, get_submodule
from steps.training.flops import FlopCounter, compute_figure, flop_phase, llm_matmul_weights
from steps.training.runner import ComputeMeter
from steps.training.sft_trainer import run_sft
from tests.helpers import TASK, grpo_micro_trainer, micro_paths, run_grpo_micro, sft_micro_config, through_a_checkpoint
from tests.tiny_sallm import MICRO, build_micro, workspace

# The micro preset's LLM matmuls by hand: q, k, v, o (k and v at the KV heads' width), gate, up, down; the LM head.
HEAD_DIM = MICRO.llm_dim // MICRO.llm_heads
N_LLM = MICRO.llm_layers * (2 * MICRO.llm_dim ** 2 + 2 * MICRO.llm_dim * MICRO.llm_kv_heads * HEAD_DIM
                            + 3 * MICRO.llm_dim * MICRO.llm_ffn_dim) + MICRO.vocab_size * MICRO.llm_dim


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


def test_llm_matmul_weights_are_the_configs(speech_rows) -> None:
    model, _ = build_micro(speech_rows)
    assert llm_matmul_weights(model) == (N_LLM, N_LLM) == (19456, 19456)
    for p in model.model.language_model.parameters():
        p.requires_grad_(False)
    assert llm_matmul_weights(model) == (N_LLM, MICRO.vocab_size * MICRO.llm_dim)  # the LM head still trains


MATMULS = ("mm", "addmm", "convolution", "convolution_backward")  # torch's counts of nn.Linear / conv work


@pytest.mark.parametrize("frozen", [(), ("model.audio_tower",), ("model.language_model", "lm_head")])
def test_a_loss_pass_counts_what_torchs_flop_counter_counts(speech_rows, frozen: tuple[str, ...]) -> None:
    """On a batch without padding, forward + backward: the matmul and convolution FLOPs torch counts op by op, the
    backward's weight and input gradients included (a frozen part computes no weight gradient, and an input nothing
    below needs no gradient)."""
    model, processor = build_micro(speech_rows)
    adapter = adapter_for(model)
    encode_real_frames_only(get_submodule(model, adapter.encoder))  # as loading does for training
    for name in frozen:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(False)
    model.train()
    row = speech_rows[1]
    batch = model_inputs(encode_for_training(processor, adapter, [row["prompt"]] * 2, [row["reference"]] * 2,
                                             [row["audio"]] * 2), adapter)
    counter = FlopCounter()
    counter.watch(model)
    counter.active = True
    with FlopCounterMode(display=False) as torch_counter:
        model(**batch).loss.backward()
    counter.end_step()
    expected = sum(v for op, v in torch_counter.get_flop_counts()["Global"].items()
                   if str(op).split(".")[1] in MATMULS)
    assert counter.total == expected > 0
    llm_forward = 2 * N_LLM * int(batch["attention_mask"].sum())
    llm_backward = 1 if "lm_head" in frozen else 2  # a frozen LLM: the input gradients only (to the projector)
    assert counter.totals["loss"]["llm"] == llm_forward * (1 + llm_backward)


def with_meter(trainer: Any) -> ComputeMeter:
    meter = ComputeMeter()
    trainer.add_callback(meter)
    meter.watch(trainer)
    meter.flops.active = True
    return meter


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_grpo_phases_count_the_positions_that_run(tmp_path: Path, speech_rows, shared_prefix: bool) -> None:
    """Rollouts: each prompt's prefill (once per group with shared prefixes), then one position per row and decoding
    step; reference and loss passes: prompt (once per group when shared) + completions; the loss pass x 3."""
    trainer = grpo_micro_trainer(workspace(tmp_path, speech_rows), shared_prefix=shared_prefix)
    g = trainer.num_generations
    if shared_prefix:  # skip the first-use check against the plain pass (it runs both, once per model)
        for model in (trainer.model, trainer.ref_model):
            trainer._prefix_check.verdicts[id(trainer.accelerator.unwrap_model(model))] = True
    meter = with_meter(trainer)
    rows = [dict(r) for r in trainer.train_dataset.select(range(2)) for _ in range(g)]
    batch = trainer._generate_and_score_completions(rows)
    batch["advantages"] = torch.linspace(-1.0, 1.0, len(rows))
    trainer.compute_loss(trainer.model, batch).backward()
    meter.flops.end_step()
    counts = meter.flops.totals

    prompt_mask, completion_mask = batch["prompt_mask"], batch["completion_mask"]
    rows_n, prompt_columns, steps = completion_mask.size(0), prompt_mask.size(1), completion_mask.size(1)
    # shared: every prompt column but the last once per group, the last with each row; plain: every row's prompt
    prompts = (int(prompt_mask[::g, :prompt_columns - 1].sum()) + rows_n) if shared_prefix else int(prompt_mask.sum())
    rollout = prompts + rows_n * (steps - 1)  # generate steps every row until the longest completion ends
    scored = prompts + int(completion_mask.sum())
    assert counts["rollouts"]["llm"] == 2 * N_LLM * rollout
    assert counts["reference"]["llm"] == 2 * N_LLM * scored
    assert counts["loss"]["llm"] == 3 * 2 * N_LLM * scored
    # The encoder runs once per distinct clip in every pass (encode_each_clip_once), the projector once per row of
    # the LLM's pass: as much as one forward of the distinct rows (shared prefixes) or of every row (plain passes).
    # (TRL builds the reference model itself, without encode_real_frames_only: its encoder runs the whole window.)
    step = g if shared_prefix else 1
    alone = {}
    for name, model in (("policy", trainer.model), ("reference", trainer.ref_model)):
        counter = FlopCounter()
        counter.watch(model)
        counter.active = True
        with torch.no_grad():
            model(input_ids=batch["prompt_ids"][::step], attention_mask=prompt_mask[::step],
                  input_features=batch["input_features"][::step],
                  feature_attention_mask=batch["feature_attention_mask"][::step])
        counter.end_step()
        alone[name] = counter.totals["loss"]["audio"]
    assert counts["rollouts"]["audio"] == alone["policy"] > 0
    assert counts["reference"]["audio"] == alone["reference"] > 0
    assert counts["loss"]["audio"] > 2 * counts["rollouts"]["audio"]  # forward + backward
    figures = meter.flops.figures()
    assert figures["total"] == figures["loss"] + figures["rollouts"] + figures["reference"] \
        == figures["llm"] + figures["audio"]


def test_phases_nest_and_calls_outside_a_step_are_not_counted(speech_rows) -> None:
    model, processor = build_micro(speech_rows)
    adapter = adapter_for(model)
    row = speech_rows[0]
    batch = model_inputs(encode_for_training(processor, adapter, [row["prompt"]], [row["reference"]],
                                             [row["audio"]]), adapter)

    class Trainer:  # what flop_phase looks for: a callback with a FlopCounter
        callback_handler = type("Handler", (), {"callbacks": [ComputeMeter()]})()

    counter = Trainer.callback_handler.callbacks[0].flops
    counter.watch(model)
    with torch.no_grad():
        model(**batch)  # not active: validation, logging
        assert counter.total == 0
        counter.active = True
        with flop_phase(Trainer, "reference"), flop_phase(Trainer, "rollouts"):
            model(**batch)
        model(**batch)  # no phase: a loss pass (forward only here: no grad)
    counter.end_step()
    assert counter.totals["rollouts"]["llm"] == counter.totals["loss"]["llm"] == 2 * N_LLM * batch["input_ids"].numel()
    assert counter.totals["reference"] == {"llm": 0.0, "audio": 0.0}
    with pytest.raises(ValueError, match="unknown FLOP phase 'rollout'"), counter.phase("rollout"):
        pass
    counter.close()
    counter.active = True
    with torch.no_grad():
        model(**batch)
    counter.end_step()
    assert counter.totals["reference"]["llm"] == 0 and counter.totals["loss"]["llm"] == 2 * N_LLM * batch[
        "input_ids"].numel()  # hooks removed: nothing more counted


def test_compute_figure_reads_the_flops_total_and_plain_figures() -> None:
    compute = {"train_tokens": 1000, "train_seconds": 2.5, "flops": {"total": 7e12, "loss": 5e12}}
    assert compute_figure(compute, "flops") == 7e12
    assert compute_figure(compute, "train_tokens") == 1000.0
    assert compute_figure({"train_tokens": 1}, "flops") is None


def test_the_meter_state_keeps_the_flops_through_a_checkpoint(tmp_path: Path) -> None:
    meter = ComputeMeter()
    meter.flops.totals["rollouts"]["llm"] = 123.0
    restored = through_a_checkpoint(meter, tmp_path / "checkpoint-3")
    assert restored.figures()["flops"] == meter.figures()["flops"] and restored.figures()["flops"]["rollouts"] == 123


# --- micro runs -------------------------------------------------------------------------------------------------------


def test_sft_run_records_its_flops_and_the_cumulative_flops_at_each_validation(tmp_path: Path, speech_rows) -> None:
    paths = micro_paths(workspace(tmp_path, speech_rows))
    run_sft(sft_micro_config(max_steps=4, eval_every=2, start_candidate=True), TASK, paths)
    summary = json.loads(paths.train_summary("sft", TASK).read_text())
    compute, history = summary["compute"], summary["validation"]
    flops = compute["flops"]
    # every LLM position of SFT's loss passes is a train token (padding is neither): 2 N forward + 4 N backward
    assert flops["llm"] == 6 * N_LLM * compute["train_tokens"]
    assert flops["audio"] > 0 and flops["total"] == flops["loss"] == flops["llm"] + flops["audio"]
    assert flops["rollouts"] == flops["reference"] == 0
    assert [h["step"] for h in history] == [0, 2, 4]  # the start model (step 0) is a candidate: no compute yet
    assert history[0]["flops"] == 0 and history[0]["train_seconds"] == 0
    assert 0 < history[1]["flops"] < history[2]["flops"] == flops["total"]
    assert 0 < history[1]["train_seconds"] <= history[2]["train_seconds"] <= compute["train_seconds"]


def test_grpo_run_records_rollouts_and_reference_flops(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    run_grpo_micro(root, reward_weights={"chrf": 1.0})
    summary = json.loads((root / "metrics" / "grpo" / f"{TASK}.train.json").read_text())
    flops = summary["compute"]["flops"]
    assert min(flops["loss"], flops["rollouts"], flops["reference"], flops["audio"]) > 0
    assert flops["total"] == flops["loss"] + flops["rollouts"] + flops["reference"]
    assert summary["validation"][-1]["flops"] == flops["total"]


def test_each_step_is_summed_over_processes_before_it_is_added() -> None:
    counter = FlopCounter()
    counter._step["rollouts"]["llm"] = 5.0
    counter.end_step(reduce=lambda t: t * 2)  # as if a second process had counted the same
    counter._step["loss"]["audio"] = 1.0
    counter.end_step(reduce=lambda t: t * 2)
    assert counter.totals["rollouts"]["llm"] == 10.0 and counter.totals["loss"]["audio"] == 2.0
    assert counter._step["rollouts"]["llm"] == 0.0 and counter.total == 12.0
