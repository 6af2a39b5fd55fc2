"""What input from outside may be: names, paths, sizes and prompt templates.

A monitor that can roll models back reads files other people write. A name ends up in a file
path (the registry's `<model>.json`, a retrained version's folder), so it must not be able to
climb out of its folder; a suite's items must come from inside the suite; a template is filled in
for every item, so it may substitute fields and nothing else; and no file is read whole before
its size is known.
"""

from __future__ import annotations

import errno
import re
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


def name_problem(value: str) -> str | None:
    """Why `value` may not name a model, version, suite or capability; None if it may."""
    if NAME.fullmatch(value):
        return None
    return f"'{value[:80]}' is not a safe name: use {NAME_RULE}"


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
