"""GPU check: a tiny Granite Speech with its audio LoRA and a tiny Qwen2-Audio through SFT, GRPO (rollouts from
transformers' generate) and evaluate, in bf16 on one GPU; asserts what the CPU tests assert; prints step times.

    python3 bench/gpu_check.py --out "$OUT"        # on the GPU machine: cuda, bf16 (docs/gpu.md, "The GPU check")
    python bench/gpu_check.py --device cpu         # anywhere: the same checks in fp32 on CPU

What it asserts, per family (the CPU tests named): SFT lowers the validation loss and moves encoder, projector and
LLM tensors, Granite's audio LoRA too (tests/test_granite_speech.py); the saved model reloads with identical greedy
outputs (tests/test_granite_adapter.py); GRPO's rollouts run without grad and its loss pass runs the audio encoder
with grad, which gets a gradient; swapped audio changes the log-probs and two passes agree (no dropout noise); for
Granite the adapter is applied in the rollout, reference and loss passes and the reference log-probs differ from the
adapter-off model's; two GRPO steps move encoder and LLM (and the adapter); evaluate writes finite BLEU / chrF and the
swapped-audio BLEU; `finetune: lora` gives gradients to the LoRA (Granite: its own adapter) and the projector only,
`full` to the LLM and the adapter too (tests/test_granite_adapter.py). With torchaudio (the GPU image) it also checks
that tests/torchaudio_stub.py's mel spectrogram equals torchaudio's.

Imports only what the GPU image has plus the wheels bench/gpu_wheels.sh fetches (trl, datasets, nltk, jiwer,
rouge-score, ...): mlflow, prefect, dvc, vllm, soundfile, soxr and espeak are made absent (an import of one fails,
naming it; libraries that probe for them see them missing, as on the GPU image). Tracking is off; the audio is
seeded synthetic tones (no TTS). Results:
<out>/gpu_check.json and the printed table; exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("mlflow", "prefect", "dvc", "vllm", "soundfile", "soxr", "espeakng_loader")
TASK = "ast"
RATE = 16000


def refuse_imports() -> None:
    """Make every module the GPU image lacks absent here too: `import` fails, availability probes say no."""
    for name in BLOCKED:
        if sys.modules.get(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]  # importlib's marker for "not importable"


# --- data and workspaces ----------------------------------------------------------------------------------------------


def synthetic_rows(n: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """n examples in the prepared-dataset layout: speech-like tone mixtures (1-2.4 s), grammar sentences."""
    import random

    import numpy as np

    from steps.data.grammar import sample_translation

    rng, gen = random.Random(seed), np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pair = sample_translation(rng)
        seconds = 1.0 + 0.2 * i
        t = np.arange(int(RATE * seconds)) / RATE
        freqs = gen.uniform(150, 2500, size=4)
        audio = sum(np.sin(2 * np.pi * f * t * (1 + 0.1 * np.sin(3 * t))) for f in freqs) / 8
        audio = (audio * (0.5 + 0.5 * np.sin(np.pi * t / seconds)) + gen.normal(0, 0.01, t.size)).astype(np.float32)
        prompt = "<|audio|> listen to the speech and translate it into German."
        rows.append({"id": f"gpu-{i:03d}", "task": TASK, "audio": audio, "sampling_rate": RATE, "prompt": prompt,
                     "question": "", "reference": pair.de, "transcript": pair.en, "speaker": f"tone{i % 3}",
                     "duration": round(seconds, 3), "source": "gpu_check"})
    return rows


def workspace(family: str, root: Path, rows: list[dict[str, Any]]) -> Path:
    if family == "granite_speech":
        from tests.tiny_granite import granite_workspace

        return granite_workspace(root, rows, TASK, adapter=True)
    from tests.tiny_sallm import workspace as qwen_workspace

    return qwen_workspace(root, rows, TASK)


def config(device: str, dtype: str, threads: int, **model: Any) -> Any:
    """The CPU tests' micro settings (tests/test_sft.py, tests/test_grpo.py) on the chosen device and dtype."""
    from steps.core.config import config_from_dict

    # to max_steps, the best checkpoint kept (as tests/helpers.py's micro runs: an untrained model ties its start)
    protocol = {"patience": None, "start_candidate": False}
    sft = {"max_steps": 20, "eval_every": 10, "batch_size": 4, "lr": 3e-3, "warmup_ratio": 0.0, "eval_examples": 8,
           "eval_batch_size": 8, "max_new_tokens": 12, "threads": threads, **protocol}
    grpo = {"init": "base", "max_steps": 2, "eval_every": 2, "prompts_per_step": 2, "num_generations": 4, "lr": 1e-3,
            "max_completion_length": 16, "eval_examples": 4, "eval_batch_size": 4, "max_new_tokens": 8,
            "threads": threads, "beta": 0.02, "reward_weights": {"chrf": 1.0}, **protocol}
    evaluate = {"sampled_runs": 2, "max_new_tokens": 12, "batch_size": 8, "threads": threads}
    return config_from_dict({"model": {"device": device, "dtype": dtype, **model}, "sft": sft, "grpo": grpo,
                             "mpgrpo": {"num_off_policy": 1}, "evaluate": evaluate})


