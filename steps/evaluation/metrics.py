"""The project's one definition of BLEU, chrF and WER; scores on a 0-100 scale.

- BLEU and chrF: sacrebleu, with its signature (tokenizer, casing, smoothing, version). `corpus_bleu` is what
  validation (checkpoint selection), the listening check and the evaluation all report; `sentence_bleu` is the
  sentence-level BLEU the GRPO reward uses (effective order, as `sacrebleu.sentence_bleu`).
- WER (jiwer) after `normalise_text` (lowercase, no punctuation): for transcription, in pretraining and evaluation.
ROUGE, METEOR and BERTScore, which need more than sacrebleu, are in steps/evaluation/scores.py; significance
tests in steps/evaluation/significance.py.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

import jiwer
from sacrebleu.metrics import BLEU

# --- input checks -----------------------------------------------------------------------------------------------------


def check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    """Raise ValueError on a length mismatch, or on an empty reference (naming its index): no metric is defined."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up")
    if not references:
        raise ValueError("no references: nothing to score")
    for i, (hyp, ref) in enumerate(zip(hypotheses, references, strict=True)):
        if not isinstance(hyp, str) or not isinstance(ref, str):
            raise ValueError(f"pair {i}: hypothesis and reference must be strings, got {type(hyp)}, {type(ref)}")
        if not ref.strip():
            raise ValueError(f"reference {i} is empty: every example needs a reference text")


# --- BLEU / chrF (sacrebleu) ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _sentence_bleu_metric(tokenize: str, lowercase: bool, smooth_method: str) -> BLEU:
    # effective_order: sacrebleu.sentence_bleu's setting, so a short exact answer still scores 100.
    return BLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method, effective_order=True)


def sentence_bleu(
    hyp: str, ref: str, *, tokenize: str = "13a", lowercase: bool = False, smooth_method: str = "exp"
) -> float:
    """Sentence BLEU (0-100) as `sacrebleu.sentence_bleu`, clipped to 100 (float sums give 100.00000000000004)."""
    score = _sentence_bleu_metric(tokenize, lowercase, smooth_method).sentence_score(hyp, [ref]).score
    return min(100.0, max(0.0, score))


def bleu_metric(lang: str = "", tokenize: str | None = None, lowercase: bool = False) -> BLEU:
    """sacrebleu's corpus BLEU; `lang` (the references' language) picks its default tokenizer when `tokenize` is None
    (13a for English and German; zh, ja-mecab, ko-mecab for those languages)."""
    return BLEU(tokenize=tokenize, lowercase=lowercase, trg_lang=lang)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], lang: str = "", tokenize: str | None = None,
                lowercase: bool = False) -> float:
    """Corpus BLEU (0-100) of one reference per hypothesis; cased, 13a tokenisation unless told otherwise."""
    return float(bleu_metric(lang, tokenize, lowercase).corpus_score(list(hypotheses), [list(references)]).score)


# --- WER (jiwer) ------------------------------------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: count words, not casing or commas (WER, exact match)"""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(text.split())


def wer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus word error rate in percent (jiwer), after `normalise_text` on both sides."""
    check_pairs(hyps, refs)
    norm_refs = [normalise_text(r) for r in refs]
    for i, ref in enumerate(norm_refs):
        if not ref:
            raise ValueError(f"reference {i} has no words after normalisation: {refs[i]!r}")
    return 100.0 * jiwer.wer(norm_refs, [normalise_text(h) for h in hyps])


TASK_METRIC = {"asr": "wer", "ast": "bleu", "sqa": "bleu"}


def task_score(task: str, hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """The task's headline metric: WER for transcription (asr), corpus BLEU for the others."""
    if task not in TASK_METRIC:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(TASK_METRIC)}")
    return wer(hypotheses, references) if TASK_METRIC[task] == "wer" else corpus_bleu(hypotheses, references)
