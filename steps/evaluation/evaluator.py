"""One model's evaluation on one task's test split, with the paper's decoding and metrics (the evaluate stage).

Models: `base` is models/base; `sft`, `grpo`, `mpgrpo`, `sft_matched` are models/<name>/<task>; any name listed in
`evaluate.extra_models` (name: folder) is evaluated the same way.

Decoding (batched, KV cache, steps.modeling.generation): `evaluate.sampled_runs` runs of the paper's sampled decoding
(top-p 0.9, temperature 0.9, run r seeded with seed + r), reported as mean and sample std over runs; greedy; and the
listening check, greedy and one sampled run again with every example's audio swapped for another example's
(steps.evaluation.listening.swap_audio). A model that listens scores far lower with swapped audio.

Conditions it never trained on (`evaluate.conditions`, on the test split; steps/evaluation/conditions.py), greedy,
on the first `conditions.limit` test texts: each spoken condition synth wrote (other languages' voices, rates and
pitches beyond training's), the test clips with noise at each of `snr_db` (beyond training's SNRs), each also with
swapped audio; and the test texts spoken clean by training speakers (`train_voices`), the reference every condition
is measured against: `robustness_<name>` = BLEU under the condition / BLEU on that reference.

Metrics (steps.evaluation.scores.corpus_scores): sacrebleu corpus BLEU and chrF with their signatures (tokenizer,
casing), ROUGE-1/2/L, METEOR (WordNet offline, or reported as skipped), BERTScore-F1 with a local model (else skipped),
and WER for transcription tasks (`evaluate.wer_tasks`).

Outputs: metrics/<model>/<task>.json (DVC metrics; the headline numbers at the top level) and
metrics/<model>/<task>.predictions.jsonl (id, prompt, reference, each sampled run's hypothesis, the greedy and the
swapped-audio hypothesis), both written atomically and logged to MLflow.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from steps.core.config import MODELS, Config, EvaluateConfig
from steps.core.io import write_json, write_jsonl
from steps.core.paths import RunPaths
from steps.core.tracking import stage_run
from steps.data.splits import evaluation_set
from steps.evaluation.conditions import (
    CLEAN,
    ConditionAnswers,
    condition_hypotheses,
    condition_predictions,
    condition_references,
    decode_conditions,
    fit_window,
    load_condition_sets,
    robustness,
)
from steps.evaluation.listening import swap_audio
from steps.evaluation.scores import corpus_scores
from steps.modeling.encoder_speedups import encoder_outputs_reused
from steps.modeling.generation import GenerationSettings, generate
from steps.modeling.loading import load_model_and_processor, torch_threads

# Scores summarised over sampled runs (the numeric corpus_scores fields that are scores, not counts).
SCORE_KEYS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "wer")


# --- models -----------------------------------------------------------------------------------------------------------


def available_models(cfg: Config, paths: RunPaths, task: str) -> list[str]:
    """The models (pipeline ones and extras) whose folder exists, in a stable order."""
    extra = cfg.evaluate.extra_models
    return [n for n in (*MODELS, *extra) if paths.model(n, task, extra).is_dir()]


# --- decoding ---------------------------------------------------------------------------------------------------------


@dataclass
class Decoded:
    """Every hypothesis one evaluation produced, aligned with the dataset's rows."""

    sampled: list[list[str]] = field(default_factory=list)  # one list per run
    greedy: list[str] | None = None
    swapped: list[str] | None = None
    swapped_sampled: list[str] | None = None  # one sampled run on the swapped audio: the listening check, sampled
    held_out: ConditionAnswers | None = None  # greedy under each held-out condition (steps/evaluation/conditions.py)
    seconds: float = 0.0
    encoder_calls: dict[str, int] = field(default_factory=dict)  # batches encoded (misses), reused (hits)


def decode_all(model: Any, processor: Any, dataset: Any, ecfg: EvaluateConfig, seed: int) -> Decoded:
    """Sampled runs, greedy, and on swapped audio greedy and one sampled run (the first run's seed), all batched
    with the KV cache. The audio encoder runs once per batch of clips, not once per pass (outputs bit-identical)."""
    prompts, audios = list(dataset["prompt"]), list(dataset["audio"])
    sampled = GenerationSettings(max_new_tokens=ecfg.max_new_tokens, do_sample=True, temperature=ecfg.temperature,
                                 top_p=ecfg.top_p)
    greedy = GenerationSettings(max_new_tokens=ecfg.max_new_tokens)
    out = Decoded()
    start = time.perf_counter()
    with encoder_outputs_reused(model, ecfg.encoder_cache_mb) as encoder_calls:
        for run in range(ecfg.sampled_runs):
            out.sampled.append(generate(model, processor, prompts, audios, sampled, ecfg.batch_size, seed=seed + run,
                                        progress=True))
        if ecfg.greedy:
            out.greedy = generate(model, processor, prompts, audios, greedy, ecfg.batch_size, progress=True)
        if ecfg.listening:
            swapped_audio = list(swap_audio(dataset.select_columns(["prompt", "audio"]), seed)["audio"])
            out.swapped = generate(model, processor, prompts, swapped_audio, greedy, ecfg.batch_size, progress=True)
            if ecfg.sampled_runs:
                out.swapped_sampled = generate(model, processor, prompts, swapped_audio, sampled, ecfg.batch_size,
                                               seed=seed, progress=True)
    out.seconds = time.perf_counter() - start
    out.encoder_calls = dict(encoder_calls)
    return out


