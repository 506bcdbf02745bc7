"""The offline spoken corpus: espeak-ng audio, speaker-disjoint test split, determinism."""

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from steps.core.config import config_from_dict
from steps.core.io import read_jsonl
from steps.data.audio import dbfs
from steps.data.corpus import plan_corpus, run_synth, sentences
from steps.data.noise import COLOURS, add_noise, coloured_noise
from steps.data.tts import Speaker, TTSError

TINY = {"seed": 7, "synth": {"workers": 1, "sizes": {p: {"train": 4, "validation": 2, "test": 3}
                                                      for p in ("ast", "sqa", "pretrain")}}}


@pytest.mark.parametrize("voice", ["en-US", "en-GB-x-rp+f2", "en-029+m3"])
def test_tts_audio_is_speech_like(voice: str):
    tts = Speaker.get()
    text = "The old man reads a red book in the garden."
    audio = tts.say(text, voice=voice, rate_wpm=175, pitch=50)
    seconds = audio.size / tts.sample_rate
    assert tts.sample_rate == 22050 and audio.dtype == np.float32
    assert dbfs(audio) > -35.0                                   # clearly not silent
    assert 0.6 * 10 / (175 / 60) < seconds < 1.8 * 10 / (175 / 60)   # 10 words at ~175 words per minute
    faster = tts.say(text, voice=voice, rate_wpm=300, pitch=50)
    assert faster.size < 0.8 * audio.size


def test_tts_rejects_unknown_voice_and_empty_text():
    with pytest.raises(TTSError, match="unknown espeak voice 'xx-nowhere'"):
        Speaker.get().say("Hello.", voice="xx-nowhere")
    with pytest.raises(TTSError, match="empty text"):
        Speaker.get().say("  ", voice="en-US")


@pytest.mark.parametrize("colour", COLOURS)
def test_noise_of_every_colour_hits_the_requested_snr(colour: str):
    rng = np.random.default_rng(0)
    clean = (0.3 * np.sin(np.linspace(0, 2000, 40000))).astype(np.float32)
    noisy = add_noise(clean, 10.0, rng, colour)
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)


def test_noise_colours_have_their_spectral_tilt():
    """Power in the top half of the band over the bottom half: flat for white, falling for pink, more for brown."""
    def high_over_low(colour: str) -> float:
        power = np.abs(np.fft.rfft(coloured_noise(1 << 15, colour, np.random.default_rng(1)))) ** 2
        half = power.size // 2
        return float(power[half:].sum() / power[1:half].sum())
    white, pink, brown = (high_over_low(c) for c in ("white", "pink", "brown"))
    assert white == pytest.approx(1.0, rel=0.1)
    assert brown < 0.1 * pink < 0.1 * white
    with pytest.raises(ValueError, match="unknown noise colour 'blue'"):
        coloured_noise(10, "blue", np.random.default_rng(0))


def test_plan_is_deterministic_speaker_disjoint_and_pools_are_text_disjoint():
    cfg = config_from_dict({**TINY, "synth": {**TINY["synth"], "sizes": {
        p: {"train": 60, "validation": 10, "test": 20} for p in ("ast", "sqa", "pretrain")}}})
    plan = plan_corpus(cfg)
    assert plan == plan_corpus(cfg)
    for pool, splits in plan.items():
        for split in ("train", "validation", "test"):
            allowed = cfg.synth.speakers(split)
            for row in splits[split]:
                voice, _, variant = row["speaker"].partition("+")
                assert voice in allowed.voices and variant in allowed.variants, (pool, split, row["speaker"])
                assert any(lo <= row["rate_wpm"] <= hi for lo, hi in allowed.rate_wpm)
                assert any(lo <= row["pitch"] <= hi for lo, hi in allowed.pitch)
        speakers = {split: {r["speaker"] for r in splits[split]} for split in ("train", "validation", "test")}
        assert not speakers["train"] & (speakers["validation"] | speakers["test"])
        assert not speakers["validation"] & speakers["test"]
        texts = [r["text"] + r.get("question", "") for k, s in splits.items() if k != "test_train_voices" for r in s]
        assert len(texts) == len(set(texts)), f"{pool}: an utterance appears in two splits"
    ast_sentences = {r["text"] for s in plan["ast"].values() for r in s}
    pretrain_sentences = {r["text"] for s in plan["pretrain"].values() for r in s}
    assert not ast_sentences & pretrain_sentences
    assert {r["task"] for s in plan["pretrain"].values() for r in s} == {"asr", "ast"}
    assert all("question" not in r for s in plan["pretrain"].values() for r in s)   # no QA in pretraining


