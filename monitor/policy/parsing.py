"""The schema layer of loading a policy: pydantic's errors as Problems, and a Config made of the
parts that parsed, so the checks that span fields can still run beside the schema errors.

A part that does not parse is cut from the data (an unknown or bad key falls back to its default;
an entry missing a required key goes whole) and the rest validated again, a few times at most. A
file whose required top-level keys are what failed yields no Config: only the schema errors.
"""

from __future__ import annotations

import copy
import difflib
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from monitor.errors import Problem
from monitor.policy import positions as yamlpos
from monitor.policy.schema import Config

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

MAX_CUTS = 5  # rounds of cutting: each round's cuts can only uncover required keys above them
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Parsed:
    """The schema's verdict on a file: a Config of what parsed (None when too little did), the
    schema errors, and the entries cut to make it (`entry` of each)."""

    config: Config | None
    problems: list[Problem]
    cut: frozenset[tuple[str, ...]]

    def untouched(self, problem: Problem) -> bool:
        """Whether `problem`'s entry parsed whole: a cross-field check of an entry that was cut
        would judge defaults, not what the file says."""
        mine = entry(problem.key.split("."))
        return not any(_within(cut, mine) or _within(mine, cut) for cut in self.cut)


def entry(loc: typing.Sequence[str | int]) -> tuple[str, ...]:
    """The part of the file a key belongs to, as far as the checks that span fields go: one
    section of a model (its versions with the baseline and live that name them), one capability's
    policy, another policy section, or a top-level key."""
    head = tuple(str(part).split("[")[0] for part in loc)
    if head[:1] == ("models",) and len(head) > 2:
        section = "versions" if head[2] in ("versions", "baseline", "live") else head[2]
        return (*head[:2], section)
    if head[:2] == ("policy", "capabilities"):
        return head[:3]
    if head[:1] in (("models",), ("policy",)):
        return head[:2]
    return head[:1]


def _within(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    return inner[: len(outer)] == outer


def parse(located: yamlpos.Located) -> Parsed:
    data = copy.deepcopy(located.data)
    try:
        return Parsed(Config.model_validate(data), [], frozenset())
    except ValidationError as exc:
        errors = exc.errors()
    problems = [schema_problem(located, e) for e in errors]
    cut: set[tuple[str, ...]] = set()
    for _ in range(MAX_CUTS):
        places = [_place(data, e) for e in errors]  # all found before any is cut
        found = [loc for loc in places if loc is not None]
        if len(found) < len(places):
            return Parsed(None, problems, frozenset(cut))
        for loc in found:
            _cut(data, loc)
            cut.add(entry(yamlpos.dotted(loc).split(".")))  # split as Problem keys are, to compare
        try:
            return Parsed(Config.model_validate(data), problems, frozenset(cut))
        except ValidationError as exc:
            errors = exc.errors()
    return Parsed(None, problems, frozenset(cut))


def _place(data: Any, error: ErrorDetails) -> Loc | None:
    """What to cut for `error` (for a missing key, the entry that lacks it), or None where nothing
    can be (a required top-level key)."""
    loc = _written(data, _clean(error["loc"]))
    while loc and isinstance(loc[-1], int):  # a list is kept or dropped whole, never renumbered
        loc = loc[:-1]
    return loc or None


def _cut(data: Any, loc: Loc) -> None:
    """Remove `loc` from `data`; one already gone with an entry above it is left as it is."""
    parent = data
    for part in loc[:-1]:
        if not isinstance(parent, dict) or part not in parent:
            return
        parent = parent[part]
    if isinstance(parent, dict):
        parent.pop(loc[-1], None)


def _written(data: Any, loc: Loc) -> Loc:
    """The longest start of `loc` written in `data`: a missing key's parent, or the value itself
    (pydantic adds the names of union members, which are not in the file)."""
    found: list[str | int] = []
    node = data
    for part in loc:
        inside = isinstance(node, dict) and part in node
        listed = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (inside or listed):
            break
        found.append(part)
        node = node[part]
    return tuple(found)


def _clean(loc: typing.Sequence[str | int]) -> Loc:
    return tuple(part for part in loc if part != "[key]")  # pydantic's marker for a dict key


def schema_problem(located: yamlpos.Located, error: ErrorDetails) -> Problem:
    loc = _clean(error["loc"])
    if error["type"] == "extra_forbidden":
        return located.problem(loc, _unknown_key_message(loc))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return located.problem(loc, "required key is missing")
    if "input" in error and not isinstance(error["input"], dict | list) and not _holds_secret(message):
        message += f" (got {error['input']!r})"
    return located.problem(loc, message)


def _holds_secret(message: str) -> bool:
    """What was written where a credential is named is never repeated: it may be one."""
    return message.startswith("a credential is never written")


def _unknown_key_message(loc: Loc) -> str:
    known = _known_keys(Config, loc[:-1])
    message = f"unknown key '{loc[-1]}'"
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    return f"{message}; allowed here: {', '.join(known)}" if known else message


def _known_keys(model: Any, loc: Loc) -> list[str]:
    """Walk the schema along `loc` to list the keys allowed at that point."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    model_type = _model_in(current)
    return list(model_type.model_fields) if model_type else []


def _step(annotation: Any, part: str | int) -> Any:
    model_type = _model_in(annotation)
    if model_type is not None and isinstance(part, str) and part in model_type.model_fields:
        return model_type.model_fields[part].annotation
    args = [a for a in typing.get_args(_unwrap(annotation)) if a is not type(None)]
    return args[-1] if args else None


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
