"""Token boundaries shared by every backend, so that scores agree across backends.

A log-likelihood score is only comparable between the in-process model and a served one if both
score exactly the same continuation tokens after exactly the same context tokens. Both backends
split a (context, continuation) pair and window a long text through these functions.
"""

from __future__ import annotations

from collections.abc import Callable

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


def rolling_windows(tokens: list[int], max_length: int) -> list[list[int]]:
    """Disjoint windows of at most `max_length` scored tokens; each window's first token is the
    previous window's last, so every token after the first is scored exactly once."""
    return [tokens[start : start + max_length + 1] for start in range(0, len(tokens) - 1, max_length)]
