import json
from pathlib import Path

import pytest

from steps.core.io import atomic_dir, read_jsonl, write_json, write_jsonl


def test_atomic_dir_replaces_only_on_success(tmp_path: Path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "first"          # the good output survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp debris that looks like an output


def test_crash_before_first_output_leaves_nothing(tmp_path: Path):
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "part").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_json_helpers_round_trip_and_report_bad_lines(tmp_path: Path):
    write_json(tmp_path / "m.json", {"bleu": 1.5, "text": "Grüße"})
    assert json.loads((tmp_path / "m.json").read_text())["text"] == "Grüße"
    write_jsonl(tmp_path / "r.jsonl", [{"a": 1}, {"a": 2}])
    assert read_jsonl(tmp_path / "r.jsonl") == [{"a": 1}, {"a": 2}]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_outputs_get_ordinary_permissions(tmp_path: Path):
    with atomic_dir(tmp_path / "out") as tmp:
        write_json(tmp / "m.json", {})
    assert (tmp_path / "out").stat().st_mode & 0o755 == 0o755
    assert (tmp_path / "out" / "m.json").stat().st_mode & 0o644 == 0o644
