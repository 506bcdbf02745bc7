"""Load a speech-aware LLM (SALLM) and its processor, decide what trains, build batches, and generate.

Any supported family loads through transformers' Auto classes from `model.name_or_path` (a local folder, a hub id,
or the folder the pretrain stage wrote). What differs between families lives in a small `FamilyAdapter`: how the
chat prompt places the audio, how the processor is called, and which submodules are the audio encoder, the projector
and the LLM (for the freeze switches and LoRA). Adding another audio-text-to-text family (Voxtral, Qwen2.5-Omni) is
one more adapter in `ADAPTERS`.

Prompts in our datasets hold the marker `<|audio|>` exactly once; the adapter puts the audio where the marker is.

GPU users with Granite Speech need torchaudio built for their CUDA torch (its feature extractor computes the mel
spectrogram with torchaudio) and peft (its checkpoints ship a LoRA adapter that is switched on for audio inputs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from steps.config import ModelConfig

AUDIO_MARKER = "<|audio|>"
TINY_PRESET = "tiny"
POINTER_FILE = "base_model.json"  # in models/base when the base is a real checkpoint that pretrain passes on
IGNORE_INDEX = -100


class ClipTooLongError(ValueError):
    """A clip does not fit the model's audio window; we never truncate silently."""


# --------------------------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class FamilyAdapter:
    """What one model family needs beyond the Auto classes.

    `encoder`, `projector` and `llm` are dotted submodule paths inside the loaded model; `llm` lists the decoder and
    the LM head. `content_style` says whether the chat template takes the audio as a typed content part ("parts",
    the Qwen2-Audio family) or as the processor's audio token inside a plain string ("inline", Granite Speech).
    """

    model_type: str
    encoder: str
    projector: str
    llm: tuple[str, ...]
    content_style: str  # "parts" | "inline"
    feature_keys: tuple[str, ...]  # the processor outputs that carry audio, passed on to forward/generate
    needs: str = ""  # what a user must install for this family beyond our pins
    # Whisper-style encoder fed a fixed window of mostly padding: run it on the batch's real frames only.
    crop_audio_window: bool = False

    def user_content(self, prompt: str, audio_token: str) -> str | list[dict[str, str]]:
        before, after = split_prompt(prompt)
        if self.content_style == "inline":
            return before + audio_token + after
        parts: list[dict[str, str]] = []
        if before:
            parts.append({"type": "text", "text": before})
        parts.append({"type": "audio"})
        if after:
            parts.append({"type": "text", "text": after})
        return parts


ADAPTERS: dict[str, FamilyAdapter] = {
    "qwen2_audio": FamilyAdapter(
        model_type="qwen2_audio",
        encoder="model.audio_tower",
        projector="model.multi_modal_projector",
        llm=("model.language_model", "lm_head"),
        content_style="parts",
        feature_keys=("input_features", "feature_attention_mask"),
        crop_audio_window=True,
    ),
    "granite_speech": FamilyAdapter(
        model_type="granite_speech",
        encoder="model.encoder",
        projector="model.projector",
        llm=("model.language_model", "lm_head"),
        content_style="inline",
        feature_keys=("input_features", "input_features_mask"),
        needs="torchaudio matching your torch build (the feature extractor uses it) and peft (checkpoint LoRA)",
    ),
}


def adapter_for(model_or_config: Any) -> FamilyAdapter:
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(f"model type {model_type!r} is not supported yet; supported: {sorted(ADAPTERS)}. "
                         "Add a FamilyAdapter for it in steps/model.py")
    return ADAPTERS[model_type]


def split_prompt(prompt: str) -> tuple[str, str]:
    if prompt.count(AUDIO_MARKER) != 1:
        raise ValueError(f"prompt must contain {AUDIO_MARKER!r} exactly once, got {prompt!r}")
    before, after = prompt.split(AUDIO_MARKER)
    return before, after


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_submodule(dotted)


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
        _, inverse = torch.unique(input_features.reshape(n, -1), dim=0, return_inverse=True)
        k = int(inverse.max()) + 1 if n else 0
        if k == n:
            return super().forward(input_features, *args, **kwargs)
        first = torch.full((k,), n, dtype=torch.long, device=inverse.device).scatter_reduce(
            0, inverse, torch.arange(n, device=inverse.device), reduce="amin")

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


# --------------------------------------------------------------------------------------------------- loading


