"""Each group's prompt and audio through the LLM once: shared-prefix log-probs and rollouts with one prefill per prompt.

GRPO scores G completions of every prompt, and a speech prompt is mostly audio positions (the default's SQA rows are
~120 prompt positions + ~7 completion tokens). The plain log-prob pass runs the LLM over B = prompts x G rows of
(prompt + completion), i.e. every prompt G times. Here each distinct prompt (ids, mask and audio features all equal)
runs once with a key/value cache, the cache (kept in the autograd graph) is indexed out to its rows, and only the
completion runs against it. The same positions as the plain pass (0..L-1 over the padded row: the plain forward gets
no position ids), the same masks and the same LM head (TRL's fused one) give the same log-probs and, through the
indexing (which sums the copies' gradients), the same parameter gradients, up to float rounding
(tests/test_shared_prefix.py).

- `enable_shared_prefix(model)`: the model's forward takes one more keyword, `shared_prefix_length` (the prompt
  columns of `input_ids`), on top of TRL's fused LM head (`labels=..., fused_lm_head=True`). The trainer's call still
  goes through the model's (DDP / DeepSpeed-wrapped) forward once per pass, as the plain pass does.
- `row_groups` (encoder_speedups.py): which rows share a prompt; a batch whose rows share nothing keeps the plain
  pass (nothing to save).
- `LogProbCheck`: the first use on each model is checked against the plain pass; on a mismatch the plain pass is kept.
- `encode_prompts_once`: the processor (audio features, tokens) on each distinct prompt + clip once.
- `prefill_once(model)`: inside the block, `model.generate` prefills each distinct prompt once and continues from the
  expanded cache (HF `generate` runs only the tokens the cache lacks). Positions follow generate's own (from the
  attention mask), so the rollout distribution is the plain generate's; sampled tokens are the same under the same seed
  as long as the first token's probabilities, computed in a different batch shape, do not straddle a sampling boundary
  (float rounding only; equal in the tests).

The last prompt token runs with the completion (its logits score the first completion token), so the split needs a
last prompt column free of audio placeholders (true of every chat template here: the prompt ends with the assistant
header). Families whose LLM cache is not plain full attention (sliding windows, linear attention) raise
SharedPrefixUnsupported: set `grpo.shared_prefix: false` for them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from steps.modeling.batches import encode_prompts
from steps.modeling.encoder_speedups import first_of_equals, row_groups
from steps.modeling.families import adapter_for

logger = logging.getLogger(__name__)

ORIGINAL_FORWARD = "_forward_before_shared_prefix"


class SharedPrefixUnsupported(ValueError):
    """The model cannot compute a shared prefix once (its family, its cache or its prompt layout)."""


# --- the family check -------------------------------------------------------------------------------------------------


def check_supported(model: nn.Module) -> None:
    """Raise SharedPrefixUnsupported (with the reason and the fix) if `model`'s family cannot share prefixes."""
    base = _hf_model(model)
    adapter_for(base)  # a family we know (its audio keys): raises with the supported list otherwise
    text = base.config.get_text_config()
    fix = "set grpo.shared_prefix: false"
    if getattr(text, "use_sliding_window", False) or any(t != "full_attention" for t in
                                                          (getattr(text, "layer_types", None) or [])):
        raise SharedPrefixUnsupported(
            f"{base.config.model_type}: its LLM has non-full-attention layers ({getattr(text, 'layer_types', None)}), "
            f"whose cache a completion cannot continue from as from a full prompt: {fix}")
    if getattr(base.config, "audio_token_id", None) is None:
        raise SharedPrefixUnsupported(f"{base.config.model_type}: its config has no audio_token_id: {fix}")
    if not hasattr(base, base.base_model_prefix):
        raise SharedPrefixUnsupported(f"{type(base).__name__} has no backbone `{base.base_model_prefix}`: {fix}")


