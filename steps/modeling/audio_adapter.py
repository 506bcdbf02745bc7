"""Granite Speech's audio LoRA (`has_lora_adapter: true`) through loading, training, saving and rollouts.

The released Granite Speech 3.3 checkpoints ship the LLM with a LoRA (rank 64) beside the weights, as PEFT lays it
out: `adapter_config.json` + `adapter_model.safetensors` (keys `base_model.model.language_model.model.layers.N.
self_attn.{q,v}_proj.lora_{A,B}.weight`, the checkpoint's own names) next to `config.json` and the base
`model*.safetensors`. transformers loads it in `from_pretrained` (peft needed) and switches it on inside `generate()`
when `input_features` are given, off otherwise; a forward pass uses whatever state the last `generate()` left.
What this module settles, for every stage (docs/real_models.md says it per stage and `finetune` mode):

- loading (`prepare_audio_adapter`, called by steps.modeling.loading): a config that declares the adapter but a
  folder without it, or no peft, stops with a message naming the files; the adapter is switched on for every forward
  pass that carries audio (a forward pre-hook), so SFT's loss, GRPO's loss, old-policy and reference passes and
  evaluation score the model as it answers audio, whatever a text-only `generate()` left behind;
- `finetune: full` trains the adapter with everything else; `finetune: lora` trains this adapter (LLM base frozen),
  not a second one: transformers cannot save two active adapters and vLLM applies one LoRA per request, so
  `model.lora` must describe this adapter (`check_lora_settings` stops with the file's values otherwise);
- saving (`save_model`): transformers 5.23's GraniteSpeechForConditionalGeneration.save_pretrained writes the
  adapter's LoRA tensors into model.safetensors (q_proj as `q_proj.base_layer.weight`, which reloads as missing and is
  re-initialised at random, with only a load report) and the adapter under in-memory names; here the base and the
  adapter are written as the released checkpoint lays them out, and reload exactly;
- rollouts (`merged_weights`): every rollout request carries audio, so the policy that samples is W + (alpha/r) B A;
  the vLLM sync pushes exactly that, under the checkpoint's names (steps/training/rollout_weights.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PEFT's key prefix in adapter files
# Granite Speech's released layout: (in-memory prefix, checkpoint prefix), first match wins.
CHECKPOINT_PREFIXES = {"granite_speech": (("model.language_model.", "language_model.model."),
                                          ("lm_head.", "language_model.lm_head."), ("model.encoder.", "encoder."),
                                          ("model.projector.", "projector."))}
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig.max_lora_rank choices (0.14 - 0.33)
_HOOKED = "_speech_grpo_audio_adapter_hook"


# --- what the model holds ---------------------------------------------------------------------------------------------


def declares_audio_adapter(model_or_config: Any) -> bool:
    """Granite Speech's config flag: the checkpoint ships a LoRA to be on for audio inputs."""
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "has_lora_adapter", False))


def audio_adapter_name(model: nn.Module) -> str | None:
    """The adapter transformers' peft integration loaded into `model` (Granite Speech's audio LoRA), or None."""
    if not getattr(model, "_hf_peft_config_loaded", False):
        return None
    return next(iter(model.peft_config), None)


def has_audio_adapter(model: nn.Module) -> bool:
    return audio_adapter_name(model) is not None


def lora_layers(model: nn.Module, name: str) -> dict[str, Any]:
    """Module path -> the PEFT LoRA layer holding adapter `name`."""
    from peft.tuners.lora import LoraLayer

    return {path: m for path, m in model.named_modules() if isinstance(m, LoraLayer) and name in m.lora_A}


def adapter_is_active(model: nn.Module) -> bool:
    """True when every LoRA layer applies the audio adapter in a forward pass."""
    name = audio_adapter_name(model)
    layers = lora_layers(model, name) if name else {}
    return bool(layers) and all(not m.disable_adapters and name in m.active_adapters for m in layers.values())


def is_adapter_key(key: str, name: str) -> bool:
    """A state-dict / parameter key of adapter `name` (lora_A, lora_B, lora_embedding_*, lora_magnitude_vector)."""
    return re.search(rf"\.lora_[A-Za-z_]+\.{re.escape(name)}(\.|$)", key) is not None


# --- loading ----------------------------------------------------------------------------------------------------------


