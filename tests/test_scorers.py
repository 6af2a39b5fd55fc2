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


# -- model output is untrusted: every scorer is bounded ------------------------------------

def test_json_valid_reads_a_deep_answer_without_recursing() -> None:
    """Far deeper than any answer a suite asks for: not the JSON asked for, and no RecursionError."""
    balanced = "[" * 50_000 + "]" * 50_000
    assert scorers.json_valid(balanced) is False
    assert scorers.json_valid("[" * 50_000) is False
    assert scorers.json_valid('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') is True


@pytest.mark.timeout(30)
def test_a_fence_followed_by_blank_lines_is_read_at_once() -> None:
    """A degenerate answer: the code fence opens, then only blank lines."""
    assert scorers.json_valid("```json\n" + "\n" * 20_000) is False
    assert scorers.json_valid("```json\n" + "\n" * 20_000 + '{"a": 1}\n```') is True


@pytest.mark.timeout(30)
def test_a_catastrophic_pattern_is_cut_at_its_time_bound() -> None:
    import time

    began = time.monotonic()
    with pytest.raises(TimeoutError, match="ran past"):
        scorers.regex("a" * 34 + "b", r"^(a|a)+$")
    assert time.monotonic() - began < 5 * scorers.REGEX_TIMEOUT_S
    assert scorers.regex("a" * 34 + "b", r"^(a+)+$") is False, "no match, answered at once"


def test_the_shipped_patterns_match_as_python_re_matches_them() -> None:
    """The scorer's engine (`regex`, for its time bound) agrees with `re` on every shipped pattern,
    each tried on every answer its suite expects (right for one item, wrong for the others)."""
    import re

    from monitor.policy.suites import load_suite
    from tests.conftest import PROBES

    checked = 0
    for folder in sorted(PROBES.iterdir()):
        items = load_suite(folder).items
        answers = [answer for item in items for answer in _said(item.targets())]
        for pattern in {item.pattern for item in items if item.pattern}:
            expected = [re.search(pattern, a, re.IGNORECASE | re.DOTALL) is not None for a in answers]
            assert [scorers.regex(a, pattern) for a in answers] == expected, pattern
            checked += 1
    assert checked > 100


def _said(targets: list[str]) -> list[str]:
    """Each target as it is, upper-cased, and inside a sentence."""
    sentences = [f"The answer is {t}." for t in targets]
    return [*targets, *(t.upper() for t in targets), *sentences]
