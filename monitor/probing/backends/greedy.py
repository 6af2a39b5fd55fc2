"""Greedy decoding of many chat prompts at once, without the waste of batched `generate`.

Batched `model.generate` runs every chunk to its longest `max_new_tokens` even after all of its
rows have hit EOS, keeps finished rows in every step, and re-encodes the chat template's system
preamble, the same 24 tokens for every SmolLM2 prompt, once per row. Decoding on a CPU is bound by
reading the weights once per step, so a step costs about the same for 4 rows as for 16: a step
spent on finished rows is time thrown away. This loop instead

* encodes the prefix that every prompt shares once and starts each row from a copy of its cache;
* drops a row the step it is done (EOS, its own `max_new_tokens`, or one of its stop strings,
  checked on the decoded text as it grows) and refills the batch from the waiting rows, so the
  batch stays full until the queue runs dry (continuous batching);
* takes waiting rows shortest first, so a refill pads little.

Every row sees exactly the tokens and positions it would see alone: padding sits between the
shared prefix and a row's own tokens, masked out, and positions are given explicitly. Greedy
tokens therefore match plain `generate`; the tests hold them to it token for token.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.probing.backends.base import GenerationRequest

KV = list[tuple[Any, Any]]  # per layer: keys and values, (rows, heads, columns, head dim)


def _torch() -> Any:
    import torch

    return torch


@dataclass
class Row:
    """One request being answered: its prompt tokens and what it has generated so far."""

    index: int
    prompt: list[int]
    limit: int
    until: tuple[str, ...]
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Flight:
    """The rows in flight: one cache for all of them, its mask, and each row's next input."""

    rows: list[Row]
    kv: KV
    mask: Any  # (rows, columns), 1 where a column holds one of the row's own tokens
    positions: Any  # (rows,), the position of each row's next input token
    last: Any  # (rows,), each row's newest token, not yet run through the model


