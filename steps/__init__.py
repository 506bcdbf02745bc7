"""speech-grpo's pipeline code. Each top-level module is one DVC stage, run as `python -m steps.<stage>`: a command
line over one function of the library below it. A stage never imports another stage.

    synth, prepare, pretrain, sft, grpo (and mpgrpo), evaluate, report    the pipeline (dvc.yaml)
    seeds, seed_summary                                                   the seed sweep (sweeps/dvc.yaml)

The library, by concern (a change goes where its concern is):

    core/        params.yaml's typed config, atomic file writes, MLflow tracking and the model registry
    data/        the offline corpus (grammar, text-to-speech), audio decoding, data sources, prepared splits
    modeling/    loading speech LLMs, their families, batches, generation, the tiny preset, encoder speed-ups
    training/    pretraining, the SFT and GRPO trainers and the skeleton they share, rewards, the seed sweep
    evaluation/  metrics (BLEU, chrF, WER, ROUGE, METEOR, BERTScore), the listening check, the evaluation
    reporting/   the comparison's analysis, the paper-settings table, markdown, plots, the seed summary
"""
