"""The offline spoken corpus: espeak-ng audio, one held-out speaker population for validation and test, held-out
conditions, noise at its labelled SNR, determinism."""

import io
import subprocess
import sys
import zipfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from steps.core.config import config_from_dict, held_out_speakers
from steps.core.io import read_jsonl
from steps.data.audio import dbfs
from steps.data.corpus import _speak_shard, plan_corpus, run_synth, sentences
from steps.data.noise import COLOURS, add_noise, coloured_noise
from steps.data.tts import Speaker, TTSError

TINY = {"seed": 7, "synth": {"workers": 1, "sizes": {p: {"train": 4, "validation": 2, "test": 3}
                                                      for p in ("ast", "sqa", "pretrain")},
                              "conditions": {"slow": {"rate_wpm": [[115, 130]]}}},
        "evaluate": {"conditions": {"spoken": ["slow"]}}}


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
        texts = [r["text"] + r.get("question", "") for k, s in splits.items() if k in ("train", "validation", "test")
                 for r in s]
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
        task_files = ["conditions", "test_train_voices.jsonl"] if pool != "pretrain" else []
        assert sorted(p.name for p in (tmp_path / pool).iterdir()) == sorted([  # a few files for DVC, not a clip each
            "audio.zip", "resolved_params.yaml", "test.jsonl", "train.jsonl", "validation.jsonl", *task_files])
        rows = read_jsonl(tmp_path / pool / "test.jsonl")
        assert len(rows) == 3
        if pool != "pretrain":
            assert [p.name for p in (tmp_path / pool / "conditions").iterdir()] == ["slow.jsonl"]
            rows += read_jsonl(tmp_path / pool / "conditions" / "slow.jsonl")
        for row in rows:
            wav = zipfile.ZipFile(tmp_path / pool / "audio.zip").read(row["audio"].split("/", 1)[1])
            audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
            assert rate == 16000 and sf.info(io.BytesIO(wav)).subtype == "PCM_16"  # synth.sample_rate
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


def test_validation_and_test_draw_disjoint_speakers_from_one_population_of_the_same_make_up():
    cfg = config_from_dict(TINY)
    held_out = cfg.synth.held_out
    validation, test = (held_out_speakers(held_out, split, "disjoint") for split in ("validation", "test"))
    assert not set(validation) & set(test)
    assert sorted(validation + test) == sorted(f"{v}+{x}" for v in held_out.voices for x in held_out.variants)
    for split in (validation, test):  # every accent as many speakers in both splits, every variant in both
        assert {s.split("+")[0] for s in split} == set(held_out.voices)
        assert len({s.split("+")[0] for s in split if s.startswith("en-029+")}) == 1
        assert sum(s.startswith("en-029+") for s in split) == len(held_out.variants) // 2
        assert {s.split("+")[1] for s in split} == set(held_out.variants)
    assert held_out_speakers(held_out, "validation", "shared") == held_out_speakers(held_out, "test", "shared")
    plan = plan_corpus(config_from_dict({**TINY, "synth": {**TINY["synth"], "sizes": {
        p: {"train": 10, "validation": 300, "test": 300} for p in ("ast", "sqa", "pretrain")}}}))
    for split, allowed in (("validation", validation), ("test", test)):
        rows = [r for pool in ("ast", "sqa") for r in plan[pool][split]]
        assert {r["speaker"] for r in rows} <= set(allowed) and len({r["speaker"] for r in rows}) > 0.8 * len(allowed)
        for voice in held_out.voices:  # accents in equal shares (a third each, within sampling noise)
            assert abs(sum(r["speaker"].startswith(voice + "+") for r in rows) / len(rows) - 1 / 3) < 0.06
        for key, (lo, hi) in (("rate_wpm", held_out.rate_wpm[0]), ("pitch", held_out.pitch[0])):
            values = [r[key] for r in rows]  # both splits span the same band
            assert min(values) <= lo + 2 and max(values) >= hi - 2