class GreedyDecoder:
    """Answers prompts greedily with at most `rows_in_flight` rows per forward pass."""

    def __init__(self, model: Any, *, eos: Sequence[int], decode: Callable[[list[int]], str],
                 rows_in_flight: int = 16) -> None:
        self.model = model
        self.eos = frozenset(eos)
        self.decode = decode
        self.rows_in_flight = max(1, rows_in_flight)
        self.refill_at = max(1, self.rows_in_flight // 4)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def run(self, prompts: Sequence[list[int]], requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Each request's generated tokens, without the EOS that ended it."""
        rows = [Row(i, list(p), r.max_new_tokens, tuple(s for s in r.until if s))
                for i, (p, r) in enumerate(zip(prompts, requests, strict=True))]
        waiting = deque(sorted((r for r in rows if r.limit > 0), key=lambda r: len(r.prompt)))
        if waiting:
            torch = _torch()
            with torch.inference_mode():
                self._drain(waiting)
        return [row.tokens for row in rows]

    def _drain(self, waiting: deque[Row]) -> None:
        prefix = _shared_prefix([row.prompt for row in waiting])
        prefix_kv = self._encode_prefix(prefix)
        flight: _Flight | None = None
        while waiting or flight is not None:
            room = self.rows_in_flight - (len(flight.rows) if flight else 0)
            if waiting and room >= min(self.refill_at, len(waiting)):
                picked = [waiting.popleft() for _ in range(min(room, len(waiting)))]
                flight = _merge(flight, self._prefill(picked, prefix, prefix_kv))
            elif flight is not None:
                flight = self._step(flight)

    # -- forward passes -------------------------------------------------------------------

    def _forward(self, ids: Any, positions: Any, mask: Any, kv: KV | None) -> tuple[Any, KV]:
        """The last column's logits and the cache after it, for a (rows, columns) block of ids."""
        cache = _cache(kv)
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask,
                         use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
        return out.logits[:, -1], _layers(cache)

    def _encode_prefix(self, prefix: list[int]) -> KV | None:
        if not prefix:
            return None
        torch = _torch()
        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        positions = torch.arange(len(prefix), device=self.device)[None]
        _, kv = self._forward(ids, positions, torch.ones_like(ids), None)
        return kv

    def _prefill(self, rows: list[Row], prefix: list[int], prefix_kv: KV | None) -> _Flight | None:
        """Run the rows' own tokens after a copy of the shared prefix, padded in between."""
        torch = _torch()
        shared = len(prefix)
        own = [row.prompt[shared:] for row in rows]
        width = max(len(o) for o in own)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.full((len(rows), width), shared, dtype=torch.long)
        mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for r, tokens in enumerate(own):
            ids[r, width - len(tokens):] = torch.tensor(tokens)
            positions[r, width - len(tokens):] = torch.arange(shared, shared + len(tokens))
            mask[r, shared + width - len(tokens):] = 1
        past = None if prefix_kv is None else [
            (k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in prefix_kv]
        mask = mask.to(self.device)
        logits, kv = self._forward(ids.to(self.device), positions.to(self.device), mask, past)
        ends = torch.tensor([len(row.prompt) for row in rows], device=self.device)
        return self._advance(_Flight(rows, kv, mask, ends, ends), logits)

    def _step(self, flight: _Flight) -> _Flight | None:
        torch = _torch()
        ones = torch.ones((len(flight.rows), 1), dtype=flight.mask.dtype, device=self.device)
        flight.mask = torch.cat([flight.mask, ones], dim=1)
        logits, flight.kv = self._forward(flight.last[:, None], flight.positions[:, None],
                                          flight.mask, flight.kv)
        flight.positions = flight.positions + 1
        return self._advance(flight, logits)

    # -- bookkeeping ----------------------------------------------------------------------

    def _advance(self, flight: _Flight, logits: Any) -> _Flight | None:
        """Take each row's greedy token, then let go of the rows that are done."""
        chosen = logits.argmax(dim=-1)
        keep = [i for i, (row, token) in enumerate(zip(flight.rows, chosen.tolist(), strict=True))
                if not self._done(row, token)]
        if not keep:
            return None
        flight.last = chosen
        return _select(flight, keep) if len(keep) < len(flight.rows) else flight

    def _done(self, row: Row, token: int) -> bool:
        if token in self.eos:
            return True
        row.tokens.append(token)
        if len(row.tokens) >= row.limit:
            return True
        return bool(row.until) and any(s in self.decode(row.tokens) for s in row.until)


def _shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The tokens every prompt starts with, leaving each at least one token of its own."""
    first, most = prompts[0], min(len(p) for p in prompts) - 1
    shared = next((i for i in range(most) if any(p[i] != first[i] for p in prompts)), most)
    return first[:shared]


def _select(flight: _Flight, keep: list[int]) -> _Flight:
    """The kept rows only, without the leading columns none of them uses any more."""
    torch = _torch()
    index = torch.tensor(keep, device=flight.mask.device)
    mask = flight.mask.index_select(0, index)
    start = int(mask.any(dim=0).nonzero()[0])
    kv = [(k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
          for k, v in flight.kv]
    return _Flight([flight.rows[i] for i in keep], kv, mask[:, start:],
                   flight.positions.index_select(0, index), flight.last.index_select(0, index))


def _merge(running: _Flight | None, new: _Flight | None) -> _Flight | None:
    """One flight of both, the shorter cache padded on the left with masked columns."""
    if running is None or new is None:
        return new if running is None else running
    torch = _torch()
    width = max(running.mask.shape[1], new.mask.shape[1])

    def pad(t: Any) -> Any:
        missing = width - t.shape[-1 if t.dim() == 2 else 2]
        if not missing:
            return t
        if t.dim() == 2:
            return torch.nn.functional.pad(t, (missing, 0))
        return torch.nn.functional.pad(t, (0, 0, missing, 0))

    kv = [(torch.cat([pad(k1), pad(k2)]), torch.cat([pad(v1), pad(v2)]))
          for (k1, v1), (k2, v2) in zip(running.kv, new.kv, strict=True)]
    return _Flight(running.rows + new.rows, kv, torch.cat([pad(running.mask), pad(new.mask)]),
                   torch.cat([running.positions, new.positions]), torch.cat([running.last, new.last]))


def _cache(kv: KV | None) -> Any:
    from transformers import DynamicCache

    return DynamicCache() if kv is None else DynamicCache(ddp_cache_data=kv)


def _layers(cache: Any) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]
