"""The sentences of report.md and the README, generated from report.json (and sweeps/seeds.json when given), so that
every number a sentence states is one the data holds (tests/test_prose.py checks it).

- `headline`: the answer to "does GRPO (or MP-GRPO) beat SFT continued for the same compute?" per task, whatever it
  is: from the pooled seed comparisons when seeds.json has them (seeds as a random effect), else from this run's;
  two-sided paired bootstrap, Holm-adjusted, with the minimal detectable effect; the paper's decoding first.
- `training_sentences`: where GRPO's training reward did not rise (a slope whose 95% interval includes 0), and where a
  method stopped at its step cap while its validation BLEU was still improving.
- `validation_sentences`: how often validation's delta had the test delta's sign.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from steps.core.config import GRPO_METHODS
from steps.reporting.evaluations import LABELS
from steps.reporting.markdown import fmt, fmt_p

QUESTION = "Does GRPO (or MP-GRPO) beat SFT continued for the same compute?"
CONTROL = "sft_matched"
DECODINGS = {"sampled": "the paper's decoding (top-p, temperature)", "greedy": "greedy decoding"}


def equal_compute_tests(report: Mapping[str, Any], seeds: Mapping[str, Any] | None = None
                        ) -> tuple[str, dict[str, dict[str, list[Mapping[str, Any]]]]]:
    """(source, {task: {decoding: [GRPO / MP-GRPO vs SFT (matched compute) tests]}}): the pooled seed comparisons
    when seeds.json has them, else this run's tables."""
    pooled = (seeds or {}).get("pooled") or {}
    out: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    if pooled:
        n = len((seeds or {}).get("seeds") or [])
        source = f"pooled over {n} seeds (seeds as a random effect: seeds and test examples resampled)"
        for task, tests in pooled.items():
            for t in tests:
                if t["baseline"] == CONTROL and t["system"] in GRPO_METHODS:
                    out.setdefault(task, {}).setdefault(t["decoding"], []).append(t)
        return source, out
    for task, entry in report["tasks"].items():
        for key in ("significance_sampled", "significance"):
            for t in entry.get(key) or []:
                if t["baseline"] == CONTROL and t["system"] in GRPO_METHODS:
                    out.setdefault(task, {}).setdefault(t.get("decoding", "greedy"), []).append(t)
    return "one training run (test examples resampled)", out


def same_outputs(test: Mapping[str, Any]) -> bool:
    """Two systems whose outputs are identical: no difference and no bootstrap spread (MDE 0), as when GRPO and its
    control both kept their start model."""
    return test["delta"] == 0 and (test.get("mde_holm", test.get("mde")) or 0.0) == 0.0


def answer(tests: Sequence[Mapping[str, Any]], alpha: float, kept_start: frozenset[str] = frozenset()
           ) -> tuple[str, str]:
    """(answer, clause) for one task and decoding: yes (a GRPO method significantly above the control), no (the
    control significantly above, none below it), no detectable difference, or not tested. `kept_start`: the methods
    whose chosen checkpoint is their start (no checkpoint beat it on validation)."""
    done = [t for t in tests if "p_holm" in t and "delta" in t]
    if not done:
        reasons = "; ".join(sorted({str(t.get("skipped", "no test")) for t in tests})) or "no comparison"
        return "untested", f"not tested ({reasons})"

    def numbers_of(t: Mapping[str, Any]) -> str:
        if not same_outputs(t):
            return (f"{LABELS[t['system']]} {t['delta']:+.2f} BLEU, Holm p {fmt_p(t['p_holm'])}, MDE "
                    f"{fmt(t.get('mde_holm', t.get('mde')))}")
        why = (": both kept their start, the SFT, as no checkpoint beat it on validation"
               if {t["system"], t["baseline"]} <= kept_start else "")
        return f"{LABELS[t['system']]} gives the same outputs as {LABELS[t['baseline']]}{why}"

    numbers = "; ".join(numbers_of(t) for t in done)
    above = [LABELS[t["system"]] for t in done if t["p_holm"] < alpha and t["delta"] > 0]
    below = [LABELS[t["system"]] for t in done if t["p_holm"] < alpha and t["delta"] < 0]
    if above:
        return "yes", f"yes, {' and '.join(above)} above it ({numbers})"
    if below:
        return "no", f"no, it is above {' and '.join(below)} ({numbers})"
    return "no difference", f"no detectable difference ({numbers})"


