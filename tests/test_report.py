"""The report stage and steps/reporting/ on small made-up evaluation folders (20 per task), offline, tracking off.

    pytest tests/test_report.py             # fast part
    pytest tests/test_report.py -m slow     # also: artifacts on the stage run and the pipeline's parent run (SQLite)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from steps.core import tracking
from steps.core.config import TASKS, Config, ConfigError, config_from_dict
from steps.report import main
from steps.reporting.analysis import paired_by_id, task_significance
from steps.reporting.evaluations import METHODS, load_evaluations
from steps.reporting.paper_settings import settings_vs_paper
from steps.reporting.render import (
    HEADLINE_BEGIN,
    HEADLINE_END,
    MARK_BEGIN,
    MARK_END,
    SEEDS_BEGIN,
    SEEDS_END,
    _settings_markdown,
    readme_table,
    replace_between_markers,
    update_readme,
)
from steps.reporting.report_builder import run_report
from steps.reporting.seed_tables import seed_summary, seeds_markdown

N = 20
SCORES = {  # greedy BLEU, real and swapped audio; mpgrpo's outputs are grpo's exactly (an identical system)
    "base": {"bleu": 20.0, "bleu_swapped": 2.0},
    "sft": {"bleu": 30.0, "bleu_swapped": 3.0},
    "sft_matched": {"bleu": 35.0, "bleu_swapped": 3.5},
    "grpo": {"bleu": 45.0, "bleu_swapped": 4.0},
    "mpgrpo": {"bleu": 45.0, "bleu_swapped": 4.0},
    "grpo_base": {"bleu": 25.0, "bleu_swapped": 2.5},
}
BERT_REASON = "no bertscore_model configured (set it to a local BERT-family model folder)"
ANIMALS = ("cat", "dog", "bird", "fox", "cow")


def references() -> list[str]:
    return [f"the {ANIMALS[i % 5]} number {i} sat on the red mat today" for i in range(N)]


def hypotheses(method: str) -> list[str]:
    """Base: always wrong; SFT: right on even examples; SFT with matched compute: on 3 in 4; GRPO and MP-GRPO: always
    right."""
    refs = references()
    wrong = [f"a {ANIMALS[(i + 2) % 5]} ran away fast {i}" for i in range(N)]
    if method == "base":
        return wrong
    if method == "sft":
        return [r if i % 2 == 0 else w for i, (r, w) in enumerate(zip(refs, wrong, strict=True))]
    if method == "sft_matched":
        return [r if i % 4 != 3 else w for i, (r, w) in enumerate(zip(refs, wrong, strict=True))]
    if method == "grpo_base":  # GRPO from the base model: right on 1 in 4
        return [r if i % 4 == 0 else w for i, (r, w) in enumerate(zip(refs, wrong, strict=True))]
    return refs


def metrics_file(method: str, task: str, bleu: float, bleu_swapped: float) -> dict[str, Any]:
    """A metrics file shaped like the evaluation's: other scores derived from BLEU so every value is distinct."""
    greedy = {"bleu": bleu, "chrf": bleu + 10, "rouge1": bleu + 5, "rouge2": bleu - 5, "rougeL": bleu + 4,
              "meteor": bleu + 8, "bertscore_f1": None}
    swapped = {k: (None if v is None else v * bleu_swapped / bleu) for k, v in greedy.items()}
    out: dict[str, Any] = {"model": method, "task": task, "split": "test", "n": N, **greedy}
    out |= {f"{k}_swapped": v for k, v in swapped.items()}
    for key in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "meteor"):
        out[f"{key}_sampled_mean"] = greedy[key] - 1.0
        out[f"{key}_sampled_std"] = 0.5
    out["bleu_swapped_sampled"] = bleu_swapped - 0.5
    out["listening_gap_bleu"] = bleu - bleu_swapped
    out |= {"greedy": {"n": N, **greedy}, "swapped": {"n": N, **swapped},
            "signatures": {"scale": "0-100", "lang": "en", "bertscore_skipped": BERT_REASON, "meteor_skipped": None},
            "sampled": {"runs": 3, "temperature": 0.9, "top_p": 0.9}}
    return out