def choose_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def choose_dtype(setting: str, device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it, fp32 on CPU (bf16 matmuls are slow and lossy there)."""
    if setting != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[setting]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_base(path: str | Path) -> tuple[str, str | None]:
    """A model folder, or the pointer the pretrain stage writes for a real checkpoint: (name_or_path, revision)."""
    pointer = Path(path) / POINTER_FILE
    if pointer.is_file():
        data = json.loads(pointer.read_text())
        return data["name_or_path"], data.get("revision")
    return str(path), None


def load_model_and_processor(name_or_path: str | Path, cfg: ModelConfig, revision: str | None = None,
                             device: torch.device | None = None) -> tuple[nn.Module, Any]:
    """Load a SALLM and its processor through the Auto classes (a pointer folder is followed)."""
    from transformers import AutoConfig, AutoProcessor

    if str(name_or_path) == TINY_PRESET:
        raise ValueError("model.name_or_path is 'tiny': the preset exists only after the pretrain stage built it; "
                         "load models/base instead (run `dvc repro pretrain`)")
    name, pointed_revision = resolve_base(name_or_path)
    revision = revision or pointed_revision
    device = device or choose_device(cfg.device)
    dtype = choose_dtype(cfg.dtype, device)
    common: dict[str, Any] = {"revision": revision, "trust_remote_code": cfg.trust_remote_code}
    config = AutoConfig.from_pretrained(name, **common)
    adapter = adapter_for(config)  # fail early, with the list of supported families
    processor = AutoProcessor.from_pretrained(name, **common)
    model = _auto_model_class(config).from_pretrained(name, dtype=dtype, **common)
    model.to(device)
    prepare_tokens(model, processor)
    if adapter.crop_audio_window:
        encode_real_frames_only(get_submodule(model, adapter.encoder))
    return model, processor


def _auto_model_class(config: Any) -> Any:
    """Audio-text-to-text models register under different Auto classes across versions: take the first that fits."""
    import transformers

    for name in ("AutoModelForImageTextToText", "AutoModelForSpeechSeq2Seq", "AutoModelForCausalLM",
                 "AutoModelForSeq2SeqLM"):
        auto = getattr(transformers, name, None)
        if auto is not None and type(config) in auto._model_mapping:
            return auto
    raise ValueError(f"no Auto model class knows {type(config).__name__}")


def prepare_tokens(model: nn.Module, processor: Any) -> None:
    """Make pad/EOS consistent between tokenizer, model config and generation config; left-pad for generation."""
    tok = processor.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        if gen.pad_token_id is None:
            gen.pad_token_id = tok.pad_token_id
        if gen.eos_token_id is None:
            gen.eos_token_id = tok.eos_token_id
    # TRL's GRPOTrainer treats processor-backed models as vision models and needs an image token id: the audio one.
    audio_token_id = getattr(model.config, "audio_token_id", None)
    if audio_token_id is not None and getattr(model.config, "image_token_id", None) is None:
        with contextlib.suppress(AttributeError, TypeError):
            model.config.image_token_id = audio_token_id


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------------- what trains


def apply_finetune_switches(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Freeze what the config freezes; wrap with LoRA when `finetune: lora`. Returns the model to train."""
    adapter = adapter_for(model)
    model.requires_grad_(True)
    if cfg.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        # A regex keeps LoRA inside the LLM: the audio encoder has q_proj/k_proj/v_proj layers too.
        names = "|".join(cfg.lora.target_modules)
        llm_prefix = adapter.llm[0].replace(".", r"\.")
        trainable_extra = [m for m, frozen in ((adapter.encoder, cfg.freeze_audio_encoder),
                                               (adapter.projector, cfg.freeze_projector)) if not frozen]
        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=rf".*{llm_prefix}\..*\.({names})$", modules_to_save=trainable_extra or None,
                          bias="none")
        model = get_peft_model(model, lora)
        keep_fixed_buffers_frozen(model)
        return model
    for path, frozen in ((adapter.encoder, cfg.freeze_audio_encoder), (adapter.projector, cfg.freeze_projector)):
        if frozen:
            get_submodule(model, path).requires_grad_(False)
    if cfg.freeze_llm:
        for path in adapter.llm:
            get_submodule(model, path).requires_grad_(False)
    keep_fixed_buffers_frozen(model)
    return model


def keep_fixed_buffers_frozen(model: nn.Module) -> None:
    """Whisper-style sinusoidal position tables are fixed by design: never train them."""
    for name, module in model.named_modules():
        if name.endswith("embed_positions") and isinstance(module, nn.Embedding):
            module.requires_grad_(False)


# --------------------------------------------------------------------------------------------------- inputs


def audio_window_samples(processor: Any) -> int | None:
    """How many samples the processor's audio window holds (None: the family has no fixed window)."""
    fe = processor.feature_extractor
    return int(fe.n_samples) if hasattr(fe, "n_samples") else None


