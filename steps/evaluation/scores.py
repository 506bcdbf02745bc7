"""Every corpus score of an evaluation, computed by the libraries users trust, on a 0-100 scale.

- BLEU and chrF: steps/evaluation/metrics.py (sacrebleu), with their signatures.
- ROUGE-1/2/L F1: rouge-score. English uses its own tokenizer with the Porter stemmer (as ROUGE-1.5.5 `-m`); other
  languages use a Unicode tokenizer without stemming, because rouge-score's tokenizer deletes every non-ASCII letter
  (German "Größe" and "Grüße" would both become "gr e") and the Porter stemmer is English-only.
- METEOR: nltk's meteor_score with WordNet 3.0 (see steps/evaluation/wordnet.py), averaged over sentences, on text
  tokenised by nltk's Treebank-style word tokenizer (the tokenizer of `word_tokenize`, which needs no data). Without
  WordNet it is reported as `meteor: None` plus `meteor_skipped` with the reason and the fix, never as a number
  without synonyms.
- BERTScore-F1: only with a local model path and the `bert_score` package; otherwise skipped with the reason.
- WER (jiwer, steps/evaluation/metrics.py) for transcription tasks.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sacrebleu.metrics import CHRF

from steps.evaluation import wordnet
from steps.evaluation.metrics import bleu_metric, check_pairs, wer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _bleu_chrf(hyps: list[str], refs: list[str], lang: str, tokenize: str | None, lowercase: bool) -> dict[str, Any]:
    bleu = bleu_metric(lang, tokenize, lowercase)
    chrf = CHRF(lowercase=lowercase)
    bleu_score = bleu.corpus_score(hyps, [refs])
    chrf_score = chrf.corpus_score(hyps, [refs])
    return {
        "bleu": bleu_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
    }


# --- ROUGE (rouge-score) ----------------------------------------------------------------------------------------------


class UnicodeTokenizer:
    """rouge-score tokenizer for non-English text: lowercase, split on anything that is not a letter or digit."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())


def rouge_config(lang: str, use_stemmer: bool | None = None) -> tuple[bool, bool]:
    """(use rouge-score's own tokenizer?, use the Porter stemmer?) for a language; the stemmer can be forced."""
    english = lang.lower().startswith("en")
    if use_stemmer and not english:
        raise ValueError(f"rouge_stemmer=True needs English text (rouge-score's Porter stemmer), not lang={lang!r}")
    return english, english if use_stemmer is None else use_stemmer


@functools.lru_cache(maxsize=8)
def rouge_scorer_for(lang: str, use_stemmer: bool | None = None) -> Any:
    """A RougeScorer: English -> rouge-score's tokenizer (+ Porter stemmer); else Unicode tokens, no stemming."""
    from rouge_score import rouge_scorer

    default_tokenizer, stem = rouge_config(lang, use_stemmer)
    tokenizer = None if default_tokenizer else UnicodeTokenizer()
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=stem, tokenizer=tokenizer)


def _rouge(hyps: list[str], refs: list[str], lang: str, use_stemmer: bool | None) -> dict[str, Any]:
    scorer = rouge_scorer_for(lang, use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hyps, refs, strict=True):
        scores = scorer.score(ref, hyp)  # rouge-score's order is (target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    out: dict[str, Any] = {key: 100.0 * total / len(hyps) for key, total in totals.items()}
    default_tokenizer, stem = rouge_config(lang, use_stemmer)
    tok, stemmer = ("rouge-score" if default_tokenizer else "unicode"), ("porter" if stem else "none")
    out["rouge_signature"] = f"rouge-score {version('rouge-score')}|f1|mean|tok:{tok}|stem:{stemmer}"
    return out


# --- METEOR (nltk + WordNet) ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _word_tokenizer() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def meteor_tokens(text: str) -> list[str]:
    """Word tokens for METEOR: `nltk.word_tokenize` without its sentence splitter (which needs punkt data)."""
    return _word_tokenizer().tokenize(text)


def sentence_meteor(hyp: str, ref: str, wordnet_reader: Any) -> float:
    """nltk METEOR (0-1) of one pair with the given WordNet reader (lowercased, Porter-stemmed, as nltk defaults)."""
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([meteor_tokens(ref)], meteor_tokens(hyp), wordnet=wordnet_reader))


def _meteor(hyps: list[str], refs: list[str], lang: str) -> dict[str, Any]:
    reason = wordnet.unavailable_reason()
    if reason is not None:
        return {"meteor": None, "meteor_skipped": f"METEOR not computed: {reason}"}
    reader = wordnet.load_wordnet()
    scores = [sentence_meteor(h, r, reader) for h, r in zip(hyps, refs, strict=True)]
    out: dict[str, Any] = {
        "meteor": 100.0 * sum(scores) / len(scores),
        "meteor_skipped": None,
        "meteor_signature": f"nltk {version('nltk')}|wordnet:{reader.get_version()}|tok:nltk-word|mean-of-sentences",
    }
    if not lang.lower().startswith("en"):
        out["meteor_note"] = f"nltk METEOR stems and finds synonyms in English only; for {lang!r} mostly exact matches"
    return out


# --- BERTScore (optional) ---------------------------------------------------------------------------------------------


def _bertscore(hyps: list[str], refs: list[str], lang: str, model: str | None) -> dict[str, Any]:
    def skipped(reason: str) -> dict[str, Any]:
        return {"bertscore_f1": None, "bertscore_skipped": reason}

    if model is None:
        return skipped("no bertscore_model configured (set it to a local BERT-family model folder)")
    if not Path(model).is_dir():
        return skipped(f"bertscore_model {model!r} is not a local folder (models are never downloaded at run time)")
    try:
        import bert_score
    except ImportError:
        return skipped("the bert_score package is not installed (pip install bert-score==0.3.13)")
    num_layers = _model_num_layers(model)
    _, _, f1 = bert_score.score(hyps, refs, model_type=model, num_layers=num_layers, lang=lang, verbose=False)
    return {
        "bertscore_f1": 100.0 * float(f1.mean()),
        "bertscore_skipped": None,
        "bertscore_signature": f"bert_score {version('bert-score')}|model:{Path(model).name}|layers:{num_layers}",
    }


def _model_num_layers(model: str) -> int:
    # bert_score looks up a model's recommended layer by hub name; a local folder has none, so use its last layer.
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model).num_hidden_layers)


# --- all together -----------------------------------------------------------------------------------------------------


def corpus_scores(
    hypotheses: list[str],
    references: list[str],
    *,
    lang: str,
    bleu_tokenize: str | None = None,
    lowercase: bool = False,
    bertscore_model: str | None = None,
    rouge_stemmer: bool | None = None,
    with_wer: bool = False,
) -> dict[str, Any]:
    """All corpus metrics on a 0-100 scale, with signatures; skipped metrics are None plus a `*_skipped` reason.

    `lang` is the language of the references (e.g. "en" for SQA, "de" for En->De AST). `lowercase` applies to BLEU
    and chrF; ROUGE and METEOR always lowercase. `with_wer` adds WER (for transcription tasks).
    """
    check_pairs(hypotheses, references)
    hyps, refs = list(hypotheses), list(references)
    out: dict[str, Any] = {"scale": "0-100", "n": len(hyps), "lang": lang}
    out |= _bleu_chrf(hyps, refs, lang, bleu_tokenize, lowercase)
    out |= _rouge(hyps, refs, lang, rouge_stemmer)
    out |= _meteor(hyps, refs, lang)
    out |= _bertscore(hyps, refs, lang, bertscore_model)
    if with_wer:
        out["wer"] = wer(hyps, refs)
    return out
