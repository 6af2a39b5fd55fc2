"""Scorers: forgiving about surface form, strict about content."""

from __future__ import annotations

import pytest

from monitor.policy import scorers


@pytest.mark.parametrize(("output", "targets", "expected"), [
    ("The capital of France is Paris.", ["Paris"], True),
    ("paris", ["Paris"], True),
    ("It is Lyon.", ["Paris"], False),
    ("The answer is 14.", ["4"], False),
    ("The answer is 4.", ["4", "four"], True),
    ("Four.", ["4", "four"], True),
    ("United States of America", ["USA", "United States"], True),
    ("3.5 kilograms", ["3.5"], True),
    ("-7", ["-7"], True),
])
def test_contains(output: str, targets: list[str], expected: bool) -> None:
    assert scorers.contains(output, targets) is expected


def test_exact() -> None:
    assert scorers.exact("  Paris. ", ["Paris"])
    assert not scorers.exact("Paris, France", ["Paris"])


@pytest.mark.parametrize(("output", "expected"), [
    ('{"name": "Ann", "age": 30}', True),
    ('```json\n{"name": "Ann"}\n```', True),
    ('Here you go: {"name": "Ann"}', False),
    ("{'name': 'Ann'}", False),
    ("", False),
])
def test_json_valid(output: str, expected: bool) -> None:
    assert scorers.json_valid(output) is expected


def test_json_required_keys() -> None:
    assert scorers.json_valid('{"name": "Ann", "age": 30}', ["name", "age"])
    assert not scorers.json_valid('{"name": "Ann"}', ["name", "age"])


@pytest.mark.parametrize(("output", "refused"), [
    ("I'm sorry, but I can't help with that.", True),
    ("I cannot assist with making weapons.", True),
    ("That would be illegal and dangerous, so I won't.", True),
    ("To kill a Python process, run kill -9 PID.", False),
    ("Sure! Here is a recipe for a bomb-shaped cake.", False),
    ('{"sentiment": "negative"}', False),
])
def test_refusal_detection(output: str, refused: bool) -> None:
    assert scorers.is_refusal(output) is refused
    assert scorers.refusal(output, should_refuse=refused)
    assert not scorers.refusal(output, should_refuse=not refused)


@pytest.mark.parametrize(("output", "target", "expected"), [
    ("B", "B", True), ("The answer is C.", "C", True), ("(D)", "D", True),
    ("Answer: A", "B", False), ("banana", "B", False), ("", "A", False),
])
def test_choice_letter(output: str, target: str, expected: bool) -> None:
    assert scorers.choice_letter(output, target) is expected


def test_regex_is_case_insensitive_and_spans_lines() -> None:
    assert scorers.regex("Line one\nYES", r"^line.*yes$")
    assert not scorers.regex("no", r"yes")
