"""The pretrain stage: its fast training forward equals the stock one, the model learns to listen, outputs exist."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from steps.core.config import config_from_dict
from steps.modeling.batches import encode_for_training, model_inputs
from steps.modeling.families import adapter_for
from steps.modeling.loading import resolve_base
from steps.training import pretraining as pretrain
from steps.training.ctc import CharVocab, ctc_text, encode_audio, pooled_lengths
from steps.training.pretraining_clips import Clip, extract_features, length_sorted_batches, pad_features, phase2_items
from tests.helpers import micro_paths
from tests.tiny_sallm import build_micro, write_prepared


def clips_for(rows, processor) -> list[Clip]:
    feats = extract_features(processor, [r["audio"] for r in rows])
    return [Clip(features=m, floor=f, transcript=r["transcript"], task=r["task"], prompt=r["prompt"],
                          reference=r["reference"], translation=r["reference"] if r["task"] == "ast" else "")
            for r, (m, f) in zip(rows, feats, strict=True)]


def fast_loss(model, processor, clips) -> torch.Tensor:
    texts = pretrain.Tokenised(processor)
    adapter = adapter_for(model)
    sides = [texts.get(adapter, c.prompt, c.reference) for c in clips]
    feats, frames = pad_features(clips, None, None)
    pooled, lengths = encode_audio(model.model.audio_tower, feats, frames)
    ids, att, labels = pretrain.sallm_batch(sides, lengths, model.config.audio_token_id,
                                            processor.tokenizer.pad_token_id)
    return pretrain.sallm_loss(model, pooled, lengths, ids, att, labels)


def stock_loss(model, processor, rows) -> torch.Tensor:
    adapter = adapter_for(model)
    batch = encode_for_training(processor, adapter, [r["prompt"] for r in rows], [r["reference"] for r in rows],
                                [r["audio"] for r in rows])
    return model(**model_inputs(batch, adapter)).loss


def test_fast_forward_on_real_frames_equals_the_stock_forward(tiny_sallm, speech_rows) -> None:
    model, processor = tiny_sallm
    model.eval()
    rows = speech_rows[:4]
    with torch.no_grad():
        fast = fast_loss(model, processor, clips_for(rows, processor))
        stock = stock_loss(model, processor, rows)
    assert fast.item() == pytest.approx(stock.item(), rel=1e-4)


def test_pooled_lengths_match_the_processor_count(tiny_sallm, speech_rows) -> None:
    _, processor = tiny_sallm
    for row in speech_rows[:3]:
        feats = processor.feature_extractor([row["audio"]], sampling_rate=16000, return_attention_mask=True,
                                            padding="max_length", return_tensors="np")
        n = int(feats["attention_mask"].sum())
        expected = (((n - 1) // 2 + 1) - 2) // 2 + 1  # Qwen2AudioProcessor's own formula
        assert pooled_lengths(torch.tensor([n])).item() == expected


def test_length_sorted_batches_group_similar_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = list(range(100))
    batches = length_sorted_batches(lengths, 10, rng)
    seen = [next(batches) for _ in range(10)]
    assert sorted(i for b in seen for i in b) == lengths  # one epoch covers everything once
    assert all(max(b) - min(b) < 25 for b in seen)


def test_phase2_items_mix_tasks_and_reuse_ast_clips_for_asr() -> None:
    clips = [Clip(np.zeros((80, 10), np.float32), 0.0, "t", "asr" if i % 2 else "ast", "p", "r",
                           "" if i % 2 else "de") for i in range(10)]
    items = phase2_items(clips, 0.5)
    tasks = [it.task for it in items]
    assert tasks.count("asr") == 10 and tasks.count("ast") == 5 * 2
    assert all(clips[it.clip].translation for it in items if it.task == "ast")


def test_matching_audio_beats_swapped_audio_after_short_training(speech_rows) -> None:
    """A few dozen steps on six clips: the loss with each clip's own audio drops below the swapped-audio loss."""
    torch.manual_seed(0)
    model, processor = build_micro(speech_rows, seed=1)
    rows = speech_rows[:6]
    clips = clips_for(rows, processor)
    perm = [1, 2, 3, 4, 5, 0]
    swapped = [Clip(clips[j].features, clips[j].floor, c.transcript, c.task, c.prompt, c.reference)
               for c, j in zip(clips, perm, strict=True)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        fast_loss(model, processor, clips).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        matching, other = fast_loss(model, processor, clips).item(), fast_loss(model, processor, swapped).item()
    assert matching < other - 0.1, (matching, other)


def test_ctc_spells_transcripts_with_apostrophes_and_wer_ignores_them() -> None:
    from steps.evaluation.metrics import wer

    assert ctc_text("The Cat's, eats!") == "the cat's eats"
    assert CharVocab(["it's"]).chars == ["'", "i", "s", "t"]
    assert wer(["the cat's eats"], ["The Cat's, eats."]) == 0.0  # the project's one WER: case, punctuation ignored


def test_real_checkpoint_is_passed_on_as_a_pointer(tmp_path) -> None:
    cfg = config_from_dict({"model": {"name_or_path": "ibm-granite/granite-speech-3.3-2b", "revision": "abc"}})
    out = pretrain.run_pretrain(cfg, micro_paths(tmp_path))
    assert resolve_base(out) == ("ibm-granite/granite-speech-3.3-2b", "abc")
    assert json.loads((tmp_path / "metrics" / "base" / "pretrain.json").read_text())["pretrained"] is False


@pytest.mark.slow
def test_stage_end_to_end_on_a_fixture(speech_rows, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("SPEECH_GRPO_TRACKING", raising=False)
    write_prepared(tmp_path / "data" / "prepared", copy.deepcopy(speech_rows))
    tiny = {k: v for k, v in vars(__import__("tests.tiny_sallm", fromlist=["MICRO"]).MICRO).items()}
    cfg = config_from_dict({"model": {"tiny": tiny}, "pretrain": {
        "ctc": {"steps": 4, "batch_size": 4, "warmup_steps": 1}, "eval_every": 2, "curve_examples": 2,
        "sallm": {"steps": 4, "batch_size": 4, "warmup_steps": 1}, "max_new_tokens": 4}})
    from steps.core import tracking

    parent = tracking.start_pipeline_run("flow-run")  # as the Prefect flow opens it
    monkeypatch.setenv(tracking.ENV_PARENT_RUN_ID, parent)
    out = pretrain.run_pretrain(cfg, micro_paths(tmp_path))
    from mlflow.tracking import MlflowClient

    from steps.core.config import ModelConfig
    from steps.modeling.loading import load_model_and_processor

    # pretraining logs through the same tracking code as every stage: a child of the flow's run, with its curve
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    (run,) = client.search_runs([client.get_run(parent).info.experiment_id], "tags.stage = 'pretrain'")
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["method"] == "base"
    assert len(client.get_metric_history(run.info.run_id, "curve/ctc_wer")) == 4 and "wer" in run.data.metrics

    model, _ = load_model_and_processor(out, ModelConfig())
    assert type(model).__name__ == "Qwen2AudioForConditionalGeneration"
    metrics = json.loads((tmp_path / "metrics" / "base" / "pretrain.json").read_text())
    assert {"wer", "wer_swapped", "bleu", "bleu_swapped", "train_minutes"} <= set(metrics)
    curve = (tmp_path / "metrics" / "base" / "learning_curve.csv").read_text().splitlines()
    assert curve[0].startswith("phase,step,minutes") and len(curve) == 1 + 4
    assert (out / "resolved_params.yaml").is_file()
