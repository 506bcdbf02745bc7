"""GRPO rewards: pure functions with TRL's reward signature, found by name in a registry and weighted from params.yaml.

TRL 1.16's GRPOTrainer calls each reward function as `fn(prompts=..., completions=..., completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...)`, where every dataset column arrives as a keyword list; ours is
`reference`. Completions are strings, or (conversational data) lists of messages `[{"role": "assistant", ...}]`.
Every reward is in [0, 1]: sentence BLEU / 100 (the paper's reward), chrF / 100, ROUGE-1/2/L F1, METEOR and
normalised exact match. A built reward's `__name__` is what TRL logs it as (`rewards/<name>/mean`).

    weighted_reward({"bleu": 1.0})                       # the paper's default: BLEU alone
    weighted_reward({"bleu": 0.5, "rougeL": 0.5}, {"bleu": {"tokenize": "intl"}})
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from steps.evaluation import metrics, scores, wordnet

REFERENCE_COLUMN = "reference"
DEFAULT_WEIGHTS: dict[str, float] = {"bleu": 1.0}


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is; a list of chat messages -> its assistant content joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        return "".join(_content_text(m.get("content")) for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _content_text(content: Any) -> str:
    # Multimodal chat templates give content as a list of parts: [{"type": "text", "text": ...}, ...].
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type", "text") == "text")


# --- scorers: (hypothesis, reference, **options) -> float in [0, 1]; module-level so rewards pickle -------------------


def _bleu(hyp: str, ref: str, *, tokenize: str, lowercase: bool, smooth_method: str) -> float:
    return metrics.sentence_bleu(hyp, ref, tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method) / 100


@functools.lru_cache(maxsize=8)
def _chrf_metric(char_order: int, word_order: int, lowercase: bool) -> CHRF:
    return CHRF(char_order=char_order, word_order=word_order, lowercase=lowercase)


def _chrf(hyp: str, ref: str, *, char_order: int, word_order: int, lowercase: bool) -> float:
    score = _chrf_metric(char_order, word_order, lowercase).sentence_score(hyp, [ref]).score
    return min(1.0, max(0.0, score / 100))


def _rouge(hyp: str, ref: str, *, rouge_type: str, lang: str, use_stemmer: bool | None) -> float:
    return scores.rouge_scorer_for(lang, use_stemmer).score(ref, hyp)[rouge_type].fmeasure


def _meteor(hyp: str, ref: str) -> float:
    return scores.sentence_meteor(hyp, ref, wordnet.load_wordnet())


def _exact_match(hyp: str, ref: str) -> float:
    return float(metrics.normalise_text(hyp) == metrics.normalise_text(ref))


# --- the reward callable ----------------------------------------------------------------------------------------------


class Reward:
    """One reward with TRL's signature; `score(hyp, ref)` gives one value, `__call__` a batch."""

    def __init__(self, name: str, scorer: Callable[..., float], **options: Any) -> None:
        self.__name__ = name
        self.options = options
        self._scorer = scorer

    def score(self, hyp: str, ref: str) -> float:
        return self._scorer(hyp, ref, **self.options)

    def __call__(
        self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any
    ) -> list[float]:
        refs = references_from(kwargs, len(completions), self.__name__)
        return [self.score(completion_text(c), r) for c, r in zip(completions, refs, strict=True)]

    def __repr__(self) -> str:
        return f"Reward({self.__name__!r}, {self.options})"


def references_from(kwargs: Mapping[str, Any], n: int, name: str) -> list[str]:
    """The `reference` column TRL passed as a keyword, checked against the number of completions."""
    refs = kwargs.get(REFERENCE_COLUMN)
    if refs is None:
        got = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric", "completion_ids"))
        raise ValueError(f"reward {name!r} needs the dataset column {REFERENCE_COLUMN!r}; got columns {got}")
    if len(refs) != n:
        raise ValueError(f"reward {name!r}: {n} completions but {len(refs)} references")
    return [str(r) for r in refs]


# --- factories and the registry ---------------------------------------------------------------------------------------


def bleu_reward(tokenize: str = "13a", lowercase: bool = False, smooth_method: str = "exp") -> Reward:
    """Sentence BLEU / 100 (sacrebleu, effective order): the paper's reward."""
    # sacrebleu answers a bad name with a bare KeyError / AssertionError, and only on first use.
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"bleu tokenize must be one of {list(BLEU.TOKENIZERS)}, got {tokenize!r}")
    if smooth_method not in BLEU.SMOOTH_DEFAULTS:
        raise ValueError(f"bleu smooth_method must be one of {list(BLEU.SMOOTH_DEFAULTS)}, got {smooth_method!r}")
    return Reward("bleu", _bleu, tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method)


def chrf_reward(char_order: int = 6, word_order: int = 0, lowercase: bool = False) -> Reward:
    """Sentence chrF / 100 (sacrebleu; word_order=2 gives chrF++)."""
    return Reward("chrf", _chrf, char_order=char_order, word_order=word_order, lowercase=lowercase)


