"""Tokens: the boundaries every backend shares, and the tokenizers of served models.

A log-likelihood score is only comparable between the in-process model and a served one if both
score exactly the same continuation tokens after exactly the same context tokens. Both backends
split a (context, continuation) pair and window a long text through these functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from monitor.errors import BackendError, MissingExtra
from monitor.vocabulary import ErrorKind

if TYPE_CHECKING:
    from monitor.probing.backends.endpoint import Endpoint

Encode = Callable[[str], list[int]]


def split_pair(encode: Encode, prefix_token: int, context: str,
               continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's split: trailing spaces move to the continuation, and the
    continuation is what encoding the whole string adds after the context."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = encode(context + continuation)
    context_ids = encode(context) or [prefix_token]
    return context_ids, whole[len(context_ids) :] if context else whole


def fit_context(context: list[int], continuations: list[list[int]], max_length: int) -> list[int]:
    """The tail of the context that leaves room for the longest continuation (lm-evaluation-
    harness keeps the tail too); one cut for all of a question's choices, so they share it."""
    room = max_length - max(len(c) for c in continuations)
    return context[len(context) - room :] if room > 0 else []


def rolling_windows(tokens: list[int], max_length: int) -> list[list[int]]:
    """Disjoint windows of at most `max_length` scored tokens; each window's first token is the
    previous window's last, so every token after the first is scored exactly once."""
    return [tokens[start : start + max_length + 1] for start in range(0, len(tokens) - 1, max_length)]


# -- tokenizers for served models ------------------------------------------------------

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
            self._slow = transformers_tokenizer(path)
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
        raise BackendError(f"{config_file}: names no start or end token to condition on", kind=ErrorKind.LOAD)

    def _encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._slow(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        return self._cached(text)

    def prefix_token(self) -> int:
        return self._prefix


def transformers_tokenizer(path: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingExtra("transformers", "model") from exc
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot load the tokenizer from {path}: {exc}", kind=ErrorKind.LOAD) from exc


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
                               kind=ErrorKind.INVALID_RESPONSE)
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
                    "copy of the tokenizer, or backend.prefix_token", kind=ErrorKind.CONFIG)
            self._prefix = special[0]
        return self._prefix