# --- checks -----------------------------------------------------------------------------------------------------------


class Checks:
    """Collects named assertions and stage timings; a failed check is recorded, the run goes on."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.times: list[dict[str, Any]] = []

    def check(self, family: str, name: str, ok: bool, detail: str = "") -> None:
        self.results.append({"family": family, "check": name, "ok": bool(ok), "detail": detail})
        print(f"  [{'ok' if ok else 'FAIL'}] {family}: {name}" + (f" ({detail})" if detail else ""), flush=True)

    def run(self, family: str, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            self.check(family, name, False, f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
            return None

    def time(self, family: str, stage: str, seconds: float, steps: int, what: str) -> None:
        self.times.append({"family": family, "stage": stage, "seconds": round(seconds, 3), "steps": steps,
                           "per_step": round(seconds / max(steps, 1), 4), "what": what})


def run_paths(root: Path) -> Any:
    """The workspace's paths: the default layout under `root` (data/prepared, models, metrics), as the tests'."""
    from steps.core.config import Config
    from steps.core.paths import RunPaths

    return RunPaths.of(Config(), root)


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def part_keys(family: str) -> dict[str, str]:
    """The saved tensors' prefixes of encoder, projector and LLM (the checkpoint's original layout)."""
    if family == "granite_speech":
        return {"encoder": "encoder.", "projector": "projector.", "llm": "language_model."}
    return {"encoder": "audio_tower.", "projector": "multi_modal_projector.", "llm": "language_model."}


def moved(before: Path, after: Path, name: str = "model.safetensors") -> list[str]:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(before / name), load_file(after / name)
    return [k for k in a if k in b and not torch.equal(a[k], b[k])]


def validation_loss(model_dir: Path, cfg: Any, rows: list[dict[str, Any]]) -> float:
    import torch

    from steps.modeling.batches import encode_for_training, model_inputs, to_device
    from steps.modeling.families import adapter_for
    from steps.modeling.loading import load_model_and_processor

    model, processor = load_model_and_processor(model_dir, cfg.model)
    adapter = adapter_for(model)
    batch = encode_for_training(processor, adapter, [r["prompt"] for r in rows], [r["reference"] for r in rows],
                                [r["audio"] for r in rows])
    param = next(model.parameters())
    with torch.no_grad():
        return float(model(**to_device(model_inputs(batch, adapter), param.device, param.dtype)).loss)


def summary_time(path: Path) -> tuple[float, int]:
    compute = json.loads(path.read_text())["compute"]
    return float(compute["train_seconds"]), int(compute["train_steps"])


def check_sft(c: Checks, family: str, root: Path, cfg: Any, rows: list[dict[str, Any]]) -> Path:
    from steps.training.sft_trainer import run_sft

    paths = run_paths(root)
    base, out = paths.base_model, paths.model("sft", TASK)
    before = validation_loss(base, cfg, rows)
    metrics = paths.train_summary("sft", TASK)
    start = time.perf_counter()
    result = run_sft(cfg, TASK, paths)
    synchronize()
    wall = time.perf_counter() - start
    seconds, steps = summary_time(metrics)
    c.time(family, "sft", seconds, steps, f"train step (batch 4); stage wall {wall:.1f} s with validation")
    after = validation_loss(out, cfg, rows)
    c.check(family, "sft: 20 steps, validation loss falls", result.global_step == 20 and after < before,
            f"{before:.3f} -> {after:.3f}")
    changed = moved(base, out)
    parts = part_keys(family)
    c.check(family, "sft: encoder, projector and LLM tensors move",
            all(any(k.startswith(p) for k in changed) for p in parts.values()), f"{len(changed)} tensors moved")
    if family == "granite_speech":
        c.check(family, "sft: the audio LoRA trains and is saved beside the base",
                bool(moved(base, out, "adapter_model.safetensors")))
    return out


def check_reload(c: Checks, family: str, model_dir: Path, cfg: Any, rows: list[dict[str, Any]], work: Path) -> None:
    import torch

    from steps.modeling.audio_adapter import save_model
    from steps.modeling.batches import encode_for_training, model_inputs, to_device
    from steps.modeling.families import adapter_for
    from steps.modeling.generation import GenerationSettings, generate
    from steps.modeling.loading import load_model_and_processor

    model, processor = load_model_and_processor(model_dir, cfg.model)
    save_model(model, work)
    processor.save_pretrained(work)
    again, processor_again = load_model_and_processor(work, cfg.model)
    prompts, audios = [r["prompt"] for r in rows], [r["audio"] for r in rows]
    settings = GenerationSettings(max_new_tokens=12)
    same = generate(model, processor, prompts, audios, settings) == generate(again, processor_again, prompts, audios,
                                                                             settings)
    adapter = adapter_for(model)
    param = next(model.parameters())
    batch = to_device(model_inputs(encode_for_training(processor, adapter, prompts, [r["reference"] for r in rows],
                                                       audios), adapter), param.device, param.dtype)
    with torch.no_grad():
        diff = (model.eval()(**batch).logits.float() - again.eval()(**batch).logits.float()).abs().max().item()
    exact = next(model.parameters()).device.type == "cpu"  # on a GPU, kernels may round differently run to run
    c.check(family, "save + reload: identical greedy outputs and logits", same and diff <= (0.0 if exact else 1e-2),
            f"max |dlogit| {diff}")


def grpo_trainer(root: Path, cfg: Any, init: Path) -> Any:
    from steps.data.splits import load_split, training_view
    from steps.modeling.loading import apply_finetune_switches, load_model_and_processor
    from steps.training.grpo_trainer import build_trainer

    model, processor = load_model_and_processor(init, cfg.model)
    model = apply_finetune_switches(model, cfg.model)
    train = training_view(load_split(run_paths(root).prepared, TASK, "train"))
    validation = training_view(load_split(run_paths(root).prepared, TASK, "validation"), 4)
    trainer = build_trainer(cfg, "grpo", model, processor, train, validation, root / "work", root, [])
    trainer.model.train()
    return trainer


def check_grpo_passes(c: Checks, family: str, root: Path, cfg: Any) -> None:
    import torch

    from steps.modeling.families import get_submodule
    from tests.tiny_granite import lora_calls, token_logps, without_adapter

    trainer = grpo_trainer(root, cfg, root / "models" / "base")
    model = trainer.model
    encoder = get_submodule(model, trainer.adapter.encoder)
    calls: list[bool] = []
    hooks = [encoder.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))]
    log: list[tuple[str, bool, bool]] = []
    granite = family == "granite_speech"
    if granite:
        hooks += lora_calls(model, log, "policy") + lora_calls(trainer.ref_model, log, "reference")
    rows = [dict(r) for r in trainer.train_dataset.select([0, 1]) for _ in range(trainer.num_generations)]
    start = time.perf_counter()
    batch = trainer._prepare_inputs(rows)
    synchronize()
    rollout = time.perf_counter() - start
    batch["advantages"] = torch.linspace(-1.0, 1.0, len(rows), device=batch["prompt_ids"].device)
    model.zero_grad()
    start = time.perf_counter()
    trainer.compute_loss(model, batch).backward()
    synchronize()
    loss_time = time.perf_counter() - start
    for hook in hooks:
        hook.remove()
    c.time(family, "grpo rollouts + reference", rollout, 1, "8 completions x 16 tokens, generate() + ref log-probs")
    c.time(family, "grpo loss + backward", loss_time, 1, "8 rows")
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    c.check(family, "grpo: rollouts without grad, loss pass runs the encoder with grad, which gets a gradient",
            calls[0] is False and calls[-1] is True and any(g.abs().sum() > 0 for g in grads), f"calls {calls}")
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    keys = trainer.adapter.feature_keys
    with torch.no_grad():
        real, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, width, **{k: batch[k] for k in keys})
        swapped, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, width,
                                                                   **{k: batch[k].flip(0) for k in keys})
        again, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, width, **{k: batch[k] for k in keys})
    tokens = batch["completion_mask"].bool()
    noise = (real - again)[tokens].abs().max().item()
    tolerance = 0.0 if ids.device.type == "cpu" else 1e-2  # bit-equal on CPU; kernels may round differently on GPU
    c.check(family, "grpo: swapped audio changes the log-probs; two passes agree (no dropout)",
            not torch.allclose(real[tokens], swapped[tokens]) and noise <= tolerance,
            f"max |swap diff| {(real - swapped)[tokens].abs().max().item():.3g}, between passes {noise:.3g}")
    if not granite:
        return
    tags = {(tag, grad) for tag, _, grad in log}
    c.check(family, "grpo: the audio LoRA is applied in rollout, reference and loss passes",
            tags == {("policy", False), ("reference", False), ("policy", True)} and all(a for _, a, _ in log),
            f"{len(log)} adapted-layer calls")
    from steps.modeling.loading import load_model_and_processor

    off_dir = without_adapter(root / "models" / "base", root / "models" / "base_adapter_off")
    off = load_model_and_processor(off_dir, cfg.model)[0].train(trainer.ref_model.training)
    audio = {k: batch[k] for k in keys}
    with_ref = token_logps(trainer.ref_model, ids, mask, width, audio)
    without = token_logps(off, ids, mask, width, audio)
    ref_ok = torch.allclose(with_ref[tokens], batch["ref_per_token_logps"][tokens].float(), atol=2e-2)
    gap = (with_ref[tokens] - without[tokens]).abs().max().item()
    c.check(family, "grpo: reference log-probs are the adapter's, not the adapter-off model's", ref_ok and gap > 1e-2,
            f"max |adapter on - off| {gap:.3g}")


def check_grpo_run(c: Checks, family: str, root: Path, cfg: Any, init: Path) -> Path:
    from steps.training.grpo_trainer import run_grpo

    paths = run_paths(root)
    out = paths.model("grpo", TASK)
    assert paths.start_model(cfg, "grpo", TASK) == init, "grpo.init picks the start model"
    start = time.perf_counter()
    result = run_grpo(cfg, "grpo", TASK, paths)
    synchronize()
    wall = time.perf_counter() - start
    seconds, steps = summary_time(root / "metrics" / "grpo" / f"{TASK}.train.json")
    c.time(family, "grpo", seconds, steps, f"optimiser step (2 prompts x 4); stage wall {wall:.1f} s")
    changed = moved(init, out)
    parts = part_keys(family)
    ok = result.global_step == 2 and any(k.startswith(parts["encoder"]) for k in changed) and \
        any(k.startswith(parts["llm"]) for k in changed)
    if family == "granite_speech":
        ok = ok and bool(moved(init, out, "adapter_model.safetensors"))
    what = "encoder and LLM" + (" and the audio LoRA" if family == "granite_speech" else "")
    c.check(family, f"grpo: 2 steps move {what}", ok, f"{len(changed)} tensors moved")
    return out


def check_evaluate(c: Checks, family: str, root: Path, cfg: Any, name: str, model_dir: Path) -> None:
    from steps.evaluation.evaluator import run_evaluate

    assert run_paths(root).model(name, TASK) == model_dir
    start = time.perf_counter()
    scores = run_evaluate(cfg, name, TASK, run_paths(root))
    synchronize()
    c.time(family, f"evaluate {name}", time.perf_counter() - start, 1, "8 clips: greedy, 2 sampled, swapped, noisy")
    c.check(family, f"evaluate {name}: finite BLEU, chrF, swapped BLEU",
            all(math.isfinite(scores[k]) for k in ("bleu", "chrf", "bleu_swapped")),
            f"bleu {scores['bleu']:.2f} chrf {scores['chrf']:.2f}")


def check_finetune_modes(c: Checks, family: str, root: Path, device: str, dtype: str, threads: int,
                         rows: list[dict[str, Any]]) -> None:
    from steps.modeling.batches import encode_for_training, model_inputs, to_device
    from steps.modeling.families import adapter_for
    from steps.modeling.loading import apply_finetune_switches, load_model_and_processor

    granite = family == "granite_speech"
    lora = {"r": 8, "alpha": 4, "target_modules": ["q_proj", "v_proj"]} if granite else {}
    for mode, expected in (("full", {"lora", "llm", "projector"} if granite else {"llm", "projector"}),
                           ("lora", {"lora", "projector"})):
        cfg = config(device, dtype, threads, finetune=mode, freeze_audio_encoder=True, lora=lora)
        model, processor = load_model_and_processor(root / "models" / "base", cfg.model)
        model = apply_finetune_switches(model, cfg.model)
        adapter = adapter_for(model)
        param = next(p for p in model.parameters())
        batch = encode_for_training(processor, adapter, [r["prompt"] for r in rows], [r["reference"] for r in rows],
                                    [r["audio"] for r in rows])
        model.train()(**to_device(model_inputs(batch, adapter), param.device, param.dtype)).loss.backward()

        def group(name: str) -> str:
            if ".lora_" in name:
                return "lora"
            name = name.removeprefix("base_model.model.").removeprefix("model.")  # peft's and the family's wrappers
            for part, prefixes in (("encoder", ("encoder.", "audio_tower.")),
                                   ("projector", ("projector.", "multi_modal_projector.")),
                                   ("llm", ("language_model.", "lm_head."))):
                if name.startswith(prefixes):
                    return part
            return name

        got = {group(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        c.check(family, f"finetune {mode} (encoder frozen): gradients reach exactly {sorted(expected)}",
                got == expected, f"got {sorted(got)}")


def check_mel_stub(c: Checks) -> None:
    """tests/torchaudio_stub.py against torchaudio (where it imports): the CPU tests' mel spectrogram is the real
    one."""
    import torch

    from tests.torchaudio_stub import MelSpectrogram, torchaudio_imports

    if not torchaudio_imports():
        print("  (torchaudio does not import here: the stand-in is in use, not compared)", flush=True)
        return
    import torchaudio

    wave = torch.randn(2, RATE) * 0.1
    kwargs = {"sample_rate": RATE, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 80}
    ref, ours = torchaudio.transforms.MelSpectrogram(**kwargs)(wave), MelSpectrogram(**kwargs)(wave)
    rel = ((ref - ours).abs().max() / ref.abs().max()).item()
    c.check("granite_speech", "torchaudio_stub's mel spectrogram equals torchaudio's", rel < 1e-4, f"max rel {rel:.2e}")


# --- main -------------------------------------------------------------------------------------------------------------


def run_family(c: Checks, family: str, root: Path, device: str, dtype: str, threads: int,
               rows: list[dict[str, Any]]) -> None:
    print(f"== {family}", flush=True)
    start = time.perf_counter()
    workspace(family, root, rows)
    c.time(family, "build tiny model", time.perf_counter() - start, 1, "tokenizer, model, save")
    cfg = config(device, dtype, threads)
    sft = c.run(family, "sft", lambda: check_sft(c, family, root, cfg, rows))
    if sft is not None:
        c.run(family, "save + reload", lambda: check_reload(c, family, sft, cfg, rows[:4], root / "models" / "reload"))
    c.run(family, "grpo passes", lambda: check_grpo_passes(c, family, root, cfg))
    grpo = c.run(family, "grpo", lambda: check_grpo_run(c, family, root, cfg, root / "models" / "base"))
    for name, folder in (("base", root / "models" / "base"), ("grpo", grpo)):
        if folder is not None:
            c.run(family, f"evaluate {name}", lambda n=name, f=folder: check_evaluate(c, family, root, cfg, n, f))
    c.run(family, "finetune modes", lambda: check_finetune_modes(c, family, root, device, dtype, threads, rows[:4]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 on cuda, float32 on cpu by default")
    parser.add_argument("--out", default=os.environ.get("OUT") or None, help="where gpu_check.json goes")
    parser.add_argument("--families", default="granite_speech,qwen2_audio")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    refuse_imports()
    os.environ.update({"SPEECH_GRPO_TRACKING": "off", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    sys.path.insert(0, str(REPO))
    import torch
    import transformers

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu", file=sys.stderr)
        return 2
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__}
    for name in ("trl", "peft", "datasets", "accelerate"):
        versions[name] = __import__(name).__version__
    print(f"gpu_check on {args.device} ({device_name}), {dtype}; {versions}", flush=True)
    from tests.torchaudio_stub import granite_extractor_backend

    checks = Checks()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp, granite_extractor_backend() as backend:
        print(f"Granite feature extractor on: {backend}", flush=True)
        check_mel_stub(checks)
        rows = synthetic_rows()
        for family in args.families.split(","):
            run_family(checks, family, Path(tmp) / family, args.device, dtype, args.threads, rows)
    total = time.perf_counter() - start
    blocked = sorted(m for m, module in sys.modules.items() if m.split(".")[0] in BLOCKED and module is not None)
    checks.check("all", "none of the modules the GPU image lacks was imported", not blocked, ", ".join(blocked))

    print(f"\n{'family':16} {'stage':28} {'s/step':>9} {'steps':>6}  what")
    for t in checks.times:
        print(f"{t['family']:16} {t['stage']:28} {t['per_step']:9.3f} {t['steps']:6d}  {t['what']}")
    failed = [r for r in checks.results if not r["ok"]]
    print(f"\n{len(checks.results) - len(failed)} checks passed, {len(failed)} failed; {total:.1f} s in all")
    imported = sorted({m.split(".")[0] for m, module in sys.modules.items() if module is not None}
                      - set(sys.stdlib_module_names) - {"steps", "tests", "__main__"})
    report = {"device": args.device, "device_name": device_name, "dtype": dtype, "versions": versions,
              "extractor_backend": backend, "seconds": round(total, 1), "checks": checks.results,
              "times": checks.times, "imported": imported}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