def test_run_synth_writes_wavs_and_manifests(tmp_path: Path):
    cfg = config_from_dict(TINY)
    run_synth(cfg, tmp_path)
    for pool in ("ast", "sqa", "pretrain"):
        assert sorted(p.name for p in (tmp_path / pool).iterdir()) == [  # a few files for DVC to walk, not a clip each
            "audio.zip", "resolved_params.yaml", "test.jsonl", "test_train_voices.jsonl", "train.jsonl",
            "validation.jsonl"]
        rows = read_jsonl(tmp_path / pool / "test.jsonl")
        assert len(rows) == 3
        for row in rows:
            wav = zipfile.ZipFile(tmp_path / pool / "audio.zip").read(row["audio"].split("/", 1)[1])
            audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
            assert rate == 22050 and sf.info(io.BytesIO(wav)).subtype == "PCM_16"
            assert row["duration"] == pytest.approx(audio.size / rate, abs=1e-3)
            assert dbfs(audio) > -40.0
    sqa = read_jsonl(tmp_path / "sqa" / "train.jsonl")[0]
    assert {"text", "question", "answer", "kind", "speaker", "rate_wpm", "pitch"} <= set(sqa)
    assert (tmp_path / "ast" / "resolved_params.yaml").is_file()


def test_synth_is_bit_exact_under_the_same_seed(tmp_path: Path):
    """Every clip's WAV bytes repeat, so every clone synthesises the same corpus and pretrains the same base.

    Two sources of variation are removed, each measured: libespeak-ng carries state from one utterance to the next
    (fixed shards in fresh processes, see steps.data.corpus._speak_shard), and it draws breath noise from a clock-seeded
    generator (reseeded per clip, see steps.data.tts.Speaker.say). The `+f2` variant breathes, so it must be in the
    plan.
    """
    train = {"voices": ["en-US"], "variants": ["f2"], "rate_wpm": [[140, 160]], "pitch": [[25, 40]]}
    cfg = config_from_dict({**TINY, "synth": {**TINY["synth"], "train": train, "train_noise": {"fraction": 1.0}}})
    assert any(row["speaker"].endswith("+f2") for rows in plan_corpus(cfg)["ast"].values() for row in rows)
    run_synth(cfg, tmp_path / "a")
    run_synth(cfg, tmp_path / "b")
    for pool in ("ast", "sqa"):
        manifest_a, manifest_b = (tmp_path / d / pool / "train.jsonl" for d in ("a", "b"))
        assert manifest_a.read_bytes() == manifest_b.read_bytes()
        archive_a, archive_b = (tmp_path / d / pool / "audio.zip" for d in ("a", "b"))
        assert archive_a.read_bytes() == archive_b.read_bytes(), pool


def _say_in_fresh_process(seed: int) -> str:
    """md5 of one breathy utterance, synthesised first in a new process (the engine carries state across calls)."""
    code = ("import hashlib; from steps.data.tts import Speaker; "
            "a = Speaker.get().say('The teacher washes seven eggs.', voice='en-US+f2', rate_wpm=170, pitch=50, "
            f"seed={seed}); print(hashlib.md5(a.tobytes()).hexdigest())")
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_breath_noise_follows_the_seed():
    first = _say_in_fresh_process(3)
    assert _say_in_fresh_process(3) == first
    assert _say_in_fresh_process(4) != first


