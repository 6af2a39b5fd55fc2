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
prompt, as it does for real users.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from monitor.backends import next_token
from monitor.backends.base import (
    BackendInfo,
    GenerationRequest,
    LoglikelihoodRequest,
    RollingResult,
    cut_at_stops,
)
from monitor.backends.endpoint import Endpoint
from monitor.backends.tokens import rolling_windows, split_pair
from monitor.errors import BackendError, MissingExtra

_MAX_LENGTH_CAP = 2048
_TOKEN_ID_PREFIX = "token_id:"
_LOGPROB_SLACK = 1e-4  # a log-probability above this is not a probability
_ALIGNMENT_PROMPT = "The capital of France is"
_GENERATION_STILL_RUNS = "generation suites can"
_NO_LOGLIKELIHOOD = f"log-likelihood suites cannot be measured on this server; {_GENERATION_STILL_RUNS}"


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def prefix_token(self) -> int: ...


class LocalTokenizer:
    """A local copy of the served model's tokenizer: fast, exact, and no torch or transformers.

    Reads `tokenizer.json` with the `tokenizers` library (what transformers' fast tokenizers run
    on; loading it takes 0.1 s where transformers takes 4 s), and the start token from
    `tokenizer_config.json`. A folder with no `tokenizer.json` goes through transformers.
    """

    def __init__(self, path: str) -> None:
        folder = Path(path)
        self._cached = lru_cache(maxsize=4096)(self._encode)
        self._fast: Any = None
        self._slow: Any = None
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._prefix = self._configured_prefix(folder)
        else:
            self._slow = _transformers_tokenizer(path)
            bos, eos = self._slow.bos_token_id, self._slow.eos_token_id
            self._prefix = int(bos if bos is not None else eos)

    def _configured_prefix(self, folder: Path) -> int:
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        for key in ("bos_token", "eos_token"):
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            found = self._fast.token_to_id(token) if isinstance(token, str) else None
            if found is not None:
                return int(found)
        raise BackendError(f"{config_file}: names no start or end token to condition on", kind="load")

    def _encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._slow(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        return self._cached(text)

    def prefix_token(self) -> int:
        return self._prefix


def _transformers_tokenizer(path: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingExtra("transformers", "model") from exc
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot load the tokenizer from {path}: {exc}", kind="load") from exc


class ServerTokenizer:
    """The server's tokenizer over HTTP (vLLM `/tokenize`, llama.cpp `/extras/tokenize`), for
    when no local copy of the tokenizer is at hand. One request per distinct text."""

    def __init__(self, endpoint: Endpoint, model: str, prefix_token: int | None = None) -> None:
        self.endpoint = endpoint
        self.model = model
        self._prefix = prefix_token
        self._cached = lru_cache(maxsize=4096)(self._encode)

    def _encode(self, text: str, special: bool = False) -> list[int]:
        try:
            body = self.endpoint.post("/tokenize", {"model": self.model, "prompt": text,
                                                    "add_special_tokens": special}, root=True)
        except BackendError as exc:
            if exc.kind != "not_found":
                raise
            body = self.endpoint.post("/extras/tokenize", {"input": text}, root=True)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise BackendError(f"{self.endpoint.root}: tokenize returned no token ids",
                               kind="invalid_response")
        return tokens

    def encode(self, text: str) -> list[int]:
        return self._cached(text)

    def prefix_token(self) -> int:
        if self._prefix is None:
            special = self._encode("", True)
            if not special:
                raise BackendError(
                    "the server's tokenizer adds no start token, so rolling log-likelihood has "
                    "nothing to condition the first token on: set backend.tokenizer to a local "
                    "copy of the tokenizer, or backend.prefix_token", kind="config")
            self._prefix = special[0]
        return self._prefix


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
        self._max_length: int | None = None
        self._aligned = False
        self.next_token_scoring: bool | None = None  # None: not yet known for this server

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
            for continuation in request.continuations:
                context, cont = split_pair(self.tokenizer.encode, prefix, request.context, continuation)
                if not cont:
                    raise BackendError("a continuation encodes to no tokens", kind="tokenization")
                pairs.append((context[-(self.max_length - len(cont)) :], cont))
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
        batches = [prompts[i : i + self.batch_size] for i in range(0, len(prompts), self.batch_size)]
        scored = self.endpoint.map(self._score_batch, batches)
        return [value for batch in scored for value in batch]

    def _score_batch(self, batch: list[tuple[list[int], int]]) -> list[float]:
        body = self._completions([ids for ids, _ in batch])
        choices = _choices(body, len(batch), self.endpoint.base_url)
        return [self._summed(choice, ids, start) for choice, (ids, start) in zip(choices, batch, strict=True)]

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
                f"this server; {_GENERATION_STILL_RUNS}", kind="unsupported") from exc

    def _check_alignment(self) -> None:
        """Ask the server the same question two ways before trusting its echoed log-probabilities.

        The log-probability of the token it generates after a prompt must equal the one it echoes
        for that token when the token is part of the prompt. A server that echoes values shifted
        by one position (seen in llama-cpp-python) fails this, and nothing it echoes is scored.
        """
        if self._aligned:
            return
        generated = self._text_completion(_ALIGNMENT_PROMPT, echo=False)
        token, expected = _first(generated, "tokens"), _first(generated, "token_logprobs")
        if not isinstance(token, str) or not isinstance(expected, int | float):
            raise BackendError(f"{self.endpoint.base_url} returns no log-probabilities for generated "
                               f"tokens: {_NO_LOGLIKELIHOOD}", kind="unsupported")
        echoed = self._text_completion(_ALIGNMENT_PROMPT + token, echo=True)
        offsets, values = echoed.get("text_offset"), echoed.get("token_logprobs")
        at = len(_ALIGNMENT_PROMPT)
        if not isinstance(offsets, list) or not isinstance(values, list) or at not in offsets:
            raise BackendError(f"{self.endpoint.base_url} does not echo prompt log-probabilities with "
                               f"text offsets: {_NO_LOGLIKELIHOOD}", kind="unsupported")
        found = values[offsets.index(at)]
        if not isinstance(found, int | float) or abs(found - expected) > 0.05 + 0.01 * abs(expected):
            raise BackendError(
                f"{self.endpoint.base_url} echoes prompt log-probabilities that disagree with its own "
                f"generation: {token!r} after {_ALIGNMENT_PROMPT!r} is {expected:.3f} when generated and "
                f"{found} when echoed (shifted by one token?): {_NO_LOGLIKELIHOOD}", kind="invalid_response")
        self._aligned = True

    def _text_completion(self, prompt: str, *, echo: bool) -> dict[str, Any]:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": 1, "echo": echo,
                   "logprobs": 1, "temperature": 0.0}
        try:
            body = self.endpoint.post("/completions", payload)
        except BackendError as exc:
            if exc.kind == "not_found" and self._serves_model():
                raise BackendError(f"{self.endpoint.base_url} has no /completions endpoint (chat only): "
                                   f"{_NO_LOGLIKELIHOOD}", kind="unsupported") from exc
            raise
        logprobs = _choices(body, 1, self.endpoint.base_url)[0].get("logprobs")
        return logprobs if isinstance(logprobs, dict) else {}

    def _serves_model(self) -> bool:
        """Tells a missing route (404 for any model) from a model the server does not know."""
        try:
            listed = self.endpoint.get("/models").get("data") or []
        except BackendError:
            return False
        return any(isinstance(m, dict) and m.get("id") == self.model for m in listed)

    def _summed(self, choice: dict[str, Any], ids: list[int], start: int) -> float:
        values = prompt_logprobs(choice, ids, self.endpoint.base_url)
        return math.fsum(values[start:])

    @property
    def max_length(self) -> int:
        """The served context length (vLLM reports `max_model_len`), capped like in-process."""
        if self._max_length is None:
            found = _MAX_LENGTH_CAP
            try:
                models = self.endpoint.get("/models").get("data") or []
                found = next((int(m["max_model_len"]) for m in models
                              if m.get("id") == self.model and m.get("max_model_len")), _MAX_LENGTH_CAP)
            except (BackendError, TypeError, ValueError, KeyError):
                pass
            self._max_length = min(found, _MAX_LENGTH_CAP)
        return self._max_length

    # -- generation -----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return self.endpoint.map(self._generate_one, list(requests))

    def _generate_one(self, request: GenerationRequest) -> str:
        system = [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
        payload: dict[str, Any] = {
            "model": self.model, "messages": [*system, {"role": "user", "content": request.prompt}],
            "max_tokens": request.max_new_tokens, "temperature": 0.0, "seed": 0,
        }
        if request.until:
            payload["stop"] = list(request.until)
        body = self.endpoint.post("/chat/completions", payload)
        content = _choices(body, 1, self.endpoint.base_url)[0].get("message", {}).get("content")
        if not isinstance(content, str):
            raise BackendError(f"{self.endpoint.base_url}: a chat completion has no text content",
                               kind="invalid_response")
        return cut_at_stops(content, request.until).strip()


def _first(block: dict[str, Any], key: str) -> Any:
    values = block.get(key)
    return values[0] if isinstance(values, list) and values else None


def _choices(body: dict[str, Any], expected: int, where: str) -> list[dict[str, Any]]:
    """The answer's choices in prompt order, exactly one per prompt."""
    choices = body.get("choices")
    if not isinstance(choices, list) or len(choices) != expected:
        got = len(choices) if isinstance(choices, list) else "no"
        raise BackendError(f"{where}: sent {expected} prompts, got {got} choices back",
                           kind="invalid_response")
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
        if [c["index"] for c in choices] != list(range(expected)):
            raise BackendError(f"{where}: choice indexes do not match the prompts", kind="invalid_response")
    return choices


def prompt_logprobs(choice: dict[str, Any], ids: list[int], where: str) -> list[float]:
    """Per-token log-probabilities of the prompt `ids`, checked against what was sent.

    Position 0 has no context, so a faithful server gives it no log-probability (None); a
    number there means the values are shifted by one token. Returns 0.0 for position 0.
    """
    block = choice.get("logprobs")
    block = block if isinstance(block, dict) else {}
    values = block.get("token_logprobs")
    if not isinstance(values, list):
        raise BackendError(
            f"{where} does not return prompt log-probabilities (echo + logprobs): {_NO_LOGLIKELIHOOD}",
            kind="unsupported")
    if len(values) < len(ids):
        raise BackendError(f"{where}: {len(values)} log-probabilities for a prompt of {len(ids)} tokens",
                           kind="invalid_response")
    _check_tokens(block.get("tokens"), ids, where)
    if values[0] is not None:
        raise BackendError(f"{where}: the first prompt token has a log-probability ({values[0]}), so the "
                           "echoed log-probabilities are shifted by one token", kind="invalid_response")
    out = [0.0]
    for position, value in enumerate(values[1 : len(ids)], start=1):
        if not isinstance(value, int | float) or not math.isfinite(value) or value > _LOGPROB_SLACK:
            raise BackendError(f"{where}: log-probability {value!r} at prompt token {position} is not a "
                               "log-probability", kind="invalid_response")
        out.append(float(value))
    return out


def _check_tokens(tokens: Any, ids: list[int], where: str) -> None:
    """Where the server names the token ids it scored, they must be the ones sent."""
    if not isinstance(tokens, list) or not tokens or not all(
            isinstance(t, str) and t.startswith(_TOKEN_ID_PREFIX) for t in tokens[: len(ids)]):
        return
    echoed = [int(t.removeprefix(_TOKEN_ID_PREFIX)) for t in tokens[: len(ids)]]
    if echoed != ids:
        at = next((i for i, (a, b) in enumerate(zip(echoed, ids, strict=False)) if a != b), len(echoed))
        if at >= len(echoed):
            raise BackendError(f"{where}: {len(echoed)} tokens echoed for a prompt of {len(ids)}",
                               kind="invalid_response")
        raise BackendError(f"{where}: scored token {echoed[at]} at position {at} where {ids[at]} was sent",
                           kind="invalid_response")
