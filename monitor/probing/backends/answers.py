"""Checks on what an OpenAI-compatible server answers, before any of it is scored.

Shared by both ways of reading log-probabilities (echo in `openai`, next-token in
`next_token`) and by generation: a wrong count, a shifted position, a token that was not sent, a
value that is not a log-probability, or any part of the answer of the wrong type (a choice that
is not an object, a token id that is not a number) is a measurement error (`invalid_response`),
never a score and never an exception out of the run. A part the server leaves out (null) where it
cannot give it is `unsupported` instead.
"""

from __future__ import annotations

import math
from typing import Any

from monitor.errors import BackendError
from monitor.vocabulary import ErrorKind

TOKEN_ID_PREFIX = "token_id:"  # how vLLM names tokens with return_tokens_as_token_ids
LOGPROB_SLACK = 1e-4  # a log-probability above this is not a probability
GENERATION_STILL_RUNS = "generation suites can"
NO_LOGLIKELIHOOD = f"log-likelihood suites cannot be measured on this server; {GENERATION_STILL_RUNS}"


def logprob(value: Any, where: str, what: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value > LOGPROB_SLACK:
        raise BackendError(f"{where}: log-probability {value!r} for {what} is not a log-probability",
                           kind=ErrorKind.INVALID_RESPONSE)
    return float(value)


def choices(body: dict[str, Any], expected: int, where: str) -> list[dict[str, Any]]:
    """The answer's choices in prompt order, exactly one per prompt, each an object."""
    choices = body.get("choices")
    if not isinstance(choices, list) or len(choices) != expected:
        got = len(choices) if isinstance(choices, list) else "no"
        raise BackendError(f"{where}: sent {expected} prompts, got {got} choices back",
                           kind=ErrorKind.INVALID_RESPONSE)
    strays = [position for position, c in enumerate(choices) if not isinstance(c, dict)]
    if strays:
        raise BackendError(f"{where}: choice {strays[0]} is not an object", kind=ErrorKind.INVALID_RESPONSE)
    if all(isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
        if [c["index"] for c in choices] != list(range(expected)):
            raise BackendError(f"{where}: choice indexes do not match the prompts",
                               kind=ErrorKind.INVALID_RESPONSE)
    return choices


def message_content(choice: dict[str, Any], where: str) -> str:
    """A chat completion's text."""
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BackendError(f"{where}: a chat completion has no message object",
                           kind=ErrorKind.INVALID_RESPONSE)
    content = message.get("content")
    if not isinstance(content, str):
        raise BackendError(f"{where}: a chat completion has no text content", kind=ErrorKind.INVALID_RESPONSE)
    return content


def logprobs_block(choice: dict[str, Any], where: str) -> dict[str, Any]:
    """A choice's `logprobs` object; empty where the server gave none (null or left out)."""
    block = choice.get("logprobs")
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise BackendError(f"{where}: logprobs is not an object but {type(block).__name__}",
                           kind=ErrorKind.INVALID_RESPONSE)
    return block


def token_id(name: str, where: str) -> int:
    """The id of a token named `token_id:<id>`."""
    try:
        return int(name.removeprefix(TOKEN_ID_PREFIX))
    except ValueError:
        shown = name[:40]
        raise BackendError(f"{where}: {shown!r} names no token id", kind=ErrorKind.INVALID_RESPONSE) from None


def prompt_logprobs(choice: dict[str, Any], ids: list[int], where: str) -> list[float]:
    """Per-token log-probabilities of the prompt `ids`, checked against what was sent.

    Position 0 has no context, so a faithful server gives it no log-probability (None); a
    number there means the values are shifted by one token. Returns 0.0 for position 0.
    """
    block = logprobs_block(choice, where)
    values = block.get("token_logprobs")
    if values is None:
        raise BackendError(
            f"{where} does not return prompt log-probabilities (echo + logprobs): {NO_LOGLIKELIHOOD}",
            kind=ErrorKind.UNSUPPORTED)
    if not isinstance(values, list):
        raise BackendError(f"{where}: token_logprobs is not a list but {type(values).__name__}",
                           kind=ErrorKind.INVALID_RESPONSE)
    if len(values) < len(ids):
        raise BackendError(f"{where}: {len(values)} log-probabilities for a prompt of {len(ids)} tokens",
                           kind=ErrorKind.INVALID_RESPONSE)
    _check_tokens(block.get("tokens"), ids, where)
    if values[0] is not None:
        raise BackendError(f"{where}: the first prompt token has a log-probability ({values[0]}), so the "
                           "echoed log-probabilities are shifted by one token",
                           kind=ErrorKind.INVALID_RESPONSE)
    return [0.0, *(logprob(value, where, f"prompt token {position}")
                   for position, value in enumerate(values[1 : len(ids)], start=1))]


def _check_tokens(tokens: Any, ids: list[int], where: str) -> None:
    """Where the server names the token ids it scored, they must be the ones sent."""
    if not isinstance(tokens, list) or not tokens or not all(
            isinstance(t, str) and t.startswith(TOKEN_ID_PREFIX) for t in tokens[: len(ids)]):
        return
    echoed = [token_id(t, where) for t in tokens[: len(ids)]]
    if echoed != ids:
        at = next((i for i, (a, b) in enumerate(zip(echoed, ids, strict=False)) if a != b), len(echoed))
        if at >= len(echoed):
            raise BackendError(f"{where}: {len(echoed)} tokens echoed for a prompt of {len(ids)}",
                               kind=ErrorKind.INVALID_RESPONSE)
        raise BackendError(f"{where}: scored token {echoed[at]} at position {at} where {ids[at]} was sent",
                           kind=ErrorKind.INVALID_RESPONSE)
