"""Probe a model as it is served, through an OpenAI-compatible API (vLLM, llama.cpp, TGI).

Log-likelihoods come from `/v1/completions`, with prompts sent as token ids split between context
and continuation exactly as the in-process backend splits them (`tokens.split_pair`), so on the
same weights the two give the same scores. Multiple choice is scored as next-token predictions
where the server can say the probability of named tokens (vLLM; see `next_token`), else, like
rolling log-likelihood, from the prompt's echoed log-probabilities. Many prompts go in one request.

Every answer is checked before it is scored. Echoed values: one log-probability per prompt token,
none for the first (which has no context), exactly the tokens that were sent where the server
names them (vLLM's `return_tokens_as_token_ids`), and agreement with the server's own generation
(`_check_alignment`). A shifted or short answer is a measurement error, never a score.
Generation goes through `/v1/chat/completions`, so the server's own chat template renders the
prompt, as it does for real users; an answer's opening (safety depth) is scored after the same
rendering, asked of the server (`chat`), and read from echoed log-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monitor.errors import BackendError
from monitor.probing.backends import answers, next_token
from monitor.probing.backends.base import (
    BackendInfo,
    GenerationRequest,
    LoglikelihoodRequest,
    OpeningRequest,
    RollingResult,
    cut_at_stops,
)
from monitor.probing.backends.chat import ChatTemplate, messages
from monitor.probing.backends.endpoint import Endpoint
from monitor.probing.backends.tokens import Tokenizer, fit_context, rolling_windows, split_pair
from monitor.vocabulary import ErrorKind

_MAX_LENGTH_CAP = 2048
_ALIGNMENT_PROMPT = "The capital of France is"


class OpenAIBackend:
    """One served model name (a base model or a LoRA adapter) on one endpoint."""

    def __init__(self, endpoint: Endpoint, tokenizer: Tokenizer, *, model: str, batch_size: int = 16,
                 dtype: str = "auto") -> None:
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self.model = model
        self.batch_size = batch_size
        self._info = BackendInfo(kind="openai", model=f"{model}@{endpoint.base_url}", device="remote",
                                 dtype=dtype)
        self._listed: list[dict[str, Any]] | None = None
        self._aligned = False
        self.next_token_scoring: bool | None = None  # None: not yet known for this server
        self._chat = ChatTemplate(endpoint, tokenizer)

    @property
    def info(self) -> BackendInfo:
        return self._info

    def close(self) -> None:
        self.endpoint.close()

    @property
    def chunk_size(self) -> int:
        """Items per prober chunk: enough to keep every concurrent request slot busy."""
        return self.batch_size * self.endpoint.concurrency

    # -- log-likelihood -------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        """Next-token scoring where the server offers it (vLLM), else echoed prompt log-probs."""
        prefix = self.tokenizer.prefix_token()
        pairs: list[tuple[list[int], list[int]]] = []
        for request in requests:
            split = [split_pair(self.tokenizer.encode, prefix, request.context, continuation)
                     for continuation in request.continuations]
            conts = [cont for _, cont in split]
            if not all(conts):
                raise BackendError("a continuation encodes to no tokens", kind=ErrorKind.TOKENIZATION)
            context = fit_context(split[0][0], conts, self.max_length)
            pairs += [(context, cont) for cont in conts]
        flat = iter(self._score_pairs(pairs))
        return [[next(flat) for _ in request.continuations] for request in requests]

    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        self._check_alignment()  # a server whose log-probabilities disagree gets no trust at all
        if self.next_token_scoring is not False:
            try:
                scores = next_token.score(
                    pairs, model=self.model, post=lambda p: self.endpoint.post("/completions", p),
                    map_=self.endpoint.map, batch_size=self.batch_size, where=self.endpoint.base_url)
            except next_token.NotSupported:
                self.next_token_scoring = False
            else:
                self.next_token_scoring = True
                return scores
        return self._score([([*context, *cont], len(context)) for context, cont in pairs])

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[RollingResult]:
        self._check_alignment()
        prefix = self.tokenizer.prefix_token()
        owners: list[int] = []
        prompts: list[tuple[list[int], int]] = []
        lengths: list[int] = []
        for index, text in enumerate(texts):
            tokens = [prefix, *self.tokenizer.encode(text)]
            lengths.append(len(tokens) - 1)
            for window in rolling_windows(tokens, self.max_length):
                owners.append(index)
                prompts.append((window, 1))
        totals = [0.0] * len(texts)
        for owner, value in zip(owners, self._score(prompts), strict=True):
            totals[owner] += value
        return [RollingResult(total, length) for total, length in zip(totals, lengths, strict=True)]

    def _score(self, prompts: list[tuple[list[int], int]]) -> list[float]:
        """Sum of log-probabilities of each prompt's tokens from its `start` on."""
        return [math.fsum(values) for values in self._token_logprobs(prompts)]

    def _token_logprobs(self, prompts: list[tuple[list[int], int]]) -> list[list[float]]:
        """Echoed log-probabilities of each prompt's tokens from its `start` on."""
        batches = [prompts[i : i + self.batch_size] for i in range(0, len(prompts), self.batch_size)]
        scored = self.endpoint.map(self._score_batch, batches)
        return [values for batch in scored for values in batch]

    def _score_batch(self, batch: list[tuple[list[int], int]]) -> list[list[float]]:
        body = self._completions([ids for ids, _ in batch])
        choices = answers.choices(body, len(batch), self.endpoint.base_url)
        return [self._echoed_from(choice, ids, start)
                for choice, (ids, start) in zip(choices, batch, strict=True)]

    # -- openings (safety depth) ----------------------------------------------------------

    def opening_logprobs(self, requests: Sequence[OpeningRequest]) -> list[list[float]]:
        """Echoed log-probabilities of each opening after its prompt as the server's own chat
        template renders it (`chat.ChatTemplate`), so scored exactly as users are asked."""
        if not requests:
            return []
        self._check_alignment()
        prompts = self.endpoint.map(self._opening_prompt, list(requests))
        return self._token_logprobs(prompts)

    def _opening_prompt(self, request: OpeningRequest) -> tuple[list[int], int]:
        """The chat prompt's ids and the opening's, and where the opening starts."""
        chat = messages(request.prompt, request.system_prompt)
        context = self._chat.prompt_ids(self.model, chat)
        opening = self.tokenizer.encode(request.answer)[: request.tokens]
        if not opening:
            raise BackendError("an answer encodes to no tokens", kind=ErrorKind.TOKENIZATION)
        context = fit_context(context, [opening], self.max_length)
        return [*context, *opening], len(context)

    def _completions(self, prompts: list[list[int]]) -> dict[str, Any]:
        """One generated token (max_tokens 0 means "no limit" to llama.cpp); it is never scored."""
        payload = {"model": self.model, "prompt": prompts, "max_tokens": 1, "echo": True,
                   "logprobs": 1, "temperature": 0.0, "return_tokens_as_token_ids": True}
        try:
            return self.endpoint.post("/completions", payload)
        except BackendError as exc:
            if exc.kind != "rejected":
                raise
            raise BackendError(
                f"{self.endpoint.base_url} refused a prompt of token ids ({exc}); exact context and "
                "continuation boundaries need them, so log-likelihood suites cannot be measured on "
                f"this server; {answers.GENERATION_STILL_RUNS}", kind=ErrorKind.UNSUPPORTED) from exc

    def _check_alignment(self) -> None:
        """Ask the server the same question two ways before trusting its echoed log-probabilities.

        The log-probability of the token it generates after a prompt must equal the one it echoes
        for that token when the token is part of the prompt. A server that echoes values shifted
        by one position (seen in llama-cpp-python) fails this, and nothing it echoes is scored.
        """
        if self._aligned:
            return
        token, expected = self._generated()
        found = self._echoed(token)
        agrees = isinstance(found, int | float) and abs(found - expected) <= 0.05 + 0.01 * abs(expected)
        if not agrees:
            raise BackendError(
                f"{self.endpoint.base_url} echoes prompt log-probabilities that disagree with its own "
                f"generation: {token!r} after {_ALIGNMENT_PROMPT!r} is {expected:.3f} when generated and "
                f"{found} when echoed (shifted by one token?): {answers.NO_LOGLIKELIHOOD}",
                kind=ErrorKind.INVALID_RESPONSE)
        self._aligned = True

    def _generated(self) -> tuple[str, float]:
        """The token the server generates after the alignment prompt, and its log-probability."""
        generated = self._text_completion(_ALIGNMENT_PROMPT, echo=False)
        token, value = _first(generated, "tokens"), _first(generated, "token_logprobs")
        if not isinstance(token, str) or not isinstance(value, int | float):
            raise BackendError(f"{self.endpoint.base_url} returns no log-probabilities for generated "
                               f"tokens: {answers.NO_LOGLIKELIHOOD}", kind=ErrorKind.UNSUPPORTED)
        return token, answers.logprob(value, self.endpoint.base_url, f"the generated token {token!r}")

    def _echoed(self, token: str) -> Any:
        """What the server echoes as the log-probability of `token` after the alignment prompt."""
        echoed = self._text_completion(_ALIGNMENT_PROMPT + token, echo=True)
        offsets, values = echoed.get("text_offset"), echoed.get("token_logprobs")
        at = len(_ALIGNMENT_PROMPT)
        if not isinstance(offsets, list) or not isinstance(values, list) or at not in offsets:
            raise BackendError(f"{self.endpoint.base_url} does not echo prompt log-probabilities with "
                               f"text offsets: {answers.NO_LOGLIKELIHOOD}", kind=ErrorKind.UNSUPPORTED)
        position = offsets.index(at)
        if position >= len(values):
            raise BackendError(f"{self.endpoint.base_url}: {len(values)} log-probabilities for "
                               f"{len(offsets)} text offsets", kind=ErrorKind.INVALID_RESPONSE)
        return values[position]

    def _text_completion(self, prompt: str, *, echo: bool) -> dict[str, Any]:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": 1, "echo": echo,
                   "logprobs": 1, "temperature": 0.0}
        try:
            body = self.endpoint.post("/completions", payload)
        except BackendError as exc:
            if exc.kind == ErrorKind.NOT_FOUND and self._serves_model():
                raise BackendError(f"{self.endpoint.base_url} has no /completions endpoint (chat only): "
                                   f"{answers.NO_LOGLIKELIHOOD}", kind=ErrorKind.UNSUPPORTED) from exc
            raise
        choice = answers.choices(body, 1, self.endpoint.base_url)[0]
        return answers.logprobs_block(choice, self.endpoint.base_url)

    def _serves_model(self) -> bool:
        """Tells a missing route (404 for any model) from a model the server does not know."""
        return any(m.get("id") == self.model for m in self._models())

    def _echoed_from(self, choice: dict[str, Any], ids: list[int], start: int) -> list[float]:
        return answers.prompt_logprobs(choice, ids, self.endpoint.base_url)[start:]

    @property
    def max_length(self) -> int:
        """The served context length (vLLM reports `max_model_len`), capped like in-process."""
        lengths = [m.get("max_model_len") for m in self._models() if m.get("id") == self.model]
        served = next((n for n in lengths if isinstance(n, int) and n > 0), _MAX_LENGTH_CAP)
        return min(served, _MAX_LENGTH_CAP)

    def _models(self) -> list[dict[str, Any]]:
        """`/models`, asked once: what the server serves (an empty list if it will not say)."""
        if self._listed is None:
            try:
                data = self.endpoint.get("/models").get("data")
            except BackendError:
                data = None
            self._listed = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        return self._listed

    # -- generation -----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return self.endpoint.map(self._generate_one, list(requests))

    def _generate_one(self, request: GenerationRequest) -> str:
        payload: dict[str, Any] = {
            "model": self.model, "messages": messages(request.prompt, request.system_prompt),
            "max_tokens": request.max_new_tokens, "temperature": 0.0, "seed": 0,
        }
        if request.until:
            payload["stop"] = list(request.until)
        body = self.endpoint.post("/chat/completions", payload)
        choice = answers.choices(body, 1, self.endpoint.base_url)[0]
        content = answers.message_content(choice, self.endpoint.base_url)
        return cut_at_stops(content, request.until).strip()


def _first(block: dict[str, Any], key: str) -> Any:
    values = block.get(key)
    return values[0] if isinstance(values, list) and values else None