def test_condition_splits_respeak_each_test_clip_with_one_factor_beyond_training():
    conditions = {"langs": {"voices": ["de", "es"]}, "slow": {"rate_wpm": [[115, 130]]},
                  "fast": {"rate_wpm": [[215, 240]]}, "low": {"pitch": [[5, 15]]}, "high": {"pitch": [[85, 95]]}}
    cfg = config_from_dict({**TINY, "synth": {**TINY["synth"], "conditions": conditions, "sizes": {
        p: {"train": 10, "validation": 5, "test": 60} for p in ("ast", "sqa", "pretrain")}},
        "evaluate": {"conditions": {"spoken": list(conditions)}}})
    plan = plan_corpus(cfg)
    assert not any(k.startswith("conditions/") for k in plan["pretrain"])
    train_rates = [r["rate_wpm"] for p in plan.values() for r in p["train"]]
    train_pitches = [r["pitch"] for p in plan.values() for r in p["train"]]
    for pool in ("ast", "sqa"):
        test = plan[pool]["test"]
        for name in conditions:
            rows = plan[pool][f"conditions/{name}"]
            assert [r["test_id"] for r in rows] == [r["id"] for r in test]
            assert [r["text"] for r in rows] == [r["text"] for r in test] and all(r["noise"] is None for r in rows)
            assert [r["id"] for r in rows] == [f"{pool}-{name}-{i:05d}" for i in range(len(test))]
            for row, original in zip(rows, test, strict=True):
                voice, _, variant = row["speaker"].partition("+")
                assert variant == original["speaker"].partition("+")[2]  # the test speaker's timbre, always
                if name == "langs":
                    assert voice in ("de", "es") and (row["rate_wpm"], row["pitch"]) == (original["rate_wpm"],
                                                                                         original["pitch"])
                else:
                    assert row["speaker"] == original["speaker"]
                key = {"slow": "rate_wpm", "fast": "rate_wpm", "low": "pitch", "high": "pitch"}.get(name)
                if key:
                    (lo, hi), = conditions[name][key]
                    assert lo <= row[key] <= hi
                    other = "pitch" if key == "rate_wpm" else "rate_wpm"
                    assert row[other] == original[other]
        assert max(r["rate_wpm"] for r in plan[pool]["conditions/slow"]) < min(train_rates)
        assert min(r["rate_wpm"] for r in plan[pool]["conditions/fast"]) > max(train_rates)
        assert max(r["pitch"] for r in plan[pool]["conditions/low"]) < min(train_pitches)
        assert min(r["pitch"] for r in plan[pool]["conditions/high"]) > max(train_pitches)
        assert {r["speaker"].partition("+")[0] for r in plan[pool]["conditions/langs"]} == {"de", "es"}


@pytest.mark.parametrize("voice", ["de", "nl", "es", "it", "pl"])
def test_other_languages_voices_read_the_english_text(voice: str):
    """Each held-out accent family speaks an English grammar sentence: audible, and about as long as an English voice
    takes (its own letter-to-sound rules, not a skipped or spelled-out text)."""
    text = "On Friday the four old birds sit in the office."
    english = Speaker.get().say(text, voice="en-GB-scotland+m2", rate_wpm=170, pitch=50)
    foreign = Speaker.get().say(text, voice=f"{voice}+m2", rate_wpm=170, pitch=50)
    assert dbfs(foreign) > -35.0
    assert 0.6 < foreign.size / english.size < 1.6


def test_training_noise_is_at_its_labelled_snr_in_the_prepared_16khz_audio(tmp_path: Path):
    """Noise is mixed after resampling to 16 kHz, the rate the evaluation mixes the test's noise at: the prepared clip
    minus the same clip synthesised clean has the labelled SNR (mixed at espeak's 22050 Hz and resampled, it was
    ~1.4 dB off). The clean clips are spoken as synth spoke them: the same order, in a fresh process (the engine
    carries state from one utterance to the next)."""
    import datasets

    from steps.data.preparation import run_prepare

    only_ast_train = {"ast": {"train": 6, "validation": 0, "test": 0},
                      **{p: {"train": 0, "validation": 0, "test": 0} for p in ("sqa", "pretrain")}}
    cfg = config_from_dict({**TINY, "synth": {**TINY["synth"], "train_noise": {"fraction": 1.0, "snr_db": [6, 30]},
                                              "sizes": only_ast_train},
                            "prepare": {"tasks": {"ast": {
                                "source": {"kind": "synthetic", "path": str(tmp_path / "ast")},
                                "prompts": {"ast": ["<|audio|> translate"]}}}}})
    run_synth(cfg, tmp_path)
    run_prepare(cfg, "ast", tmp_path, tmp_path / "prepared")
    by_id = {r["id"]: r for r in read_jsonl(tmp_path / "ast" / "train.jsonl")}
    order = [name.removesuffix(".wav") for name in zipfile.ZipFile(tmp_path / "ast" / "audio.zip").namelist()]
    with get_context("spawn").Pool(1) as pool:
        spoken = pool.apply(_speak_shard, ([({**by_id[i], "noise": None}, cfg.seed, 16000) for i in order],))
    clean = {ident: sf.read(io.BytesIO(wav), dtype="float64")[0] for ident, _, wav in spoken}
    prepared = datasets.load_from_disk(str(tmp_path / "prepared" / "train"))
    colours = set()
    for example in prepared:
        label = by_id[example["id"]]["noise"]
        noisy, reference = np.asarray(example["audio"], dtype=np.float64), clean[example["id"]]
        assert example["sampling_rate"] == 16000 and noisy.shape == reference.shape
        snr = 10 * np.log10(np.mean(reference ** 2) / np.mean((noisy - reference) ** 2))
        assert snr == pytest.approx(label["snr_db"], abs=0.1), (example["id"], label)
        colours.add(label["colour"])
    assert len(prepared) == 6 and len(colours) >= 2
