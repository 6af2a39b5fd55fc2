"""YAML loading that remembers where every key was written, and means what the file says.

pydantic reports *which* key is wrong; people fix files by line. PyYAML's node tree carries
line marks, so we keep a map from key path to line beside the parsed data. A key written twice
is refused, not resolved: a YAML mapping keeps only the last, and a reviewer reads the first.
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
    """Read `path` as `parse` does, after checking its size; text that is not UTF-8 is a Problem
    on the line of the first bad byte."""
    from monitor.errors import ConfigError

    big = bounds.too_big(path, bounds.MAX_POLICY_BYTES)
    if big:
        raise ConfigError([Problem(str(path), None, "", big)])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line, why = bounds.not_utf8(exc)
        raise ConfigError([Problem(str(path), line, "", why)]) from exc
    return parse(text, str(path))


def parse(text: str, file: str) -> Located:
    """`text`, read from `file`, parsed strictly: for any YAML a user hands the monitor. Every
    refusal is a ConfigError whose Problems name `file` and the line:

    - a YAML syntax error, or a scalar Python cannot build (an int of 5,000 digits, 2001-02-30);
    - aliases (`*name`), refused before anything is built: a 494-byte file of nested aliases
      expanded to 1.2 GB, and `x: &a [*a]` recursed forever. A policy has no need of them;
    - more than `bounds.MAX_YAML_NODES` nodes, or nesting deeper than `bounds.MAX_DEPTH`,
      counted on the event stream, before the composer and the index recurse;
    - a key written twice in one mapping, every one of them, with both lines."""
    from monitor.errors import ConfigError

    try:
        refused = _refused(text)
        if refused:
            raise ConfigError([Problem(file, refused[0], "", refused[1])])
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, _error_line(exc), "", f"invalid YAML: {_reason(exc)}")]) from exc
    index = _Index(file)
    if node is not None:
        index.node(node, ())
    if index.problems:
        raise ConfigError(index.problems)
    return Located(file, data, index.lines)


def _error_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None)
    return mark.line + 1 if mark is not None else None


def _reason(exc: yaml.YAMLError) -> str:
    reason = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context_mark", None)
    if context is not None and mark is not None and context.line != mark.line:
        reason += f" ({getattr(exc, 'context', 'started')} on line {context.line + 1})"
    return reason


class _Loader(yaml.SafeLoader):
    """The safe loader, but a scalar that Python refuses to build is a YAML error on its line like
    any other, not a ValueError from deep inside PyYAML."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            tag = str(node.tag).rsplit(":", 1)[-1]
            written = str(node.value)
            shown = written if len(written) <= 40 else written[:40] + "…"
            problem = f"'{shown}' is not a valid {tag}: {exc}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from exc


def _refused(text: str) -> tuple[int, str] | None:
    """(line, why) for the first alias, past the node cap or past the depth cap; None if none."""
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), start=1):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        depth += _DEPTH_STEP.get(type(event), 0)
        if isinstance(event, yaml.AliasEvent):
            return line, f"YAML aliases (*{event.anchor}) are not allowed here: write the value out"
        if count > bounds.MAX_YAML_NODES:
            return line, f"more than {bounds.MAX_YAML_NODES:,} YAML nodes"
        if depth > bounds.MAX_DEPTH:
            return line, _TOO_DEEP
    return None


_DEPTH_STEP: dict[type, int] = {
    yaml.SequenceStartEvent: 1,
    yaml.MappingStartEvent: 1,
    yaml.SequenceEndEvent: -1,
    yaml.MappingEndEvent: -1,
}
_MERGE = "tag:yaml.org,2002:merge"
_TOO_DEEP = (
    f"lists and mappings nested more than {bounds.MAX_DEPTH} deep; no setting needs more "
    "than a few levels, so flatten it"
)


class _Index:
    """The line of every key path, and every key written twice in one mapping."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.problems: list[Problem] = []
        self._keys = yaml.constructor.SafeConstructor()  # builds a key as the data has it

    def node(self, node: yaml.Node, here: Path_) -> None:
        self.lines.setdefault(here, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.mapping(node, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.node(item, (*here, i))

    def mapping(self, node: yaml.MappingNode, here: Path_) -> None:
        first: dict[Any, yaml.Node] = {}
        for key, value in node.value:
            path = (*here, str(key.value))
            built = self._built(key)
            if built in first:
                self.problems.append(self._twice(path, first[built], key))
            first.setdefault(built, key)
            self.lines[path] = key.start_mark.line + 1
            self.node(value, path)

    def _built(self, key: yaml.Node) -> Any:
        """The key as the data holds it, so `yes` and `true` are one key and `1` and `"1"` two. A
        merge (`<<`) is not a key of the data: each stands for itself."""
        if key.tag == _MERGE:
            return key
        return self._keys.construct_object(key, deep=True)

    def _twice(self, path: Path_, first: yaml.Node, again: yaml.Node) -> Problem:
        written = f" as '{first.value}'" if first.value != again.value else ""
        where = f"first written{written} on line {first.start_mark.line + 1}"
        message = f"duplicate key ({where}); a YAML mapping keeps only the last, so remove one"
        return Problem(self.file, again.start_mark.line + 1, dotted(path), message)
