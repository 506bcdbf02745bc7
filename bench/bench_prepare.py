"""Prepare throughput against its floor: a bare soundfile + soxr decode loop over the same files.

    python bench/bench_prepare.py [--pool ast] [--params params.yaml]

Reads the `synth` output of one pool (run `dvc repro synth` first), times the floor (decode + resample every clip
in one process, nothing else) and the real `prepare` stage (sources, checks, formatting, Arrow, save_to_disk, with
`prepare.workers` processes) into a temporary folder, and prints clips/s and their ratio (target: >= 0.8).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import soundfile as sf
import soxr

from steps.core.config import SPLITS, load_config
from steps.data.preparation import run_prepare
from steps.data.sources import iter_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="ast")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cfg = load_config(args.params)
    root = Path(args.params).resolve().parent
    source = cfg.prepare.tasks[args.pool].source
    files = [ex.audio_path for split in SPLITS for ex in iter_examples(source, split, args.pool, root)]
    rate_out = cfg.prepare.sample_rate

    def floor() -> float:
        start = time.perf_counter()
        for path in files:
            audio, rate = sf.read(path, dtype="float32")
            soxr.resample(audio, rate, rate_out)
        return time.perf_counter() - start

    def prepare() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_prepare(cfg, args.pool, root, Path(tmp) / args.pool)
            return time.perf_counter() - start

    floor()  # warm the page cache so both sides read from memory
    t_floor = min(floor() for _ in range(args.repeats))
    t_prep = min(prepare() for _ in range(args.repeats))
    n = len(files)
    rows = [("floor: soundfile+soxr loop, 1 process", n / t_floor),
            (f"prepare stage, workers={cfg.prepare.workers}", n / t_prep)]
    print(f"\n{n} clips of pool '{args.pool}' (best of {args.repeats})")
    print(f"| {'what':<40} | {'clips/s':>8} |\n|{'-' * 42}|{'-' * 10}|")
    for name, rate in rows:
        print(f"| {name:<40} | {rate:>8.0f} |")
    print(f"| {'ratio prepare / floor (target >= 0.8)':<40} | {rows[1][1] / rows[0][1]:>8.2f} |")


if __name__ == "__main__":
    main()
