"""Checks on what an OpenAI-compatible server answers, before any of it is scored.

Shared by both ways of reading log-probabilities (echo in `openai`, next-token in
`next_token`): a wrong count, a shifted position, a token that was not sent or a value that is
not a log-probability is a measurement error (`invalid_response`), never a score.
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
    """The answer's choices in prompt order, exactly one per prompt."""
    choices = body.get("choices")
    if not isinstance(choices, list) or len(choices) != expected:
        got = len(choices) if isinstance(choices, list) else "no"
        raise BackendError(f"{where}: sent {expected} prompts, got {got} choices back",
                           kind=ErrorKind.INVALID_RESPONSE)
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
        if [c["index"] for c in choices] != list(range(expected)):
            raise BackendError(f"{where}: choice indexes do not match the prompts",
                               kind=ErrorKind.INVALID_RESPONSE)
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
            f"{where} does not return prompt log-probabilities (echo + logprobs): {NO_LOGLIKELIHOOD}",
            kind=ErrorKind.UNSUPPORTED)
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
    echoed = [int(t.removeprefix(TOKEN_ID_PREFIX)) for t in tokens[: len(ids)]]
    if echoed != ids:
        at = next((i for i, (a, b) in enumerate(zip(echoed, ids, strict=False)) if a != b), len(echoed))
        if at >= len(echoed):
            raise BackendError(f"{where}: {len(echoed)} tokens echoed for a prompt of {len(ids)}",
                               kind=ErrorKind.INVALID_RESPONSE)
        raise BackendError(f"{where}: scored token {echoed[at]} at position {at} where {ids[at]} was sent",
                           kind=ErrorKind.INVALID_RESPONSE)
