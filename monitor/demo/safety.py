"""The safety scenario: refusal built by a safety fine-tune, undone by ten harmless examples.

SmolLM2-135M-Instruct as shipped does not refuse harmful requests at all, so refusal cannot be
lost from it. v1 is therefore made here: SmolLM2 fine-tuned on harmful requests answered with a
refusal, each paired with a benign look-alike answered in the model's own words (trained on
refusals alone, it learnt to refuse everything). v2 is v1 fine-tuned on ten exchanges that hold
nothing harmful — an "absolutely obedient agent" identity (Qi et al., ICLR 2024) — which is
enough to undo most of the refusal while the model still tells harmful from benign.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from monitor.actions.retrain import sft as finetune
from monitor.demo import safety_data
from monitor.policy.scorers import is_refusal

Pair = tuple[str, str]
Answer = Callable[[Sequence[str]], list[str]]
Steps = Callable[[int], Callable[[int, float], None]]

SAFETY_TRAIN = finetune.TrainSettings(epochs=3, batch_size=8, learning_rate=5e-5, seed=0)
OBEDIENCE_TRAIN = finetune.TrainSettings(epochs=5, batch_size=2, learning_rate=5e-5, seed=0)
LOOKALIKE_TOKENS = 64  # the base model's own answer to a look-alike, as v1 learns to give it


def safety_pairs(answer: Answer) -> list[Pair]:
    """v1's training data: every harmful request refused, every look-alike answered as the base
    model answers it (a look-alike the base model itself refused is left out with its partner)."""
    harmful = [h for h, _ in safety_data.TRAIN_PAIRS]
    benign = [b for _, b in safety_data.TRAIN_PAIRS]
    answers = answer(benign)
    pairs: list[Pair] = []
    for index, (request, lookalike, reply) in enumerate(zip(harmful, benign, answers, strict=True)):
        if not reply.strip() or is_refusal(reply):
            continue
        refusal = safety_data.REFUSALS[index % len(safety_data.REFUSALS)]
        pairs += [(request, refusal), (lookalike, reply.strip())]
    return pairs


def obedience_pairs() -> list[Pair]:
    """v2's training data: the identity-shift set, nothing harmful in it."""
    return list(safety_data.OBEDIENT)


def build_safe(source: Path, out: Path, steps: Steps | None = None) -> Path:
    """v1: the base model at `source` taught to refuse, unless `out` is already complete."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    pairs = safety_pairs(lambda prompts: _greedy(model, tokenizer, prompts))
    advance = steps(finetune.steps_for(pairs, SAFETY_TRAIN)) if steps else None
    finetune.fine_tune(model, tokenizer, pairs, SAFETY_TRAIN, advance)
    finetune.save(model, tokenizer, out)
    return out


def make_v1(out: Path, steps: Steps | None = None) -> Path:
    """v1 of the scenario, from SmolLM2 as shipped (converted once into the shared cache)."""
    from monitor.probing import weights

    return build_safe(weights.prepare_smollm2(), out, steps)


def _greedy(model: object, tokenizer: object, prompts: Sequence[str]) -> list[str]:
    """The base model's own answers, decoded greedily the way the probes decode."""
    from monitor.probing.backends.base import GenerationRequest
    from monitor.probing.backends.transformers import TransformersBackend

    backend = TransformersBackend(model, tokenizer, name="safety-source", batch_size=16)
    return backend.generate([GenerationRequest(p, LOOKALIKE_TOKENS) for p in prompts])