# --- scoring ----------------------------------------------------------------------------------------------------------


def score(hyps: list[str], refs: list[str], task: str, ecfg: EvaluateConfig) -> dict[str, Any]:
    return corpus_scores(hyps, refs, lang=ecfg.langs.get(task, "en"), bleu_tokenize=ecfg.bleu_tokenize,
                         lowercase=ecfg.lowercase, bertscore_model=ecfg.bertscore_model,
                         with_wer=task in ecfg.wer_tasks)


def spread(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation (ddof=1; 0 for a single run) of each score over the sampled runs."""
    out: dict[str, dict[str, float | None]] = {"mean": {}, "std": {}}
    for key in SCORE_KEYS:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if len(values) != len(runs) or not values:  # skipped (None) in any run: not a number to average
            continue
        out["mean"][key] = statistics.fmean(values)
        out["std"][key] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def signatures(scores: dict[str, Any]) -> dict[str, Any]:
    """How the numbers were computed: sacrebleu signatures and the skipped metrics' reasons."""
    described = ("_signature", "_skipped", "_note")
    return {k: v for k, v in scores.items() if k.endswith(described) or k in ("lang", "scale")}


def numbers(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if k in SCORE_KEYS or k == "n"}


def build_metrics(decoded: Decoded, refs: list[str], task: str, ecfg: EvaluateConfig,
                  condition_refs: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The metrics file's content: headline numbers at the top, then each decoding's full scores.

    `condition_refs`: each held-out condition's references (`steps.evaluation.conditions.condition_references`)."""
    out: dict[str, Any] = {}
    details: dict[str, Any] = {}
    if decoded.greedy is not None:
        greedy = score(decoded.greedy, refs, task, ecfg)
        details["greedy"] = numbers(greedy)
        details["signatures"] = signatures(greedy)
        out |= {k: v for k, v in details["greedy"].items() if k != "n"}
    if decoded.swapped is not None:
        swapped = score(decoded.swapped, refs, task, ecfg)
        details["swapped"] = numbers(swapped)
        out |= {f"{k}_swapped": v for k, v in details["swapped"].items() if k != "n"}
        details.setdefault("signatures", signatures(swapped))
    if decoded.swapped_sampled is not None:
        details["swapped_sampled"] = numbers(score(decoded.swapped_sampled, refs, task, ecfg))
        out |= {f"{k}_swapped_sampled": v for k, v in details["swapped_sampled"].items() if k != "n"}
    if decoded.sampled:
        runs = [score(h, refs, task, ecfg) for h in decoded.sampled]
        summary = spread(runs)
        details["sampled"] = {"runs": len(runs), "temperature": ecfg.temperature, "top_p": ecfg.top_p,
                              "std_kind": "sample std (ddof=1) over runs", **summary,
                              "per_run": [numbers(r) for r in runs]}
        details.setdefault("signatures", signatures(runs[0]))
        for key, value in summary["mean"].items():
            out[f"{key}_sampled_mean"] = value
            out[f"{key}_sampled_std"] = summary["std"][key]
    if "bleu" in out and "bleu_swapped" in out:
        out["listening_gap_bleu"] = out["bleu"] - out["bleu_swapped"]
    if decoded.held_out is not None and condition_refs is not None:
        hypotheses = condition_hypotheses(decoded.held_out, decoded.greedy, len(condition_refs[CLEAN]))
        conditions = {name: numbers(score(hyps, condition_refs[key], task, ecfg))
                      for name, (hyps, key) in hypotheses.items() if key in condition_refs}
        bleu = {name: scores.get("bleu") for name, scores in conditions.items()}
        out |= {f"bleu_{name}": value for name, value in bleu.items() if value is not None}
        out |= {f"robustness_{name}": value for name, value in robustness(bleu).items()}
        details["conditions"] = conditions
        details["conditions_noise"] = ecfg.conditions.noise
    return {**{k: _round(v) for k, v in out.items()}, **details}


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) and math.isfinite(value) else value


def prediction_rows(dataset: Any, decoded: Decoded, held_out: dict[str, dict[str, str]] | None = None
                    ) -> list[dict[str, Any]]:
    """One row per example: id, prompt, reference, every sampled run, greedy and swapped-audio hypotheses, and the
    greedy hypothesis under each held-out condition (`held_out`: test id -> {condition: hypothesis})."""
    rows = []
    for i, (ex_id, prompt, ref) in enumerate(zip(dataset["id"], dataset["prompt"], dataset["reference"],
                                                  strict=True)):
        row: dict[str, Any] = {"id": ex_id, "prompt": prompt, "reference": ref,
                               "sampled": [run[i] for run in decoded.sampled]}
        if decoded.greedy is not None:
            row["greedy"] = decoded.greedy[i]
        if decoded.swapped is not None:
            row["swapped"] = decoded.swapped[i]
        if decoded.swapped_sampled is not None:
            row["swapped_sampled"] = decoded.swapped_sampled[i]
        if held_out and ex_id in held_out:
            row["conditions"] = held_out[ex_id]
        rows.append(row)
    return rows


# --- stage ------------------------------------------------------------------------------------------------------------


def run_evaluate(cfg: Config, name: str, task: str, paths: RunPaths) -> dict[str, Any]:
    """Evaluate model `name` (base, a method or an extra model) on `task`; writes metrics/<name>/<task>.json and
    .predictions.jsonl."""
    ecfg = cfg.evaluate
    model_dir, data_dir = paths.model(name, task, ecfg.extra_models), paths.prepared
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model {name!r} not found at {model_dir}; train it first (`dvc repro`) or fix "
                                "evaluate.extra_models")
    dataset = evaluation_set(data_dir, task, ecfg.split, ecfg.limit)
    refs = list(dataset["reference"])
    metrics_path, predictions_path = paths.evaluation(name, task), paths.predictions(name, task)
    with torch_threads(ecfg.threads), stage_run(cfg, stage="evaluate", task=task, method=name) as run:
        model, processor = load_model_and_processor(model_dir, cfg.model)
        decoded = decode_all(model, processor, dataset, ecfg, cfg.seed)
        sets = load_condition_sets(cfg, data_dir, task, dataset)
        if sets is not None:
            sets = fit_window(sets, processor)
            decoded.held_out = decode_conditions(model, processor, sets, ecfg, cfg.seed)
            decoded.seconds += decoded.held_out.seconds
        metrics = {"model": name, "task": task, "split": ecfg.split, "n": len(refs),
                   **build_metrics(decoded, refs, task, ecfg, condition_references(sets) if sets else None),
                   "decode_seconds": round(decoded.seconds, 2), "encoder_cache": decoded.encoder_calls,
                   "utterances_per_second": round(decoded_utterances(decoded, len(refs))
                                                  / max(decoded.seconds, 1e-9), 2),
                   "model_path": str(model_dir), "max_new_tokens": ecfg.max_new_tokens, "seed": cfg.seed}
        if sets is not None and sets.dropped:
            metrics["conditions_dropped"] = sets.dropped
        held_out = condition_predictions(sets, decoded.held_out) if sets and decoded.held_out else None
        rows = prediction_rows(dataset, decoded, held_out)
        write_jsonl(predictions_path, rows)
        write_json(metrics_path, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)})
        run.log_artifact(metrics_path, "evaluation")
        run.log_artifact(predictions_path, "evaluation")
        # The same answers as an MLflow table: the UI's artifact view lines up each model's answer to the same clip
        # (it compares the first column after the one it groups by: the greedy answer, not the shared reference).
        run.log_table({key: [str(r.get(key, "")) for r in rows] for key in ("id", "greedy", "swapped", "reference")},
                      f"answers/{task}.json")
    shown = ("bleu", "bleu_swapped", "bleu_sampled_mean", "bleu_sampled_std", "bleu_swapped_sampled", "wer",
             *(f"bleu_{c}" for c in metrics.get("conditions", {})))
    headline = ", ".join(f"{k} {metrics[k]}" for k in shown if k in metrics)
    print(f"evaluate[{name}/{task}]: {headline} on {len(refs)} examples -> {metrics_path}", flush=True)
    return metrics


def decoded_utterances(decoded: Decoded, n: int) -> int:
    """How many utterances were decoded in all (for the throughput figure): each pass over the `n` test examples,
    and every held-out condition's hypotheses."""
    passes = (len(decoded.sampled) + (decoded.greedy is not None) + (decoded.swapped is not None)
              + (decoded.swapped_sampled is not None))
    held_out = decoded.held_out
    extra = 0 if held_out is None else (sum(map(len, held_out.noise.values())) + sum(map(len, held_out.spoken.values()))
                                        + len(held_out.train_voices or []))
    return passes * n + extra

