"""Source adapters and the prepare stage on tiny corpora written by the tests (CoVoST layout, manifest, HF)."""

import csv
import json
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from steps.core.config import config_from_dict
from steps.data.preparation import PrepareError, choose_template, normalise_text, run_prepare
from tests.conftest import sine

AST_PROMPTS = {"ast": ["<|audio|> listen to the speech and translate it into German.", "Translate: <|audio|>"]}
SQA_PROMPTS = {"sqa": ["Listen to the audio <|audio|> and answer the following question: {question}"]}


def make_covost(root: Path, n: int = 6, corrupt: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> Path:
    """A CoVoST 2 En->De folder: Common Voice mp3 clips (48 kHz) plus CoVoST's per-split TSVs."""
    clips = root / "clips"
    clips.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        rows = []
        for i in range(n):
            name = f"common_voice_en_{split}_{i}.mp3"
            rows.append({"path": name, "sentence": f"The dog number {i} runs.", "translation": f"Der Hund {i} läuft.",
                         "client_id": f"spk{i % 2}"})
            if name in missing:
                continue
            if name in corrupt:
                (clips / name).write_bytes(b"\x00garbage" * 64)
            else:
                sf.write(clips / name, sine(200.0 + 50 * i, 48000, seconds=1.0), 48000, format="MP3")
        with open(root / f"covost_v2.en_de.{split}.tsv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["path", "sentence", "translation", "client_id"], delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
    return root


def cfg_for(task: str, source: dict, prompts: dict, **prepare):
    return config_from_dict({"prepare": {"workers": 1, "max_seconds": 5.0, **prepare,
                                         "tasks": {task: {"source": source, "prompts": prompts}}}})


def test_covost_with_a_corrupt_clip_is_prepared_and_the_clip_reported(tmp_path: Path):
    bad = "common_voice_en_train_3.mp3"
    make_covost(tmp_path / "covost", corrupt=(bad,))
    cfg = cfg_for("ast", {"kind": "covost2", "path": str(tmp_path / "covost")}, AST_PROMPTS, max_bad_fraction=0.2)
    out = run_prepare(cfg, "ast", tmp_path, tmp_path / "prepared" / "ast")

    train = datasets.load_from_disk(str(out / "train"))
    assert train.num_rows == 5
    # CoVoST's dev is our validation; the file is named relative to the project root, so that prepared data (and
    # DVC's hash of it) is the same in every clone.
    assert set(datasets.load_from_disk(str(out / "validation"))["source"]) == {"covost/covost_v2.en_de.dev.tsv"}
    row = train[0]
    assert row["task"] == "ast" and row["reference"] == "Der Hund 0 läuft."
    assert row["transcript"] == "The dog number 0 runs." and row["speaker"] == "spk0"
    assert row["sampling_rate"] == 16000 and row["prompt"].count("<|audio|>") == 1
    audio = np.asarray(row["audio"], dtype=np.float32)
    assert abs(audio.size - 16000) < 800 and row["duration"] == pytest.approx(audio.size / 16000, abs=1e-3)

    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["train"] == {"read": 6, "kept": 5, "skipped": 1}
    (skip,) = report["skipped"]
    assert skip["file"].endswith(bad) and "cannot decode" in skip["reason"]
    assert (out / "resolved_params.yaml").is_file()


def test_too_many_bad_clips_fail_and_keep_the_previous_output(tmp_path: Path):
    make_covost(tmp_path / "covost", corrupt=("common_voice_en_train_1.mp3", "common_voice_en_train_2.mp3"))
    out = tmp_path / "prepared" / "ast"
    out.mkdir(parents=True)
    (out / "marker").write_text("previous good output")
    cfg = cfg_for("ast", {"kind": "covost2", "path": str(tmp_path / "covost")}, AST_PROMPTS, max_bad_fraction=0.2)
    with pytest.raises(PrepareError, match=r"2 of 6 examples are bad .* > prepare.max_bad_fraction=0.2"):
        run_prepare(cfg, "ast", tmp_path, out)
    assert (out / "marker").read_text() == "previous good output"
    failed = json.loads((tmp_path / "prepared" / "ast.failed-report.json").read_text())
    assert {Path(s["file"]).name for s in failed["skipped"]} == {"common_voice_en_train_1.mp3",
                                                                  "common_voice_en_train_2.mp3"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["ast", "ast.failed-report.json"]  # no half output


def test_a_missing_clip_stops_the_stage_naming_the_file(tmp_path: Path):
    make_covost(tmp_path / "covost", missing=("common_voice_en_dev_4.mp3",))
    cfg = cfg_for("ast", {"kind": "covost2", "path": str(tmp_path / "covost")}, AST_PROMPTS)
    with pytest.raises(PrepareError, match=r"(?s)1 referenced audio file\(s\) do not exist.*common_voice_en_dev_4.mp3"):
        run_prepare(cfg, "ast", tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_manifest_csv_with_column_mapping_and_empty_reference(tmp_path: Path):
    audio_dir = tmp_path / "wavs"
    audio_dir.mkdir()
    rows = []
    for i in range(4):
        sf.write(audio_dir / f"q{i}.wav", sine(300, 22050, 1.0), 22050)
        rows.append({"file": f"q{i}.wav", "q": f"What  is item {i}?", "a": "" if i == 2 else f"Cafe\u0301 {i}."})
    manifest = tmp_path / "train.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "q", "a"])
        writer.writeheader()
        writer.writerows(rows)
    source = {"kind": "manifest", "path": str(tmp_path), "audio_dir": str(audio_dir),
              "splits": {"train": "train.csv"}, "columns": {"audio": "file", "question": "q", "answer": "a"}}
    cfg = cfg_for("sqa", source, SQA_PROMPTS, max_bad_fraction=0.5)
    out = run_prepare(cfg, "sqa", tmp_path, tmp_path / "out")
    ds = datasets.load_from_disk(str(out / "train"))
    assert ds.num_rows == 3
    assert ds[0]["prompt"] == "Listen to the audio <|audio|> and answer the following question: What is item 0?"
    assert ds[0]["reference"] == "Caf\u00e9 0."    # Unicode NFC: e + combining acute -> é
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"][0]["reason"] == "empty reference (answer)"
    assert not (out / "validation").exists()   # splits not configured are absent, not empty


def test_manifest_pointing_into_a_zip_archive_reports_a_corrupt_member(tmp_path: Path):
    """Clips stored in an archive (as synth writes them): a damaged member is skipped and named, the rest kept."""
    from steps.data.audio import wav_bytes

    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as archive:
        for i in range(4):
            archive.writestr(f"c{i}.wav", wav_bytes(sine(300 + 40 * i, 22050, 1.0), 22050))
    data = bytearray((tmp_path / "clips.zip").read_bytes())
    member = zipfile.ZipFile(tmp_path / "clips.zip").getinfo("c2.wav")
    data[member.header_offset + 30 + len("c2.wav") + 500] ^= 0xFF    # one byte of c2's samples: its CRC fails
    (tmp_path / "clips.zip").write_bytes(bytes(data))
    rows = [{"audio": f"clips.zip/c{i}.wav", "question": "Who?", "answer": f"Ann {i}."} for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = cfg_for("sqa", {"kind": "manifest", "path": str(tmp_path), "splits": {"train": "train.jsonl"}},
                  SQA_PROMPTS, max_bad_fraction=0.5)
    out = run_prepare(cfg, "sqa", tmp_path, tmp_path / "out")
    assert datasets.load_from_disk(str(out / "train"))["reference"] == ["Ann 0.", "Ann 1.", "Ann 3."]
    (skipped,) = json.loads((out / "report.json").read_text())["skipped"]
    assert skipped["id"] == "c2" and "corrupt archive" in skipped["reason"] and "clips.zip/c2.wav" in skipped["reason"]

    rows.append({"audio": "clips.zip/c9.wav", "question": "Who?", "answer": "Ann 9."})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PrepareError, match=r"(?s)1 referenced audio file\(s\) do not exist.*clips.zip/c9.wav"):
        run_prepare(cfg, "sqa", tmp_path, tmp_path / "out2")


def test_missing_required_column_is_a_clear_error(tmp_path: Path):
    sf.write(tmp_path / "a.wav", sine(300, 16000), 16000)
    (tmp_path / "train.jsonl").write_text(json.dumps({"audio": "a.wav", "question": "Who?"}) + "\n")
    cfg = cfg_for("sqa", {"kind": "manifest", "path": str(tmp_path), "splits": {"train": "train.jsonl"}},
                  SQA_PROMPTS)
    with pytest.raises(PrepareError, match=r"column 'answer' .* set source.columns.answer"):
        run_prepare(cfg, "sqa", tmp_path, tmp_path / "out")


def test_hf_saved_dataset_with_audio_feature(tmp_path: Path):
    paths = []
    for i in range(3):
        sf.write(tmp_path / f"c{i}.flac", sine(250 + 100 * i, 44100, 1.0), 44100)
        paths.append(str(tmp_path / f"c{i}.flac"))
    ds = datasets.Dataset.from_dict({"audio": paths, "question": ["Q1?", "Q2?", "Q3?"],
                                     "response": ["A1.", "A2.", "A3."]}).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "librisqa"))
    source = {"kind": "hf", "path": str(tmp_path / "librisqa"), "splits": {"train": "train"},
              "columns": {"answer": "response"}}
    out = run_prepare(cfg_for("sqa", source, SQA_PROMPTS), "sqa", tmp_path, tmp_path / "out")
    got = datasets.load_from_disk(str(out / "train"))
    assert got["reference"] == ["A1.", "A2.", "A3."]
    assert all(abs(len(a) - 16000) < 50 for a in got["audio"])


def test_parallel_workers_give_the_same_dataset(tmp_path: Path):
    make_covost(tmp_path / "covost", n=8)
    source = {"kind": "covost2", "path": str(tmp_path / "covost")}
    one = run_prepare(cfg_for("ast", source, AST_PROMPTS, workers=1), "ast", tmp_path, tmp_path / "one")
    two = run_prepare(cfg_for("ast", source, AST_PROMPTS, workers=2), "ast", tmp_path, tmp_path / "two")
    a, b = datasets.load_from_disk(str(one / "test")), datasets.load_from_disk(str(two / "test"))
    assert a["id"] == b["id"] and a["prompt"] == b["prompt"]
    assert np.array_equal(np.asarray(a["audio"][3]), np.asarray(b["audio"][3]))


def test_template_choice_is_stable_and_spread():
    templates = ("a <|audio|>", "b <|audio|>", "c <|audio|>")
    picks = [choose_template(templates, f"id-{i}") for i in range(300)]
    assert picks == [choose_template(templates, f"id-{i}") for i in range(300)]
    assert all(60 < picks.count(t) < 140 for t in templates)


def test_text_normalisation():
    assert normalise_text("  Der\tHund \n läuft.  ") == "Der Hund läuft."
    assert normalise_text("Cafe\u0301") == "Caf\u00e9"


def test_hf_load_dataset_from_a_local_json_folder(tmp_path: Path):
    """`datasets.load_dataset(folder)`: the route a user takes for LibriSQA exported as JSON lines + audio files."""
    folder = tmp_path / "librisqa_json"
    (folder / "audio").mkdir(parents=True)
    rows = []
    for i in range(3):
        sf.write(folder / "audio" / f"u{i}.flac", sine(300 + 50 * i, 16000, 1.2), 16000)
        rows.append({"audio_path": f"audio/u{i}.flac", "question": f"What is in part {i}?", "answer": f"Part {i}."})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = {"kind": "hf", "path": str(folder), "splits": {"train": "train"}, "columns": {"audio": "audio_path"}}
    out = run_prepare(cfg_for("sqa", source, SQA_PROMPTS), "sqa", tmp_path, tmp_path / "out")
    got = datasets.load_from_disk(str(out / "train"))
    assert got["reference"] == ["Part 0.", "Part 1.", "Part 2."]
    assert [round(d, 1) for d in got["duration"]] == [1.2, 1.2, 1.2]


def test_synthetic_source_end_to_end(tmp_path: Path):
    """synth -> prepare on the default prompts: pools keep their per-row task, test speakers stay held out."""
    from steps.core.config import load_config
    from steps.data.corpus import run_synth
    from tests.conftest import REPO

    sizes = [f"synth.sizes.{p}.{s}={n}" for p in ("ast", "sqa", "pretrain")
             for s, n in (("train", 6), ("validation", 2), ("test", 3))]
    cfg = load_config(REPO / "params.yaml", [*sizes, "synth.workers=1", "prepare.workers=1"])
    run_synth(cfg, tmp_path / "data" / "synth")
    for pool in ("sqa", "pretrain"):
        out = run_prepare(cfg, pool, tmp_path, tmp_path / "data" / "prepared" / pool)
        train, test = (datasets.load_from_disk(str(out / s)) for s in ("train", "test"))
        assert train.num_rows == 6 and test.num_rows == 3
        assert not {s.split("+")[0] for s in train["speaker"]} & {s.split("+")[0] for s in test["speaker"]}
        if pool == "sqa":
            assert set(train["task"]) == {"sqa"}
            assert all(q and q in p for q, p in zip(train["question"], train["prompt"], strict=True))
        else:
            assert set(train["task"]) <= {"asr", "ast"}
            for row in train:
                expected = row["transcript"] if row["task"] == "asr" else None
                assert row["reference"] == expected or row["task"] == "ast"


def test_reading_a_prepared_split_never_writes_into_it(tmp_path: Path):
    """Stages filter/map the prepared data; cache files there would make DVC see its output modified."""
    from steps.data.splits import load_split

    make_covost(tmp_path / "covost", n=4)
    cfg = cfg_for("ast", {"kind": "covost2", "path": str(tmp_path / "covost")}, AST_PROMPTS)
    out = run_prepare(cfg, "ast", tmp_path, tmp_path / "prepared" / "ast")
    before = sorted(p.name for p in (out / "test").iterdir())
    ds = load_split(tmp_path / "prepared", "ast", "test")
    ds.filter(lambda t: t == "ast", input_columns="task").map(lambda r: {"n": len(r["reference"])})
    assert sorted(p.name for p in (out / "test").iterdir()) == before
    with pytest.raises(FileNotFoundError, match=r"run the prepare stage first \(`dvc repro prepare@sqa`\)"):
        load_split(tmp_path / "prepared", "sqa", "test")
