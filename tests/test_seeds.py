"""The seed sweep (steps/training/seed_sweep.py, steps/reporting/seed_tables.py): post-training per seed and task, the
summary, and what it refuses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from steps.core.config import ConfigError, config_from_dict
from steps.core.io import write_jsonl
from steps.core.seed_runs import seed_run_folder
from steps.core.tracking import ENV_SWEEP_SEED
from steps.reporting.seed_tables import collect, summarize_sweep
from steps.training.seed_sweep import run_seed, seed_config
from tests.helpers import state_of
from tests.tiny_sallm import workspace

TASK = "ast"  # the task tests.tiny_sallm.workspace prepares by default


def write_metrics(metrics: Path, method: str, bleu: float, swapped: float) -> None:
    (metrics / method).mkdir(parents=True, exist_ok=True)
    scores = {"bleu": bleu, "bleu_swapped": swapped, "bleu_sampled_mean": bleu - 1, "bleu_swapped_sampled": None}
    (metrics / method / f"{TASK}.json").write_text(json.dumps(scores))


def test_sweep_seeds_must_differ_from_the_pipeline_seed() -> None:
    with pytest.raises(ConfigError, match=r"sweep.seeds: 1234 is the pipeline's own seed"):
        config_from_dict({"seed": 1234, "sweep": {"seeds": [1234, 5]}})
    with pytest.raises(ConfigError, match=r"sweep.seeds: must be distinct"):
        config_from_dict({"sweep": {"seeds": [5, 5]}})


def test_seed_config_changes_the_seed_and_the_evaluation_only() -> None:
    cfg = config_from_dict({"sweep": {"seeds": [7], "sampled_runs": 1}, "evaluate": {"split": "validation"}})
    scfg = seed_config(cfg, 7)
    assert scfg.seed == 7 and scfg.evaluate.split == "test" and scfg.evaluate.sampled_runs == 1
    assert scfg.sft == cfg.sft and scfg.grpo == cfg.grpo and scfg.model == cfg.model


def test_collect_takes_the_pipeline_seed_from_metrics_and_the_base_from_the_pipeline(tmp_path: Path) -> None:
    cfg = config_from_dict({"seed": 3, "sweep": {"seeds": [8]}})
    for method, bleu in {"base": 1.0, "sft": 2.0, "grpo": 3.0, "mpgrpo": 4.0, "sft_matched": 2.5}.items():
        write_metrics(tmp_path / "metrics", method, bleu, bleu / 10)
    for method, bleu in {"sft": 5.0, "grpo": 6.0, "mpgrpo": 7.0, "sft_matched": 5.5}.items():
        write_metrics(tmp_path / "sweeps" / "runs" / "seed-8" / TASK / "metrics", method, bleu, 0.5)
    data = collect(cfg, tmp_path, tmp_path / "sweeps" / "runs", (TASK,))
    assert data["seeds"] == ["3", "8"]
    assert data["runs"]["3"] == {"base": {TASK: 1.0}, "sft": {TASK: 2.0}, "sft_matched": {TASK: 2.5},
                                 "grpo": {TASK: 3.0}, "mpgrpo": {TASK: 4.0}}
    assert data["runs"]["8"] == {"base": {TASK: 1.0}, "sft": {TASK: 5.0}, "sft_matched": {TASK: 5.5},
                                 "grpo": {TASK: 6.0}, "mpgrpo": {TASK: 7.0}}
    assert data["swapped"]["8"]["grpo"][TASK] == 0.5
    assert data["sampled"]["8"]["grpo"][TASK] == 5.0 and data["sampled"]["3"]["base"][TASK] == 0.0
    assert data["sampled_swapped"]["8"]["grpo"][TASK] is None  # not computed: recorded as missing, not as 0


def test_collect_names_the_missing_evaluation(tmp_path: Path) -> None:
    cfg = config_from_dict({"seed": 3, "sweep": {"seeds": [8]}})
    for method in ("base", "sft", "grpo", "mpgrpo", "sft_matched"):
        write_metrics(tmp_path / "metrics", method, 1.0, 0.1)
    with pytest.raises(FileNotFoundError, match=r"seed-8/ast/metrics/sft/ast.json not found"):
        collect(cfg, tmp_path, tmp_path / "sweeps" / "runs", (TASK,))


def test_the_seeds_stage_runs_each_seed_and_task_into_its_own_folder(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import steps.seeds

    (tmp_path / "params.yaml").write_text("sweep:\n  seeds: [8, 9]\n")
    calls: list[tuple[int, str, Path]] = []
    monkeypatch.setattr(steps.seeds, "run_seed", lambda cfg, seed, task, root, out: calls.append((seed, task, out)))
    steps.seeds.main(["--params", str(tmp_path / "params.yaml"), "--seed", "9", "--task", "sqa"])
    assert calls == [(9, "sqa", tmp_path / "sweeps" / "runs" / "seed-9" / "sqa")]  # one DVC stage's output
    calls.clear()
    steps.seeds.main(["--params", str(tmp_path / "params.yaml")])
    assert [(seed, task) for seed, task, _ in calls] == [(8, "sqa"), (8, "ast"), (9, "sqa"), (9, "ast")]
    with pytest.raises(SystemExit, match=r"--seed \[5\]: not in sweep.seeds \[8, 9\]"):
        steps.seeds.main(["--params", str(tmp_path / "params.yaml"), "--seed", "5"])


def test_a_seed_run_that_fails_leaves_no_folder_and_keeps_the_finished_ones(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import steps.training.seed_sweep as seed_sweep

    runs = tmp_path / "sweeps" / "runs"
    finished = seed_run_folder(runs, 8, "sqa")
    (finished / "metrics").mkdir(parents=True)
    (finished / "metrics" / "done.json").write_text("{}")

    def fails(cfg: Any, task: str, paths: Any) -> None:
        (paths.models / "sft" / task).mkdir(parents=True)  # a half-written model
        raise FloatingPointError("loss is NaN")

    monkeypatch.setattr(seed_sweep, "run_sft", fails)
    cfg = config_from_dict({"sweep": {"seeds": [8]}})
    with pytest.raises(FloatingPointError):
        run_seed(cfg, 8, TASK, tmp_path, seed_run_folder(runs, 8, TASK))
    assert sorted(p.name for p in (runs / "seed-8").iterdir()) == ["sqa"]  # nothing of ast, not even a temp folder
    assert (finished / "metrics" / "done.json").read_text() == "{}"
    assert ENV_SWEEP_SEED not in os.environ  # the MLflow tag does not leak to later runs


@pytest.mark.slow
def test_a_sweep_seed_trains_every_method_with_its_own_seed(tmp_path: Path, speech_rows: list[dict[str, Any]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_GRPO_TRACKING", "off")
    root = workspace(tmp_path, speech_rows)
    micro = {"max_steps": 2, "eval_every": 2, "eval_examples": 4, "eval_batch_size": 4, "max_new_tokens": 8,
             "threads": 1}
    grpo = {**micro, "init": "sft", "prompts_per_step": 2, "num_generations": 4, "lr": 1e-3,
            "max_completion_length": 8, "reward_weights": {"chrf": 1.0}}
    cfg = config_from_dict({"seed": 3, "sweep": {"seeds": [8, 9], "sampled_runs": 0},
                            "sft": {**micro, "batch_size": 4, "lr": 3e-3},
                            "grpo": grpo, "mpgrpo": {"num_off_policy": 1},
                            "evaluate": {"max_new_tokens": 8, "batch_size": 8, "sampled_runs": 2}})
    for method in ("base", "sft", "grpo", "mpgrpo", "sft_matched"):
        write_metrics(root / "metrics", method, 1.0, 0.1)  # stands in for the pipeline's own run
        write_jsonl(root / "metrics" / method / f"{TASK}.predictions.jsonl",
                    [{"id": r["id"], "reference": r["reference"], "greedy": "x", "sampled": ["x", "y"]}
                     for r in speech_rows])
    for seed in (8, 9):
        run_seed(cfg, seed, TASK, root, seed_run_folder(root / "sweeps" / "runs", seed, TASK))
    data = summarize_sweep(cfg, root, root / "sweeps", (TASK,))
    for seed in (8, 9):
        run = root / "sweeps" / "runs" / f"seed-{seed}" / TASK
        for method in ("sft", "grpo", "mpgrpo", "sft_matched"):
            assert (run / "models" / method / TASK / "config.json").is_file()
            metrics = json.loads((run / "metrics" / method / f"{TASK}.json").read_text())
            assert metrics["seed"] == seed and metrics["n"] == len(speech_rows) and "bleu_swapped" in metrics
            assert "bleu_sampled_mean" not in metrics  # sweep.sampled_runs = 0 overrides evaluate's 2
        assert not (run / ".work").exists()
    a, b = (state_of(root / "sweeps" / "runs" / f"seed-{s}" / TASK / "models" / "grpo" / TASK) for s in (8, 9))
    assert any(not a[k].equal(b[k]) for k in a)  # the seed reached training
    assert data["seeds"] == ["3", "8", "9"]
    assert "## Seeds (3: 3, 8, 9)" in (root / "sweeps" / "seeds.md").read_text()
    pooled = {(t["decoding"], t["system"]): t for t in data["pooled"][TASK] if t["baseline"] == "sft"}
    assert {(t["baseline"], t["system"]) for t in data["pooled"][TASK]} >= {("sft_matched", "grpo")}
    greedy = pooled[("greedy", "grpo")]  # every seed's greedy output of every example, resampled by example
    assert greedy["n"] == len(speech_rows) and greedy["outputs_per_example"] == 3 and 0 <= greedy["p_value"] <= 1
    assert "no sampled output" in pooled[("sampled", "mpgrpo")]["skipped"]  # sweep.sampled_runs: 0
    assert "### Pooled over seeds" in (root / "sweeps" / "seeds.md").read_text()


def test_pooled_tests_keep_every_seed_and_run_of_an_example_together(tmp_path: Path) -> None:
    from steps.reporting.seed_tables import pooled_significance

    cfg = config_from_dict({"seed": 3, "sweep": {"seeds": [8]}, "report": {"bootstrap_samples": 200}})
    refs = [f"der Hund isst {i} Äpfel im Garten" for i in range(12)]
    for metrics, runs in ((tmp_path / "metrics", 2), (tmp_path / "sweeps" / "runs" / "seed-8" / TASK / "metrics", 1)):
        for method, keep in (("sft", 4), ("grpo", 6), ("mpgrpo", 6), ("sft_matched", 5)):
            rows = [{"id": f"ex{i}", "reference": r, "greedy": " ".join(r.split()[:keep]),
                     "sampled": [" ".join(r.split()[:keep])] * runs} for i, r in enumerate(refs)]
            write_jsonl(metrics / method / f"{TASK}.predictions.jsonl", rows)
    pooled = pooled_significance(cfg, tmp_path, tmp_path / "sweeps" / "runs", (TASK,))[TASK]
    tests = {(t["decoding"], t["system"]): t for t in pooled if t["baseline"] == "sft"}
    matched = {(t["decoding"], t["system"]): t for t in pooled if t["baseline"] == "sft_matched"}
    assert matched[("greedy", "grpo")]["delta"] > 0 and matched[("greedy", "grpo")]["outputs_per_example"] == 2
    assert tests[("greedy", "grpo")]["outputs_per_example"] == 2  # one greedy output per seed
    # the pipeline's 2 runs and seed 8's one: each seed gives the fewest any has, so that no seed weighs more
    assert tests[("sampled", "grpo")]["runs_per_seed"] == 1 and tests[("sampled", "grpo")]["outputs_per_example"] == 2
    grpo = tests[("greedy", "grpo")]
    assert grpo["clusters"] == "seeds x examples" and grpo["test"] == "two-sided" and grpo["seeds"] == ["3", "8"]
    assert grpo["family_size"] == 8 and grpo["p_holm"] >= grpo["p_value"]  # one family: the whole pooled table
    assert grpo["fixed_seeds"]["p_value"] <= grpo["p_value"] and grpo["delta_ci95"][0] <= grpo["delta"]
    assert tests[("greedy", "grpo")]["n"] == 12 and tests[("greedy", "grpo")]["delta"] > 0
    assert tests[("sampled", "mpgrpo")]["paper_gain"] == pytest.approx(0.97)


def test_pooled_table_rows_fit_its_header_skipped_or_not() -> None:
    from steps.reporting.seed_tables import pooled_markdown

    done = {"baseline": "sft", "system": "grpo", "decoding": "greedy", "n": 12, "seeds": ["3", "8"],
            "runs_per_seed": 1, "baseline_bleu": 20.0, "system_bleu": 21.5, "delta": 1.5, "delta_ci95": [-0.5, 3.5],
            "p_value": 0.04, "p_holm": 0.08, "mde": 2.0, "mde_holm": 2.4, "paper_gain": 0.97, "family_size": 2}
    skipped = {"baseline": "sft", "system": "mpgrpo", "decoding": "sampled", "skipped": "no sampled output"}
    text = "\n".join(pooled_markdown({TASK: [done, skipped]}))
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) == 4 and len({line.count("|") for line in rows}) == 1  # header, rule, a test, a skipped one
    assert "| +1.50 [-0.50, +3.50] | 0.040 | 0.080 | 2.00 / 2.40 |" in rows[2]
    assert "adjusted over the 2 comparisons of this table" in text
