"""The one small interface every model backend implements.

Three calls, named as lm-evaluation-harness names them. A backend raises `BackendError` when
the measurement itself breaks; the prober records that as an error on the affected items, so
a broken endpoint can never look like a model that forgot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score every continuation after one shared context (a multiple-choice question)."""

    context: str
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class GenerationRequest:
    """One user turn, rendered through the model's chat template, answered greedily."""

    prompt: str
    max_new_tokens: int = 32
    until: tuple[str, ...] = ()
    system_prompt: str | None = None


@dataclass(frozen=True)
class OpeningRequest:
    """The first `tokens` tokens of `answer`, scored as the model's reply to one user turn asked
    exactly as `GenerationRequest` asks it (the chat template, with the system prompt)."""

    prompt: str
    answer: str
    tokens: int
    system_prompt: str | None = None


@dataclass(frozen=True)
class RollingResult:
    logprob: float
    tokens: int


@dataclass(frozen=True)
class BackendInfo:
    """What a score was measured on: scores are comparable only within the same info."""

    kind: str
    model: str
    device: str
    dtype: str


@runtime_checkable
class Backend(Protocol):
    """A model to measure. `batch_size` is how many requests go to the model at once (calibration
    changes it to see which items flip); `chunk_size` how many items the prober hands over per
    call, which is also how often progress moves; `close` releases connections or memory."""

    batch_size: int

    @property
    def info(self) -> BackendInfo: ...

    @property
    def chunk_size(self) -> int: ...

    def close(self) -> None: ...

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        """Summed log-probability of each continuation given its context."""
        ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[RollingResult]:
        """Summed log-probability of each whole text, and how many tokens it had."""
        ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy answers, cut at the first stop string."""
        ...


@runtime_checkable
class OpeningScorer(Protocol):
    """A backend that can say how likely a given answer's opening is after a chat prompt: what
    safety depth needs (`monitor.probing.depth`). Not every backend can, so it is its own
    interface; one that cannot is simply not measured for depth."""

    def opening_logprobs(self, requests: Sequence[OpeningRequest]) -> list[list[float]]:
        """Per-token log-probabilities of each answer's first `tokens` tokens.

        Example: the answer "I can't help with that." cut to 3 tokens might give
        [-0.9, -0.4, -1.2] ("I", " can", "'t"): each token given the chat prompt and the
        tokens before it. A list is shorter than `tokens` only when the answer is.
        """
        ...


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    positions = [text.find(s) for s in until if s and s in text]
    return text[: min(positions)] if positions else text