def test_no_sentence_of_validation_or_test_is_heard_in_training_or_pretraining():
    cfg = config_from_dict({**TINY, "synth": {**TINY["synth"], "sizes": {
        "sqa": {"train": 400, "validation": 60, "test": 80}, "ast": {"train": 400, "validation": 60, "test": 80},
        "pretrain": {"train": 400, "validation": 20, "test": 20}}}})
    plan = plan_corpus(cfg)
    def spoken(pools: tuple[str, ...], split_names: tuple[str, ...]) -> set[str]:
        return {s for p in pools for k in split_names for r in plan[p][k] for s in sentences(r["text"])}
    heard = spoken(("sqa", "ast"), ("train",)) | spoken(("pretrain",), ("train", "validation", "test"))
    test, validation = spoken(("sqa", "ast"), ("test",)), spoken(("sqa", "ast"), ("validation",))
    assert len(test) > 100 and len(heard) > 500
    assert not test & heard and not validation & heard and not test & validation
    assert max(len(sentences(r["text"])) for r in plan["sqa"]["test"]) == 2  # passages of two sentences are split


def test_training_speakers_surround_the_held_out_rates_and_pitches():
    cfg = config_from_dict({**TINY, "synth": {**TINY["synth"], "sizes": {
        p: {"train": 300, "validation": 10, "test": 10} for p in ("ast", "sqa", "pretrain")}}})
    train = [r for p in ("ast", "sqa", "pretrain") for r in plan_corpus(cfg)[p]["train"]]
    for key in ("rate_wpm", "pitch"):
        values = {r[key] for r in train}
        for split in ("validation", "test"):
            (lo, hi), = getattr(cfg.synth.speakers(split), key)
            assert not any(lo <= v <= hi for v in values)           # never used in training ...
            assert min(values) < lo and max(values) > hi            # ... but inside what training heard
        for lo, hi in getattr(cfg.synth.train, key):                # every band is drawn from
            assert any(lo <= v <= hi for v in values)


def test_training_clips_get_noise_and_held_out_splits_stay_clean():
    cfg = config_from_dict({**TINY, "synth": {**TINY["synth"], "sizes": {
        p: {"train": 200, "validation": 10, "test": 10} for p in ("ast", "sqa", "pretrain")}}})
    plan = plan_corpus(cfg)
    for pool in ("ast", "sqa", "pretrain"):
        noisy = [r["noise"] for r in plan[pool]["train"] if r["noise"]]
        assert 0.6 < len(noisy) / 200 < 0.9, pool  # train_noise.fraction 0.75
        assert {n["colour"] for n in noisy} == set(cfg.synth.train_noise.colours)
        assert {n["snr_db"] for n in noisy} <= set(cfg.synth.train_noise.snr_db)
        assert all(r["noise"] is None for k in ("validation", "test") for r in plan[pool][k])


def test_test_texts_are_spoken_again_by_training_speakers():
    cfg = config_from_dict(TINY)
    plan = plan_corpus(cfg)
    for pool in ("ast", "sqa"):
        test, again = plan[pool]["test"], plan[pool]["test_train_voices"]
        assert [r["text"] for r in again] == [r["text"] for r in test]
        assert [r["test_id"] for r in again] == [r["id"] for r in test]
        for row in again:
            voice, _, variant = row["speaker"].partition("+")
            assert voice in cfg.synth.train.voices and variant in cfg.synth.train.variants
            assert row["noise"] is None
    assert "test_train_voices" not in plan["pretrain"]
    off = config_from_dict({**TINY, "synth": {**TINY["synth"], "test_train_voices": False}})
    assert plan_corpus(off)["sqa"]["test_train_voices"] == []
