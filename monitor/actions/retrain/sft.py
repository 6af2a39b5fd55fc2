"""Supervised fine-tuning on chat pairs: how the demo makes a forgetful v2 from v1.

A plain torch loop rather than transformers' Trainer: it is thirty lines, shows a rich progress
bar, and needs no extra dependency. Loss is taken on the assistant's tokens only, as chat
fine-tunes usually are.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Pair = tuple[str, str]
Advance = Callable[[int, float], None]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 5e-5
    seed: int = 0
    max_length: int = 256


def chat_example(tokenizer: Any, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels for one exchange; the prompt and template tokens are masked (-100)."""
    messages = [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}],
                                         tokenize=False)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = [-100] * len(head_ids) + ids[len(head_ids) :]
    return ids, labels[: len(ids)]


def steps_for(pairs: Sequence[Pair], settings: TrainSettings) -> int:
    return settings.epochs * -(-len(pairs) // settings.batch_size)


def fine_tune(model: Any, tokenizer: Any, pairs: Sequence[Pair], settings: TrainSettings,
              advance: Advance | None = None) -> float:
    """Train `model` in place on `pairs`; returns the last batch's loss."""
    import torch

    torch.manual_seed(settings.seed)
    examples = [chat_example(tokenizer, p, a, settings.max_length) for p, a in pairs]
    # Only what trains: a LoRA leaves the base weights frozen.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=settings.learning_rate)
    order = random.Random(settings.seed)
    model.train()
    loss_value = float("nan")
    for _ in range(settings.epochs):
        shuffled = examples[:]
        order.shuffle(shuffled)
        for start in range(0, len(shuffled), settings.batch_size):
            loss = _step(model, optimizer, shuffled[start : start + settings.batch_size],
                         tokenizer.pad_token_id)
            loss_value = float(loss)
            if advance:
                advance(1, loss_value)
    model.eval()
    return loss_value


def _step(model: Any, optimizer: Any, batch: list[tuple[list[int], list[int]]], pad: int) -> Any:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, : len(targets)] = torch.tensor(targets)
        mask[row, : len(tokens)] = 1
    device = next(model.parameters()).device
    loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def save(model: Any, tokenizer: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
