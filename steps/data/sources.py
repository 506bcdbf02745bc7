"""Source adapters: every corpus becomes a stream of `RawExample`s with the same fields.

Kinds (`prepare.tasks.<task>.source.kind`):
- `synthetic`: the `synth` stage's output, `<path>/<split>.jsonl` plus `<path>/audio.zip` (WAV members).
- `manifest`:  a JSONL or CSV file per split (`splits` maps our split to a file name under `path`, or `path` is the
               file itself); audio paths are relative to `audio_dir` (default: the manifest's folder) and may
               point into a ZIP archive (`clips.zip/x.wav`, see steps/audio.py).
- `covost2`:   a local CoVoST 2 En->De layout: `<path>/covost_v2.en_de.<split>.tsv` (columns path, sentence,
               translation, client_id, as CoVoST's split script writes them) and Common Voice mp3 clips in
               `audio_dir` (default `<path>/clips`). Our `validation` split reads CoVoST's `dev`.
- `hf`:        `datasets.load_dataset(path)` (a local folder, or a hub id where the hub is reachable) or
               `load_from_disk(path)`; the audio column is read undecoded and decoded by us. Covers LibriSQA.

`columns` maps our fields to source column names. A referenced audio file that does not exist, or a missing
required column, is a configuration error and stops the stage; a clip that exists but is bad is skipped later.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.core.config import CONDITIONS_DIR, TRAIN_VOICES_SPLIT, SourceConfig, condition_split
from steps.data.audio import exists as audio_exists

FIELDS: tuple[str, ...] = ("id", "audio", "text", "question", "answer", "translation", "speaker", "task")
REQUIRED_BY_TASK: dict[str, tuple[str, ...]] = {
    "sqa": ("question", "answer"),
    "ast": ("translation",),
    "asr": ("text",),
}
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "synthetic": {f: f for f in FIELDS},
    "manifest": {f: f for f in FIELDS},
    "hf": {f: f for f in FIELDS},
    "covost2": {"audio": "path", "text": "sentence", "translation": "translation", "speaker": "client_id"},
}
DEFAULT_SPLITS: dict[str, dict[str, str]] = {
    "synthetic": {"train": "train", "validation": "validation", "test": "test",
                  TRAIN_VOICES_SPLIT: TRAIN_VOICES_SPLIT},  # empty in the pretrain pool
    "manifest": {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"},
    "hf": {"train": "train", "validation": "validation", "test": "test"},
    "covost2": {"train": "train", "validation": "dev", "test": "test"},
}


class SourceError(ValueError):
    """The source is misconfigured or inconsistent: the stage stops with this message."""


@dataclass
class RawExample:
    """One example before decoding: where its audio is, and its text fields (missing ones are '')."""

    id: str
    audio_path: str | None
    audio_bytes: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)
    speaker: str = ""
    task: str = ""
    origin: str = ""


def columns_for(cfg: SourceConfig) -> dict[str, str]:
    return {**DEFAULT_COLUMNS[cfg.kind], **cfg.columns}


def splits_for(cfg: SourceConfig) -> dict[str, str]:
    """The configured split mapping replaces the default one whole: splits left out are not prepared."""
    return dict(cfg.splits) if cfg.splits else DEFAULT_SPLITS[cfg.kind]


def condition_splits(cfg: SourceConfig, root: Path) -> list[str]:
    """The held-out condition splits (`conditions/<name>`) a synthetic source holds, sorted; none for other kinds."""
    if cfg.kind != "synthetic":
        return []
    path = (root / cfg.path) if not Path(cfg.path).is_absolute() else Path(cfg.path)
    return sorted(condition_split(m.stem) for m in (path / CONDITIONS_DIR).glob("*.jsonl"))


def iter_examples(cfg: SourceConfig, split: str, task: str, root: Path) -> list[RawExample]:
    """All raw examples of one split. `task` is the pool (sqa, ast, pretrain); `root` anchors relative paths."""
    source_split = splits_for(cfg).get(split)
    if source_split is None and cfg.kind == "synthetic" and split.startswith(f"{CONDITIONS_DIR}/"):
        source_split = split  # a condition synth wrote (condition_splits)
    if source_split is None:
        return []
    path = (root / cfg.path).resolve() if not Path(cfg.path).is_absolute() else Path(cfg.path)
    reader = {"synthetic": _synthetic, "manifest": _manifest, "covost2": _covost2, "hf": _hf}[cfg.kind]
    examples = list(reader(cfg, path, source_split, root))
    if cfg.limit is not None:
        examples = examples[: cfg.limit]
    _require_columns(examples, cfg, task)
    _require_files(examples, cfg)
    return examples


def _rows_to_examples(rows: list[dict[str, Any]], cfg: SourceConfig, audio_root: Path, origin: str) -> Iterator[
        RawExample]:
    cols = columns_for(cfg)
    if rows and cols["audio"] not in rows[0]:
        raise SourceError(f"{origin}: no audio column {cols['audio']!r} (columns: {sorted(rows[0])}); set "
                          "source.columns.audio to the column holding the audio file path")
    seen: set[str] = set()
    for i, row in enumerate(rows):
        audio = str(row.get(cols["audio"]) or "")
        text = {f: _text(row.get(cols[f])) for f in ("text", "question", "answer", "translation") if cols.get(f) in row}
        ident = _text(row.get(cols["id"])) if cols.get("id") in row else ""
        if not ident:  # the clip's name, made unique where a clip appears in several rows
            ident = Path(audio).stem or f"row{i}"
            ident = f"{ident}-{i}" if ident in seen else ident
        seen.add(ident)
        yield RawExample(
            id=ident,
            audio_path=str(audio_root / audio) if audio else None,
            text=text,
            speaker=_text(row.get(cols["speaker"])) if cols.get("speaker") in row else "",
            task=_text(row.get(cols["task"])) if cols.get("task") in row else "",
            origin=origin,
        )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise SourceError(f"missing file: {path}; check source.path and source.splits")
    if path.suffix == ".jsonl":
        from steps.core.io import read_jsonl

        return read_jsonl(path)
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as fh:
        # CoVoST/Common Voice TSVs contain bare quotes inside sentences: do not treat quotes specially there.
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        return list(csv.DictReader(fh, delimiter=delimiter, quoting=quoting))


def _shown(path: Path, root: Path) -> str:
    """A file's name as prepared data records it: relative to the project when inside it, so that the prepared
    tables (and DVC's hashes of them) do not depend on where the project was cloned."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _synthetic(cfg: SourceConfig, path: Path, split: str, root: Path) -> Iterator[RawExample]:
    manifest = path / f"{split}.jsonl"
    if split == TRAIN_VOICES_SPLIT and not manifest.is_file():
        return  # optional: a corpus synthesised without it (synth.test_train_voices: false) or by hand
    audio_root = Path(cfg.audio_dir) if cfg.audio_dir else path
    yield from _rows_to_examples(_read_table(manifest), cfg, audio_root, _shown(manifest, root))


def _manifest(cfg: SourceConfig, path: Path, split: str, root: Path) -> Iterator[RawExample]:
    manifest = path if path.is_file() else path / split
    audio_root = (root / cfg.audio_dir).resolve() if cfg.audio_dir else manifest.parent
    yield from _rows_to_examples(_read_table(manifest), cfg, audio_root, _shown(manifest, root))


def _covost2(cfg: SourceConfig, path: Path, split: str, root: Path) -> Iterator[RawExample]:
    tsv = path / f"covost_v2.en_de.{split}.tsv"
    audio_root = (root / cfg.audio_dir).resolve() if cfg.audio_dir else path / "clips"
    yield from _rows_to_examples(_read_table(tsv), cfg, audio_root, _shown(tsv, root))


def _hf(cfg: SourceConfig, path: Path, split: str, root: Path) -> Iterator[RawExample]:
    import datasets

    cols = columns_for(cfg)
    local = path if path.exists() else None
    try:
        saved = local is not None and any((local / f).is_file() for f in ("dataset_info.json", "dataset_dict.json"))
        if saved:
            ds = datasets.load_from_disk(str(local))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(str(local or cfg.path), split=split)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise SourceError(f"cannot load split {split!r} of dataset {cfg.path!r}: {exc}") from exc
    if cols["audio"] not in ds.column_names:
        raise SourceError(f"dataset {cfg.path!r}: no audio column {cols['audio']!r} (columns: {ds.column_names}); "
                          "set source.columns.audio")
    if isinstance(ds.features[cols["audio"]], datasets.Audio):
        ds = ds.cast_column(cols["audio"], datasets.Audio(decode=False))  # we decode: no torchcodec/FFmpeg needed
    origin = f"hf:{cfg.path}[{split}]"
    for i, row in enumerate(ds):
        audio = row[cols["audio"]]
        audio_path, audio_bytes = _hf_audio(audio, path)
        text = {f: _text(row.get(cols[f])) for f in ("text", "question", "answer", "translation")
                if cols.get(f) in row}
        ident = _text(row.get(cols["id"])) if cols.get("id") in row else ""
        yield RawExample(
            id=ident or f"{split}-{i}",
            audio_path=audio_path,
            audio_bytes=audio_bytes,
            text=text,
            speaker=_text(row.get(cols["speaker"])) if cols.get("speaker") in row else "",
            task=_text(row.get(cols["task"])) if cols.get("task") in row else "",
            origin=origin,
        )


def _hf_audio(audio: Any, root: Path) -> tuple[str | None, bytes | None]:
    """An undecoded Audio value is {'bytes', 'path'}; a plain string column is a path relative to the dataset."""
    if isinstance(audio, dict):
        if audio.get("bytes"):
            return audio.get("path"), audio["bytes"]
        if audio.get("path"):
            return str(root / audio["path"]) if not Path(audio["path"]).is_absolute() else audio["path"], None
    if isinstance(audio, str) and audio:
        return str(root / audio) if not Path(audio).is_absolute() else audio, None
    return None, None


def _require_columns(examples: list[RawExample], cfg: SourceConfig, pool: str) -> None:
    """Every task an example can take needs its text fields present as columns (values may still be empty)."""
    missing: dict[str, set[str]] = {}
    for ex in examples:
        for name in REQUIRED_BY_TASK[example_task(ex, pool)]:
            if name not in ex.text:
                missing.setdefault(name, set()).add(ex.origin)
    if missing:
        cols = columns_for(cfg)
        lines = [f"column {cols.get(n, n)!r} (our field {n!r}) not found in {sorted(o)[:3]}; set "
                 f"source.columns.{n} to the source's column name" for n, o in sorted(missing.items())]
        raise SourceError("; ".join(lines))


def _require_files(examples: list[RawExample], cfg: SourceConfig) -> None:
    missing = [ex.audio_path or f"(no audio value for {ex.id})" for ex in examples
               if ex.audio_bytes is None and not (ex.audio_path and audio_exists(ex.audio_path))]
    if missing:
        shown = "\n    ".join(missing[:10])
        more = f"\n    ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise SourceError(f"{len(missing)} referenced audio file(s) do not exist:\n    {shown}{more}\n"
                          f"check source.path ({cfg.path!r}) and source.audio_dir ({cfg.audio_dir!r})")


def example_task(ex: RawExample, pool: str) -> str:
    """A pool's examples take the pool's task unless the source names one per row (the pretraining pool does)."""
    task = ex.task or pool
    if task not in REQUIRED_BY_TASK:
        raise SourceError(f"{ex.origin}: example {ex.id} has task {task!r}; use one of {sorted(REQUIRED_BY_TASK)}")
    return task
