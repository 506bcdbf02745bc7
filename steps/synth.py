"""The synth stage: a spoken corpus synthesised offline with espeak-ng (steps/data/corpus.py), so the default needs
no download.

    python -m steps.synth [--params params.yaml] [-S synth.sizes.ast.train=500]

Outputs: data/synth/{ast,sqa,pretrain}/ (`<split>.jsonl` manifests, the tasks' held-out conditions as
`conditions/<name>.jsonl`, and `audio.zip`: 16 kHz WAVs), each folder written atomically.
"""

from __future__ import annotations

from steps.core.config import config_from_args, stage_parser
from steps.core.paths import RunPaths
from steps.data.corpus import run_synth


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__).parse_args(argv)
    cfg = config_from_args(args)
    run_synth(cfg, RunPaths.for_params(cfg, args.params).synth)


if __name__ == "__main__":
    main()
