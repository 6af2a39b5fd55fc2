"""A verdict keeps the rules it was judged by: after the policy file is edited, the alert (the
exporter's flags) and the action (the ladder's triggers) still agree with the verdict. And each
unit has its own tolerance: `max_drop` (a fraction of items), `max_drop_nats` (nats per token)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.actions.triggers import triggers
from monitor.judge import decide, judge_model, verdict_rules
from monitor.judge.stats import PairedResult
from monitor.metrics import names
from monitor.metrics.exporter import StoreCollector
from monitor.policy.loading import load_config, load_suites
from monitor.policy.schema import Policy
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.run import VersionRef, probe_suite
from monitor.store import Store
from monitor.vocabulary import Phase
from tests.conftest import PROBES
from tests.test_judge import _answers, _gold

POLICY = """\
database: {database}
models:
  bot:
    versions: {{v1: {{path: w1}}, v2: {{path: w2}}}}
    baseline: v1
    live: v2
suites: [probes/general-knowledge]
policy:
  capabilities:
    general-knowledge: {rules}
"""


def _write(path: Path, store: Store, rules: str) -> Path:
    path.write_text(POLICY.format(database=store.url, rules=rules))
    return path


def _judged_under(tmp_path: Path, store: Store, rules: str) -> Path:
    """v2 answers every general-knowledge item wrongly in prose while ranking gold first."""
    shutil.copytree(PROBES / "general-knowledge", tmp_path / "probes" / "general-knowledge")
    for folder in ("w1", "w2"):
        (tmp_path / folder).mkdir()
    path = _write(tmp_path / "forgetmenot.yaml", store, rules)
    config = load_config(path)
    [suite] = load_suites(config)
    for version, right in (("v1", True), ("v2", False)):
        backend = FakeBackend(answers=_answers(suite, right), preferred=_gold(suite))
        probe_suite(store, backend, suite, VersionRef("bot", version))
    judge_model(store, config, [suite], "bot")
    return path


def _flags(store: Store) -> str:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    info = names.VERDICT_INFO.full_name
    lines = generate_latest(registry).decode().splitlines()
    return next(line for line in lines if line.startswith(info + "{"))


def test_a_policy_edit_after_the_verdict_changes_neither_the_alert_nor_the_action(
        store: Store, tmp_path: Path) -> None:
    path = _judged_under(tmp_path, store, "{max_drop: 0.10}")
    [verdict] = store.verdicts(model="bot")
    assert verdict.phase == Phase.FAIL
    # Someone mutes the capability and widens its tolerance after the verdict was made.
    edited = load_config(_write(path, store, "{max_drop: 0.99, muted: true, on_alignment_loss: [alert]}"))
    assert edited.policy.rules_for("general-knowledge").muted
    judged_by = verdict_rules(verdict, edited)
    assert (judged_by.max_drop, judged_by.muted) == (0.10, False)
    [trigger] = triggers(store, edited, "bot")
    assert trigger.verdict.id == verdict.id and trigger.steps == ("alert", "retrain")
    assert 'muted="false"' in _flags(store)


def test_a_verdict_judged_while_muted_stays_muted_when_the_file_unmutes_it(
        store: Store, tmp_path: Path) -> None:
    path = _judged_under(tmp_path, store, "{muted: true}")
    [verdict] = store.verdicts(model="bot")
    assert verdict.phase == Phase.FAIL and verdict.muted
    unmuted = load_config(_write(path, store, "{muted: false}"))
    assert triggers(store, unmuted, "bot") == []
    assert 'muted="true"' in _flags(store)


def test_verdicts_stored_before_they_carried_rules_fall_back_to_the_policy(store: Store,
                                                                             tmp_path: Path) -> None:
    path = _judged_under(tmp_path, store, "{max_drop: 0.10}")
    [verdict] = store.verdicts(model="bot")
    older = verdict.model_copy(update={"rules": ""})
    assert verdict_rules(older, load_config(path)).max_drop == 0.10


@pytest.mark.parametrize(("nats", "phase"), [(0.5, Phase.PASS), (0.05, Phase.FAIL)])
def test_perplexity_is_held_to_max_drop_nats_not_to_max_drop(nats: float, phase: Phase) -> None:
    """A drop of 0.2 nats/token (bounds 0.15 to 0.25): a fraction-of-items tolerance would read the
    same number as 20 points; `max_drop_nats` is the setting in its own unit."""
    rules = Policy(defaults={"max_drop": 0.9, "max_drop_nats": nats}).rules_for("fluency")
    result = PairedResult(35, -3.3, -3.5, 0.2, 0.15, 0.25, 0.001, "wilcoxon")
    assert decide(result, rules, unit="nats/token")[0] == phase
    assert decide(result, rules, unit="pts")[0] == Phase.PASS  # 0.9 of items: the other unit


def test_max_drop_is_a_fraction_and_max_drop_nats_is_not() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_drop"):
        Policy(defaults={"max_drop": 1.5})
    assert Policy(defaults={"max_drop_nats": 1.5}).rules_for("x").max_drop_nats == 1.5


@pytest.mark.parametrize(("lost", "gained", "accepted", "problem"), [
    (0, 0, (Phase.PASS,), None),                            # nothing moved: confidently within 5 points
    (12, 4, (Phase.PASS,), Phase.INCONCLUSIVE),             # mean drop 4.5 pts, bounds reach past 5
    (12, 4, (Phase.PASS, Phase.INCONCLUSIVE), None),        # ... which `promote_when: no_worse` accepts
    (40, 0, (Phase.PASS, Phase.INCONCLUSIVE), Phase.FAIL),  # 22.7 pts: confidently past 5
])
def test_target_max_drop_is_judged_by_the_paired_test(store: Store, lost: int, gained: int,
                                                      accepted: tuple[Phase, ...],
                                                      problem: Phase | None) -> None:
    """The fine-tune's own task on the recovered version against the version it was made from.
    Compared on raw means, 12 items lost and 4 gained of 176 (4.5 points) passed a 5-point limit;
    the paired test's bounds do not show it under 5 points, so a strict gate does not accept it."""
    from monitor.actions.retrain.gate import target_problems
    from monitor.policy.suites import load_suite

    suite = load_suite(PROBES / "general-knowledge")
    right = _answers(suite, True)
    prompts = list(right)
    before = right | {p: "no idea" for p in prompts[len(prompts) - gained:]} if gained else right
    after = right | {p: "no idea" for p in prompts[:lost]}
    for version, answers in (("v2", before), ("v2-r1", after)):
        backend = FakeBackend(answers=answers, preferred=_gold(suite))
        probe_suite(store, backend, suite, VersionRef("bot", version))
    rules = Policy(defaults={"max_drop": 0.05}).rules_for(suite.capability)
    problems = target_problems(store, suite, rules, "bot", "v2", "v2-r1", accepted)
    if problem is None:
        assert problems == []
    else:
        [only] = problems
        assert f"generate_until {problem} against v2 (target_max_drop 5%)" in only
