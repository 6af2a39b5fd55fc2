"""How a score and a drop are written, the same on every surface (CLI, gate, pages, API, alerts).

Accuracy (a `multiple_choice` or `generate_until` score, a fraction of items) is shown in
percentage points, fluency (`loglikelihood_rolling`, mean log-probability per token) in nats per
token. A **drop** is baseline minus candidate: positive when the candidate is worse, negative for a
gain, in every table, reason, page and annotation. Raw fractions stay in the API and the metrics
as named fields; only what a person reads goes through here.

    >>> drop_text("generate_until", 0.526)
    '+52.6 pts'
    >>> drop_text("loglikelihood_rolling", -0.0304)
    '-0.030 nats/token'
    >>> score_text("multiple_choice", 0.699)
    '69.9%'
"""

from __future__ import annotations

from monitor.vocabulary import SAFETY_DEPTH, Kind

POINTS = "pts"
NATS = "nats/token"
MISSING = "—"


def is_accuracy(kind: str) -> bool:
    """Scored right or wrong per item; a kind this version does not know counts as accuracy."""
    if kind == SAFETY_DEPTH:
        return False
    return kind not in set(Kind) or Kind(kind).binary


def unit(kind: str) -> str:
    return POINTS if is_accuracy(kind) else NATS


def scale(kind: str) -> float:
    """What a raw value is multiplied by to be read in `unit(kind)`."""
    return 100.0 if is_accuracy(kind) else 1.0


def digits(kind: str) -> int:
    return 1 if is_accuracy(kind) else 3


def amount(kind: str, value: float) -> float:
    """`value` as a number in `unit(kind)`, rounded as it is written: 0.526 → 52.6 (pts)."""
    return round(value * scale(kind), digits(kind))


def signed(kind: str, value: float | None) -> str:
    """A drop, a bound or a tolerance in its kind's unit, with its sign, without the unit."""
    if value is None:
        return MISSING
    return f"{value * scale(kind):+.{digits(kind)}f}"


def drop_text(kind: str, drop: float | None) -> str:
    """'+52.6 pts': how much worse the candidate is (negative: better)."""
    if drop is None:
        return MISSING
    return f"{signed(kind, drop)} {unit(kind)}"


def bounds_text(kind: str, low: float | None, high: float | None) -> str:
    """'[+40.1, +61.2] pts': the interval around a drop."""
    if low is None or high is None:
        return MISSING
    return f"[{signed(kind, low)}, {signed(kind, high)}] {unit(kind)}"


def tolerance_text(kind: str, tolerance: float | None) -> str:
    """'5 pts' or '0.05 nats/token': the largest drop the policy accepts."""
    if tolerance is None:
        return MISSING
    return f"{tolerance * scale(kind):g} {unit(kind)}"


def score_text(kind: str, score: float | None) -> str:
    """'69.9%' for an accuracy, '-3.331' (nats per token) for fluency."""
    if score is None:
        return MISSING
    if is_accuracy(kind):
        return f"{score * 100:.1f}%"
    return f"{score:.3f}"