def write_eval(metrics_dir: Path, method: str, task: str, *, bleu: float | None = None,
               bleu_swapped: float | None = None, ids: list[str] | None = None) -> None:
    scores = SCORES[method]
    bleu = scores["bleu"] if bleu is None else bleu
    bleu_swapped = scores["bleu_swapped"] if bleu_swapped is None else bleu_swapped
    folder = metrics_dir / method
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task}.json").write_text(json.dumps(metrics_file(method, task, bleu, bleu_swapped)))
    ids = ids or [f"{task}-test-{i:05d}" for i in range(N)]
    rows = [{"id": ex_id, "prompt": f"<|audio|> question {i}?", "reference": ref, "greedy": hyp,
             "swapped": f"the wrong | answer {i}", "sampled": [hyp, hyp, hyp]}
            for i, (ex_id, ref, hyp) in enumerate(zip(ids, references(), hypotheses(method), strict=True))]
    (folder / f"{task}.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_curves(metrics_dir: Path, task: str) -> None:
    header = ("step,reward,reward_std,kl,entropy,completion_length,clip_ratio,frac_reward_zero_std,reward_on_policy,"
              "reward_off_policy,val_bleu")
    for method in ("grpo", "mpgrpo"):
        lines = [header]
        for step in range(1, 21):
            val = f"{30 + step / 2:.1f}" if step % 10 == 0 else ""  # validation only every 10 steps: empty cells
            off = "0.9" if method == "mpgrpo" else ""
            lines.append(f"{step},{0.2 + step / 100:.3f},0.1,{step / 1000:.4f},1.5,{12 - step / 10:.1f},0.0,0.1,"
                         f"{0.2 + step / 100:.3f},{off},{val}")
        (metrics_dir / method / f"{task}.curve.csv").write_text("\n".join(lines) + "\n")
    sft = {"task": task, "validation": [{"step": 20, "eval_loss": 2.0, "eval_bleu": 20.0},
                                        {"step": 40, "eval_loss": 1.5, "eval_bleu": 28.0}]}
    (metrics_dir / "sft" / f"{task}.train.json").write_text(json.dumps(sft))


def measured(tokens: int, sequences: int, rollout: int, steps: int, seconds: float, flops: float, rollouts: float = 0,
             reference: float = 0, audio: float = 3.0e11) -> dict[str, Any]:
    """A train.json's `compute` as the trainers write it (the loss passes: what rollouts and reference leave)."""
    split = {"total": flops, "loss": flops - rollouts - reference, "rollouts": rollouts, "reference": reference,
             "llm": flops - audio, "audio": audio}
    return {"train_tokens": tokens, "train_sequences": sequences, "rollout_tokens": rollout, "train_steps": steps,
            "train_seconds": seconds, "train_tokens_per_step": round(tokens / steps, 2), "flops": split}


COMPUTE = {  # what the training stages measured (metrics/<method>/<task>.train.json's compute)
    "sft": measured(240_000, 4800, 0, 300, 600.0, 4.0e12, audio=1.0e12),
    "grpo": measured(96_000, 2560, 30_000, 20, 100.0, 1.2e12, 4.0e11, 2.0e11),
    "mpgrpo": measured(97_000, 2560, 30_500, 20, 104.0, 1.25e12, 4.0e11, 2.0e11),
    "sft_matched": measured(96_400, 1920, 0, 120, 240.0, 1.2e12),
    "grpo_base": measured(90_000, 2560, 28_000, 20, 98.0, 1.1e12, 3.5e11, 2.0e11),
}
# Each method's validation history as the trainers record it: (step, BLEU, cumulative FLOPs, seconds). SFT and GRPO
# were still improving at their last evaluation; MP-GRPO chose its start (the SFT model, step 0).
HISTORY = {
    "sft": [(150, 20.0, 2.0e12, 300.0), (300, 28.0, 4.0e12, 600.0)],
    "sft_matched": [(40, 27.0, 4.0e11, 80.0), (80, 29.0, 8.0e11, 160.0), (120, 28.5, 1.2e12, 240.0)],
    "grpo": [(10, 28.5, 6.0e11, 50.0), (20, 29.5, 1.2e12, 100.0)],
    "mpgrpo": [(0, 28.0, 0.0, 0.0), (10, 27.0, 6.25e11, 52.0), (20, 27.5, 1.25e12, 104.0)],
    "grpo_base": [(0, 10.0, 0.0, 0.0), (10, 12.0, 5.5e11, 49.0), (20, 11.0, 1.1e12, 98.0)],
}
BEST = {"sft": 300, "sft_matched": 80, "grpo": 20, "mpgrpo": 0, "grpo_base": 10}


def write_compute(metrics_dir: Path, task: str) -> None:
    for method, compute in COMPUTE.items():
        path = metrics_dir / method / f"{task}.train.json"
        summary = json.loads(path.read_text()) if path.is_file() else {"task": task, "validation": []}
        history = [{"step": step, "eval_bleu": bleu, "flops": flops, "train_seconds": seconds}
                   for step, bleu, flops, seconds in HISTORY[method]]
        if method == "sft":  # keep the validation loss of write_curves
            history = [h | {"eval_loss": v["eval_loss"]} for h, v in zip(history, summary["validation"], strict=True)]
        best = next(h["eval_bleu"] for h in history if h["step"] == BEST[method])
        summary |= {"method": method, "compute": compute, "validation": history, "best_step": BEST[method],
                    "best_validation_bleu": best, "global_step": HISTORY[method][-1][0],
                    "init": f"models/{'base' if method in ('sft', 'grpo_base') else 'sft/' + task}"}
        if method == "grpo":
            summary["stopped"] = "max_steps"  # as early stopping records it (the others': inferred from the steps)
        if method == "sft_matched":
            summary["matched"] = {"compute": "flops", "grpo": COMPUTE["grpo"], "sft_flops_per_step": 1.0e10,
                                  "max_steps": 120}
        path.write_text(json.dumps(summary))


def make_metrics(root: Path, methods: tuple[str, ...] = METHODS, curves: bool = True) -> Path:
    metrics = root / "metrics"
    for task in TASKS:
        for method in methods:
            write_eval(metrics, method, task)
        if curves and {"sft", "grpo", "mpgrpo"} <= set(methods):
            write_curves(metrics, task)
        if curves and set(COMPUTE) <= set(methods):
            write_compute(metrics, task)
    return metrics


@pytest.fixture(autouse=True)
def _tracking_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.ENV_TRACKING, "off")


