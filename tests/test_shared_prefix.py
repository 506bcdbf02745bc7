"""Shared-prefix log-probs and rollouts (steps/modeling/shared_prefix.py) give what the plain passes give.

Every equality is against the plain pass on the same model and batch: per-token log-probs, entropies and parameter
gradients (accumulated over two micro-batches), on the micro tiny preset with real espeak clips, a tiny Qwen2-Audio
config (grouped-query attention, two LLM layers) and a tiny Granite Speech (input features handed in directly: its
feature extractor needs torchaudio). Batches have left-padded prompts of different lengths, groups in scattered rows
and rows that share their prompt with no other row.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from steps.modeling.encoder_speedups import row_groups
from steps.modeling.shared_prefix import (
    ORIGINAL_FORWARD,
    LogProbCheck,
    SharedPrefixUnsupported,
    check_supported,
    enable_shared_prefix,
    prefill_once,
)

PAD, AUDIO = 0, 5


# --- grouping ---------------------------------------------------------------------------------------------------------


def test_groups_are_found_wherever_the_rows_are_and_only_for_equal_rows() -> None:
    ids = torch.tensor([[1, 2], [3, 4], [1, 2], [1, 2], [3, 4], [1, 2]])
    audio = torch.tensor([[0.5, 0.0], [1.0, 1.0], [0.5, 0.0], [0.5, 0.0], [1.0, 1.0], [0.5, -1.0]])
    groups = row_groups(ids, audio)
    assert groups.count == 3 and groups.rows == 6
    inverse = groups.inverse.tolist()
    assert inverse[0] == inverse[2] == inverse[3] and inverse[1] == inverse[4]
    assert inverse[5] not in (inverse[0], inverse[1])  # same ids, other audio: not shared
    assert groups.first.tolist() == [0, 1, 5]
    assert row_groups(torch.arange(4).view(4, 1)).count == 4


def test_the_processor_runs_once_per_distinct_prompt_and_clip_with_the_same_outputs(tiny_sallm, speech_rows,
                                                                                   monkeypatch) -> None:
    import steps.modeling.shared_prefix as shared_prefix
    from steps.modeling.batches import encode_prompts
    from steps.modeling.families import adapter_for

    model, processor = tiny_sallm
    adapter = adapter_for(model)
    rows = [speech_rows[i] for i in (0, 1, 0, 0, 2, 1, 2, 0)]
    rows.append({**speech_rows[0], "audio": speech_rows[0]["audio"] * 0.5})  # same prompt, other clip
    prompts, audios = [r["prompt"] for r in rows], [r["audio"] for r in rows]
    calls: list[int] = []
    monkeypatch.setattr(shared_prefix, "encode_prompts",
                        lambda p, a, ps, *args, **kw: calls.append(len(ps)) or encode_prompts(p, a, ps, *args, **kw))
    once = shared_prefix.encode_prompts_once(processor, adapter, prompts, audios)
    every = encode_prompts(processor, adapter, prompts, audios)
    assert calls == [4]
    assert once.keys() == every.keys()
    for key, value in every.items():
        assert torch.equal(once[key], value) if isinstance(value, torch.Tensor) else once[key] == value


# --- models -----------------------------------------------------------------------------------------------------------


def fused(model: Any) -> Any:
    """`model` with TRL's fused LM head (as GRPOTrainer installs it) and the shared-prefix keyword."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    return enable_shared_prefix(model)


def tiny_qwen2_audio(sliding_window: bool = False) -> Any:
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", "num_mel_bins": 16, "encoder_layers": 1,
                      "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "d_model": 16, "max_source_positions": 40,
                      "dropout": 0.0, "attention_dropout": 0.0},
        text_config={"model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 256, "pad_token_id": PAD, "eos_token_id": 1, "bos_token_id": None,
                     "use_sliding_window": sliding_window, "sliding_window": 8 if sliding_window else None,
                     "max_window_layers": 0},
        audio_token_index=AUDIO)
    return Qwen2AudioForConditionalGeneration(config).eval()


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    return ids, (torch.arange(width) >= torch.tensor([width - len(r) for r in rows]).unsqueeze(1)).long()