def _hf_model(model: nn.Module) -> nn.Module:
    """The transformers model under DDP / PEFT wrappers (where TRL installs its fused LM head)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _checkpointing(model: nn.Module) -> bool:
    """Whether transformers' gradient checkpointing is on in training mode: its layers then drop the KV cache (a
    prefix pass would cache nothing), so the plain pass runs instead."""
    return model.training and any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def _expand(cache: Any, rows: torch.Tensor, length: int) -> Any:
    """The prefix cache (one row per group) indexed out to every row, in the autograd graph (gradients sum back)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if not isinstance(cache, DynamicCache) or any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise SharedPrefixUnsupported(f"the prefix pass returned a {type(cache).__name__} with layers "
                                      f"{sorted({type(x).__name__ for x in getattr(cache, 'layers', [])})}; "
                                      "only a DynamicCache of full-attention layers can be shared: set "
                                      "grpo.shared_prefix: false")
    if cache.get_seq_length() != length:
        raise SharedPrefixUnsupported(f"the prefix pass cached {cache.get_seq_length()} positions of {length}; "
                                      "set grpo.shared_prefix: false and report it with the model family")
    cache.batch_select_indices(rows)
    return cache


# --- the log-prob pass ------------------------------------------------------------------------------------------------


def enable_shared_prefix(model: nn.Module) -> nn.Module:
    """Give `model`'s forward the keyword `shared_prefix_length` (see the module docstring). Call it after TRL has
    installed its fused LM head (GRPOTrainer.__init__); calling it twice is harmless. Raises SharedPrefixUnsupported
    for a family that cannot do it."""
    base = _hf_model(model)
    check_supported(base)
    if ORIGINAL_FORWARD in vars(base):
        return model
    setattr(base, ORIGINAL_FORWARD, base.forward)  # TRL's fused-head forward (an instance attribute) or the class's

    @functools.wraps(type(base).forward)  # generate validates its kwargs against the signature
    def forward(self: nn.Module, *args: Any, shared_prefix_length: int | None = None, **kwargs: Any) -> Any:
        inner = getattr(self, ORIGINAL_FORWARD)
        if shared_prefix_length is None:
            return inner(*args, **kwargs)
        if args:
            raise TypeError("shared_prefix_length needs keyword arguments (input_ids=..., attention_mask=...)")
        return shared_prefix_forward(self, inner, shared_prefix_length, **kwargs)

    base.forward = types.MethodType(forward, base)
    return model


def shared_prefix_forward(model: nn.Module, inner: Callable[..., Any], prefix_length: int, *,
                          input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                          fused_lm_head: bool = False, **kwargs: Any) -> Any:
    """TRL's fused-head output for `input_ids` = prompt (`prefix_length` columns) + completion, with each distinct
    prompt run once. Its per-token fields cover the completion positions only (the plain pass's last columns)."""
    if not fused_lm_head or labels is None:
        raise ValueError("shared_prefix_length needs TRL's fused LM head: call with labels=... and fused_lm_head=True")
    audio = {k: kwargs.pop(k) for k in adapter_for(model).feature_keys if kwargs.get(k) is not None}
    cut = prefix_length - 1  # the last prompt token runs with the completion: its logits score the first token
    groups = row_groups(input_ids[:, :prefix_length], attention_mask[:, :prefix_length], *audio.values())
    last_columns_have_audio = bool((input_ids[:, cut:] == model.config.audio_token_id).any())
    if groups.count == groups.rows or cut < 1 or last_columns_have_audio or _checkpointing(model):
        return inner(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                     **audio, **kwargs)
    first = groups.first
    prefix = model.base_model(input_ids=input_ids[first, :cut], attention_mask=attention_mask[first, :cut],
                              use_cache=True, **{k: v[first] for k, v in audio.items()})
    cache = _expand(prefix.past_key_values, groups.inverse, cut)
    # No position ids: the backbone continues from the cache's length, i.e. positions cut..L-1, as the plain pass.
    out = inner(input_ids=input_ids[:, cut:], attention_mask=attention_mask, past_key_values=cache,
                labels=labels[:, cut:], fused_lm_head=True, **kwargs)
    out.prefix_groups = groups.count  # read by LogProbCheck: this call did share
    return out


# --- the check at first use -------------------------------------------------------------------------------------------