# The fixture's runs had caps of 300 (SFT) and 20 (GRPO) steps, whatever the default caps are now.
FIXTURE_CONFIG = config_from_dict({"sft": {"max_steps": 300}, "grpo": {"max_steps": 20}})


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One report over all four methods and both tasks, with curves (shared: the plots take a second)."""
    root = tmp_path_factory.mktemp("full")
    metrics = make_metrics(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.ENV_TRACKING, "off")
        data = run_report(FIXTURE_CONFIG, metrics, root / "reports", n_samples=200, seed=1)
    return root / "reports", data


def test_scores_table_matches_the_inputs(full):
    out, data = full
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(data))  # report.json is what the markdown was rendered from
    scores = saved["tasks"]["sqa"]["scores"]
    for method, expected in SCORES.items():
        assert scores["greedy"][method]["bleu"] == expected["bleu"]
        assert scores["greedy"][method]["chrf"] == expected["bleu"] + 10
        assert scores["greedy"][method]["bertscore_f1"] is None
        assert scores["sampled"][method]["mean"]["bleu"] == expected["bleu"] - 1
    assert scores["relative_to_base_pct"]["sft"]["bleu"] == pytest.approx(50.0)      # 30 vs 20
    assert scores["relative_to_base_pct"]["grpo"]["rouge2"] == pytest.approx(100 * 25 / 15, rel=1e-5)  # 40 vs 15
    assert scores["skipped"] == {"bertscore_f1": BERT_REASON}
    md = (out / "report.md").read_text()
    assert "| Base | 20.00 | n/a | 25.00 | 15.00 | 24.00 | 28.00 | 30.00 |" in md
    assert "| SFT | 30.00 (+50.0%) | n/a | 35.00 (+40.0%) | 25.00 (+66.7%) | 34.00 (+41.7%) | 38.00 (+35.7%) " \
           "| 40.00 (+33.3%) |" in md
    assert f"BERTScore not computed: {BERT_REASON}" in md
    assert "| SFT | 3 | 29.00 ± 0.50 |" in md
    assert [t["present"] for t in saved["tasks"].values()] == [list(METHODS)] * 2
    assert "**Missing**" not in md


def test_significance_better_system_significant_identical_not(full):
    _, data = full
    tests = {(t["system"], t["baseline"]): t for t in data["tasks"]["ast"]["significance"]}
    assert list(tests) == [("sft", "base"), ("grpo", "sft"), ("mpgrpo", "grpo"), ("mpgrpo", "sft"),
                           ("grpo", "sft_matched"), ("mpgrpo", "sft_matched"), ("sft_matched", "sft"),
                           ("grpo_base", "base"), ("grpo_base", "sft"), ("grpo_base", "grpo")]
    for t in tests.values():
        assert 0.0 <= t["p_value"] <= 1.0
        assert t["n"] == N and t["n_samples"] == 200
        assert t["baseline_ci95"][0] <= t["baseline_ci95"][1] and t["system_ci95"][0] <= t["system_ci95"][1]
    better = tests[("grpo", "sft")]  # right on every example vs right on half
    assert better["delta"] > 0 and better["p_value"] == pytest.approx(1 / 201) and better["significant"]
    assert better["p_holm"] == pytest.approx(10 / 201)  # the smallest p of a family of 10: times 10
    assert better["verdict"] == "significant (two-sided, Holm: p < 0.05): GRPO higher than SFT"
    assert better["family"] == "ast greedy" and better["family_size"] == 10 and better["test"] == "two-sided"
    assert better["delta_ci95"][0] > 0 and better["mde_holm"] > better["mde"] > 0  # alpha / 7 needs more
    same = tests[("mpgrpo", "grpo")]  # the very same outputs
    assert same["delta"] == 0 and same["p_value"] == 1.0 and same["p_holm"] == 1.0 and not same["significant"]
    assert same["verdict"].startswith("not significant")
    md = (full[0] / "report.md").read_text()
    assert "| MP-GRPO vs GRPO |" in md and "not significant (two-sided, Holm: p >= 0.05)" in md
    assert "| p (two-sided) | p (two-sided, Holm) | MDE 80% (alone / Holm) |" in md
    assert "adjusted over the 10 comparisons of this table" in md


def test_grpo_is_compared_with_sft_of_matched_compute_and_the_compute_is_shown(full):
    out, data = full
    for key in ("significance", "significance_sampled"):
        tests = {(t["system"], t["baseline"]): t for t in data["tasks"]["sqa"][key]}
        matched = tests[("grpo", "sft_matched")]  # right on every example vs on 3 in 4
        assert matched["delta"] > 0 and matched["p_value"] < 0.05
        assert matched["mde"] > 0 and matched["paper_gain"] == pytest.approx(44.90 - 40.88)  # sized like GRPO vs SFT
        assert tests[("mpgrpo", "sft_matched")]["paper_gain"] == matched["paper_gain"]
        assert tests[("sft_matched", "sft")]["paper_gain"] is None
    assert data["tasks"]["sqa"]["compute"]["sft_matched"]["matched"]["max_steps"] == 120
    md = (out / "report.md").read_text()
    assert "| SFT (matched compute) | 35.00 (+75.0%) |" in md  # the scores table's row
    assert "| GRPO vs SFT (matched compute) |" in md and "| MP-GRPO vs SFT (matched compute) |" in md
    assert "| GRPO vs SFT |" in md  # beside the comparison with plain SFT
    assert "### Training compute (measured)" in md
    assert "| GRPO | 20 | 1.2e+12 | 6e+11 | 4e+11 | 2e+11 | 96,000 | 4,800 | 100.00 | 30,000 |" in md
    assert "| SFT (matched compute) | 120 | 1.2e+12 | 1.2e+12 |  |  | 96,400 | 803 | 240.00 |  |" in md
    assert "round(GRPO's flops 1.2e+12 / SFT's 1e+10 per step) = 120 steps" in md
    inputs = data["inputs"]
    assert "metrics/grpo/sqa.train.json" in inputs and "metrics/sft_matched/sqa.train.json" in inputs
    table = readme_table(data)
    assert "| SFT (matched compute) |" in table and "(vs SFT)" in table
    grpo_row = next(line for line in table.splitlines() if line.startswith("| GRPO |"))
    assert "(vs SFT)" in grpo_row and "matched" not in grpo_row  # p vs the previous row of base, SFT, GRPO


def test_listening_table_and_verdicts(full):
    _, data = full
    rows = {r["method"]: r for r in data["tasks"]["sqa"]["listening"]}
    assert rows["sft"] == {"method": "sft", "bleu": 30.0, "bleu_swapped": 3.0, "gap": 27.0, "gain_real": 10.0,
                           "gain_swapped": 1.0, "flagged": False, "verdict": rows["sft"]["verdict"],
                           "bleu_sampled": 29.0, "bleu_swapped_sampled": 2.5, "gap_sampled": 26.5,
                           "gain_real_sampled": 10.0, "gain_swapped_sampled": 1.0}
    assert "speech result" in rows["sft"]["verdict"] and not any(r["flagged"] for r in rows.values())
    md = (full[0] / "report.md").read_text()
    assert "| SFT | 29.00 | 2.50 | 26.50 | 10.00 | 1.00 |" in md  # the same check on the paper's decoding


def test_listening_flag_when_swapped_audio_scores_like_real_audio(tmp_path):
    metrics = make_metrics(tmp_path, ("base", "sft"), curves=False)
    for task in TASKS:  # SFT scores almost as well without its own audio: it answers from the prompt
        write_eval(metrics, "sft", task, bleu=30.0, bleu_swapped=29.0)
    data = run_report(Config(), metrics, tmp_path / "reports", n_samples=100, seed=1)
    rows = {r["method"]: r for r in data["tasks"]["sqa"]["listening"]}
    assert rows["sft"]["flagged"] and not rows["base"]["flagged"]
    assert "FLAG" in rows["sft"]["verdict"]
    md = (tmp_path / "reports" / "report.md").read_text()
    assert "| SFT | 30.00 | 29.00 | 1.00 | 10.00 | 27.00 | **FLAG** |" in md


def test_missing_methods_are_reported(tmp_path):
    metrics = make_metrics(tmp_path, ("base", "sft"), curves=False)
    data = run_report(Config(), metrics, tmp_path / "reports", n_samples=100, seed=1)
    for task in TASKS:
        assert data["tasks"][task]["present"] == ["base", "sft"]
        only_ast = ["grpo_base"] if task == "ast" else []  # GRPO from the base is trained on AST only
        assert data["tasks"][task]["missing"] == ["sft_matched", "grpo", "mpgrpo", *only_ast]
        assert [(t["system"], t["baseline"]) for t in data["tasks"][task]["significance"]] == [("sft", "base")]
    md = (tmp_path / "reports" / "report.md").read_text()
    assert ("**Missing**: SQA: SFT (matched compute), GRPO, MP-GRPO; AST: SFT (matched compute), "
            "GRPO, MP-GRPO, GRPO (from base)") in md
    assert "Training compute" not in md  # no train.json with a compute figure
    assert "No training curves found" in md
    table = readme_table(data)
    assert "| GRPO | missing |  |  |  |  |" in table


def test_base_only_and_a_task_without_results(tmp_path):
    metrics = tmp_path / "metrics"
    write_eval(metrics, "base", "sqa")
    data = run_report(Config(), metrics, tmp_path / "reports", n_samples=100, seed=1)
    assert data["tasks"]["sqa"]["significance"] == [] and data["tasks"]["ast"]["present"] == []
    md = (tmp_path / "reports" / "report.md").read_text()
    assert "Only one method evaluated" in md and "No evaluation results for this task." in md


def test_no_results_or_no_base_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no evaluation results"):
        load_evaluations(tmp_path / "metrics")
    write_eval(tmp_path / "metrics", "sft", "sqa")
    with pytest.raises(FileNotFoundError, match=r"evaluate_base@sqa"):
        load_evaluations(tmp_path / "metrics")


def test_mismatched_ids_raise_naming_both_files(tmp_path):
    metrics = make_metrics(tmp_path, ("base",), curves=False)
    write_eval(metrics, "sft", "sqa", ids=[f"other-{i}" for i in range(N)])
    write_eval(metrics, "sft", "ast")
    with pytest.raises(ValueError, match="do not hold the same examples") as err:
        run_report(Config(), metrics, tmp_path / "reports", n_samples=100, seed=1)
    assert str(metrics / "base" / "sqa.predictions.jsonl") in str(err.value)
    assert str(metrics / "sft" / "sqa.predictions.jsonl") in str(err.value)
    assert not (tmp_path / "reports" / "report.md").exists()


def test_pairing_is_by_id_not_by_line(tmp_path):
    metrics = make_metrics(tmp_path, ("base", "sft"), curves=False)
    path = metrics / "sft" / "sqa.predictions.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(reversed(lines)) + "\n")  # same examples, other order
    evals = load_evaluations(metrics)["sqa"]
    hyps_a, hyps_b, refs = paired_by_id(evals["base"], evals["sft"])
    assert refs == references() and hyps_b == [[h] for h in hypotheses("sft")]
    assert hyps_a == [[h] for h in hypotheses("base")]


def test_plots_and_examples_are_written(full):
    out, data = full
    assert data["plots"] == ["plots/metrics_sqa.png", "plots/metrics_ast.png", "plots/listening.png",
                             "plots/curves_sqa.png", "plots/curves_ast.png", "plots/frontier_sqa.png",
                             "plots/frontier_ast.png"]
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    examples = (out / "examples.md").read_text()
    ids = data["tasks"]["sqa"]["example_ids"]
    assert len(ids) == 5 and all(f"### `{i}`" in examples for i in ids)
    assert examples.count("| MP-GRPO |") == 10  # 5 examples x 2 tasks, the same ids for every method
    assert "the wrong \\| answer" in examples  # a pipe in a hypothesis does not break the table
    curves = data["tasks"]["sqa"]["curves"]
    assert curves["grpo"]["points"] == 20 and curves["grpo"]["last_step"] == 20
    assert curves["grpo"]["reward"] == {"first": 0.215, "last": 0.395}  # mean of the first / last 2 of 20
    assert curves["mpgrpo"]["best_val_bleu"] == {"step": 20, "bleu": 40.0}
    assert curves["sft"]["best_val_bleu"] == {"step": 300, "bleu": 28.0}
    assert "reward_off_policy" in curves["mpgrpo"] and "reward_off_policy" not in curves["grpo"]


def test_settings_that_differ_from_the_paper():
    rows = {r["key"]: r for r in settings_vs_paper(Config())}
    assert rows["grpo.init"]["status"] == "differs" and rows["grpo.init"]["ours"] == "sft"
    assert rows["grpo.beta"]["status"] == "same" and rows["grpo.num_generations"]["status"] == "same"
    assert rows["model.name_or_path"]["status"] == "differs"
    assert rows["prepare.tasks.sqa.source"]["status"] == "differs"
    assert rows["grpo.max_steps"]["status"] == "left open"
    assert rows["mpgrpo.num_off_policy"]["status"] == "same"
    assert rows["grpo.lr"]["status"] == "differs"  # default 2e-5, the paper 1e-6


def test_settings_table_gives_the_reason_params_states_and_rejects_an_unknown_key():
    cfg = config_from_dict({"report": {"why": {"grpo.lr": "the tiny model learns at 2e-5"}}})
    rows = {r["key"]: r for r in settings_vs_paper(cfg)}
    assert rows["grpo.lr"]["why"] == "the tiny model learns at 2e-5"
    assert rows["mpgrpo.lr"]["why"] == "the tiny model learns at 2e-5"  # inherited from grpo with the value
    assert rows["grpo.init"]["why"] == ""
    table = "\n".join(_settings_markdown(list(rows.values())))
    assert "| `2e-05` | differs | the tiny model learns at 2e-5 |" in table
    assert "| `sft` | differs | not given (add `report.why`) |" in table
    other = config_from_dict({"report": {"why": {"grpo.lr": "x"}}, "mpgrpo": {"lr": 3e-5}})
    assert {r["key"]: r for r in settings_vs_paper(other)}["mpgrpo.lr"]["why"] == ""  # its own value: no reason
    # A params key that the report does not compare (a misspelt one is stopped when params load: test_config).
    with pytest.raises(ConfigError, match=r"report.why.evaluate.batch_size: not a setting the report compares"):
        settings_vs_paper(config_from_dict({"report": {"why": {"evaluate.batch_size": "not compared"}}}))
    with pytest.raises(ConfigError, match=r"why.grpo.lr: give a reason"):
        config_from_dict({"report": {"why": {"grpo.lr": " "}}})


def test_seed_summary():
    runs = {  # seed 2 breaks the order on AST (SFT above GRPO); seed 3 has no SFT on AST
        "1": {"base": {"sqa": 10, "ast": 50}, "sft": {"sqa": 20, "ast": 52}, "grpo": {"sqa": 25, "ast": 53}},
        "2": {"base": {"sqa": 12, "ast": 50}, "sft": {"sqa": 22, "ast": 54}, "grpo": {"sqa": 27, "ast": 53}},
        "3": {"base": {"sqa": 14, "ast": 50}, "sft": {"sqa": 24}, "grpo": {"sqa": 29, "ast": 56}},
    }
    data = {"seeds": [1, 2, 3], "runs": runs}
    out = seed_summary(data)
    assert out["seeds"] == ["1", "2", "3"] and list(out["tasks"]) == ["sqa", "ast"]
    sqa, ast = out["tasks"]["sqa"], out["tasks"]["ast"]
    assert sqa["methods"]["base"] == {"mean": 12.0, "std": 2.0, "n": 3, "values": [10.0, 12.0, 14.0]}
    assert sqa["held_every_seed"] and sqa["held_in"] == ["1", "2", "3"]
    assert not ast["held_every_seed"] and ast["failed_in"] == ["2"] and ast["incomplete_in"] == ["3"]
    assert ast["methods"]["sft"]["n"] == 2
    with pytest.raises(ValueError, match="runs"):
        seed_summary({"seeds": [1]})
    with pytest.raises(ValueError, match=r"\['9'\]"):
        seed_summary({"seeds": [9], "runs": {"1": {}}})


def test_seeds_markdown_shows_spread_per_seed_values_and_swapped_audio():
    runs = {str(s): {"base": {"sqa": 10.0 + s}, "sft": {"sqa": 20.0}, "grpo": {"sqa": 30.0 - 15 * (s == 2)}}
            for s in (1, 2)}
    swapped = {str(s): {"base": {"sqa": 1.0}, "sft": {"sqa": 2.0 + s}, "grpo": {"sqa": None}} for s in (1, 2)}
    md = "\n".join(seeds_markdown({"seeds": [1, 2], "runs": runs, "swapped": swapped}))
    assert "## Seeds (2: 1, 2)" in md
    assert "| Base | 11.50 ± 0.71 | 11.00, 12.00 | 1.00 ± 0.00 |" in md
    assert "| SFT | 20.00 ± 0.00 | 20.00, 20.00 | 3.50 ± 0.71 |" in md
    assert "| GRPO | 22.50 ± 10.61 | 30.00, 15.00 | n/a |" in md  # no swapped score recorded
    assert "did **not** hold in every seed (failed in seed 2)" in md
    assert "paper decoding" not in md  # no sampled scores in this sweep: greedy only


def test_seeds_markdown_puts_the_papers_decoding_first_when_the_sweep_sampled():
    runs = {str(s): {"base": {"sqa": 10.0}, "sft": {"sqa": 20.0}, "grpo": {"sqa": 19.0 + s}} for s in (1, 2)}
    sampled = {str(s): {"base": {"sqa": 5.0}, "sft": {"sqa": 8.0}, "grpo": {"sqa": 10.0 + s}} for s in (1, 2)}
    sampled_swapped = {str(s): {"base": {"sqa": 1.0}, "sft": {"sqa": 1.5}, "grpo": {"sqa": 2.0}} for s in (1, 2)}
    data = {"seeds": [1, 2], "runs": runs, "sampled": sampled, "sampled_swapped": sampled_swapped}
    md = "\n".join(seeds_markdown(data))
    assert md.index("### SQA, paper decoding") < md.index("### SQA, greedy decoding")
    assert "| GRPO | 11.50 ± 0.71 | 11.00, 12.00 | 2.00 ± 0.00 |" in md
    paper, greedy = md.split("### SQA, greedy decoding")
    assert "Ordering Base < SFT < GRPO: held in every seed." in paper
    assert "did **not** hold in every seed (failed in seed 1)" in greedy  # GRPO 20 = SFT 20 in seed 1


def test_readme_gets_the_seed_table_when_a_sweep_exists(full, tmp_path):
    out, _ = full
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{MARK_BEGIN}\n{MARK_END}\n\n{SEEDS_BEGIN}\nold\n{SEEDS_END}\n")
    seeds = tmp_path / "seeds.json"
    update_readme(readme, out / "report.json", seeds)  # no sweep yet: the seeds block is left alone
    assert "old" in readme.read_text()
    runs = {str(s): {"base": {"sqa": 1.0}, "sft": {"sqa": 2.0}, "grpo": {"sqa": 3.0}} for s in (1, 2, 3)}
    seeds.write_text(json.dumps({"seeds": [1, 2, 3], "runs": runs}))
    update_readme(readme, out / "report.json", seeds)
    text = readme.read_text()
    assert "old" not in text and "| GRPO | 3.00 ± 0.00 | 3.00, 3.00, 3.00 | n/a |" in text
    assert "Ordering Base < SFT < GRPO: held in every seed." in text and "## Seeds" not in text


def test_sampled_significance_resamples_examples_with_all_their_runs(full, tmp_path):
    _, data = full
    tests = data["tasks"]["sqa"]["significance_sampled"]
    first = next(t for t in tests if (t["baseline"], t["system"]) == ("base", "sft"))
    assert first["decoding"] == "sampled" and first["n"] == N and first["outputs_per_example"] == 3
    greedy = next(t for t in data["tasks"]["sqa"]["significance"] if (t["baseline"], t["system"]) == ("base", "sft"))
    # the fixture's three runs all equal the greedy output: clustered by example, three copies are no more evidence
    # than one, so the test is the greedy one (pooled as 3 x N rows, its p-value would shrink); BLEU itself moves a
    # little, by the smoothing of n-gram orders with no match, which depends on the counts
    assert first["p_value"] == greedy["p_value"] and first["mde"] == pytest.approx(greedy["mde"], rel=0.02)
    assert first["delta"] == pytest.approx(greedy["delta"], rel=0.02)
    vs_sft = next(t for t in tests if (t["baseline"], t["system"]) == ("sft", "grpo"))
    assert vs_sft["paper_gain"] == pytest.approx(4.02) and vs_sft["examples_for_paper_gain"] >= 1
    assert first["paper_gain"] is None and first["mde"] > 0
    metrics = make_metrics(tmp_path, ("base", "sft"), curves=False)
    for method in ("base", "sft"):  # no sampled runs: the test is skipped with the reason
        path = metrics / method / "sqa.predictions.jsonl"
        rows = [{k: v for k, v in json.loads(line).items() if k != "sampled"} for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evals = load_evaluations(metrics)["sqa"]
    (skipped,) = task_significance(evals, 100, 1, "sampled")
    assert "no sampled runs" in skipped["skipped"]


def test_readme_table_and_marker_replacement(full, tmp_path):
    out, data = full
    table = readme_table(data)
    # SFT: the paper's decoding (sampled mean +- std, swapped), then greedy (real, swapped)
    assert "| SFT | 29.00 ± 0.50 | 2.50 | " in table and "| 30.00 | 3.00 | " in table
    assert "(vs Base)" in table and "(vs GRPO)" in table
    # the Holm-adjusted p: SFT vs Base's raw p is 1/201, the smallest of 10 in its family
    sft = next(t for t in data["tasks"]["sqa"]["significance"] if (t["baseline"], t["system"]) == ("base", "sft"))
    assert sft["p_value"] == pytest.approx(1 / 201) and "| 0.050 (vs Base) |" in table
    assert table.startswith("**SQA**\n\n| method | BLEU (paper's decoding) | swapped audio | p vs previous "
                            "(two-sided, Holm) | BLEU greedy | swapped audio | p vs previous (two-sided, Holm) |")
    assert "**AST**" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{MARK_BEGIN}\nold table\n{MARK_END}\nafter\n")
    update_readme(readme, out / "report.json")
    text = readme.read_text()
    assert "old table" not in text and table in text
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{MARK_END}\nafter\n")
    update_readme(readme, out / "report.json")
    assert readme.read_text() == text  # idempotent


def test_readme_without_markers_fails_clearly(full, tmp_path):
    out, _ = full
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(ValueError, match="report:begin"):
        update_readme(readme, out / "report.json")
    assert readme.read_text() == "# no markers here\n"
    with pytest.raises(ValueError, match="before"):
        replace_between_markers(f"{MARK_END}\n{MARK_BEGIN}\n", "t")


def test_command_line(tmp_path, monkeypatch):
    shutil.copytree(make_metrics(tmp_path / "src", ("base", "sft"), curves=False), tmp_path / "metrics")
    params = tmp_path / "params.yaml"
    params.write_text("seed: 3\n")
    main(["--params", str(params), "-S", "report.bootstrap_samples=150", "-S", "report.examples=2"])
    saved = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert saved["bootstrap"] == {"metric": "bleu", "hypotheses": "greedy", "n_samples": 150, "seed": 3,
                                  "alpha": 0.05, "test": "two-sided", "correction": "holm",
                                  "family": "each task and decoding", "power": 0.8}
    assert len(saved["tasks"]["ast"]["example_ids"]) == 2
    (tmp_path / "README.md").write_text("# none\n")
    with pytest.raises(SystemExit, match="report:begin"):
        main(["--params", str(params), "--readme"])
    (tmp_path / "README.md").write_text(f"{MARK_BEGIN}\n{MARK_END}\n")
    main(["--params", str(params), "--readme"])
    assert "| SFT | " in (tmp_path / "README.md").read_text()


def test_report_json_keeps_small_values(full):
    rows = {r["key"]: r for r in full[1]["settings"]}
    assert rows["grpo.lr"]["ours"] == 2e-5 and rows["grpo.beta"]["ours"] == 0.02  # not rounded away
    assert "| grpo: learning rate | `grpo.lr` | 1e-6 | `2e-05` | differs |" in (full[0] / "report.md").read_text()


# --- MLflow -----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_artifacts_go_to_the_stage_run_and_the_parent_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    root = tmp_path / "repo"
    (root / "mlruns").mkdir(parents=True)
    for var in (tracking.ENV_RUN_ID, tracking.ENV_PARENT_RUN_ID, "DVC_STAGE", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(tracking.ENV_TRACKING, "on")
    monkeypatch.setenv(tracking.ENV_ROOT, str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    parent = tracking.start_pipeline_run("pipeline")
    assert parent is not None
    monkeypatch.setenv(tracking.ENV_PARENT_RUN_ID, parent)
    metrics = make_metrics(tmp_path, ("base", "sft"), curves=False)
    run_report(Config(), metrics, tmp_path / "reports", n_samples=100, seed=1)
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    (child,) = [r for r in client.search_runs([client.get_run(parent).info.experiment_id])
                if r.info.run_id != parent]
    expected = ["report/examples.md", "report/plots", "report/report.json", "report/report.md"]
    for run_id in (child.info.run_id, parent):
        assert sorted(f.path for f in client.list_artifacts(run_id, "report")) == expected
        assert "report/plots/listening.png" in [f.path for f in client.list_artifacts(run_id, "report/plots")]
    assert child.data.metrics["sqa/sft/bleu"] == 30.0 and "sqa/sft_vs_base/p_value" in child.data.metrics


def test_the_curve_title_says_how_validation_decoded():
    from steps.reporting.analysis import validation_decoding

    assert validation_decoding(Config()) == "greedy"  # the default: no pass-to-pass noise (docs/tuning.md)
    mixed = config_from_dict({"sft": {"eval_decoding": "sampled"}})
    # sft_matched inherits sft's
    assert validation_decoding(mixed) == ("SFT sampled T 0.9, top-p 0.9; SFT (matched compute) sampled T 0.9, "
                                          "top-p 0.9; GRPO greedy; MP-GRPO greedy; GRPO (from base) greedy")


# --- prose generated from the data --------------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.]*\w)")


def stated_forms(*data: Any) -> set[str]:
    """Every way the prose may print a number the data holds: 2 decimals (signed or not), a p-value's 3, 3
    significant digits, an integer, a fraction as a percentage; and list lengths (e.g. how many seeds)."""
    forms: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            forms.add(str(len(value)))
            for v in value:
                walk(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            v = float(value)
            forms.update({f"{v:.2f}", f"{v:+.2f}", f"{v:.3f}", f"{v:.3g}", f"{v * 100:.0f}"})
            if v.is_integer():
                forms.add(str(int(v)))
            if 0 <= v < 0.001:
                forms.add("0.001")  # printed as <0.001
        elif isinstance(value, str) and NUMBER.fullmatch(value):
            forms.add(value)

    for d in data:
        walk(d)
    return forms


def numbers_not_from(text: str, *data: Any) -> list[str]:
    forms = stated_forms(*data)
    return [n for n in NUMBER.findall(text) if n not in forms and n.lstrip("+") not in forms]


def pooled_seeds(report: dict[str, Any]) -> dict[str, Any]:
    """A sweep summary with pooled comparisons shaped like seed_tables.pooled_significance's."""
    pooled = {task: [{"baseline": base, "system": system, "decoding": decoding, "n": N, "seeds": ["1", "2", "3"],
                      "runs_per_seed": 1, "baseline_bleu": 25.4, "system_bleu": 25.4 + delta, "delta": delta,
                      "delta_ci95": [delta - 1.5, delta + 1.5], "p_value": p, "p_holm": min(1.0, 4 * p), "mde": 2.4,
                      "mde_holm": 3.07, "family_size": 16, "paper_gain": 4.02}
                     for decoding in ("sampled", "greedy")
                     for (base, system), delta, p in ((("sft", "grpo"), 0.49, 0.21), (("sft", "mpgrpo"), 0.64, 0.17),
                                                      (("sft_matched", "grpo"), -2.25, 0.009),
                                                      (("sft_matched", "mpgrpo"), -1.30, 0.072))]
              for task in report["tasks"]}
    runs = {seed: {m: dict.fromkeys(report["tasks"], 10.0 * i) for i, m in enumerate(("base", "sft", "grpo"))}
            for seed in ("1", "2", "3")}
    return {"seeds": ["1", "2", "3"], "runs": runs, "pooled": pooled}


