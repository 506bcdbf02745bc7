"""The evaluate stage: metrics file fields, predictions with every run, and SFT beating the untrained model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch

from steps.core.config import ConfigError, EvaluateConfig, HeldOutConditions, config_from_dict
from steps.core.io import read_jsonl
from steps.evaluation.conditions import (
    ConditionAnswers,
    ConditionSets,
    condition_predictions,
    decode_conditions,
    fit_window,
    noisy_audio,
    source_test_id,
)
from steps.evaluation.evaluator import (
    Decoded,
    available_models,
    build_metrics,
    decode_all,
    prediction_rows,
    run_evaluate,
    spread,
)
from steps.modeling.encoder_speedups import encoder_outputs_reused
from steps.modeling.families import adapter_for, get_submodule
from steps.training.sft_trainer import run_sft
from tests.helpers import TASK, micro_paths, sft_micro_config
from tests.tiny_sallm import RATE, build_micro, to_dataset, workspace

REFS = ["the cat sat on the mat", "a dog runs in the park", "we read a book today"]


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")


def test_spread_is_mean_and_sample_std_over_runs() -> None:
    runs = [{"bleu": 10.0, "chrf": 30.0, "bertscore_f1": None}, {"bleu": 20.0, "chrf": 50.0, "bertscore_f1": None}]
    out = spread(runs)
    assert out["mean"] == {"bleu": 15.0, "chrf": 40.0}
    assert math.isclose(out["std"]["bleu"], math.sqrt(50.0))
    assert "bertscore_f1" not in out["mean"]  # skipped metrics are never averaged into a number
    assert spread(runs[:1])["std"]["bleu"] == 0.0


@pytest.mark.slow  # METEOR loads WordNet (~4 s)
def test_metrics_fields_match_sacrebleu_and_carry_the_signature() -> None:
    cfg = config_from_dict({"evaluate": {"sampled_runs": 2}})
    greedy = ["the cat sat on the mat", "a dog runs in a park", "we read books"]
    decoded = Decoded(sampled=[greedy, ["the cat", "a dog", "we"]], greedy=greedy, swapped=["x y", "y z", "z w"],
                      swapped_sampled=["x", "the y", "z"])
    m = build_metrics(decoded, REFS, "sqa", cfg.evaluate)
    assert m["bleu_swapped_sampled"] == pytest.approx(sacrebleu.corpus_bleu(["x", "the y", "z"], [REFS]).score,
                                                      abs=1e-3)
    assert math.isclose(m["bleu"], sacrebleu.corpus_bleu(greedy, [REFS]).score, abs_tol=1e-3)
    assert m["bleu_swapped"] < m["bleu"] and m["listening_gap_bleu"] == pytest.approx(m["bleu"] - m["bleu_swapped"])
    for key in ("chrf", "rouge1", "rouge2", "rougeL", "meteor", "bleu_sampled_mean", "bleu_sampled_std",
                "chrf_sampled_mean", "bleu_swapped", "chrf_swapped"):
        assert isinstance(m[key], float), key
    assert m["bertscore_f1"] is None and "bertscore_skipped" in m["signatures"]
    assert m["signatures"]["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert m["sampled"]["runs"] == 2 and len(m["sampled"]["per_run"]) == 2
    assert m["sampled"]["temperature"] == 0.9 and m["sampled"]["top_p"] == 0.9
    assert "wer" not in m  # sqa is not transcription


@pytest.mark.slow  # METEOR loads WordNet (~4 s)
def test_transcription_tasks_get_wer() -> None:
    cfg = config_from_dict({"evaluate": {"sampled_runs": 0}})
    m = build_metrics(Decoded(greedy=list(REFS)), REFS, "asr", cfg.evaluate)
    assert m["wer"] == 0.0 and m["bleu"] == pytest.approx(100.0)


def test_predictions_hold_every_run(speech_rows) -> None:
    ds = to_dataset(speech_rows[:2])
    decoded = Decoded(sampled=[["a", "b"], ["c", "d"], ["e", "f"]], greedy=["g", "h"], swapped=["i", "j"],
                      swapped_sampled=["k", "l"])
    rows = prediction_rows(ds, decoded)
    row = speech_rows[1]
    assert rows[1] == {"id": row["id"], "prompt": row["prompt"], "reference": row["reference"],
                       "sampled": ["b", "d", "f"], "greedy": "h", "swapped": "j", "swapped_sampled": "l"}


def test_evaluation_encodes_each_batch_of_clips_once_across_passes_with_unchanged_answers(speech_rows) -> None:
    model, processor = build_micro(speech_rows)
    encoder = get_submodule(model, adapter_for(model).encoder)
    runs = []  # the encoder's own work: its first layer runs only when it really encodes
    encoder.conv1.register_forward_hook(lambda *_: runs.append(1))
    ds = to_dataset(speech_rows)
    settings = {"sampled_runs": 2, "max_new_tokens": 4, "batch_size": 4}  # 5 passes (2 sampled, greedy, 2 swapped)

    plain = decode_all(model, processor, ds, EvaluateConfig(**settings, encoder_cache_mb=0), seed=3)
    assert len(runs) == 5 * 2 and plain.encoder_calls["hits"] == 0
    runs.clear()
    reused = decode_all(model, processor, ds, EvaluateConfig(**settings), seed=3)
    assert (reused.sampled, reused.greedy, reused.swapped, reused.swapped_sampled) == (
        plain.sampled, plain.greedy, plain.swapped, plain.swapped_sampled)
    assert len(runs) == reused.encoder_calls["misses"] < 5 * 2
    assert reused.encoder_calls["hits"] >= 3 * 2  # sampled run 2 and greedy reuse run 1's batches, at least
    assert "forward" not in vars(encoder)  # the encoder is itself again after the block


def test_reused_encoder_outputs_respect_the_memory_budget_and_refuse_gradients(speech_rows) -> None:
    model, processor = build_micro(speech_rows)
    encoder = get_submodule(model, adapter_for(model).encoder)
    features = processor.feature_extractor([r["audio"] for r in speech_rows[:2]], sampling_rate=RATE,
                                           return_tensors="pt")["input_features"]
    with torch.no_grad(), encoder_outputs_reused(model, budget_mb=1e-6) as counts:
        encoder(features)
        encoder(features)
    assert counts == {"hits": 0, "misses": 2, "bytes": 0}  # over budget: encoded every time, nothing kept
    with torch.no_grad(), encoder_outputs_reused(model) as counts:
        first = encoder(features).last_hidden_state
        again = encoder(features).last_hidden_state
    assert counts["hits"] == 1 and counts["bytes"] == first.numel() * first.element_size()
    assert torch.equal(first, again)
    with encoder_outputs_reused(model), pytest.raises(RuntimeError, match="for inference"):
        encoder(features)


def test_models_are_found_by_name_and_extras_listed_in_params(tmp_path: Path) -> None:
    cfg = config_from_dict({"evaluate": {"extra_models": {"mine": str(tmp_path / "ckpt")}}})
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "models" / "sft" / "sqa").mkdir(parents=True)
    (tmp_path / "ckpt").mkdir()
    paths = micro_paths(tmp_path)
    assert paths.model("sft", "sqa", cfg.evaluate.extra_models) == tmp_path / "models" / "sft" / "sqa"
    assert available_models(cfg, paths, "sqa") == ["base", "sft", "mine"]
    assert available_models(cfg, paths, "ast") == ["base", "mine"]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        paths.model("nope", "sqa", cfg.evaluate.extra_models)
    with pytest.raises(ConfigError, match="pipeline model names"):
        config_from_dict({"evaluate": {"extra_models": {"sft": "x"}}})


@pytest.mark.slow
def test_sft_model_beats_the_untrained_one_and_predictions_hold_all_runs(tmp_path: Path, speech_rows) -> None:
    root = workspace(tmp_path, speech_rows)
    paths = micro_paths(root)
    # Selected on greedy BLEU, as asserted below (8 sampled validation answers of a micro model pick noise).
    cfg = sft_micro_config(max_steps=60, eval_every=30, batch_size=8, eval_decoding="greedy")
    run_sft(cfg, TASK, paths)
    scores = {name: run_evaluate(cfg, name, TASK, paths) for name in ("base", "sft")}
    # Same data (train = test here): SFT must have learnt something the random model has not.
    assert scores["sft"]["chrf"] > scores["base"]["chrf"] + 2
    assert scores["sft"]["bleu"] >= scores["base"]["bleu"]
    metrics = json.loads((root / "metrics" / "sft" / f"{TASK}.json").read_text())
    for key in ("bleu", "bleu_swapped", "bleu_sampled_mean", "bleu_sampled_std", "bleu_swapped_sampled",
                "signatures", "n"):
        assert key in metrics
    predictions = read_jsonl(root / "metrics" / "sft" / f"{TASK}.predictions.jsonl")
    assert [p["id"] for p in predictions] == [r["id"] for r in speech_rows]
    assert all(len(p["sampled"]) == 2 and "greedy" in p and "swapped" in p and "swapped_sampled" in p
               for p in predictions)


def test_noisy_condition_audio_has_the_snr_and_is_seeded_per_example(speech_rows) -> None:
    ds = to_dataset(speech_rows[:3])
    noisy = noisy_audio(ds, 20.0, "white", seed=5)
    for clean, dirty in zip(ds["audio"], noisy, strict=True):
        clean = np.asarray(clean, dtype=np.float64)
        snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((dirty - clean) ** 2))
        assert snr == pytest.approx(20.0, abs=0.5)
    again = noisy_audio(ds, 20.0, "white", seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(noisy, again, strict=True))
    other = noisy_audio(ds, 20.0, "white", seed=6)
    assert not np.array_equal(noisy[0], other[0])


def test_conditions_decode_spoken_noisy_swapped_and_training_speaker_audio(speech_rows, monkeypatch) -> None:
    calls: list[tuple[list[str], list[np.ndarray]]] = []

    def fake_generate(model, processor, prompts, audios, settings, batch_size, **kwargs):
        assert not settings.do_sample  # conditions decode greedily
        calls.append((list(prompts), [np.asarray(a) for a in audios]))
        return [f"h{len(calls)}-{i}" for i in range(len(prompts))]

    monkeypatch.setattr("steps.evaluation.conditions.generate", fake_generate)
    test, reference = to_dataset(speech_rows[:4]), to_dataset(speech_rows[4:7])
    slow = to_dataset(speech_rows[5:8])
    ecfg = EvaluateConfig(conditions=HeldOutConditions(spoken=("slow",), snr_db=(3.0, 0.0)))
    out = decode_conditions(None, None, ConditionSets(test, reference, {"slow": slow}), ecfg, seed=1)
    assert list(out.spoken) == ["slow", "slow_swapped"] and list(out.noise) == ["snr3", "snr3_swapped", "snr0",
                                                                                 "snr0_swapped"]
    assert len(calls) == 7 and out.train_voices == ["h7-0", "h7-1", "h7-2"]
    (_, slow_audio), (_, slow_swapped), (_, noisy3), (_, swapped3), (_, noisy0) = calls[:5]
    assert [a.tolist() for a in slow_audio] == [np.asarray(a).tolist() for a in slow["audio"]]
    assert all(any(np.array_equal(s, n) for n in slow_audio) and not np.array_equal(s, slow_audio[i])
               for i, s in enumerate(slow_swapped))  # another example's clip of the same condition, for every example
    assert noisy3[0].shape == np.asarray(test["audio"][0]).shape and not np.array_equal(noisy3[0], test["audio"][0])
    assert all(any(np.array_equal(s, n) for n in noisy3) and not np.array_equal(s, noisy3[i])
               for i, s in enumerate(swapped3))
    assert np.mean((noisy0[0] - test["audio"][0]) ** 2) > 1.5 * np.mean((noisy3[0] - test["audio"][0]) ** 2)
    assert [np.asarray(a).tolist() for a in calls[6][1]] == [np.asarray(a).tolist() for a in reference["audio"]]
    no_swap = EvaluateConfig(conditions=HeldOutConditions(spoken=("slow",), snr_db=(3.0,), swapped=False))
    calls.clear()
    assert list(decode_conditions(None, None, ConditionSets(test, None, {"slow": slow}), no_swap, 1).spoken) == [
        "slow"] and len(calls) == 2


def test_condition_scores_and_robustness_are_sacrebleu_on_their_own_references() -> None:
    refs = REFS
    slow_refs = ["the cat sat on the mat", "we read a book today"]  # prepare skipped one slow clip
    answers = ConditionAnswers(noise={"snr3": ["the cat sat on a mat", "a dog runs"], "snr3_swapped": ["x", "y"]},
                               spoken={"slow": ["the cat sat", "we read a book"], "slow_swapped": ["a", "b"]},
                               train_voices=["the cat sat on the mat", "a dog runs in a park"])
    decoded = Decoded(greedy=["the cat sat on the mat", "a dog runs in park", "we read"], held_out=answers)
    condition_refs = {"clean": refs[:2], "slow": slow_refs, "train_voices": refs[:2]}
    metrics = build_metrics(decoded, refs, "sqa", EvaluateConfig(), condition_refs)
    bleu = lambda hyps, rr: sacrebleu.corpus_bleu(hyps, [rr]).score  # noqa: E731
    clean_train = bleu(answers.train_voices, refs[:2])
    assert metrics["bleu_snr3"] == pytest.approx(bleu(answers.noise["snr3"], refs[:2]), abs=1e-4)
    assert metrics["bleu_slow"] == pytest.approx(bleu(answers.spoken["slow"], slow_refs), abs=1e-4)
    assert metrics["bleu_clean"] == pytest.approx(bleu(decoded.greedy[:2], refs[:2]), abs=1e-4)  # same texts
    assert metrics["bleu_train_voices"] == pytest.approx(clean_train, abs=1e-4)
    assert metrics["robustness_snr3"] == pytest.approx(metrics["bleu_snr3"] / clean_train, abs=1e-4)
    assert metrics["robustness_slow"] == pytest.approx(metrics["bleu_slow"] / clean_train, abs=1e-4)
    assert "robustness_snr3_swapped" not in metrics and "robustness_train_voices" not in metrics
    assert metrics["conditions"]["slow_swapped"]["n"] == 2 and metrics["conditions"]["clean"]["n"] == 2


def test_prediction_rows_put_each_conditions_answer_beside_its_test_example(speech_rows) -> None:
    ds = to_dataset([{**row, "id": f"sqa-test-{i:05d}"} for i, row in enumerate(speech_rows[:2])])
    sets = ConditionSets(ds, to_dataset([{**speech_rows[1], "id": "sqa-test_train_voices-00001"}]),  # prepare
                         {"slow": to_dataset([{**speech_rows[0], "id": "sqa-slow-00000"}])})   # skipped some
    answers = ConditionAnswers(noise={"snr3": ["n0", "n1"]}, spoken={"slow": ["s0"]}, train_voices=["t1"])
    rows = prediction_rows(ds, Decoded(greedy=["g0", "g1"]), condition_predictions(sets, answers))
    assert rows[0]["conditions"] == {"snr3": "n0", "slow": "s0"}
    assert rows[1]["conditions"] == {"snr3": "n1", "train_voices": "t1"}
    assert source_test_id("ast-other_languages-00012") == "ast-test-00012"
    assert source_test_id("ast-test_train_voices-00012") == "ast-test-00012"


def test_spoken_clips_longer_than_the_audio_window_are_left_out_and_counted(speech_rows) -> None:
    """Slow speech can outlast the tiny preset's window (the longest train/validation/test clip): such a clip is
    dropped from its condition, never cut, and the count is reported."""
    class Extractor:
        def __init__(self, n_samples: int) -> None:
            self.n_samples = n_samples

    class Processor:
        def __init__(self, n_samples: int) -> None:
            self.feature_extractor = Extractor(n_samples)

    rows = speech_rows[:4]
    lengths = sorted(len(r["audio"]) for r in rows)
    slow = to_dataset(rows)
    shortest = min(rows, key=lambda r: len(r["audio"]))
    sets = ConditionSets(to_dataset(rows), None, {"slow": slow, "fast": to_dataset([shortest])})
    fitted = fit_window(sets, Processor(lengths[1]))  # the two longest clips do not fit
    assert len(fitted.spoken["slow"]) == 2 and fitted.dropped == {"slow": 2}
    assert all(len(a) <= lengths[1] for a in fitted.spoken["slow"]["audio"])
    assert len(fitted.test) == 4  # the test's own clips fitted the window that was built for them
    assert fit_window(sets, Processor(lengths[-1])).dropped == {}
    nothing_fits = fit_window(sets, Processor(1))
    assert nothing_fits.spoken == {} and nothing_fits.dropped == {"slow": 4, "fast": 1}
