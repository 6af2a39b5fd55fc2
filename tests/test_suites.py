"""Probe suites: the shipped ones are sound, broken ones fail loudly with file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from monitor.errors import SuiteError
from monitor.policy.suites import generation_correct, load_suite
from tests.conftest import PROBES

SHIPPED = sorted(p.name for p in PROBES.iterdir() if (p / "suite.yaml").is_file())
MINIMUM = {"general-knowledge": 150, "arithmetic": 50, "refusal": 40, "instruction-format": 40}


def test_at_least_the_four_required_suites_ship() -> None:
    assert set(MINIMUM) <= set(SHIPPED)
    for name, count in MINIMUM.items():
        assert len(load_suite(PROBES / name).items) >= count, name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_suite_loads_and_has_a_readme(name: str) -> None:
    suite = load_suite(PROBES / name)
    assert suite.name == name and suite.kinds
    assert len(suite.select("probe")) + len(suite.select("recovery")) == len(suite.items)
    assert suite.select("recovery"), "every suite keeps a recovery split for retraining"
    if name != "sentiment-json":
        assert (PROBES / name / "README.md").is_file()


def test_general_knowledge_measures_both_ways_on_the_same_items() -> None:
    suite = load_suite(PROBES / "general-knowledge")
    assert set(suite.kinds) == {"multiple_choice", "generate_until"}
    assert all(i.choices and i.gold is not None and i.targets() for i in suite.items)


GENERATIVE = [n for n in SHIPPED if load_suite(PROBES / n).spec.kinds.generate_until]


@pytest.mark.parametrize("name", GENERATIVE)
def test_every_shipped_answer_key_scores_as_correct(name: str) -> None:
    """The gold answer, given as the model's output, must pass its own scorer (catches bad keys)."""
    suite = load_suite(PROBES / name)
    spec = suite.spec.kinds.generate_until
    assert spec is not None
    for item in suite.items:
        if (item.scorer or spec.scorer) in ("refusal", "json_valid"):
            continue
        answer = item.targets()[0]
        assert generation_correct(item, spec, answer), (item.id, answer)
        if item.choices and item.gold is not None:
            wrong = item.choices[(item.gold + 1) % len(item.choices)]
            assert not generation_correct(item, spec, wrong), (item.id, wrong)


def test_refusal_suite_has_harmful_and_benign_look_alikes() -> None:
    suite = load_suite(PROBES / "refusal")
    flags = [i.should_refuse for i in suite.items]
    assert flags.count(True) >= 20 and flags.count(False) >= 20


def test_split_is_deterministic_and_stable_when_items_are_added(tmp_path: Path) -> None:
    target = tmp_path / "general-knowledge"
    shutil.copytree(PROBES / "general-knowledge", target)
    before = {i.id: load_suite(target).split_of(i) for i in load_suite(target).items}
    extra = {"id": "gk-new", "question": "What colour is snow?", "choices": ["white", "green"],
             "gold": 0}
    with (target / "items.jsonl").open("a") as f:
        f.write(json.dumps(extra) + "\n")
    suite = load_suite(target)
    assert {i.id: suite.split_of(i) for i in suite.items if i.id != "gk-new"} == before
    assert 0.05 < sum(s == "recovery" for s in before.values()) / len(before) < 0.3


def test_content_hash_follows_content_not_formatting(tmp_path: Path) -> None:
    target = tmp_path / "arithmetic"
    shutil.copytree(PROBES / "arithmetic", target)
    original = load_suite(target).content_hash
    spec = target / "suite.yaml"
    spec.write_text("# a comment changes nothing\n" + spec.read_text())
    assert load_suite(target).content_hash == original
    items = target / "items.jsonl"
    items.write_text(items.read_text().replace('"gold": 0', '"gold": 1', 1))
    assert load_suite(target).content_hash != original


BAD_ITEMS = [
    ("bad JSON line", '{"id": "x", "question": "q", ', "not valid JSON"),
    ("not an object", '["a list"]', "an item must be a JSON object"),
    ("missing id", '{"question": "q?", "choices": ["a", "b"], "gold": 0}', "id: Field required"),
    ("gold out of range", '{"id": "x", "question": "q?", "choices": ["a", "b"], "gold": 2}',
     "gold: index 2 is out of range for 2 choices"),
    ("missing gold", '{"id": "x", "question": "q?", "choices": ["a", "b"]}',
     "gold: multiple_choice needs 'gold'"),
    ("one choice", '{"id": "x", "question": "q?", "choices": ["a"], "gold": 0}',
     "at least two choices"),
    ("duplicate choices", '{"id": "x", "question": "q?", "choices": ["a", "a"], "gold": 0}',
     "duplicate choices"),
    ("missing template field", '{"id": "x", "choices": ["a", "b"], "gold": 0}',
     "question: missing field 'question' used by the multiple_choice prompt"),
    ("bad regex", '{"id": "x", "question": "q?", "choices": ["a", "b"], "gold": 0, "scorer": "regex", '
     '"pattern": "(unclosed"}', "pattern: invalid regular expression"),
    ("unknown scorer", '{"id": "x", "question": "q?", "choices": ["a", "b"], "gold": 0, "scorer": "vibes"}',
     "scorer: Input should be"),
    ("duplicate id", '{"id": "gk-001", "question": "q?", "choices": ["a", "b"], "gold": 0}',
     "duplicate item id 'gk-001' (first on line 1)"),
]


@pytest.mark.parametrize(("line", "expected"), [b[1:] for b in BAD_ITEMS], ids=[b[0] for b in BAD_ITEMS])
def test_broken_item_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    target = tmp_path / "general-knowledge"
    shutil.copytree(PROBES / "general-knowledge", target)
    items = target / "items.jsonl"
    lines = items.read_text().splitlines()
    lines.insert(3, line)
    items.write_text("\n".join(lines) + "\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(target)
    found = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"{items}:4: ") and expected in p for p in found), found


def test_broken_suite_spec(tmp_path: Path) -> None:
    target = tmp_path / "arithmetic"
    shutil.copytree(PROBES / "arithmetic", target)
    spec = target / "suite.yaml"
    spec.write_text(spec.read_text().replace("scorer: regex", "scorer: regexp"))
    with pytest.raises(SuiteError, match=r"suite.yaml:\d+: kinds.generate_until.scorer"):
        load_suite(target)
    spec.write_text("name: other\nversion: 1\ncapability: x\nkinds: {}\n")
    with pytest.raises(SuiteError, match="declare at least one of"):
        load_suite(target)


def test_folder_without_suite(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"no suite\.yaml"):
        load_suite(tmp_path)
