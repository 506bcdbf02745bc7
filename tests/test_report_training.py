"""steps/reporting/training.py and prose.py on made-up training summaries: where a method stopped, whether GRPO's reward
rose, the frontier, validation beside test, and the headline's answer in each case."""

from __future__ import annotations

import random

import pytest

from steps.core.config import Config
from steps.reporting.prose import answer, headline, training_sentences
from steps.reporting.training import (
    add_validation_deltas,
    frontier,
    reward_trend,
    stop_record,
    t975,
    validation_vs_test,
)


def summary(method: str, history: list[tuple[int, float, float | None]], best: int, steps: int, **extra) -> dict:
    flops = max((f for _, _, f in history if f is not None), default=None)
    return {"method": method, "global_step": steps, "best_step": best,
            "best_validation_bleu": next(b for s, b, _ in history if s == best),
            "init": "models/base" if method == "sft" else "models/sft/sqa",
            "compute": {"train_seconds": 10.0, "flops": {"total": flops, "loss": flops}} if flops else {},
            "validation": [{"step": s, "eval_bleu": b, **({"flops": f} if f is not None else {})}
                           for s, b, f in history], **extra}


def test_t_quantiles() -> None:
    assert t975(1) == 12.706 and t975(10) == 2.228 and t975(30) == 2.042
    assert t975(60) == pytest.approx(2.000, abs=1e-3) and t975(120) == pytest.approx(1.980, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_a_reward_with_no_trend_did_not_rise_and_a_rising_one_rose() -> None:
    rng = random.Random(0)
    steps = list(range(1, 21))
    flat = {"step": steps, "reward": [0.3 + rng.gauss(0, 0.05) for _ in steps], "frac_reward_zero_std": [0.5] * 20,
            "kl": [0.001 * s for s in steps]}
    trend = reward_trend(flat)
    assert trend["verdict"] == "flat" and trend["slope_ci95"][0] < 0 < trend["slope_ci95"][1]
    assert trend["column"] == "reward" and trend["zero_std_mean"] == 0.5 and trend["kl_max"] == 0.02
    rising = dict(flat, reward=[0.1 + 0.02 * s + rng.gauss(0, 0.01) for s in steps])
    up = reward_trend(rising)
    assert up["verdict"] == "rose" and up["slope"] == pytest.approx(0.02, abs=0.003)
    assert up["last_quarter_mean"] > up["first_quarter_mean"]
    falling = dict(flat, reward=[0.5 - 0.02 * s for s in steps])
    assert reward_trend(falling)["verdict"] == "fell"
    # MP-GRPO: the off-policy rows score high whatever the policy does; its on-policy reward is read
    mixed = dict(rising, reward_on_policy=flat["reward"])
    assert reward_trend(mixed)["column"] == "reward_on_policy" and reward_trend(mixed)["verdict"] == "flat"
    assert reward_trend({"step": [1, 2], "reward": [0.1, 0.2]})["verdict"] == "too_few_steps"
    sentence = training_sentences({"tasks": {"sqa": {"training": {"reward_trends": {"grpo": trend}}}}})[0]
    assert sentence.startswith("SQA, GRPO: the training reward did not rise") and "nothing is concluded" in sentence


def test_a_method_at_its_cap_while_still_improving_is_not_converged() -> None:
    climbing = summary("sft", [(75, 5.6, None), (150, 14.1, None), (225, 19.0, None), (300, 26.4, None)], 300, 300)
    stop = stop_record("sft", climbing, 300)
    assert stop["stopped"] == "max_steps" and stop["stopped_source"] == "inferred" and stop["not_converged"]
    plateau = stop_record("sft", dict(climbing, stopped="plateau"), 300)  # what early stopping records
    assert plateau["stopped"] == "plateau" and plateau["still_improving"] and not plateau["not_converged"]
    fell = summary("grpo", [(0, 26.4, 0.0), (10, 25.5, 1.0), (20, 24.9, 2.0)], 0, 20)
    assert not stop_record("grpo", fell, 20)["still_improving"]
    assert stop_record("grpo", dict(fell, global_step=12), 20)["stopped"] is None  # neither recorded nor at the cap
    lines = training_sentences({"tasks": {"sqa": {"training": {"stops": {"sft": stop}}}}})
    assert lines == ["SQA, SFT: stopped at its step cap (300) (inferred from its step count) while its validation "
                     "BLEU was still improving: its best, 26.40, is its last evaluation (step 300); it had not "
                     "reached a plateau."]


def test_the_frontier_starts_every_continued_method_at_sfts_chosen_checkpoint() -> None:
    summaries = {
        "sft": summary("sft", [(150, 14.1, 2e12), (300, 26.4, 4e12)], 300, 300),
        "sft_matched": summary("sft_matched", [(40, 25.5, 1e11), (80, 23.0, 2e11)], 40, 80),
        "grpo": summary("grpo", [(10, 25.5, None), (20, 24.9, None)], 10, 20),  # no FLOPs per evaluation
        "mpgrpo": summary("mpgrpo", [(0, 26.4, 0.0), (10, 27.0, 1.1e11)], 10, 10),
    }
    summaries["grpo"]["compute"] = {"flops": {"total": 3e11}}
    f = frontier(summaries, {"sft": 22.3, "sft_matched": 25.6, "grpo": 20.9, "mpgrpo": 21.4})
    assert f["start"] == {"bleu": 26.4, "step": 300, "test_bleu": 22.3, "total_flops": 4e12}
    matched = f["methods"]["sft_matched"]
    assert [(p["step"], p["flops"], p["bleu"]) for p in matched["points"]] == [(0, 0.0, 26.4), (40, 1e11, 25.5),
                                                                            (80, 2e11, 23.0)]
    assert matched["chosen"]["step"] == 40 and matched["chosen"]["test_bleu"] == 25.6 and not matched["approximate"]
    grpo = f["methods"]["grpo"]  # placed by step on a line to the run's total
    assert grpo["approximate"] and [p["flops"] for p in grpo["points"]] == [0.0, 1.5e11, 3e11]
    assert [p["step"] for p in f["methods"]["mpgrpo"]["points"]] == [0, 10]  # its own step 0, not a second one
    from_base = dict(summaries["grpo"], init="/home/someone/speech-grpo/models/base")  # as a run records it
    assert frontier({**summaries, "grpo": from_base}, {})["methods"]["grpo"]["skipped"] == \
        "started from models/base, not from the SFT model"  # no machine path in the report
    no_flops = dict(summaries["grpo"], compute={})
    assert "no FLOPs recorded" in frontier({**summaries, "grpo": no_flops}, {})["methods"]["grpo"]["skipped"]


def test_validation_deltas_sit_beside_the_test_deltas() -> None:
    summaries = {"sft": {"best_validation_bleu": 26.4}, "sft_matched": {"best_validation_bleu": 25.5},
                 "grpo": {"best_validation_bleu": 25.5}}
    greedy = [{"baseline": "base", "system": "sft", "delta": 19.6}, {"baseline": "sft", "system": "sft_matched",
                                                                      "delta": 3.35, "p_holm": 0.04},
              {"baseline": "sft_matched", "system": "grpo", "delta": -4.75, "p_holm": 0.01}]
    sampled = [dict(t, delta=t["delta"] - 0.3) for t in greedy]
    add_validation_deltas(greedy, summaries)
    assert [t["validation_delta"] for t in greedy] == [None, pytest.approx(-0.9), pytest.approx(0.0)]
    vt = validation_vs_test({"significance": greedy, "significance_sampled": sampled})
    assert [(r["system"], r["same_sign"]) for r in vt["rows"]] == [("sft_matched", False), ("grpo", True)]
    assert vt["rows"][0]["test_delta_sampled"] == pytest.approx(3.05) and (vt["same_sign"], vt["comparisons"]) == (1, 2)


def test_the_answer_covers_yes_no_and_no_difference() -> None:
    up = {"system": "grpo", "baseline": "sft_matched", "delta": 2.5, "p_holm": 0.01, "mde_holm": 1.9}
    down = dict(up, delta=-2.5)
    flat = dict(up, delta=0.4, p_holm=0.6)
    assert answer([up, flat], 0.05)[0] == "yes"
    assert answer([down, dict(flat, system="mpgrpo")], 0.05)[0] == "no"
    verdict, clause = answer([flat], 0.05)
    assert verdict == "no difference" and clause == ("no detectable difference (GRPO +0.40 BLEU, Holm p 0.600, "
                                                     "MDE 1.90)")
    assert answer([{"system": "grpo", "baseline": "sft_matched", "skipped": "no sampled runs"}], 0.05)[0] == \
        "untested"
    same = dict(up, delta=0.0, p_holm=1.0, mde_holm=0.0)  # identical outputs: the bootstrap has no spread
    assert answer([same], 0.05) == ("no difference", "no detectable difference (GRPO gives the same outputs as SFT "
                                    "(matched compute))")
    assert answer([same], 0.05, frozenset({"grpo", "sft_matched"}))[1] == (
        "no detectable difference (GRPO gives the same outputs as SFT (matched compute): both kept their start, the "
        "SFT, as no checkpoint beat it on validation)")


def test_the_headline_pools_seeds_when_the_sweep_has_pooled_tests() -> None:
    report = {"bootstrap": {"alpha": 0.05, "power": 0.8}, "tasks": {"sqa": {
        "significance": [{"baseline": "sft_matched", "system": "grpo", "decoding": "greedy", "delta": 3.0,
                          "p_holm": 0.001, "mde_holm": 2.0}],
        "training": {"stops": {"sft_matched": {"not_converged": True}}}}}}
    single = headline(report)
    assert single["answers"] == {"sqa": {"greedy": "yes"}} and "one training run" in single["source"]
    assert "SFT (matched compute) was still improving at its step cap on SQA: not a converged SFT." in \
        single["sentence"]
    seeds = {"seeds": ["1", "2", "3"], "pooled": {"sqa": [
        {"baseline": "sft_matched", "system": "grpo", "decoding": "sampled", "delta": -1.45, "p_holm": 0.28,
         "mde_holm": 3.1},
        {"baseline": "sft", "system": "grpo", "decoding": "sampled", "delta": 0.49, "p_holm": 0.9, "mde": 2.4}]}}
    pooled = headline(report, seeds)
    assert pooled["answers"] == {"sqa": {"sampled": "no difference"}} and "pooled over 3 seeds" in pooled["source"]
    assert "SQA: no detectable difference (GRPO -1.45 BLEU, Holm p 0.280, MDE 3.10)" in pooled["sentence"]
    assert headline({"bootstrap": {"alpha": 0.05, "power": 0.8}, "tasks": {"sqa": {}}})["sentence"].endswith(
        "Not tested here: no evaluated comparison of GRPO or MP-GRPO with SFT (matched compute).")


def test_step_cap_comes_from_the_config_or_sft_matcheds_record() -> None:
    from steps.reporting.training import step_cap

    assert step_cap(Config(), "grpo", {}) == Config().grpo.max_steps
    assert step_cap(Config(), "sft_matched", {"matched": {"max_steps": 162}}) == 162
    assert step_cap(None, "sft", {}) is None
