"""Make the audio encoder do less work, with the same outputs and gradients (each is tested for that).

- `encode_each_clip_once`: GRPO repeats each clip G times in a batch; encode it once and copy.
- `encode_real_frames_only`: a Whisper-style encoder (Qwen2-Audio) fed a window of mostly padding runs on the batch's
  real frames only.
- `encoder_outputs_reused`: evaluation decodes the same clips several times with fixed weights; reuse the output.
- `keep_frozen_encoder_outputs`: a frozen encoder in training sees each clip once per epoch; keep each clip's output.
- `row_groups`: which rows of a batch are equal (encode_each_clip_once's clips, shared_prefix.py's prompts).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steps.modeling.families import adapter_for, get_submodule

SAMPLED_COLUMNS = 256  # columns of each row compared first when grouping rows (then whole rows, exactly)


@dataclass(frozen=True)
class RowGroups:
    """`first[g]`: the row that stands for group g; `inverse[i]`: the group of row i."""

    first: torch.Tensor
    inverse: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.first.numel())

    @property
    def rows(self) -> int:
        return int(self.inverse.numel())


def first_of_equals(n: int, key: Callable[[int], Hashable], equal: Callable[[int, int], bool]
                    ) -> tuple[list[int], list[int]]:
    """Items 0..n-1 grouped by equality: items are bucketed by `key` (equal items share a key), then compared with
    `equal` to the first item of each group in their bucket. Returns (the first item of each group, each item's
    group), in order of first appearance."""
    buckets: dict[Hashable, list[int]] = {}
    first: list[int] = []
    inverse: list[int] = []
    for i in range(n):
        candidates = buckets.setdefault(key(i), [])
        group = next((g for g in candidates if equal(i, first[g])), None)
        if group is None:
            group = len(first)
            candidates.append(group)
            first.append(i)
        inverse.append(group)
    return first, inverse


def row_groups(*tensors: torch.Tensor) -> RowGroups:
    """Group the rows (dim 0) that are equal in every one of `tensors`, exactly (bit for bit as values).

    Rows are bucketed by a strided sample of their columns (one host copy), then each row is compared in full with the
    first row of each bucket it may belong to. Much faster than `torch.unique(dim=0)` (a lexicographic sort: 0.5-4 s
    for 128 rows of mel features on 2 cores); no assumption about where the rows of a group are.
    """
    n = tensors[0].shape[0]
    flats = [t.reshape(n, -1) for t in tensors]
    for t, f in zip(tensors, flats, strict=True):
        if f.shape[0] != n:
            raise ValueError(f"every tensor needs {n} rows, got shape {tuple(t.shape)}")
    # bytes, not values: any dtype (numpy has no bfloat16), one host copy
    samples = [f[:, :: max(1, f.shape[1] // SAMPLED_COLUMNS)].detach().contiguous().view(torch.uint8).cpu().numpy()
               for f in flats]
    first, inverse = first_of_equals(n, lambda i: tuple(x[i].tobytes() for x in samples),
                                     lambda i, j: all(torch.equal(f[i], f[j]) for f in flats))
    device = tensors[0].device
    return RowGroups(torch.tensor(first, dtype=torch.long, device=device),
                     torch.tensor(inverse, dtype=torch.long, device=device))


def encode_each_clip_once(encoder: nn.Module) -> nn.Module:
    """Make `encoder` run once per distinct clip of a batch and copy the result to the rows that repeat it.

    GRPO repeats every prompt's audio num_generations times, so without this the encoder (most of a small SALLM's
    compute) runs G times on the same clip in every pass. Outputs are the same rows, and the gradient is the same
    (indexing sums the copies' gradients), as long as the encoder is deterministic per clip (dropout off, as in
    every preset here; with dropout on, the copies would share one mask). Calling it twice is harmless.
    """
    return _switch_class(encoder, _EachClipOnce)


def _switch_class(module: nn.Module, mixin: type[nn.Module]) -> nn.Module:
    """Make this instance (only) an instance of `mixin` layered over its own class; a no-op if it already is one.

    Switching the class rather than patching `forward` keeps a deep copy of the model on its own weights; the
    parameters and state-dict keys are unchanged. One subclass per (mixin, class) pair, so mixins compose.
    """
    cls = type(module)
    if not issubclass(cls, mixin):
        key = (mixin, cls)
        if key not in _SWITCHED_CLASSES:
            _SWITCHED_CLASSES[key] = type(f"{mixin.__name__.lstrip('_')}{cls.__name__}", (mixin, cls), {})
        module.__class__ = _SWITCHED_CLASSES[key]
    return module


_SWITCHED_CLASSES: dict[tuple[type, type], type] = {}


class _EachClipOnce(nn.Module):
    def forward(self, input_features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        n = input_features.shape[0]
        # not torch.unique(dim=0): its row sort took 0.5-4 s for a 128-row batch of the default's features
        groups = row_groups(input_features) if n else None
        if groups is None or groups.count == n:
            return super().forward(input_features, *args, **kwargs)
        first, inverse = groups.first, groups.inverse

        def pick(value: Any) -> Any:  # per-row arguments (attention masks) follow the rows they belong to
            return value[first] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n else value

        out = super().forward(input_features[first], *[pick(a) for a in args],
                              **{key: pick(v) for key, v in kwargs.items()})
        if isinstance(out, torch.Tensor):
            return out[inverse]
        out.last_hidden_state = out.last_hidden_state[inverse]
        return out


def encode_real_frames_only(encoder: nn.Module) -> nn.Module:
    """Make a Qwen2-Audio encoder run on the batch's real frames instead of the whole padded window.

    The processor pads every clip to the window (30 s for Qwen2-Audio, the longest clip for the tiny preset) and the
    stock forward runs the convolutions and every attention layer over all of it, with the padding masked out: 3x
    the work for 3 s clips in an 8 s window, 10x for LibriSQA-length clips in Qwen2-Audio's 30 s one (measured in
    bench/bench_model.py). Here the features are cut after the longest real clip of the batch (plus the frames the
    convolutions look ahead), the attention mask with them, and the output is padded back to the stock shape with
    zeros at positions the model masks out anyway: the real positions get the same values (the masked keys
    contributed exactly zero) and the same gradient. Same switch-the-class approach as encode_each_clip_once
    (composes with it; parameters and state-dict keys unchanged); with layer drop on in training, or without a mask,
    the stock forward runs.
    """
    return _switch_class(encoder, _RealFramesOnly)


class _RealFramesOnly(nn.Module):
    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        window = input_features.shape[-1]
        if attention_mask is None or attention_mask.ndim != 4 or (self.training and self.layerdrop > 0):
            return super().forward(input_features, attention_mask, **kwargs)
        steps = attention_mask.shape[-1]
        # A bool mask marks the keys to attend to, a float one adds 0 to them (-inf elsewhere); padding-only masks
        # are the same for every query, so the first query's row (always a real frame) gives each clip's length.
        keys = attention_mask[:, 0, 0, :]
        valid = keys if keys.dtype == torch.bool else keys == 0
        longest = int(valid.sum(-1).max())
        # Conv steps 0..L-1 read frames up to 2L; keep 2 frames past it so those steps see the stock padding.
        frames = min(window, 2 * longest + 4)
        kept = (frames - 1) // 2 + 1
        if kept >= steps:
            return super().forward(input_features, attention_mask, **kwargs)
        x = input_features[..., :frames].to(dtype=self.conv1.weight.dtype, device=self.conv1.weight.device)
        x = nn.functional.gelu(self.conv1(x))
        x = nn.functional.gelu(self.conv2(x)).permute(0, 2, 1)
        x = x + self.embed_positions.weight[:kept]
        x = nn.functional.dropout(x, p=self.dropout, training=self.training)
        mask = attention_mask[:, :, :kept, :kept]
        for layer in self.layers:
            out = layer(x, mask, **kwargs)
            x = out[0] if isinstance(out, tuple) else out
        x = self.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
        x = self.layer_norm(x)
        pooled = (steps - 2) // 2 + 1
        x = nn.functional.pad(x, (0, 0, 0, pooled - x.shape[1]))
        from transformers.modeling_outputs import BaseModelOutput  # lazy, as everywhere: importing steps stays fast

        return BaseModelOutput(last_hidden_state=x)


@contextlib.contextmanager
def encoder_outputs_reused(model: nn.Module, budget_mb: float = 1024) -> Iterator[dict[str, int]]:
    """Inside the block, the audio encoder's output for a batch it has already encoded is taken from memory.

    For evaluation, which decodes the same clips several times with fixed weights (each sampled run, greedy, and the
    swapped-audio passes, whose clips `generate` batches the same way since it sorts by clip length): the encoder is
    about half of a tiny model's decoding time. A batch is recognised by the bytes of every tensor the encoder is
    given (features and masks), so a reused output is the one the encoder computed for exactly that input, bit for
    bit. Outputs are kept in CPU memory up to `budget_mb` (a real model's batch of encoder states is ~0.2 GB, a
    real test set hundreds of batches); batches past the budget are encoded every time. For fixed weights and no
    gradient only (generate runs without one). Yields counts: batches encoded (misses) and reused (hits).
    """
    encoder = get_submodule(model, adapter_for(model).encoder)
    encode = encoder.forward
    memory: dict[tuple[bytes, tuple[str, ...]], Any] = {}
    budget = budget_mb * 2**20
    counts = {"hits": 0, "misses": 0, "bytes": 0}

    def forward(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError("encoder_outputs_reused is for inference: a reused output would carry no gradient")
        key = (_digest((*args, *kwargs.values())), tuple(kwargs))
        if key in memory:
            counts["hits"] += 1
            return _moved(memory[key], _input_device(args, kwargs))
        counts["misses"] += 1
        out = encode(*args, **kwargs)
        size = sum(t.numel() * t.element_size() for t in _tensors(out))
        if counts["bytes"] + size <= budget:
            memory[key] = _moved(out, torch.device("cpu"))
            counts["bytes"] += size
        return out

    encoder.forward = forward  # the instance attribute shadows the class's forward; removed again below
    try:
        yield counts
    finally:
        del encoder.forward


def keep_frozen_encoder_outputs(encoder: nn.Module, budget_mb: float = 2048) -> nn.Module:
    """Make a frozen `encoder` compute each clip's output once and take it from memory afterwards.

    With `model.freeze_audio_encoder` the encoder's output for a clip never changes, yet training re-encodes every clip
    each epoch (SFT runs 4-8 epochs to its plateau) and each validation pass re-encodes the validation split: for the
    tiny preset the encoder forward is about half of a frozen-encoder SFT step. A clip is recognised per row by the
    bytes of every per-row tensor the encoder is given (features and masks), so a kept output is the one the encoder
    computed for exactly that input; rows not kept are encoded together as one smaller batch. Outputs are kept in CPU
    memory up to `budget_mb` (the tiny preset: ~0.17 MB a clip); past it, rows are encoded every time.

    Exact only while the output is a function of the input: so the memory is used only while no encoder parameter
    requires a gradient and, in training mode, nothing in the encoder is random or batch-dependent (dropout, layer
    drop, batch norm statistics); it is emptied when any parameter is changed in place (a checkpoint loaded).
    Same switch-the-class approach as encode_each_clip_once (composes with it and with encode_real_frames_only).
    """
    _switch_class(encoder, _FrozenOutputsKept)
    encoder._kept = _KeptOutputs(budget=budget_mb * 2**20)
    return encoder


@dataclass
class _KeptOutputs:
    budget: float
    rows: dict[bytes, torch.Tensor] = field(default_factory=dict)
    bytes: int = 0
    versions: tuple[int, ...] = ()
    hits: int = 0
    misses: int = 0


class _FrozenOutputsKept(nn.Module):
    def forward(self, input_features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self._output_is_fixed() or any(kwargs.get(k) for k in ("output_attentions", "output_hidden_states")):
            return super().forward(input_features, *args, **kwargs)
        kept: _KeptOutputs = self._kept
        versions = tuple(p._version for p in self.parameters())
        if versions != kept.versions:  # weights changed in place since the outputs were kept: forget them
            kept.rows.clear()
            kept.bytes, kept.versions = 0, versions
        n = input_features.shape[0]

        def per_row(value: Any) -> bool:
            return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n

        values = (input_features, *args, *kwargs.values())
        shared = [v for v in values if not per_row(v)]
        keys = [_digest([*(v[i] for v in values if per_row(v)), *shared]) for i in range(n)]
        missing = [i for i, key in enumerate(keys) if key not in kept.rows]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            index = torch.tensor(missing, dtype=torch.long, device=input_features.device)

            def pick(value: Any) -> Any:
                return value[index] if per_row(value) else value

            out = super().forward(input_features[index], *[pick(a) for a in args],
                                  **{key: pick(v) for key, v in kwargs.items()})
            hidden = out if isinstance(out, torch.Tensor) else out.last_hidden_state
            for j, i in enumerate(missing):
                fresh[i] = hidden[j]
                size = hidden[j].numel() * hidden[j].element_size()
                if kept.bytes + size <= kept.budget:
                    kept.rows[keys[i]] = hidden[j].detach().to("cpu", copy=True)
                    kept.bytes += size
        kept.misses += len(missing)
        kept.hits += n - len(missing)
        device = input_features.device
        stacked = torch.stack([fresh[i] if i in fresh else kept.rows[keys[i]].to(device) for i in range(n)])
        from transformers.modeling_outputs import BaseModelOutput  # lazy, as everywhere: importing steps stays fast

        return BaseModelOutput(last_hidden_state=stacked)

    def _output_is_fixed(self) -> bool:
        if any(p.requires_grad for p in self.parameters()):
            return False
        if not self.training:
            return True
        config = getattr(self, "config", None)
        random = [getattr(config, name, 0) or 0 for name in ("dropout", "attention_dropout", "activation_dropout",
                                                               "layerdrop", "encoder_layerdrop")]
        return not any(random) and not any(
            (isinstance(m, nn.Dropout) and m.p > 0) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training)
            for m in self.modules())


def _digest(values: Sequence[Any]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        if isinstance(value, torch.Tensor):
            digest.update(repr((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.digest()


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):  # transformers' ModelOutput is a dict
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    return []


def _moved(value: Any, device: torch.device) -> Any:
    """`value` (a tensor, a ModelOutput, a tuple of them) on `device`; the same object when already there."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return type(value)(**{k: _moved(v, device) for k, v in value.items()})
    if isinstance(value, tuple | list):
        return type(value)(_moved(v, device) for v in value)
    return value


def _input_device(args: Sequence[Any], kwargs: dict[str, Any]) -> torch.device:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")
