"""Load a speech-aware LLM (SALLM) and its processor, and decide what of it trains.

Any supported family (steps/modeling/families.py) loads through transformers' Auto classes from
`model.name_or_path`: a local folder, a hub id, or models/base as the pretrain stage wrote it (the tiny preset's
weights, or a pointer file naming a real checkpoint and its revision). Weights load as safetensors;
`trust_remote_code` only when params.yaml sets it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steps.core.config import ModelConfig
from steps.modeling.audio_adapter import has_audio_adapter, prepare_audio_adapter, train_audio_adapter
from steps.modeling.encoder_speedups import encode_real_frames_only, keep_frozen_encoder_outputs
from steps.modeling.families import adapter_for, get_submodule

TINY_PRESET = "tiny"
POINTER_FILE = "base_model.json"  # in models/base when the base is a real checkpoint that pretrain passes on


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
    if Path(name).is_dir():
        check_safetensors(Path(name))  # a clear error instead of safetensors' "invalid header length"
    config = AutoConfig.from_pretrained(name, **common)
    adapter = adapter_for(config)  # fail early, with the list of supported families
    processor = AutoProcessor.from_pretrained(name, **common)
    model = _auto_model_class(config).from_pretrained(name, dtype=dtype, **common)
    prepare_audio_adapter(model, name, unfreeze=True)  # Granite Speech's audio LoRA: present, on for audio passes
    model.to(device)
    prepare_tokens(model, processor)
    if adapter.crop_audio_window:
        encode_real_frames_only(get_submodule(model, adapter.encoder))
    return model, processor


class CorruptWeightsError(RuntimeError):
    """A model folder's safetensors file is truncated or damaged."""


def check_safetensors(folder: Path) -> None:
    """Every *.safetensors file in `folder` is whole: its header parses and its tensors end exactly at the file's end.

    Reads 8 bytes + the JSON header only (milliseconds, also for GBs of weights). Raises CorruptWeightsError naming the
    file and the fix; a stage output restored or rerun through DVC is whole again.
    """
    for path in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            root, rel = _dvc_root_and_path(folder)
            where = f" in {root}" if root else ""
            raise CorruptWeightsError(
                f"{path} is truncated or corrupt ({problem}), so the model in {folder} cannot load. Restore it from "
                f"DVC's cache with `dvc checkout --force {rel}`{where} (`dvc pull {rel}` first if the cache lacks it), "
                f"or rerun the stage that wrote it: `dvc repro --force --single-item {_stage_guess(rel)}`.")


def _safetensors_problem(path: Path) -> str | None:
    """Why the file is not a whole safetensors file, or None (format: u64 header size, JSON header, tensor bytes)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than the 8-byte header size"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"the header claims {n} bytes but the file has {size}"
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"the header is not valid JSON: {exc}"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        return f"the tensors need {expected} bytes but the file has {size}"
    return None


def _dvc_root_and_path(folder: Path) -> tuple[Path | None, str]:
    """The repository holding `folder` (the nearest parent with a dvc.yaml) and the folder's path inside it."""
    folder = folder.resolve()
    for parent in folder.parents:
        if (parent / "dvc.yaml").is_file():
            return parent, folder.relative_to(parent).as_posix()
    return None, str(folder)


def _stage_guess(rel: str) -> str:
    """This pipeline's layout: models/base is pretrain's, models/<method>/<task> is `<method>@<task>`'s."""
    parts = rel.split("/")
    if parts == ["models", "base"]:
        return "pretrain"
    if len(parts) == 3 and parts[0] == "models":
        return f"{parts[1]}@{parts[2]}"
    return "<the stage that writes it>"


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


def apply_finetune_switches(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Freeze what the config freezes; wrap with LoRA when `finetune: lora`. Returns the model to train."""
    adapter = adapter_for(model)
    model.requires_grad_(True)  # full: a checkpoint's audio LoRA trains with the rest (steps/modeling/audio_adapter.py)
    if cfg.finetune == "lora" and has_audio_adapter(model):  # train that adapter, not a second one
        also = [get_submodule(model, m) for m, frozen in ((adapter.encoder, cfg.freeze_audio_encoder),
                                                          (adapter.projector, cfg.freeze_projector)) if not frozen]
        model = train_audio_adapter(model, cfg.lora, also)
        keep_fixed_buffers_frozen(model)
        return model
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
    if cfg.freeze_audio_encoder:  # its output per clip is fixed: encode each clip once, not once an epoch
        keep_frozen_encoder_outputs(get_submodule(model, adapter.encoder))
    elif cfg.freeze_audio_encoder_layers is not None:
        freeze_lower_encoder(get_submodule(model, adapter.encoder), cfg.freeze_audio_encoder_layers)
    if cfg.freeze_llm:
        for path in adapter.llm:
            get_submodule(model, path).requires_grad_(False)
    keep_fixed_buffers_frozen(model)
    return model


def freeze_lower_encoder(encoder: nn.Module, layers: int) -> None:
    """Freeze the encoder's input stem (every child module before its list of layers: convolutions, position
    embeddings) and its first `layers` layers; the layers above and what follows them (pooling, the final norm)
    train. Raises ValueError when the encoder has no layer list or fewer layers.
    """
    children = list(encoder.named_children())
    stack = next((i for i, (_, child) in enumerate(children) if isinstance(child, nn.ModuleList)), None)
    if stack is None:
        raise ValueError(f"model.freeze_audio_encoder_layers: {type(encoder).__name__} has no list of layers; use "
                         "freeze_audio_encoder instead")
    stacked = children[stack][1]
    if layers > len(stacked):
        raise ValueError(f"model.freeze_audio_encoder_layers: {layers}, but the encoder has {len(stacked)} layers")
    for module in [child for _, child in children[:stack]] + list(stacked[:layers]):
        module.requires_grad_(False)


def keep_fixed_buffers_frozen(model: nn.Module) -> None:
    """Whisper-style sinusoidal position tables are fixed by design: never train them."""
    for name, module in model.named_modules():
        if name.endswith("embed_positions") and isinstance(module, nn.Embedding):
            module.requires_grad_(False)


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
