"""YAML loading that remembers where every key was written.

pydantic reports *which* key is wrong; people fix files by line. PyYAML's node tree carries
line marks, so we keep a map from key path to line beside the parsed data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from monitor.errors import Problem
from monitor.policy import bounds

Path_ = tuple[str | int, ...]


class Located:
    """Parsed YAML plus the line of every key path in it."""

    def __init__(self, file: str, data: Any, lines: dict[Path_, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def line(self, loc: Path_) -> int | None:
        """Line of the deepest written ancestor of `loc` (a missing key points at its parent)."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def problem(self, loc: Path_, message: str) -> Problem:
        return Problem(self.file, self.line(loc), dotted(loc), message)


def dotted(loc: Path_) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def load(path: Path) -> Located:
    """Parse `path`; a YAML syntax error becomes a Problem with the line it happened on.

    Aliases (`*name`) are refused before anything is built: a 494-byte file of nested aliases
    expanded to 1.2 GB, and `x: &a [*a]` recursed forever. A policy has no need of them."""
    from monitor.errors import ConfigError

    big = bounds.too_big(path, bounds.MAX_POLICY_BYTES)
    if big:
        raise ConfigError([Problem(str(path), None, "", big)])
    text = path.read_text(encoding="utf-8")
    try:
        refused = _refused(text)
        if refused:
            raise ConfigError([Problem(str(path), refused[0], "", refused[1])])
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context_mark", None)
        if context is not None and mark is not None and context.line != mark.line:
            reason += f" ({getattr(exc, 'context', 'started')} on line {context.line + 1})"
        raise ConfigError([Problem(str(path), line, "", f"invalid YAML: {reason}")]) from exc
    lines: dict[Path_, int] = {}
    if node is not None:
        _index(node, (), lines)
    return Located(str(path), data, lines)


def _refused(text: str) -> tuple[int, str] | None:
    """(line, why) for the first alias, or for a document past the node cap; None if neither."""
    for count, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), start=1):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            return line, f"YAML aliases (*{event.anchor}) are not allowed here: write the value out"
        if count > bounds.MAX_YAML_NODES:
            return line, f"more than {bounds.MAX_YAML_NODES:,} YAML nodes"
    return None


def _index(node: yaml.Node, here: Path_, lines: dict[Path_, int]) -> None:
    lines.setdefault(here, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*here, str(key.value))
            lines[path] = key.start_mark.line + 1
            _index(value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*here, i), lines)