def check_clips_fit(audios: Sequence[np.ndarray], processor: Any, ids: Sequence[str] | None = None) -> None:
    """Raise ClipTooLongError for any clip longer than the window (the processor would cut it silently)."""
    limit = audio_window_samples(processor)
    if limit is None:
        return
    rate = processor.feature_extractor.sampling_rate
    for i, audio in enumerate(audios):
        if len(audio) > limit:
            name = ids[i] if ids is not None else f"#{i}"
            raise ClipTooLongError(
                f"clip {name} lasts {len(audio) / rate:.2f} s but the model's audio window is {limit / rate:.0f} s; "
                "it would be truncated silently. Drop or split such clips in prepare (prepare.max_seconds), or, for "
                "the tiny preset, rebuild with a longer model.tiny.window_seconds")


def chat_prompt(processor: Any, adapter: FamilyAdapter, prompt: str) -> str:
    """The chat-formatted text for one user turn with audio, ending where the assistant's answer starts."""
    audio_token = getattr(processor, "audio_token", AUDIO_MARKER)
    messages = [{"role": "user", "content": adapter.user_content(prompt, audio_token)}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def as_float_arrays(audios: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float32) for a in audios]


def encode_prompts(processor: Any, adapter: FamilyAdapter, prompts: Sequence[str], audios: Sequence[Any],
                   ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Processor outputs (token ids, attention mask, audio features) for a batch of prompts, left-padded."""
    arrays = as_float_arrays(audios)
    check_clips_fit(arrays, processor, ids)
    texts = [chat_prompt(processor, adapter, p) for p in prompts]
    rate = processor.feature_extractor.sampling_rate
    batch = processor(text=texts, audio=arrays, sampling_rate=rate, return_tensors="pt", padding=True)
    return dict(batch)


def encode_for_training(processor: Any, adapter: FamilyAdapter, prompts: Sequence[str], answers: Sequence[str],
                        audios: Sequence[Any], ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Prompt + answer + EOS, right-padded, with labels on the answer and EOS only (answer-only loss)."""
    arrays = as_float_arrays(audios)
    check_clips_fit(arrays, processor, ids)
    tok = processor.tokenizer
    texts = [chat_prompt(processor, adapter, p) + a + tok.eos_token for p, a in zip(prompts, answers, strict=True)]
    rate = processor.feature_extractor.sampling_rate
    old_side = tok.padding_side
    tok.padding_side = "right"
    try:
        batch = dict(processor(text=texts, audio=arrays, sampling_rate=rate, return_tensors="pt", padding=True))
    finally:
        tok.padding_side = old_side
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    for row, answer in enumerate(answers):
        # Answer tokens = the tail of the real tokens; tokenising the answer alone gives their count.
        n_answer = len(tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"])
        n_real = int(batch["attention_mask"][row].sum())
        labels[row, : n_real - n_answer] = IGNORE_INDEX
    batch["labels"] = labels
    return batch


def to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        out[key] = value
    return out


def model_inputs(batch: dict[str, Any], adapter: FamilyAdapter) -> dict[str, Any]:
    """Only the keys the model's forward/generate takes (the processor adds bookkeeping such as num_audio_tokens)."""
    keep = ("input_ids", "attention_mask", "labels", *adapter.feature_keys)
    return {k: v for k, v in batch.items() if k in keep}


# --------------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    use_cache: bool = True


@torch.no_grad()
def generate(model: nn.Module, processor: Any, prompts: Sequence[str], audios: Sequence[Any],
             settings: GenerationSettings = GenerationSettings(), batch_size: int = 16,
             seed: int | None = None, progress: bool = False) -> list[str]:
    """Answers for (prompt, audio) pairs, batched (by length, to waste little padding), in input order."""
    adapter = adapter_for(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    order = sorted(range(len(prompts)), key=lambda i: len(audios[i]))
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "use_cache": settings.use_cache,
                              "do_sample": settings.do_sample}
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generate", unit="batch", leave=False)
    # A seeded call draws from its own RNG stream: validation during training must not reset the trainer's.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            for start in starts:
                idx = order[start:start + batch_size]
                batch = encode_prompts(processor, adapter, [prompts[i] for i in idx], [audios[i] for i in idx])
                batch = to_device(model_inputs(batch, adapter), device, dtype)
                out = model.generate(**batch, **kwargs)
                new_tokens = out[:, batch["input_ids"].shape[1]:]
                texts = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(idx, texts, strict=True):
                    answers[i] = text.strip()
        finally:
            model.train(was_training)
    return answers


def generate_for(model: nn.Module, processor: Any, examples: Any, settings: GenerationSettings = GenerationSettings(),
                 batch_size: int = 16, seed: int | None = None, progress: bool = False) -> list[str]:
    """`generate` on dataset rows (columns `prompt` and `audio`)."""
    return generate(model, processor, list(examples["prompt"]), list(examples["audio"]), settings, batch_size, seed,
                    progress)


# --------------------------------------------------------------------------------------------------- misc


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use n intra-op threads inside the block (0 keeps torch's default)."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to 10% at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
