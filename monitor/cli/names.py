"""Names given on the command line, checked against what exists. A typo is an input error (exit 2)
that lists the valid names and the close one, never an empty table with exit 0, an INCONCLUSIVE,
or the exit code of a broken measurement."""

from __future__ import annotations

from collections.abc import Iterable

from monitor.errors import Refused
from monitor.policy.loading import choice_message
from monitor.present.tables import SHORT_KINDS
from monitor.vocabulary import Kind

# A kind as lm-evaluation-harness names it, or as the narrow tables print it.
KIND_NAMES: dict[str, Kind] = {**{kind.value: kind for kind in Kind},
                               **{short: Kind(kind) for kind, short in SHORT_KINDS.items()}}


def one_of(value: str, valid: Iterable[str], what: str, option: str) -> str:
    """`value`, if it is one of `valid`; else Refused, naming `option` and the valid ones."""
    known = list(dict.fromkeys(valid))
    if value not in known:
        raise Refused(f"{option}: {choice_message(value, known, what)}")
    return value


def kind_named(value: str, option: str = "--kind") -> Kind:
    return KIND_NAMES[one_of(value, KIND_NAMES, "kinds", option)]