def qwen2_audio_batch(model: Any, order: list[int], seed: int) -> dict[str, torch.Tensor]:
    """Three clips of different lengths (so prompts of different lengths), rows = clips[order]."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.tensor([80, 48, 64])
    features = torch.randn(3, 16, 80, generator=gen)
    mask = (torch.arange(80) < frames.unsqueeze(1)).long()
    features = features * mask.unsqueeze(1)
    _, n_audio = model.model.audio_tower._get_feat_extract_output_lengths(frames)
    prompts = [[7, 8, *[AUDIO] * int(n), 9, 10, 11] for n in n_audio]
    prompts[1] = [12, *prompts[1]]  # a longer text part too
    ids, attention = left_pad([prompts[i] for i in order])
    return {"prompt_ids": ids, "prompt_mask": attention, "input_features": features[order],
            "feature_attention_mask": mask[order]}


def micro_batch(tiny_sallm: Any, speech_rows: list[dict[str, Any]], order: list[int]) -> dict[str, torch.Tensor]:
    from steps.modeling.batches import encode_prompts, model_inputs
    from steps.modeling.families import adapter_for

    model, processor = tiny_sallm
    adapter = adapter_for(model)
    rows = [speech_rows[i] for i in order]
    batch = model_inputs(encode_prompts(processor, adapter, [r["prompt"] for r in rows],
                                        [r["audio"] for r in rows]), adapter)
    return {"prompt_ids": batch["input_ids"], "prompt_mask": batch["attention_mask"],
            **{k: batch[k] for k in adapter.feature_keys}}


def granite_batch(model: Any, order: list[int], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 12, 16, generator=gen)
    with torch.no_grad():
        n_audio = model.get_audio_features(features, return_dict=True).pooler_output.shape[1]
    prompts = [[10, 11, *[AUDIO] * n_audio, 12], [13, 10, 11, 14, *[AUDIO] * n_audio, 15, 12]]
    ids, attention = left_pad([prompts[i] for i in order])
    return {"prompt_ids": ids, "prompt_mask": attention, "input_features": features[order]}


def with_completions(batch: dict[str, torch.Tensor], width: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    """Random right-padded completions (1..width real tokens) after the prompts."""
    gen = torch.Generator().manual_seed(seed)
    n = batch["prompt_ids"].size(0)
    completion = torch.randint(20, vocab, (n, width), generator=gen)
    lengths = torch.randint(1, width + 1, (n,), generator=gen)
    mask = (torch.arange(width) < lengths.unsqueeze(1)).long()
    audio = {k: v for k, v in batch.items() if k not in ("prompt_ids", "prompt_mask")}
    return {"input_ids": torch.cat([batch["prompt_ids"], completion.masked_fill(mask == 0, PAD)], 1),
            "attention_mask": torch.cat([batch["prompt_mask"], mask], 1), "width": width, **audio}


def scored(model: Any, batch: dict[str, Any], shared: bool) -> Any:
    """The trainer's call: labels on the completion only, TRL's fused head."""
    ids, mask, width = batch["input_ids"], batch["attention_mask"], batch["width"]
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-width] = -100
    audio = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "width")}
    extra = {"shared_prefix_length": ids.size(1) - width} if shared else {}
    return model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, **audio, **extra)


def accumulate(model: Any, batches: list[dict[str, Any]], shared: bool) -> tuple[list[torch.Tensor], ...]:
    """Per-token log-probs and entropies of each micro-batch, and the gradients accumulated over all of them of a
    loss that weighs every token differently."""
    model.zero_grad()
    logps, entropies = [], []
    for batch in batches:
        out = scored(model, batch, shared)
        lp, ent = out.log_probs[:, -batch["width"]:], out.entropy[:, -batch["width"]:]
        weights = torch.linspace(-1.0, 2.0, lp.numel()).view_as(lp)
        ((lp * weights).sum() + 0.1 * (ent * weights).sum()).backward()
        logps.append(lp.detach())
        entropies.append(ent.detach())
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return logps, entropies, grads


def llm_rows(model: Any, fn: Any, llm: Any = None) -> list[tuple[int, int]]:
    """(rows, positions) of every LLM call that `fn` makes."""
    shapes: list[tuple[int, int]] = []
    handle = (llm or model.model.language_model).register_forward_pre_hook(
        lambda m, a, k: shapes.append(tuple(k["inputs_embeds"].shape[:2])), with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return shapes


def assert_same_as_plain(model: Any, batches: list[dict[str, Any]], groups: int, llm: Any = None) -> None:
    rows = batches[0]["input_ids"].size(0)
    calls = llm_rows(model, lambda: scored(model, batches[0], True), llm)
    assert calls[0][0] == groups and calls[1][0] == rows  # the prefix ran once per distinct prompt
    assert calls[1][1] == batches[0]["width"] + 1  # then the completions (and the last prompt token) only
    plain_lp, plain_ent, plain_grads = accumulate(model, batches, shared=False)
    lp, ent, grads = accumulate(model, batches, shared=True)
    for a, b in zip(plain_lp + plain_ent, lp + ent, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in plain_grads)
    for a, b in zip(plain_grads, grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5 * max(1.0, float(a.abs().max())), rtol=1e-4)


def test_micro_tiny_preset_gives_the_plain_log_probs_and_gradients(tiny_sallm, speech_rows) -> None:
    model = fused(copy.deepcopy(tiny_sallm[0]))
    vocab = model.config.text_config.vocab_size
    # clips of different lengths (left padding), groups in scattered rows, row 6 alone
    first = with_completions(micro_batch(tiny_sallm, speech_rows, [0, 1, 0, 2, 1, 0, 3, 2]), 6, vocab, 0)
    second = with_completions(micro_batch(tiny_sallm, speech_rows, [4, 4, 5, 5, 4, 5]), 4, vocab, 1)
    assert first["attention_mask"][:, 0].min() == 0  # some prompts are left-padded
    assert_same_as_plain(model, [first, second], groups=4)


def test_tiny_qwen2_audio_gives_the_plain_log_probs_and_gradients() -> None:
    model = fused(tiny_qwen2_audio())
    first = with_completions(qwen2_audio_batch(model, [0, 0, 1, 2, 1, 0, 1], seed=0), 5, 64, 2)
    second = with_completions(qwen2_audio_batch(model, [2, 2, 2, 1], seed=1), 3, 64, 3)
    assert_same_as_plain(model, [first, second], groups=3)


def test_tiny_granite_speech_gives_the_plain_log_probs_and_gradients() -> None:
    from tests.tiny_granite import tiny_granite

    model = fused(tiny_granite())
    first = with_completions(granite_batch(model, [0, 1, 1, 0, 0], seed=0), 4, 64, 4)
    second = with_completions(granite_batch(model, [1, 1, 0, 0], seed=1), 6, 64, 5)
    assert_same_as_plain(model, [first, second], groups=2)


def test_granite_speech_with_its_audio_adapter_gives_the_plain_log_probs_and_gradients() -> None:
    """The released checkpoints' audio LoRA (steps/modeling/audio_adapter.py), switched on by the input_features of
    the one call the trainer makes: it stays on for the completion tokens run against the shared prefix."""
    from steps.modeling.audio_adapter import adapter_is_active, prepare_audio_adapter
    from tests.tiny_granite import add_audio_adapter, tiny_granite

    model = add_audio_adapter(tiny_granite())
    prepare_audio_adapter(model, "the test model")
    model.disable_adapters()  # as a generate() without audio would leave it: the audio must switch it back on
    model = fused(model)
    first = with_completions(granite_batch(model, [0, 1, 1, 0, 0], seed=0), 4, 64, 4)
    second = with_completions(granite_batch(model, [1, 1, 0, 0], seed=1), 6, 64, 5)
    assert_same_as_plain(model, [first, second], groups=2)
    assert adapter_is_active(model)


def test_lora_wrapped_model_gives_the_plain_log_probs_and_gradients() -> None:
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    base = tiny_qwen2_audio()
    add_fused_lm_head(base, temperature=0.7, outputs=("log_probs", "entropy"))  # TRL: on the base, before PEFT
    model = enable_shared_prefix(get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])))
    first = with_completions(qwen2_audio_batch(base, [0, 0, 1, 1, 0], seed=0), 4, 64, 0)
    second = with_completions(qwen2_audio_batch(base, [2, 2, 1], seed=1), 3, 64, 1)
    assert_same_as_plain(model, [first, second], groups=2, llm=base.model.language_model)


def test_gradient_checkpointing_takes_the_plain_pass() -> None:
    model = fused(tiny_qwen2_audio()).train()
    model.gradient_checkpointing_enable()  # its layers would drop the prefix's cache
    batch = with_completions(qwen2_audio_batch(model, [0, 0, 1, 1], seed=0), 3, 64, 0)
    calls = llm_rows(model, lambda: scored(model, batch, True))
    assert calls == [(4, batch["input_ids"].size(1))]


def test_rows_that_share_nothing_take_the_plain_pass() -> None:
    model = fused(tiny_qwen2_audio())
    batch = with_completions(qwen2_audio_batch(model, [0, 1, 2], seed=0), 3, 64, 0)
    calls = llm_rows(model, lambda: scored(model, batch, True))
    assert calls == [(3, batch["input_ids"].size(1))]


def test_a_family_without_a_full_attention_cache_is_refused_with_the_switch_to_use() -> None:
    with pytest.raises(SharedPrefixUnsupported, match=r"grpo\.shared_prefix: false"):
        check_supported(tiny_qwen2_audio(sliding_window=True))


def test_the_keyword_is_added_once_and_plain_calls_are_untouched() -> None:
    model = fused(tiny_qwen2_audio())
    inner = getattr(model, ORIGINAL_FORWARD)
    enable_shared_prefix(model)
    assert getattr(model, ORIGINAL_FORWARD) is inner
    batch = with_completions(qwen2_audio_batch(model, [0, 0], seed=0), 3, 64, 0)
    with pytest.raises(ValueError, match="fused_lm_head=True"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], shared_prefix_length=3)


# --- rollouts ---------------------------------------------------------------------------------------------------------


def sampled(model: Any, batch: dict[str, torch.Tensor], shared: bool) -> tuple[torch.Tensor, dict[str, int]]:
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=6, pad_token_id=PAD,
                              eos_token_id=1)
    audio = {k: v for k, v in batch.items() if k not in ("prompt_ids", "prompt_mask")}
    torch.manual_seed(123)
    with torch.no_grad():
        if not shared:
            return model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], **audio,
                                  generation_config=config), {}
        with prefill_once(model) as counts:
            out = model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], **audio,
                                 generation_config=config)
        return out, counts


@pytest.mark.parametrize("family", ["qwen2_audio", "granite_speech"])
def test_one_prefill_per_prompt_samples_what_plain_generate_samples(family: str) -> None:
    if family == "qwen2_audio":
        model = fused(tiny_qwen2_audio())
        batch = qwen2_audio_batch(model, [0, 0, 0, 1, 1, 1, 2, 2], seed=0)
    else:
        from tests.tiny_granite import tiny_granite

        model = fused(tiny_granite())
        batch = granite_batch(model, [0, 0, 0, 1, 1, 1], seed=0)
    plain, _ = sampled(model, batch, shared=False)
    calls = llm_rows(model, lambda: sampled(model, batch, shared=True))
    shared, counts = sampled(model, batch, shared=True)
    assert counts == {"shared": 1, "plain": 0}
    groups = 3 if family == "qwen2_audio" else 2
    assert calls[0] == (groups, batch["prompt_ids"].size(1) - 1)  # one prefill per distinct prompt
    assert all(c == (batch["prompt_ids"].size(0), 1) for c in calls[1:])  # then one token per row and step
    assert torch.equal(shared, plain)
    assert "generate" not in vars(model)  # the stock generate is back


def test_micro_tiny_preset_rollouts_sample_what_plain_generate_samples(tiny_sallm, speech_rows) -> None:
    model = copy.deepcopy(tiny_sallm[0]).eval()
    batch = micro_batch(tiny_sallm, speech_rows, [0, 0, 0, 0, 1, 1, 1, 1])
    plain, _ = sampled(model, batch, shared=False)
    shared, counts = sampled(model, batch, shared=True)
    assert counts["shared"] == 1 and torch.equal(shared, plain)


# --- the check at first use -------------------------------------------------------------------------------------------


def test_first_use_check_keeps_a_correct_shared_path_and_drops_a_wrong_one() -> None:
    model = fused(tiny_qwen2_audio())
    batch = with_completions(qwen2_audio_batch(model, [0, 0, 1, 1], seed=0), 4, 64, 0)
    mask = batch["attention_mask"][:, -4:]
    reports: list[tuple[bool, float]] = []
    check = LogProbCheck(report=lambda ok, worst, mean: reports.append((ok, worst)))
    assert check.use_shared("right", lambda s: scored(model, batch, s), 4, mask)
    assert check.use_shared("right", lambda s: pytest.fail("checked twice"), 4, mask)

    def wrong(shared: bool) -> Any:
        out = scored(model, batch, shared)
        if shared:
            out.log_probs = out.log_probs + 0.05  # e.g. positions off by one
        return out

    assert not check.use_shared("wrong", wrong, 4, mask)
    assert [ok for ok, _ in reports] == [True, False]
    assert reports[0][1] < 1e-5 and reports[1][1] == pytest.approx(0.05, abs=1e-4)


def test_first_use_check_waits_for_a_batch_that_shares() -> None:
    model = fused(tiny_qwen2_audio())
    distinct = with_completions(qwen2_audio_batch(model, [0, 1], seed=0), 3, 64, 0)
    check = LogProbCheck()
    assert check.use_shared("m", lambda s: scored(model, distinct, s), 3, distinct["attention_mask"][:, -3:])
    assert "m" not in check.verdicts


# --- the trainer ------------------------------------------------------------------------------------------------------


def trainer_pair(root: Path, method: str = "grpo", **grpo: Any) -> tuple[Any, Any]:
    from tests.helpers import grpo_micro_trainer as micro_trainer

    return micro_trainer(root, method, shared_prefix=True, **grpo), micro_trainer(root, method, shared_prefix=False,
                                                                                  **grpo)


def one_step(trainer: Any, rows: list[dict[str, Any]], seed: int, micro_batches: int = 1) -> dict[str, Any]:
    """Rollouts, rewards, reference log-probs (seeded), then the loss over `micro_batches` accumulated backward passes
    and one optimiser step."""
    torch.manual_seed(seed)
    batch = trainer._prepare_inputs(rows)
    n = batch["prompt_ids"].size(0)
    batch["advantages"] = torch.linspace(-1.0, 1.0, n)  # an untrained model scores 0 on every completion
    trainer.current_gradient_accumulation_steps = micro_batches
    if trainer.optimizer is None:
        trainer.create_optimizer_and_scheduler(num_training_steps=4)
    trainer.optimizer.zero_grad()
    size = n // micro_batches
    for start in range(0, n, size):
        part = {k: v[start:start + size] if isinstance(v, torch.Tensor) and v.dim() and v.size(0) == n else v
                for k, v in batch.items()}
        trainer.compute_loss(trainer.model, part).backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.optimizer.step()
    return {"batch": batch, "grads": grads}


@pytest.mark.parametrize("method", ["grpo", "mpgrpo"])
def test_trainer_step_with_shared_prefixes_equals_the_plain_step(tmp_path: Path, speech_rows, method: str) -> None:
    from tests.tiny_sallm import workspace

    # long enough for mpgrpo's reference texts (a longer one would keep the on-policy sample)
    on, off = trainer_pair(workspace(tmp_path, speech_rows), method, max_completion_length=64)
    rows = [dict(r) for r in on.train_dataset.select(range(2)) for _ in range(4)]
    results = [one_step(t, rows, seed=7, micro_batches=2) for t in (on, off)]
    a, b = (r["batch"] for r in results)
    assert torch.equal(a["completion_ids"], b["completion_ids"])  # same samples under the same seed
    if method == "mpgrpo":
        assert a["off_policy_mask"].any() and torch.equal(a["off_policy_mask"], b["off_policy_mask"])
    torch.testing.assert_close(a["ref_per_token_logps"], b["ref_per_token_logps"], atol=1e-5, rtol=1e-5)
    grads_on, grads_off = results[0]["grads"], results[1]["grads"]
    assert grads_on.keys() == grads_off.keys() and any(g.abs().sum() > 0 for g in grads_off.values())
    for name, g in grads_off.items():
        torch.testing.assert_close(grads_on[name], g, atol=1e-5 * max(1.0, float(g.abs().max())), rtol=1e-4)
    weights_on = dict(on.model.named_parameters())
    for name, w in off.model.named_parameters():
        torch.testing.assert_close(weights_on[name], w, atol=1e-6, rtol=1e-5)
    assert on._prefix_check.verdicts and all(on._prefix_check.verdicts.values())
    assert on._metrics["train"]["shared_prefix/fallback"] == [0.0, 0.0]  # checked on the reference and the policy
    assert off._prefix_check is None


def test_trainer_falls_back_to_the_plain_pass_on_a_mismatch_and_says_so(tmp_path: Path, speech_rows, monkeypatch,
                                                                        caplog) -> None:
    import steps.modeling.shared_prefix as shared_prefix
    from tests.tiny_sallm import workspace

    on, off = trainer_pair(workspace(tmp_path, speech_rows))
    real = shared_prefix.shared_prefix_forward

    def off_by_a_bit(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        out.log_probs = out.log_probs - 0.01
        return out

    monkeypatch.setattr(shared_prefix, "shared_prefix_forward", off_by_a_bit)
    rows = [dict(r) for r in on.train_dataset.select(range(2)) for _ in range(4)]
    with caplog.at_level("WARNING"):
        results = [one_step(t, rows, seed=3) for t in (on, off)]
    assert "MISMATCH, falling back to the plain pass" in caplog.text
    assert on._metrics["train"]["shared_prefix/fallback"][0] == 1.0
    assert not any(on._prefix_check.verdicts.values())
    a, b = (r["batch"] for r in results)
    torch.testing.assert_close(a["ref_per_token_logps"], b["ref_per_token_logps"], atol=1e-6, rtol=1e-6)
    for name, g in results[1]["grads"].items():
        torch.testing.assert_close(results[0]["grads"][name], g, atol=1e-6, rtol=1e-5)


def test_grpo_config_has_the_switch_on_by_default() -> None:
    from steps.core.config import config_from_dict, load_config

    assert config_from_dict({}).grpo.shared_prefix is True
    assert load_config(Path(__file__).resolve().parents[1] / "params.yaml").grpo.shared_prefix is True
    assert config_from_dict({"grpo": {"shared_prefix": False}}).mpgrpo.shared_prefix is False  # mpgrpo inherits


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "mpgrpo"])
def test_grpo_stage_trains_the_same_model_with_and_without_shared_prefixes(tmp_path: Path, speech_rows,
                                                                            method: str) -> None:
    """The mini pipeline's GRPO stage, 4 steps on the micro preset: the switch changes the result by rounding only."""
    import csv

    from tests.helpers import TASK, state_of
    from tests.helpers import run_grpo_micro as run
    from tests.tiny_sallm import workspace

    root = workspace(tmp_path, speech_rows)
    results = {}
    for shared in (True, False):
        out = run(root, method, max_steps=4, eval_every=2, reward_weights={"chrf": 1.0}, shared_prefix=shared,
                  max_completion_length=64)
        curve = list(csv.DictReader((root / "metrics" / method / f"{TASK}.curve.csv").open()))
        results[shared] = (state_of(out.model_dir), curve, out.best_step)
        (root / "models" / method).rename(root / "models" / f"{method}-{shared}")
    (on, curve_on, best_on), (off, curve_off, best_off) = results[True], results[False]
    base = state_of(root / "models" / "base")
    assert any(not torch.equal(off[k], base[k]) for k in off)  # training moved the weights
    worst = max(float((on[k] - off[k]).abs().max()) for k in off)
    assert worst < 1e-4, worst
    assert best_on == best_off
    for a, b in zip(curve_on, curve_off, strict=True):
        for column in ("reward", "kl", "completion_length", "val_bleu"):
            if a[column] or b[column]:
                assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-4), (column, a, b)