def require_audio_adapter(model: nn.Module, source: str) -> None:
    """Stop when the config declares the audio adapter but it did not load: the model would answer audio without it."""
    if not declares_audio_adapter(model) or has_audio_adapter(model):
        return
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise ImportError(f"{source}: config.json sets has_lora_adapter: true (Granite Speech's audio LoRA), which "
                          "transformers loads through peft; peft is not installed: pip install peft==0.21.2")
    raise FileNotFoundError(
        f"{source}: config.json sets has_lora_adapter: true but the folder has no {ADAPTER_CONFIG_NAME} + "
        f"{ADAPTER_WEIGHTS_NAME}: the model would answer audio without its audio LoRA. Copy the checkpoint's adapter "
        "files into the folder (a models/<method>/<task> folder written by this project has them), or, for a model "
        "whose adapter was merged into its weights, set has_lora_adapter: false in its config.json")


def keep_on_for_audio(model: nn.Module) -> None:
    """Switch the audio adapter on for every forward pass given `input_features` (transformers does it in
    `generate()` only; decoding steps after the first carry no features and keep the state generate set)."""
    name = audio_adapter_name(model)
    if name is None or getattr(model, _HOOKED, False):
        return
    layers = list(lora_layers(model, name).values())

    def switch_on(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if kwargs.get("input_features") is not None and any(m.disable_adapters for m in layers):
            for m in layers:
                m.enable_adapters(True)

    model.register_forward_pre_hook(switch_on, with_kwargs=True)
    setattr(model, _HOOKED, True)


def prepare_audio_adapter(model: nn.Module, source: str, unfreeze: bool = False) -> None:
    """After loading: stop if the declared adapter is missing; keep it on for audio; start with it on.

    `unfreeze`: every weight trainable, as any other model loads (`apply_finetune_switches` then decides): loading
    the adapter (peft's injection, inference mode) froze the whole model."""
    require_audio_adapter(model, source)
    name = audio_adapter_name(model)
    if name is None:
        return
    model.set_adapter(name)
    model.enable_adapters()
    keep_on_for_audio(model)
    if unfreeze:
        model.requires_grad_(True)


# --- training ---------------------------------------------------------------------------------------------------------


def adapter_settings(model: nn.Module) -> dict[str, Any]:
    """r, alpha and target modules of the loaded audio adapter (its adapter_config.json)."""
    cfg = model.peft_config[audio_adapter_name(model)]
    targets = cfg.target_modules
    return {"r": int(cfg.r), "alpha": cfg.lora_alpha,
            "target_modules": sorted(targets) if not isinstance(targets, str) else targets}


def check_lora_settings(model: nn.Module, lora: Any) -> None:
    """`finetune: lora` trains the checkpoint's audio adapter: model.lora must describe it."""
    have = adapter_settings(model)
    want = {"r": lora.r, "alpha": lora.alpha, "target_modules": sorted(lora.target_modules)}
    if have == want:
        return
    raise ValueError(
        "model.finetune: lora on a checkpoint with its own audio LoRA trains that adapter; a second adapter cannot "
        "work (transformers saves one active adapter, vLLM applies one LoRA per request). model.lora says "
        f"r={want['r']}, alpha={want['alpha']}, target_modules={want['target_modules']}; the checkpoint's "
        f"{ADAPTER_CONFIG_NAME} says r={have['r']}, alpha={have['alpha']}, target_modules={have['target_modules']}. "
        f"Set model.lora to {{r: {have['r']}, alpha: {have['alpha']}, target_modules: {have['target_modules']}}}, "
        "or use finetune: full")


def train_audio_adapter(model: nn.Module, lora: Any, also_train: list[nn.Module]) -> nn.Module:
    """`finetune: lora` with an audio adapter: its LoRA matrices train (plus `also_train`); every other weight is
    frozen."""
    check_lora_settings(model, lora)
    name = audio_adapter_name(model)
    model.peft_config[name].inference_mode = False
    model.requires_grad_(False)
    for layer in lora_layers(model, name).values():
        layer.lora_A[name].requires_grad_(True)
        layer.lora_B[name].requires_grad_(True)
    for module in also_train:
        module.requires_grad_(True)
    return model


# --- saving -----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def family_renames(model: nn.Module) -> Iterator[None]:
    """Inside the block transformers reverts key names with the family's own renames.

    `from_pretrained` keeps the renames of its last load on the model (`_weight_conversions`) and reverts with them
    when saving; after it loaded an adapter those are PEFT's, which put `base_model.model.` before every base key.
    Without them transformers falls back to the family's mapping (conversion_mapping.py), the checkpoint layout."""
    had = "_weight_conversions" in vars(model)
    before = vars(model).get("_weight_conversions")
    model._weight_conversions = None
    try:
        yield
    finally:
        if had:
            model._weight_conversions = before
        else:
            del model._weight_conversions


def checkpoint_names(model: nn.Module, names: list[str]) -> dict[str, str]:
    """In-memory key -> the key the released checkpoint files use (what vLLM loads).

    Granite Speech: the reverse of transformers 5.23's renames (conversion_mapping.py), written out, because
    transformers 5.17 and 5.20.2 (the GPU image's, the GPU set's) revert `model.language_model.` to
    `language_model.model.model.` when saving (measured: their own save_pretrained writes that), a layout only they
    read. Other families: transformers' own reverse."""
    prefixes = CHECKPOINT_PREFIXES.get(getattr(model.config, "model_type", ""))
    if prefixes is not None:
        out = {}
        for name in names:
            new, old = next(((new, old) for old, new in prefixes if name.startswith(old)), ("", ""))
            out[name] = new + name[len(old):]
        return out
    from transformers.core_model_loading import revert_weight_conversion

    out = {}
    with family_renames(model):
        for name in names:
            [renamed] = revert_weight_conversion(model, {name: torch.empty(0)}).keys()
            out[name] = renamed
    return out


def without_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with each tensor once (tied weights: the LM head shares the embeddings' storage)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for key, tensor in state.items():
        ident = (tensor.data_ptr(), tuple(tensor.shape))
        if ident not in seen:
            seen.add(ident)
            out[key] = tensor
    return out


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without the adapter: in-memory names, LoRA-wrapped layers under their own names."""
    name = audio_adapter_name(model)
    if name is None:
        return model.state_dict()
    return {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if not is_adapter_key(k, name)}


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """adapter_model.safetensors's content: PEFT's prefix + the checkpoint's names."""
    state = model.get_adapter_state_dict(audio_adapter_name(model))
    names = checkpoint_names(model, list(state))
    return {PEFT_PREFIX + names[k]: v.detach().to("cpu").contiguous() for k, v in state.items()}


def write_adapter(model: nn.Module, folder: Path) -> None:
    from safetensors.torch import save_file

    config = copy.deepcopy(model.peft_config[audio_adapter_name(model)])
    config.inference_mode = True
    config.base_model_name_or_path = None  # the base is the folder it sits in (transformers reads config.json first)
    config.save_pretrained(str(folder))
    save_file(adapter_tensors(model), str(folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})


def save_model(model: nn.Module, folder: str | Path) -> None:
    """`save_pretrained`, with an audio adapter written as the released checkpoints lay it out (module docstring)."""
    from transformers import PreTrainedModel

    folder = Path(folder)
    if not has_audio_adapter(model):
        model.save_pretrained(folder)
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_adapter(model, folder)
    state = without_shared(base_state_dict(model))
    names = checkpoint_names(model, list(state))
    model._hf_peft_config_loaded = False  # transformers' own save of the base, without the adapter, named as released
    try:
        PreTrainedModel.save_pretrained(model, folder, state_dict={names[k]: v for k, v in state.items()},
                                        save_original_format=False)
    finally:
        model._hf_peft_config_loaded = True


# --- rollouts ---------------------------------------------------------------------------------------------------------


Gather = Callable[[list[torch.nn.Parameter]], AbstractContextManager[Any]]


def merged_weights(model: nn.Module, gather: Gather | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight of the policy as it acts on audio, under the checkpoint's names: W + (alpha/r) B A for each
    adapted layer, the others as they are. `gather` materialises sharded parameters (ZeRO-3) around each read."""
    gather = gather or (lambda params: nullcontext())
    name = audio_adapter_name(model)
    layers = lora_layers(model, name)
    params = [(k, p) for k, p in model.named_parameters() if not is_adapter_key(k, name)]
    names = checkpoint_names(model, [k.replace(".base_layer.", ".") for k, _ in params])
    for key, param in params:
        clean = key.replace(".base_layer.", ".")
        layer = layers.get(key.rsplit(".base_layer.", 1)[0]) if key.endswith(".base_layer.weight") else None
        if layer is None:
            with gather([param]):
                yield names[clean], param.data
            continue
        with gather([param, layer.lora_A[name].weight, layer.lora_B[name].weight]):
            yield names[clean], param.data + layer.get_delta_weight(name).to(param.dtype)


def vllm_lora_rank(r: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds rank r."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def vllm_serving_kwargs(model_dir: str | Path) -> dict[str, Any]:
    """`vllm.LLM` arguments that serve a saved model folder as it answers audio (its adapter on every audio request,
    off for text), for inference outside training; {} for a folder without an adapter."""
    path = Path(model_dir) / ADAPTER_CONFIG_NAME
    if not path.is_file():
        return {}
    r = int(json.loads(path.read_text())["r"])
    return {"enable_lora": True, "max_lora_rank": vllm_lora_rank(r), "max_loras": 1,
            "default_mm_loras": {"audio": str(Path(model_dir))}}
