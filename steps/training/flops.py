"""Estimated training FLOPs, counted from the passes that actually run (the ComputeMeter's `compute.flops`).

Forward hooks on the model (and on GRPO's reference model) count, inside each optimiser step only (validation,
logging and checkpoints are outside), what the model ran, in three phases: `loss` (the optimiser's loss passes,
forward + backward), `rollouts` (GRPO's generation: each prompt's prefill, then one position per decoding step and
row) and `reference` (GRPO's log-prob passes before the loss: the reference model's, and the old policy's when TRL
computes them). A trainer names the phase around its calls (`flop_phase`); a pass outside any is a loss pass.

The formula (matmul FLOPs only, 2 per multiply-add):
- **LLM**, per call: 2 x N_llm x P forward, where N_llm is the weight count of every nn.Linear in the decoder plus the
  LM head's (embeddings, norms and biases left out) and P the positions the call ran on: the attention mask summed
  over the call's own columns (`mask[:, -q:]` for q new positions: a cached prefix is not recomputed, padding is not
  counted). So with `grpo.shared_prefix` a group's prompt counts once per pass, and each decoding step counts one
  position per row still in the batch (rows that already ended are stepped too until the batch ends).
- **Audio encoder and projector**, per call of each of their nn.Linear / convolution layers: 2 x (its weight count) x
  (the positions it output), i.e. about 2 x encoder params x encoder positions per clip, each layer at its own length
  (a Whisper-style encoder's first convolution runs at twice its layers' rate). The frames a call runs on are counted,
  padding included; with `encode_each_clip_once` a clip repeated in the batch runs, and counts, once.
- **Backward**: for each matmul, 2 x weight x positions for the weight's gradient when that weight trains, and as much
  again for the gradient of its input when the input needs one (the usual total of 3x the forward for a fully
  trained layer; 2x for the first convolution, whose input is the mel features; a frozen LLM that passes gradients
  down to a trained encoder costs 1x).

Left out: attention's score and value products (2 x 2 x positions x context x width per layer: small next to the
matmuls for short sequences, not for long ones), normalisation, activations, softmax and the optimiser; the LM head is
counted at every LLM position, although generation's prefill and TRL's fused head on GPU project fewer positions (an
overestimate of up to the head's share of N_llm at those positions). Counts are summed over processes once per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from steps.modeling.families import adapter_for, get_submodule

PHASES = ("loss", "rollouts", "reference")
COMPONENTS = ("llm", "audio")
DEFAULT_PHASE = "loss"


def _numel(param: torch.Tensor) -> int:
    """A weight's element count; DeepSpeed ZeRO-3 leaves an empty tensor on each process and the count in ds_numel."""
    return int(getattr(param, "ds_numel", param.numel()))


def _matmul_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]


def llm_matmul_weights(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) weight counts of the LLM's matmuls: every nn.Linear of the decoder and the LM head."""
    adapter = adapter_for(_hf_model(model))
    # A tied LM head shares the embedding's weight, but it is one matmul all the same (the embedding is a lookup).
    weights = [m.weight for path in adapter.llm for m in _matmul_layers(get_submodule(model, path))]
    return sum(_numel(w) for w in weights), sum(_numel(w) for w in weights if w.requires_grad)


def audio_modules(model: nn.Module) -> list[nn.Module]:
    """The audio encoder's and the projector's matmul and convolution layers."""
    adapter = adapter_for(_hf_model(model))
    return [m for path in (adapter.encoder, adapter.projector) for m in _matmul_layers(get_submodule(model, path))]


