"""The exporter: exposition compared to golden text, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from sqlmodel import Session, select

from monitor.judge import judge_suite
from monitor.metrics import names as metrics
from monitor.metrics.exporter import StoreCollector
from monitor.policy.schema import Policy
from monitor.policy.suites import load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.run import VersionRef, probe_suite
from monitor.store import Action, Run, Store, Verdict
from tests.conftest import PROBES
from tests.test_judge import _answers, _gold

GOLDEN = Path(__file__).parent / "golden" / "exposition.txt"
FIXED = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _populate(store: Store) -> None:
    """v1 right, v2 wrong in prose (alignment loss) on general-knowledge; one broken run on fluency."""
    suite = load_suite(PROBES / "general-knowledge")
    v1 = FakeBackend(answers=_answers(suite, True), preferred=_gold(suite))
    v2 = FakeBackend(answers=_answers(suite, False), preferred=_gold(suite))
    probe_suite(store, v1, suite, VersionRef("bot", "v1"))
    probe_suite(store, v2, suite, VersionRef("bot", "v2"))
    judge_suite(store, suite, Policy().rules_for(suite.capability), "bot", "v2", "v1")
    fluency = load_suite(PROBES / "fluency")
    probe_suite(store, FakeBackend(fail_on=lambda text: True), fluency, VersionRef("bot", "v2"))
    for kind, status in (("alert", "done"), ("rollback", "done"), ("retrain", "refused")):
        store.add_action(Action(model="bot", kind=kind, trigger="verdict", status=status))
    store.set_live("bot", "v1", 2)
    with Session(store.engine) as s:
        for row in [*s.exec(select(Run)).all(), *s.exec(select(Verdict)).all()]:
            if isinstance(row, Run):
                row.started_at = row.finished_at = FIXED
            else:
                row.created_at = FIXED
            s.add(row)
        s.commit()


def test_exposition_matches_golden_text(store: Store) -> None:
    _populate(store)
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    text = generate_latest(registry).decode()
    if os.environ.get("FORGETMENOT_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_exported_family_is_declared_in_one_place(store: Store) -> None:
    _populate(store)
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    declared = {s.full_name.removesuffix("_total") for s in metrics.ALL}
    exported = {family.name for family in registry.collect()}
    assert exported <= declared
    assert all(s.full_name.startswith("forgetmenot_") for s in metrics.ALL)


def test_labels_never_carry_item_ids_or_free_text(store: Store) -> None:
    _populate(store)
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    values = {v for family in registry.collect() for sample in family.samples for v in sample.labels.values()}
    assert not any(v.startswith("gk-") for v in values)
    assert all(len(v) < 64 for v in values)


def test_cached_exposition_renders_again_only_when_the_store_changed(store: Store) -> None:
    from monitor.metrics.exporter import CachedExposition

    _populate(store)
    cached = CachedExposition(store)
    first = cached.render()
    assert cached.render() is first, "unchanged store: the same bytes, not rendered again"
    suite = load_suite(PROBES / "arithmetic")
    probe_suite(store, FakeBackend(), suite, VersionRef("bot", "v3"))
    served = cached.render()  # starts the render in the background; may still be the old text
    changed = cached.render(wait=True)
    assert served in (first, changed)
    assert changed is not first and b'version="v3"' in changed and b'version="v3"' not in first


def test_retired_versions_stop_paging_and_every_action_outcome_starts_at_zero(store: Store) -> None:
    """v2 was rolled back: its FAIL verdict and its last run must not keep the breach and stale
    alerts firing, while its scores stay as history. And a model's first rejected retraining must
    be an increase from 0, or `ForgetmenotActionNeedsHuman` could never see it."""
    _populate(store)

    def exposition() -> list[str]:
        registry = CollectorRegistry()
        registry.register(StoreCollector(store))
        return generate_latest(registry).decode().splitlines()

    def about_v2(lines: list[str], family: str) -> list[str]:
        return [line for line in lines if line.startswith(family + "{") and 'version="v2"' in line]

    before = exposition()
    assert about_v2(before, "forgetmenot_verdict_phase") and about_v2(
        before, "forgetmenot_last_successful_run_timestamp_seconds")
    assert 'forgetmenot_actions_total{kind="retrain",model="bot",status="rejected"} 0.0' in before
    store.add_action(Action(model="bot", kind="rollback", trigger="manual", status="done",
                            from_version="v2", to_version="v1"))
    after = exposition()
    assert not about_v2(after, "forgetmenot_verdict_phase")
    assert not about_v2(after, "forgetmenot_last_successful_run_timestamp_seconds")
    assert about_v2(after, "forgetmenot_retention_score")


def test_the_tolerance_is_the_one_each_verdict_was_judged_by(store: Store) -> None:
    """The line a delta is drawn against comes from the rules stored with its verdict: accuracy
    kinds are held to max_drop, loglikelihood_rolling to max_drop_nats, a policy edited since
    moves nothing, and a verdict stored before rules were kept shows no line rather than a guess."""
    policy = Policy.model_validate({"defaults": {"max_drop": 0.2, "max_drop_nats": 0.1}})
    knowledge, fluency = load_suite(PROBES / "general-knowledge"), load_suite(PROBES / "fluency")
    for version in ("v1", "v2"):
        answers = FakeBackend(answers=_answers(knowledge, version == "v1"), preferred=_gold(knowledge))
        probe_suite(store, answers, knowledge, VersionRef("bot", version))
        probe_suite(store, FakeBackend(), fluency, VersionRef("bot", version))
    for suite in (knowledge, fluency):
        judge_suite(store, suite, policy.rules_for(suite.capability), "bot", "v2", "v1")

    def tolerances() -> dict[tuple[str, str], float]:
        registry = CollectorRegistry()
        registry.register(StoreCollector(store))
        return {(s.labels["capability"], s.labels["kind"]): s.value for family in registry.collect()
                if family.name == metrics.RETENTION_TOLERANCE.full_name for s in family.samples}

    assert tolerances() == {("general-knowledge", "multiple_choice"): 0.2,
                            ("general-knowledge", "generate_until"): 0.2,
                            ("fluency", "loglikelihood_rolling"): 0.1}
    with Session(store.engine) as s:
        for verdict in s.exec(select(Verdict)).all():
            verdict.rules = ""
            s.add(verdict)
        s.commit()
    assert tolerances() == {}