# Largest |shared - plain| per-token log-prob difference accepted, and the mean one. Float32: rounding is ~1e-6.
# Half precision: different batch shapes round differently (an estimate, not calibrated on a real checkpoint);
# a wrong prefix (positions, missing audio) moves log-probs by far more than either.
TOLERANCE = {"float32": (1e-3, 1e-4), "half": (0.5, 0.02)}


@dataclass
class LogProbCheck:
    """The shared path's first use on each model, checked against the plain pass (then trusted, or turned off)."""

    precision: str = "float32"  # a TOLERANCE key
    reduce_max: Callable[[torch.Tensor], torch.Tensor] = lambda t: t  # across processes: they must agree
    report: Callable[[bool, float, float], None] = lambda ok, worst, mean: None
    verdicts: dict[Any, bool] = field(default_factory=dict)

    @classmethod
    def for_trainer(cls, trainer: Any) -> LogProbCheck:
        """A check that agrees across the trainer's processes and reports into its logged metrics (MLflow):
        `shared_prefix/fallback` (1 = mismatch, plain pass kept) and `shared_prefix/check_max_logp_diff`."""
        args = trainer.args
        dtypes = {p.dtype for p in trainer.model.parameters()}
        low = args.bf16 or args.fp16 or bool(dtypes & {torch.bfloat16, torch.float16})

        def reduce_max(stats: torch.Tensor) -> torch.Tensor:
            return trainer.accelerator.gather(stats.unsqueeze(0)).max(dim=0).values

        def report(ok: bool, worst: float, mean: float) -> None:
            metrics = trainer._metrics["train" if trainer.model.training else "eval"]
            metrics["shared_prefix/fallback"].append(0.0 if ok else 1.0)
            metrics["shared_prefix/check_max_logp_diff"].append(worst)
            line = (f"grpo.shared_prefix: first-use check against the plain pass: max |log-prob difference| "
                    f"{worst:.2e}, mean {mean:.2e} (tolerance {TOLERANCE['half' if low else 'float32']})")
            if ok:
                print(line + ": shared prefixes on", flush=True)
            else:  # stdout (the stage log) and a warning (stderr)
                print(line + ": MISMATCH", flush=True)
                logger.warning("%s\n%s: MISMATCH, falling back to the plain pass (every row runs its whole prompt; "
                               "the results stay right, the step is slower). Please report it with the model "
                               "family; grpo.shared_prefix: false skips the check.\n%s", "!" * 100, line, "!" * 100)

        return cls("half" if low else "float32", reduce_max, report)

    def use_shared(self, key: Any, score: Callable[[bool], Any], columns: int, mask: torch.Tensor) -> bool:
        """Whether to share prefixes for `key` (a model). Until a batch has shared a prefix on it (any process),
        compare score(True) with score(False) (fused-head outputs, no grad) on the last `columns` log-probs under
        `mask`, and decide."""
        if key not in self.verdicts:
            with torch.no_grad():  # both on every process: a DDP forward may broadcast buffers (a collective)
                out, plain = score(True), score(False).log_probs[:, -columns:].float()
                shared_here = getattr(out, "prefix_groups", None) is not None
                diff = (out.log_probs[:, -columns:].float() - plain).abs() * mask.float()
            tokens = mask.float().sum().clamp(min=1.0)
            stats = self.reduce_max(torch.stack([diff.max(), diff.sum() / tokens, torch.tensor(float(shared_here),
                                                                                             device=diff.device)]))
            if float(stats[2]) == 0.0:  # no process had rows to share: nothing to judge yet
                return True
            worst, mean = float(stats[0]), float(stats[1])
            max_tol, mean_tol = TOLERANCE[self.precision]
            ok = worst <= max_tol and mean <= mean_tol  # NaN fails too
            self.verdicts[key] = ok
            self.report(ok, worst, mean)
        return self.verdicts[key]


# --- the processor: one call per distinct prompt + clip ------------------------------------------------------------


