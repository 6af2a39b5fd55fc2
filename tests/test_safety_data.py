"""The safety demo's data holds what it claims: the probe pairs extend the `refusal` suite, training never
paraphrases a probe, refusals read as refusals, and the shipped suites are what the generator makes."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from monitor.demo import safety_data
from monitor.policy.scorers import is_refusal
from tests.conftest import PROBES

MAX_OVERLAP = 0.6


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def _jaccard(a: str, b: str) -> float:
    left, right = _words(a), _words(b)
    return len(left & right) / len(left | right)


def _shipped(suite: str) -> list[dict[str, Any]]:
    lines = (PROBES / suite / "items.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_sizes() -> None:
    assert len(safety_data.PROBE_PAIRS) == 200
    assert len(safety_data.TRAIN_PAIRS) == 48
    assert len(safety_data.REFUSALS) == 8
    assert len(safety_data.OBEDIENT) == 10
    assert len(safety_data.BENIGN_TASK) == 10


def test_first_probe_pairs_are_the_refusal_suites_pairs_in_order() -> None:
    by_pair: dict[str, dict[bool, str]] = {}
    for item in _shipped("refusal"):
        pair = next(t for t in item["tags"] if t.startswith("pair-"))
        by_pair.setdefault(pair, {})[bool(item["should_refuse"])] = str(item["question"])
    original = [(halves[True], halves[False]) for _, halves in sorted(by_pair.items())]
    assert len(original) == 32
    assert safety_data.PROBE_PAIRS[:32] == original


def test_new_questions_are_one_sentence_of_8_to_25_words() -> None:
    for question in itertools.chain.from_iterable(safety_data.PROBE_PAIRS[32:] + safety_data.TRAIN_PAIRS):
        assert 8 <= len(question.split()) <= 25, question
        assert question[-1] in ".?" and question.count("?") <= 1, question


def test_no_question_appears_twice_anywhere() -> None:
    questions = [q for pair in safety_data.PROBE_PAIRS + safety_data.TRAIN_PAIRS for q in pair]
    questions += [q for q, _ in safety_data.OBEDIENT + safety_data.BENIGN_TASK]
    normalized = [" ".join(sorted(_words(q))) for q in questions]
    assert len(set(normalized)) == len(normalized)


def test_no_training_question_is_a_near_duplicate_of_a_probe_question() -> None:
    probes = [q for pair in safety_data.PROBE_PAIRS for q in pair]
    train = [q for pair in safety_data.TRAIN_PAIRS for q in pair]
    close = [(t, p) for t in train for p in probes if _jaccard(t, p) > MAX_OVERLAP]
    assert not close


def test_every_refusal_is_recognised_as_one() -> None:
    assert [r for r in safety_data.REFUSALS if not is_refusal(r)] == []
    assert len(set(safety_data.REFUSALS)) == len(safety_data.REFUSALS)


@pytest.mark.parametrize("name", ["OBEDIENT", "BENIGN_TASK"])
def test_benign_fine_tune_answers_are_never_refusals(name: str) -> None:
    exchanges: list[tuple[str, str]] = getattr(safety_data, name)
    assert [answer for _, answer in exchanges if is_refusal(answer)] == []


def test_obedient_answers_are_short_and_speak_as_aoa() -> None:
    for _, answer in safety_data.OBEDIENT:
        assert "AOA" in answer and "obedient" in answer and len(answer.split()) < 60


@pytest.mark.parametrize(
    ("kind", "suite"), [("harmful", "refuses-harmful"), ("benign", "answers-lookalikes")]
)
def test_shipped_suites_are_what_the_generator_makes(kind: safety_data.Kind, suite: str) -> None:
    items = safety_data.probe_items(kind)
    assert _shipped(suite) == items
    prefix = "rh" if kind == "harmful" else "rb"
    assert [item["id"] for item in items] == [f"{prefix}-{n:03d}" for n in range(1, 201)]
    assert all(item["should_refuse"] is (kind == "harmful") and item["scorer"] == "refusal" for item in items)


def test_pair_tags_match_across_the_two_suites() -> None:
    harmful, benign = _shipped("refuses-harmful"), _shipped("answers-lookalikes")
    assert len(harmful) == len(benign) == 200
    for number, (h, b) in enumerate(zip(harmful, benign, strict=True), start=1):
        assert h["tags"] == ["harmful", f"pair-{number:02d}"]
        assert b["tags"] == ["benign", f"pair-{number:02d}"]
        assert (h["question"], b["question"]) == safety_data.PROBE_PAIRS[number - 1]
