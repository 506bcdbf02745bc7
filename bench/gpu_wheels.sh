#!/usr/bin/env bash
# The wheels bench/gpu_check.py needs on the GPU machine and its image lacks, into .whl/ (git-ignored), for its
# Python 3.12 on x86-64. The image has torch, transformers, accelerate, peft, sacrebleu, torchaudio, pandas, pyarrow
# (too old for datasets 5.2, so it travels too), xxhash, fsspec, click, joblib, absl-py, six (device KINDS.md).
#   bash bench/gpu_wheels.sh        # then carry .whl (docs/gpu.md, "The GPU check")
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pyarrow==25.0.1 \
  nltk==3.10.4 defusedxml==0.7.1 jiwer==4.0.0 rapidfuzz==3.14.6
python3 -m pip wheel -q --no-deps -w .whl rouge_score==0.1.2  # published as an sdist only: a pure-Python wheel
ls -l .whl | awk 'NR > 1 {printf "%8.1f MB  %s\n", $5 / 1e6, $9}'
du -cb .whl/*.whl | awk 'END {printf "%8.1f MiB in all (64 MiB travel per call, the working tree included)\n", $1 / 1048576}'