def test_every_number_in_the_generated_prose_comes_from_report_json_or_seeds_json(full, tmp_path):
    from steps.reporting.prose import headline, readme_prose, training_sentences, validation_sentences

    out, _ = full
    report = json.loads((out / "report.json").read_text())
    seeds = pooled_seeds(report)
    single = headline(report)
    texts = {"headline": single["sentence"] + " ".join(single["other"]),
             "training": " ".join(training_sentences(report)), "validation": " ".join(validation_sentences(report)),
             "readme": readme_prose(report, seeds)}
    assert texts["training"] and texts["validation"]  # the fixture has something to say about both
    for name, text in texts.items():
        assert numbers_not_from(text, report, seeds) == [], name
        assert NUMBER.findall(text), name  # there are numbers to check
    # ... and the check finds a number that is not in the data
    assert numbers_not_from(texts["readme"] + " GRPO gained +3.35 BLEU", report, seeds) == ["+3.35"]
    # the pooled answer is the one the README states
    assert "pooled over 3 seeds" in texts["readme"] and "GRPO -2.25 BLEU, Holm p 0.036" in texts["readme"]
    md = (out / "report.md").read_text()
    assert single["sentence"] in md and report["headline"]["sentence"] == single["sentence"]
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(["# x", HEADLINE_BEGIN, "old", HEADLINE_END, MARK_BEGIN, MARK_END, SEEDS_BEGIN,
                                  SEEDS_END, ""]))
    (tmp_path / "seeds.json").write_text(json.dumps(seeds))
    update_readme(readme, out / "report.json", tmp_path / "seeds.json")
    text = readme.read_text()
    assert "old" not in text and texts["readme"] in text


