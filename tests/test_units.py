"""One unit and one sign on every surface: the formatter every table, page and annotation uses."""

from __future__ import annotations

import doctest

import pytest

from monitor import units


def test_the_examples_in_the_docstring_hold() -> None:
    assert doctest.testmod(units).failed == 0


@pytest.mark.parametrize(("kind", "drop", "written"), [
    ("generate_until", 0.526, "+52.6 pts"), ("multiple_choice", -0.15, "-15.0 pts"),
    ("loglikelihood_rolling", 0.0304, "+0.030 nats/token"), ("generate_until", None, "—"),
    ("something_new", 0.1, "+10.0 pts"),
])
def test_a_drop_is_positive_when_worse_in_its_kinds_unit(kind: str, drop: float | None, written: str) -> None:
    assert units.drop_text(kind, drop) == written


def test_bounds_and_tolerances_share_the_unit() -> None:
    assert units.bounds_text("generate_until", 0.401, 0.612) == "[+40.1, +61.2] pts"
    assert units.tolerance_text("generate_until", 0.05) == "5 pts"
    assert units.tolerance_text("loglikelihood_rolling", 0.05) == "0.05 nats/token"
    assert units.score_text("loglikelihood_rolling", -3.3311) == "-3.331"