def _hf_model(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class FlopCounter:
    """The hooks and the counts: {phase: {component: FLOPs}}, global (summed over processes at each step's end).

    `watch(model)` hooks a model (call it for the policy and for a separate reference model); counting happens only
    while `active` (ComputeMeter sets it from a step's begin to its end); `phase(name)` attributes the calls inside
    the block. `state`/`load` carry the totals through a checkpoint.
    """

    def __init__(self) -> None:
        self.totals = {p: dict.fromkeys(COMPONENTS, 0.0) for p in PHASES}
        self._step = {p: dict.fromkeys(COMPONENTS, 0.0) for p in PHASES}
        self._phases: list[str] = []
        self._handles: list[Any] = []
        self._watched: set[int] = set()
        self.active = False

    # -- hooks ---------------------------------------------------------------------------------------------------------
    def watch(self, model: nn.Module) -> None:
        """Hook `model`'s LLM backbone and its audio layers (a model already watched is skipped)."""
        if model is None or id(model) in self._watched:
            return
        self._watched.add(id(model))
        adapter = adapter_for(_hf_model(model))
        n_all, n_trained = llm_matmul_weights(model)
        backbone = get_submodule(model, adapter.llm[0])
        self._handles.append(backbone.register_forward_pre_hook(self._llm_hook(n_all, n_trained), with_kwargs=True))
        for layer in audio_modules(model):
            self._handles.append(layer.register_forward_hook(self._audio_hook))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._watched.clear()

    def _llm_hook(self, n_all: int, n_trained: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not self.active:
                return
            x = next((v for v in (kwargs.get("inputs_embeds"), kwargs.get("input_ids"), *args)
                      if isinstance(v, torch.Tensor)), None)
            if x is None:
                return
            positions = llm_positions(x, kwargs.get("attention_mask"))
            forward = 2.0 * n_all * positions
            backward = 0.0
            if torch.is_grad_enabled():
                # weight gradients of the trained matmuls; input gradients when anything below needs them
                needs_input_grad = n_trained > 0 or (x.is_floating_point() and x.requires_grad)
                backward = 2.0 * positions * (n_trained + (n_all if needs_input_grad else 0))
            self._add("llm", forward + backward)

        return hook

    def _audio_hook(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not self.active or not isinstance(out, torch.Tensor):
            return
        channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        positions = out.numel() // channels  # rows x positions (a convolution: its output positions)
        forward = 2.0 * _numel(module.weight) * positions
        backward = 0.0
        if torch.is_grad_enabled():
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            backward = forward * (int(module.weight.requires_grad) + int(x is not None and x.requires_grad))
        self._add("audio", forward + backward)

    def _add(self, component: str, flops: float) -> None:
        self._step[self._phases[-1] if self._phases else DEFAULT_PHASE][component] += flops

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in PHASES:
            raise ValueError(f"unknown FLOP phase {name!r}; one of {PHASES}")
        self._phases.append(name)
        try:
            yield
        finally:
            self._phases.pop()

    # -- steps and totals -------------------------------------------------------------------------------------------
    def end_step(self, reduce: Any = None) -> None:
        """Add this step's counts (summed over processes by `reduce(tensor)` when given) to the totals."""
        keys = [(p, c) for p in PHASES for c in COMPONENTS]
        values = [self._step[p][c] for p, c in keys]
        if reduce is not None:
            values = [float(v) for v in reduce(torch.tensor(values, dtype=torch.float64)).tolist()]
        for (p, c), v in zip(keys, values, strict=True):
            self.totals[p][c] += v
            self._step[p][c] = 0.0

    @property
    def total(self) -> float:
        return sum(sum(parts.values()) for parts in self.totals.values())

    def figures(self) -> dict[str, int]:
        """The summary's `compute.flops`: total, per phase (loss, rollouts, reference) and per component (llm,
        audio: the encoder and projector)."""
        out = {"total": round(self.total)}
        out |= {p: round(sum(self.totals[p].values())) for p in PHASES}
        out |= {c: round(sum(self.totals[p][c] for p in PHASES)) for c in COMPONENTS}
        return out

    def state(self) -> dict[str, dict[str, float]]:
        return {p: dict(parts) for p, parts in self.totals.items()}

    def load(self, state: Mapping[str, Mapping[str, float]]) -> None:
        for p, parts in state.items():
            if p in self.totals:
                self.totals[p].update({c: float(v) for c, v in parts.items() if c in COMPONENTS})


def llm_positions(x: torch.Tensor, attention_mask: Any) -> int:
    """The positions an LLM call runs on: its own columns of the 2-D attention mask (a cached prefix is in the mask's
    first columns), or every position of `x` (batch x new positions) without one."""
    batch, new = x.shape[0], x.shape[1]
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
        return int(attention_mask[:, -new:].sum())
    return batch * new


def counter_of(trainer: Any) -> FlopCounter | None:
    """The FlopCounter of the trainer's ComputeMeter (None: a trainer built without one, as in some tests)."""
    handler = getattr(trainer, "callback_handler", None)
    for callback in getattr(handler, "callbacks", []):
        counter = getattr(callback, "flops", None)
        if isinstance(counter, FlopCounter):
            return counter
    return None


def flop_phase(trainer: Any, name: str) -> contextlib.AbstractContextManager[None]:
    """Attribute the model calls inside the block to phase `name` (no-op without a counter)."""
    counter = counter_of(trainer)
    return counter.phase(name) if counter is not None else contextlib.nullcontext()


def compute_figure(compute: Mapping[str, Any], figure: str) -> float | None:
    """One number of a summary's `compute` (metrics/<method>/<task>.train.json): `flops` is its total, the others
    (train_tokens, train_seconds, ...) are read as they are; None when absent."""
    value = compute.get(figure)
    if isinstance(value, Mapping):
        value = value.get("total")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
