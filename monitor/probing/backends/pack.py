"""A batch of (context, continuations) questions as one token trie, run in one forward pass.

Used by the in-process backend for every continuation it scores (multiple-choice choices, the
openings of safety depth); a module of its own because it is one idea: the trie and its mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Pack:
    """A batch of questions and all their choices as one token trie, run in one forward pass.

    Every (context, choice) sequence is inserted into a prefix trie: a question's context is
    stored once for all of its choices, and questions that start alike ("Question: What is the
    capital city of") share those tokens too. Each trie node keeps the position it has in its
    own sequences and attends to exactly its ancestors, so every score equals the one a separate
    forward pass over that sequence would give. Only nodes whose next token is scored go through
    the vocabulary projection.
    """

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.positions: list[int] = []
        self.ancestors: list[list[int]] = []
        self._children: dict[tuple[int, int], int] = {}
        self.keep: list[int] = []
        self._rows: dict[int, int] = {}
        self.scored: list[tuple[int, int, int]] = []  # (kept row, next token, (question, choice) slot)
        self.shape: list[int] = []

    @classmethod
    def build(cls, encoded: Sequence[tuple[list[int], list[list[int]]]]) -> Pack:
        pack = cls()
        for context, conts in encoded:
            pack._add_question(context, conts)
        return pack

    def _node(self, parent: int, token: int) -> int:
        found = self._children.get((parent, token))
        if found is not None:
            return found
        node = len(self.ids)
        self.ids.append(token)
        self.positions.append(self.positions[parent] + 1 if parent >= 0 else 0)
        self.ancestors.append([*(self.ancestors[parent] if parent >= 0 else []), node])
        self._children[(parent, token)] = node
        return node

    def _row(self, node: int) -> int:
        if node not in self._rows:
            self._rows[node] = len(self.keep)
            self.keep.append(node)
        return self._rows[node]

    def _add_question(self, context: list[int], conts: list[list[int]]) -> None:
        end = -1
        for token in context:
            end = self._node(end, token)
        slot = sum(self.shape)
        for k, cont in enumerate(conts):
            node = end
            for m, token in enumerate(cont):
                self.scored.append((self._row(node), token, slot + k))
                if m + 1 < len(cont):
                    node = self._node(node, token)
        self.shape.append(len(conts))

    @staticmethod
    def tensor(values: list[int], device: Any) -> Any:
        import torch

        return torch.tensor(values, dtype=torch.long, device=device)

    def mask(self, device: Any, implementation: str | None, dtype: Any) -> Any:
        """(1, 1, N, N): each node sees itself and its ancestors, nothing else."""
        import torch

        rows = [node for node, chain in enumerate(self.ancestors) for _ in chain]
        cols = [a for chain in self.ancestors for a in chain]
        allowed = torch.zeros((len(self.ids), len(self.ids)), dtype=torch.bool)
        allowed[rows, cols] = True
        allowed = allowed.to(device)[None, None]
        if implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
