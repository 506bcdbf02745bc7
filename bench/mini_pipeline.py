"""The whole pipeline at toy sizes in a fresh clone of a commit, and a digest of everything it wrote: the check that a
change leaves results alone (a refactor: byte-identical) or changes them only as far as it should.

    python bench/mini_pipeline.py --rev HEAD --out /tmp/mini-new
    python bench/mini_pipeline.py --rev <before> --out /tmp/mini-old --compare /tmp/mini-new/manifest.json

Writes <out>/manifest.json ({file: md5} over data/, models/, metrics/, reports/; checkpoints excluded) and
<out>/repro.log; with --compare, prints which files differ. Files that hold wall times or absolute paths (training
summaries, the report) differ between any two runs and are listed apart; a resolved_params.yaml counts as equal when
its mapping is equal (key order aside). The toy sizes are tests/helpers.TOY_SIZES (as tests/infra/test_dvc_remote.py).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.workspace import write_overrides  # noqa: E402
from tests.helpers import TOY_SIZES  # noqa: E402

OUTPUTS = ("data", "models", "metrics", "reports")
# Never equal between two runs: wall-clock figures, absolute paths of the clone, rendered reports and plots of them.
VOLATILE = (".train.json", "pretrain.json", "report.json", "report.md", ".png", "examples.md")
# Keys of an evaluation file (metrics/<model>/<task>.json) that hold times or paths; the rest must be equal.
EVALUATION_VOLATILE = {"decode_seconds", "utterances_per_second", "model_path", "encoder_cache"}


def run(rev: str, out: Path) -> dict[str, str]:
    clone = out / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
    write_overrides(clone / "params.yaml", TOY_SIZES)
    env = {**os.environ, "SPEECH_GRPO_TRACKING": "off", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # the clone's own code
    start = time.monotonic()
    done = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    (out / "repro.log").write_text(done.stdout + done.stderr)
    print(f"{rev}: dvc repro exit {done.returncode} in {time.monotonic() - start:.0f} s (log: {out / 'repro.log'})")
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    manifest = {str(p.relative_to(clone)): hashlib.md5(p.read_bytes()).hexdigest()
                for top in OUTPUTS for p in sorted((clone / top).rglob("*")) if p.is_file() and ".work" not in p.parts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def compare(mine: dict[str, str], other_path: Path, out: Path) -> None:
    other = json.loads(other_path.read_text())
    here, there = out / "clone", other_path.parent / "clone"
    same, differ, volatile = [], [], []
    for name in sorted(set(mine) | set(other)):
        if mine.get(name) == other.get(name):
            same.append(name)
        elif name.endswith(VOLATILE):
            volatile.append(name)
        elif name in mine and name in other and equal_but_volatile(here / name, there / name):
            same.append(name)
        else:
            differ.append(name)
    print(f"{len(same)} files equal (byte for byte, or but for times, paths and key order), {len(differ)} differ, "
          f"{len(volatile)} hold times or paths (not compared)")
    for name in differ:
        extra = f": max |difference| {max_weight_difference(here / name, there / name):.3g}" \
            if name.endswith(".safetensors") and name in mine and name in other else ""
        print(f"  differs: {name}{extra}")


def equal_but_volatile(a: Path, b: Path) -> bool:
    """Files that differ in bytes but not in what they say: a resolved_params.yaml (key order), an evaluation file
    (times, paths), the pretraining curve (minutes)."""
    if a.name == "resolved_params.yaml":
        return yaml.safe_load(a.read_text()) == yaml.safe_load(b.read_text())
    if a.suffix == ".json" and a.parent.parent.name == "metrics":
        x, y = (json.loads(p.read_text()) for p in (a, b))
        return without(x, EVALUATION_VOLATILE) == without(y, EVALUATION_VOLATILE)
    if a.name == "learning_curve.csv":
        x, y = (list(csv.DictReader(p.open())) for p in (a, b))
        return [without(r, {"minutes"}) for r in x] == [without(r, {"minutes"}) for r in y]
    return False


def without(row: dict, keys: set[str]) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def max_weight_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    parser.add_argument("--compare", type=Path, help="another run's manifest.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = run(args.rev, args.out)
    if args.compare:
        compare(manifest, args.compare, args.out)


if __name__ == "__main__":
    main()