def headline(report: Mapping[str, Any], seeds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The headline sentence (`sentence`), the same for the other decoding (`other`), the answers per task and
    decoding, and where the tests came from."""
    boot = report["bootstrap"]
    alpha = boot["alpha"]
    source, tests = equal_compute_tests(report, seeds)
    decodings = [d for d in DECODINGS if any(
        any("p_holm" in t for t in by_decoding.get(d, [])) for by_decoding in tests.values())]
    if not tests or not decodings:
        return {"question": QUESTION, "sentence": f"**{QUESTION}** Not tested here: no evaluated comparison of GRPO "
                "or MP-GRPO with SFT (matched compute).", "other": [], "answers": {}, "source": source}
    answers: dict[str, dict[str, str]] = {}
    lines = []
    for decoding in decodings:
        clauses = []
        for task, by_decoding in tests.items():
            verdict, clause = answer(by_decoding.get(decoding, []), alpha, kept_start(report, task))
            answers.setdefault(task, {})[decoding] = verdict
            clauses.append(f"{task.upper()}: {clause}")
        lines.append("; ".join(clauses))
    method = (f"{DECODINGS[decodings[0]][:1].upper()}{DECODINGS[decodings[0]][1:]}, {source}; two-sided paired "
              f"bootstrap, p Holm-adjusted over the table's comparisons (significant below {alpha:g}); MDE: the "
              f"smallest difference detected with {boot['power'] * 100:.0f}% power at Holm's level.")
    unconverged: dict[str, list[str]] = {}
    for task, entry in report["tasks"].items():
        for m in ("sft", CONTROL):
            if (((entry.get("training") or {}).get("stops") or {}).get(m) or {}).get("not_converged"):
                unconverged.setdefault(m, []).append(task.upper())
    caveats = [f"{LABELS[m]} was still improving at its step cap on {' and '.join(tasks)}: not a converged SFT."
               for m, tasks in unconverged.items()]
    sentence = " ".join([f"**{QUESTION}** {lines[0]}.", *caveats, method])
    other = [f"With {DECODINGS[d]}: {line}." for d, line in zip(decodings[1:], lines[1:], strict=True)]
    return {"question": QUESTION, "sentence": sentence, "other": other, "answers": answers, "source": source,
            "decoding": decodings[0]}


def kept_start(report: Mapping[str, Any], task: str) -> frozenset[str]:
    """The methods of `task` whose chosen checkpoint is their start (best step 0: nothing beat it on validation)."""
    stops = ((report["tasks"].get(task) or {}).get("training") or {}).get("stops") or {}
    return frozenset(m for m, stop in stops.items() if stop.get("best_step") == 0)


def training_sentences(report: Mapping[str, Any]) -> list[str]:
    """Per task: GRPO's training reward trend, said plainly, and each method that stopped at its cap still improving."""
    out = []
    for task, entry in report["tasks"].items():
        training = entry.get("training") or {}
        for method, trend in (training.get("reward_trends") or {}).items():
            out.append(f"{task.upper()}, {LABELS[method]}: {trend_sentence(trend)}")
        for method, stop in (training.get("stops") or {}).items():
            if stop.get("not_converged"):
                out.append(f"{task.upper()}, {LABELS[method]}: {stop_sentence(stop)}")
    return out


def stop_sentence(stop: Mapping[str, Any]) -> str:
    """For a method that stopped at its step cap while its validation BLEU was still improving."""
    how = "" if stop.get("stopped_source") == "summary" else " (inferred from its step count)"
    return (f"stopped at its step cap ({stop['cap']}){how} while its validation BLEU was still improving: its best, "
            f"{fmt(stop['best_bleu'])}, is its last evaluation (step {stop['last_step']}); it had not reached a "
            "plateau.")


def trend_sentence(trend: Mapping[str, Any]) -> str:
    """What GRPO's training reward did, said plainly (`reward_trend`'s verdict and numbers)."""
    what = "on-policy training reward" if trend["column"] == "reward_on_policy" else "training reward"
    context = []
    if trend.get("zero_std_mean") is not None:
        context.append(f"a mean {fmt(trend['zero_std_mean'])} of its groups had zero reward variance (no gradient)")
    if trend.get("kl_max") is not None:
        context.append(f"KL to the reference at most {trend['kl_max']:.3g}")
    tail = f" ({'; '.join(context)})" if context else ""
    if trend["verdict"] == "too_few_steps":
        return f"{trend['steps']} logged steps, too few to tell whether the {what} rose{tail}."
    lo, hi = trend["slope_ci95"]
    numbers = (f"slope {trend['slope']:.3g} per step, {trend['level'] * 100:.0f}% interval {lo:.3g} to {hi:.3g}, "
               f"over {trend['steps']} steps; first-quarter mean {trend['first_quarter_mean']:.3g}, last-quarter "
               f"{trend['last_quarter_mean']:.3g}")
    if trend["verdict"] == "rose":
        return f"the {what} rose ({numbers}){tail}."
    if trend["verdict"] == "fell":
        return f"the {what} fell ({numbers}){tail}."
    return (f"the {what} did not rise: its slope is not distinguishable from 0 ({numbers}){tail}; nothing is "
            "concluded from it.")


def validation_sentences(report: Mapping[str, Any]) -> list[str]:
    """Per task, how often validation's delta (the chosen checkpoints' validation BLEU) had the greedy test delta's
    sign."""
    out = []
    for task, entry in report["tasks"].items():
        vt = entry.get("validation_vs_test") or {}
        if vt.get("comparisons"):
            out.append(f"{task.upper()}: validation's delta had the sign of the greedy test delta in {vt['same_sign']} "
                       f"of {vt['comparisons']} comparisons between trained methods.")
    return out


def readme_prose(report: Mapping[str, Any], seeds: Mapping[str, Any] | None = None) -> str:
    """The README's generated prose block: the headline, the other decoding, then the training and validation
    sentences."""
    top = headline(report, seeds)
    lines = [top["sentence"], "", *top["other"]]
    rest = training_sentences(report) + validation_sentences(report)
    if rest:
        lines += ["", *[f"- {s}" for s in rest]]
    return "\n".join(lines).strip() + "\n\nGenerated from reports/report.json" + (
        " and sweeps/seeds.json" if (seeds or {}).get("pooled") else "") + " by `python -m steps.report --readme`."