def _rouge_factory(rouge_type: str) -> Callable[..., Reward]:
    def factory(lang: str = "en", use_stemmer: bool | None = None) -> Reward:
        scores.rouge_config(lang, use_stemmer)  # rejects a stemmer on non-English text now, not mid-training
        return Reward(rouge_type, _rouge, rouge_type=rouge_type, lang=lang, use_stemmer=use_stemmer)

    factory.__name__ = f"{rouge_type}_reward"
    factory.__doc__ = f"{rouge_type} F1 (rouge-score; tokenizer and stemmer by language as in steps.evaluation.scores)."
    return factory


def meteor_reward() -> Reward:
    """nltk METEOR with WordNet 3.0; fails now, with the fix, if WordNet is missing (never rewards without synonyms)."""
    wordnet.load_wordnet()
    return Reward("meteor", _meteor)


def exact_match_reward() -> Reward:
    """1.0 when completion and reference agree after lowercasing, dropping punctuation and collapsing spaces."""
    return Reward("exact_match", _exact_match)


REWARDS: dict[str, Callable[..., Reward]] = {
    "bleu": bleu_reward,
    "chrf": chrf_reward,
    "rouge1": _rouge_factory("rouge1"),
    "rouge2": _rouge_factory("rouge2"),
    "rougeL": _rouge_factory("rougeL"),
    "meteor": meteor_reward,
    "exact_match": exact_match_reward,
}


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, REWARDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown reward {name!r}{hint} (known: {', '.join(REWARDS)})")


def build_reward(name: str, **options: Any) -> Reward:
    """The reward registered as `name`, built with its options; unknown names or options raise ValueError."""
    if name not in REWARDS:
        raise _unknown(name)
    try:
        return REWARDS[name](**options)
    except TypeError as err:
        raise ValueError(f"reward {name!r}: bad options {sorted(options)} ({err})") from None


# --- weighted sum -----------------------------------------------------------------------------------------------------


class WeightedReward:
    """sum_i w_i * reward_i, with TRL's signature; each component's values stay visible for logging.

    After each call, `last_components` holds every component's list of rewards, and if TRL passed `log_metric` the
    batch mean of each component is logged as `reward_components/<name>`. To have TRL log the components itself,
    pass `trl_reward_funcs()` as GRPOTrainer's `reward_funcs` and `reward_weights` instead of this callable.
    """

    def __init__(self, components: dict[str, Reward], weights: dict[str, float]) -> None:
        self.components = components
        self.weights = weights
        single = len(weights) == 1 and next(iter(weights.values())) == 1.0
        self.__name__ = next(iter(weights)) if single else "weighted_" + "_".join(weights)
        self.last_components: dict[str, list[float]] = {}

    def component_rewards(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                          **kwargs: Any) -> dict[str, list[float]]:
        return {name: fn(prompts, completions, **kwargs) for name, fn in self.components.items()}

    def __call__(
        self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any
    ) -> list[float]:
        parts = self.component_rewards(prompts, completions, **kwargs)
        self.last_components = parts
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and completions:
            for name, values in parts.items():
                log_metric(f"reward_components/{name}", sum(values) / len(values))
        return [sum(self.weights[name] * parts[name][i] for name in parts) for i in range(len(completions))]

    def trl_reward_funcs(self) -> tuple[list[Reward], list[float]]:
        """(reward_funcs, reward_weights) for GRPOTrainer / GRPOConfig: the same sum, logged per component by TRL."""
        return list(self.components.values()), [self.weights[name] for name in self.components]


def weighted_reward(weights: Mapping[str, float] | None = None,
                    options: Mapping[str, Mapping[str, Any]] | None = None) -> WeightedReward:
    """Build the weighted sum of registered rewards; `options` maps a reward name to its build options (a reward
    without a weight is not built, its options unused).

    Weights must be finite and >= 0 (zero drops the component); at least one must be positive. The sum is not
    renormalised: with weights summing to 1 it stays in [0, 1].
    """
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    options = dict(options or {})
    problems = [str(_unknown(name)) for name in weights if name not in REWARDS]
    problems += [f"weight of {name!r} must be a finite number >= 0, got {w!r}" for name, w in weights.items()
                 if not isinstance(w, int | float) or not math.isfinite(w) or w < 0]
    problems += [f"options given for {name!r}, which is not a reward" for name in options if name not in REWARDS]
    if not problems and not any(w > 0 for w in weights.values()):
        problems.append(f"at least one reward weight must be positive, got {weights}")
    if problems:
        raise ValueError("bad reward configuration:\n  " + "\n  ".join(problems))
    kept = {name: float(w) for name, w in weights.items() if w > 0}
    components = {name: build_reward(name, **options.get(name, {})) for name in kept}
    return WeightedReward(components, kept)
