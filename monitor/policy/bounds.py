"""What input from outside may be: names, paths, sizes, depths, durations and prompt templates.

A monitor that can roll models back reads files other people write. A name ends up in a file
path (the registry's `<model>.json`, a retrained version's folder), so it must not be able to
climb out of its folder; a suite's items must come from inside the suite; a template is filled in
for every item, so it may substitute fields and nothing else; no file is read whole before
its size is known, and nothing is parsed recursively before its depth is. A duration is one the
code that waits or schedules with it can hold: `validate` refuses what `serve` could not run.
"""

from __future__ import annotations

import errno
import re
from datetime import timedelta
from pathlib import Path
from string import Formatter

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"
FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_POLICY_BYTES = 1 << 20  # a policy file or a suite.yaml: 1 MiB
MAX_ITEMS_BYTES = 64 << 20  # a suite's items file: 64 MiB
MAX_ITEM_LINE_BYTES = 64 << 10  # one item: 64 KiB
MAX_YAML_NODES = 100_000
MAX_SECRET_BYTES = 64 << 10  # a credential file: 64 KiB
# Lists and mappings in a policy, a suite.yaml or one item. The deepest setting the schema has is
# about six levels; the YAML composer, the position index, pydantic, json.loads and the content
# hash all recurse, several Python frames a level, and fail at the recursion limit (1,000 frames).
MAX_DEPTH = 32
# `schedule.every`: serve gives APScheduler the interval in whole seconds as the grace a late
# firing gets, which must be at least 1; and one probe cycle (load a model, score a suite) takes
# longer than a second anyway, so a shorter interval could only fire into a cycle still running.
MIN_INTERVAL_S = 1
# Any duration: a year is longer than any schedule, timeout, cooldown or alert lifetime means, and
# far inside what breaks: `now - cooldown` leaves datetime's range past ~2,000 years, a socket or
# lock timeout overflows past ~292 (threading.TIMEOUT_MAX), timedelta itself past 999,999,999 days.
MAX_DURATION_DAYS = 365
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# A JSON string (its closing quote optional, so an unclosed one ends the scan instead of making the
# engine try again from every quote) or one bracket: one pass over the text, however it is written.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def name_problem(value: str) -> str | None:
    """Why `value` may not name a model, version, suite or capability; None if it may."""
    if NAME.fullmatch(value):
        return None
    return f"'{value[:80]}' is not a safe name: use {NAME_RULE}"


def file_name_problem(value: str) -> str | None:
    """Why `value` may not name a file inside a checked folder (a GGUF in a version's path);
    None if it may. A separator, '.' or '..' would name something the roots were not checked for."""
    if value in ("", ".", "..") or "/" in value or "\\" in value:
        return f"'{value[:80]}' is not a file name inside path: no '/' or '\\', and not '.' or '..'"
    return None


def safe_file_name(value: str) -> str:
    """A pydantic validator: the file name, or a ValueError saying what it may be."""
    problem = file_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def safe_name(value: str) -> str:
    """A pydantic validator: the name, or a ValueError saying what names may be."""
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink followed, stays under `root`."""
    return path.resolve().is_relative_to(root.resolve())


def too_big(path: Path, limit: int) -> str | None:
    """Why `path` is too large to read; None if it is not."""
    size = path.stat().st_size
    if size <= limit:
        return None
    return f"the file is {size:,} bytes; at most {limit:,} are read"


def read_capped(path: Path, limit: int) -> str:
    """`path`'s text, read only if it is at most `limit` bytes. A file too large, or not UTF-8, is
    an OSError whose `strerror` says which, like a file that cannot be opened."""
    problem = too_big(path, limit)
    if problem:
        raise OSError(errno.EFBIG, problem)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise OSError(errno.EILSEQ, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def not_utf8(exc: UnicodeDecodeError) -> tuple[int, str]:
    """(line, why) for text that failed to decode: the line of the first bad byte, counted from 1,
    and where in that line it is, so an editor can find it."""
    raw = exc.object
    line = raw.count(b"\n", 0, exc.start) + 1
    column = exc.start - raw.rfind(b"\n", 0, exc.start)
    return line, f"not UTF-8 text ({exc.reason} at byte {column} of the line); save the file as UTF-8"


def duration_seconds(value: int | float | str) -> float:
    """Seconds in '15m', '30s', '1h', '2d', '250ms' or a plain number of seconds. A ValueError if
    it is not a duration or lies outside 0 to MAX_DURATION_DAYS: compared before any timedelta is
    made, so infinity, NaN and a 300-digit number are refused rather than overflowing."""
    seconds: float = value if isinstance(value, int | float) else _written_seconds(value)
    if not 0 <= seconds <= MAX_DURATION_DAYS * 86400:
        raise ValueError(f"must be from 0s to {MAX_DURATION_DAYS}d")
    return float(seconds)


def _written_seconds(value: str) -> float:
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a duration; write e.g. 30s, 15m, 1h or 2d")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def interval(value: timedelta) -> timedelta:
    """A pydantic validator: a schedule serve can run (see MIN_INTERVAL_S)."""
    if value.total_seconds() < MIN_INTERVAL_S:
        why = "the scheduler counts in whole seconds, and a probe cycle takes longer than that anyway"
        raise ValueError(f"must be at least {MIN_INTERVAL_S}s: {why}")
    return value


def timeout(value: timedelta) -> timedelta:
    """A pydantic validator: a wait that leaves something time to answer."""
    if value <= timedelta(0):
        raise ValueError("must be more than 0s: with no time to wait, every run would be an error")
    return value


def json_too_deep(text: str) -> bool:
    """Whether the JSON `text` nests arrays and objects deeper than MAX_DEPTH, found without parsing
    it (json.loads recurses). Brackets inside strings do not count. A line with no more opening
    brackets than MAX_DEPTH cannot be too deep, so most lines are not scanned at all."""
    opening = text.count("[") + text.count("{")
    if opening <= MAX_DEPTH:
        return False
    depth = 0
    for token in _JSON_TOKEN.findall(text):
        if token in ("[", "{"):
            depth += 1
        elif token in ("]", "}"):
            depth -= 1
        if depth > MAX_DEPTH:
            return True
    return False


def template_problem(template: str) -> str | None:
    """Why `template` is not plain `{field}` substitution; None if it is. A format spec
    (`{question:>3000000000}`), a conversion (`{question!r}`), an attribute or an index would
    run arbitrary formatting for every item, and the first of them only failed at render."""
    try:
        parts = list(Formatter().parse(template))
    except ValueError as exc:
        return f"not a valid template: {exc}"
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not FIELD.fullmatch(field) or spec or conversion:
            written = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            written += "}"
            return f"'{written}' is not a plain field: templates may only use {{field}}"
    return None
