"""Training the recovery LoRA: merged weights written whole or not at all, GPU memory handed back."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monitor.actions.retrain import sft as finetune
from monitor.actions.retrain.plan import Pair
from monitor.policy.schema import RetrainSpec

Steps = Callable[[int, str], Callable[[int, float], None]]


def device_for(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def train(weights: Path, pairs: Sequence[Pair], spec: RetrainSpec, out: Path, device: str,
          steps: Steps | None = None, dtype_name: str = "auto") -> str:
    """LoRA on `weights`; writes merged weights to `out` (and the adapter to `out/adapter`).
    Nothing is left behind if it breaks part way, and GPU memory is handed back either way."""
    import torch

    partial = out.with_name(out.name + ".partial")
    try:
        return _train(weights, pairs, spec, out, partial, device, steps, _dtype(device, dtype_name))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def train_on(weights: Path, pairs: Sequence[Pair], spec: RetrainSpec, out: Path, requested: str,
             dtype_name: str = "auto") -> str:
    """`train` where it runs (a Ray worker): the device is the worker's, resolved there, and the
    summary names the node, for the audit row."""
    from monitor.probing.remote import node_id

    done = train(weights, pairs, spec, out, device_for(requested), None, dtype_name)
    return f"{done}, on Ray node {node_id()}"


def _dtype(device: str, name: str) -> Any:
    """The policy's dtype, else bf16 on a GPU that has it and float32 elsewhere."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32


def _train(weights: Path, pairs: Sequence[Pair], spec: RetrainSpec, out: Path, partial: Path, device: str,
           steps: Steps | None, dtype: Any) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    began = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(weights)
    base: Any = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
    base = base.to(device)
    lora = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules="all-linear", lora_dropout=0.0,
                      task_type="CAUSAL_LM")
    torch.manual_seed(spec.seed)  # the LoRA's initial weights: the same inputs give the same version
    model = get_peft_model(base, lora)
    settings = finetune.TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size,
                                      learning_rate=spec.learning_rate, seed=spec.seed)
    advance = steps(finetune.steps_for(pairs, settings), "recovery LoRA") if steps else None
    loss = finetune.fine_tune(model, tokenizer, pairs, settings, advance)
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial / "adapter"))
    finetune.save(model.merge_and_unload(), tokenizer, partial)
    partial.rename(out)  # config.json present under `out` only once everything is written
    return (f"LoRA r{spec.rank} on {len(pairs)} examples, {spec.epochs} epochs on {device}, "
            f"{time.monotonic() - began:.0f} s, last loss {loss:.3f}")