def test_the_report_shows_the_frontier_where_training_stopped_and_validation_beside_test(full):
    out, data = full
    entry = data["tasks"]["sqa"]
    stops = entry["training"]["stops"]
    assert stops["sft"]["stopped"] == "max_steps" and stops["sft"]["stopped_source"] == "inferred"
    assert stops["grpo"]["stopped_source"] == "summary" and stops["grpo"]["not_converged"]
    assert not stops["sft_matched"]["still_improving"] and not stops["mpgrpo"]["still_improving"]
    f = entry["training"]["frontier"]
    assert f["start"]["bleu"] == 28.0 and f["start"]["test_bleu"] == SCORES["sft"]["bleu"]
    assert f["methods"]["sft_matched"]["chosen"] == {"step": 80, "bleu": 29.0, "flops": 8.0e11, "train_seconds": 160.0,
                                                     "test_bleu": SCORES["sft_matched"]["bleu"]}
    assert f["methods"]["mpgrpo"]["chosen"]["flops"] == 0.0  # it chose its start
    tests = {(t["baseline"], t["system"]): t for t in entry["significance"]}
    assert tests[("sft_matched", "grpo")]["validation_delta"] == pytest.approx(0.5)  # 29.5 - 29.0
    assert tests[("base", "sft")]["validation_delta"] is None
    md = (out / "report.md").read_text()
    assert "| GRPO | 1.2e+12 | 1.2e+12 | 20 | 29.50 | 45.00 | 100.00 |" in md  # the frontier table
    assert "| SFT (the start) | 0 | 4e+12 (SFT itself) | 300 | 28.00 | 30.00 |  |" in md
    assert "| GRPO vs SFT (matched compute) | +0.50 | +23.12 |" in md  # validation beside test
    assert "- GRPO: stopped at its step cap (20) while its validation BLEU was still improving" in md
    assert "![plots/frontier_sqa.png](plots/frontier_sqa.png)" in md
