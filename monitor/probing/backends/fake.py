"""A scripted backend shipped for tests and dry runs: no model, fully predictable.

It answers from tables keyed by prompt text and can be told to fail, so callers test how they
handle a broken measurement without monkeypatching anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from monitor.errors import BackendError
from monitor.probing.backends.base import (
    BackendInfo,
    GenerationRequest,
    LoglikelihoodRequest,
    OpeningRequest,
    RollingResult,
)
from monitor.vocabulary import ErrorKind


class FakeBackend:
    def __init__(
        self,
        answers: Mapping[str, str] | None = None,
        preferred: Callable[[LoglikelihoodRequest], int] | None = None,
        fail_on: Callable[[str], bool] | None = None,
        name: str = "fake",
        opening: float = -1.0,
    ) -> None:
        self._answers = dict(answers or {})
        self._preferred = preferred or (lambda request: 0)
        self._fail_on = fail_on or (lambda text: False)
        self.opening = opening  # each opening word's log-probability
        self._info = BackendInfo(kind="fake", model=name, device="cpu", dtype="none")
        self.batch_size = 16
        self.closed = False

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def chunk_size(self) -> int:
        return self.batch_size

    def close(self) -> None:
        self.closed = True

    def _check(self, text: str) -> None:
        if self._fail_on(text):
            raise BackendError(f"fake backend told to fail on {text[:40]!r}", kind=ErrorKind.SCRIPTED)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        results = []
        for request in requests:
            self._check(request.context)
            best = self._preferred(request)
            results.append([-1.0 if i == best else -5.0 for i in range(len(request.continuations))])
        return results

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[RollingResult]:
        for text in texts:
            self._check(text)
        return [RollingResult(logprob=-2.0 * len(t.split()), tokens=len(t.split())) for t in texts]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        for request in requests:
            self._check(request.prompt)
        return [self._answers.get(r.prompt, "I don't know.") for r in requests]

    def opening_logprobs(self, requests: Sequence[OpeningRequest]) -> list[list[float]]:
        """`opening` for each of the answer's first `tokens` words (a word is a token here)."""
        for request in requests:
            self._check(request.prompt)
        return [[self.opening] * len(r.answer.split()[: r.tokens]) for r in requests]