def encode_prompts_once(processor: Any, adapter: Any, prompts: Sequence[str], audios: Sequence[Any],
                        ids: Sequence[Any] | None = None) -> dict[str, Any]:
    """`encode_prompts` (steps/modeling/batches.py) with each distinct (prompt, clip) computed once and its outputs
    copied to the rows that repeat it: a GRPO batch holds every clip num_generations times, and the feature extractor
    was ~10% of a shared-prefix step (bench/bench_grpo.py). The same tensors: padding goes to the longest prompt and
    clip, which are among the distinct ones."""
    arrays = [np.asarray(a) for a in audios]
    first, inverse = first_of_equals(
        len(prompts), lambda i: (prompts[i], arrays[i].shape, arrays[i].dtype.str, hash(arrays[i].tobytes())),
        lambda i, j: prompts[i] == prompts[j] and np.array_equal(arrays[i], arrays[j]))
    batch = encode_prompts(processor, adapter, [prompts[i] for i in first], [arrays[i] for i in first],
                           ids=None if ids is None else [ids[i] for i in first])
    if len(first) == len(prompts):
        return batch
    rows = torch.tensor(inverse)

    def expand(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == len(first):
            return value[rows]
        if isinstance(value, list) and len(value) == len(first):
            return [value[i] for i in inverse]
        return value

    return {k: expand(v) for k, v in batch.items()}


# --- rollouts: one prefill per prompt ---------------------------------------------------------------------------------


@contextlib.contextmanager
def prefill_once(model: nn.Module, feature_keys: Sequence[str] | None = None) -> Iterator[dict[str, int]]:
    """Inside the block, `model.generate(input_ids=..., attention_mask=..., <audio>, generation_config=...)` runs each
    distinct prompt's prefill once and hands generate the expanded cache (of every prompt column but the last), so
    generate continues from it. Without groups to share, or a setting this does not cover (beams, several sequences
    per row, Granite Speech's checkpoint LoRA that generate toggles on the audio), the stock generate runs.
    Yields counts of generate calls that shared (`shared`) and that did not (`plain`)."""
    base = _hf_model(model)
    keys = tuple(feature_keys or adapter_for(base).feature_keys)
    stock = model.generate
    counts = {"shared": 0, "plain": 0}

    def generate(*args: Any, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 generation_config: Any = None, **kwargs: Any) -> Any:
        audio = {k: kwargs[k] for k in keys if kwargs.get(k) is not None}
        n = 0 if input_ids is None else input_ids.size(0)
        cut = 0 if input_ids is None else input_ids.size(1) - 1
        config = generation_config or base.generation_config
        simple = (not args and attention_mask is not None and audio and cut >= 1 and "past_key_values" not in kwargs
                  and (getattr(config, "num_beams", None) or 1) == 1
                  and (getattr(config, "num_return_sequences", None) or 1) == 1
                  and not getattr(base, "_hf_peft_config_loaded", False) and not _checkpointing(base)
                  and not bool((input_ids[:, cut:] == base.config.audio_token_id).any()))
        groups = row_groups(input_ids, attention_mask, *audio.values()) if simple else None
        if groups is None or groups.count == n:
            counts["plain"] += 1
            return stock(*args, input_ids=input_ids, attention_mask=attention_mask,
                         generation_config=generation_config, **kwargs)
        # generate's positions: counted from each row's first real token (cumsum of the mask), not the padded column
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        first = groups.first
        with torch.no_grad():
            prefix = base.base_model(input_ids=input_ids[first, :cut], attention_mask=attention_mask[first, :cut],
                                     position_ids=positions[first, :cut], use_cache=True,
                                     **{k: v[first] for k, v in audio.items()})
        cache = _expand(prefix.past_key_values, groups.inverse, cut)
        rest = {k: v for k, v in kwargs.items() if k not in keys}  # the audio is in the cache
        counts["shared"] += 1
        return stock(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                     generation_config=generation_config, **rest)

    own = vars(model).get("generate")  # an instance attribute already there is put back afterwards
    model.generate = generate  # the instance attribute shadows the class's generate
    try:
        yield counts
    finally:
        if own is None:
            del model.generate
        else:
            model.generate = own
