"""One verdict per measurement: a verdict is the runs it compares judged by one set of rules, and
the ladder counts measurements of live, not how often they were judged."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from monitor.actions import ladder
from monitor.judge import judge_model, judge_suite
from monitor.policy.loading import load_config
from monitor.policy.schema import Policy
from monitor.policy.suites import Suite, load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.run import VersionRef, probe_suite
from monitor.service.scheduler import open_monitor
from monitor.store import Store, Verdict
from tests.conftest import PROBES
from tests.test_actions import policy as ladder_policy
from tests.test_judge import _answers, _gold
from tests.test_service import policy as serve_policy
from tests.test_store import _at_revision


def _backend(suite: Suite, right: bool) -> FakeBackend:
    """Right, or forgotten: wrong answers and wrong choices (knowledge loss: the ladder rolls back)."""
    gold = _gold(suite)

    def forgotten(request: Any) -> int:
        return (int(gold(request)) + 1) % len(request.continuations)

    return FakeBackend(answers=_answers(suite, right), preferred=gold if right else forgotten)


def _measure(store: Store, suite: Suite, version: str, right: bool) -> None:
    probe_suite(store, _backend(suite, right), suite, VersionRef("bot", version))


def test_judging_the_same_runs_by_the_same_rules_again_returns_the_stored_verdict(store: Store) -> None:
    """Judged again, by hand or by a cycle that found no new run, a measurement is the verdict it
    already has; other rules or a new run of either version is another verdict."""
    suite = load_suite(PROBES / "arithmetic")
    rules = Policy().rules_for(suite.capability)
    _measure(store, suite, "v1", right=True)
    _measure(store, suite, "v2", right=False)
    ids = [judge_suite(store, suite, rules, "bot", "v2", "v1")[1].id for _ in range(3)]
    assert len(set(ids)) == 1 and [v.id for v in store.verdicts(model="bot")] == ids[:1]
    found = store.get_verdict(ids[0] or 0)
    assert found is not None and [k.kind for k in found[1]] == ["multiple_choice", "generate_until"]
    stricter = Policy(defaults={"max_drop": 0.01}).rules_for(suite.capability)
    _, judged_otherwise = judge_suite(store, suite, stricter, "bot", "v2", "v1")
    _measure(store, suite, "v2", right=False)
    _, measured_again = judge_suite(store, suite, rules, "bot", "v2", "v1")
    assert len({ids[0], judged_otherwise.id, measured_again.id}) == 3
    assert len(store.verdicts(model="bot")) == 3


def test_judge_model_three_times_leaves_one_verdict_per_suite(store: Store, tmp_path: Path) -> None:
    """What `forgetmenot judge` runs, on both databases."""
    config = load_config(ladder_policy(tmp_path, store.url))
    suite = load_suite(tmp_path / "probes" / "arithmetic")
    _measure(store, suite, "v1", right=True)
    _measure(store, suite, "v3", right=False)
    judged = [judge_model(store, config, [suite], "bot") for _ in range(3)]
    assert {v.id for j in judged for v in j.verdicts()} == {store.verdicts()[0].id}
    assert len(store.verdicts()) == 1 and {j.phase for j in judged} == {"FAIL"}


def test_replicas_judging_the_same_runs_at_once_store_one_verdict(store: Store) -> None:
    """The database's unique key decides, not a look before the insert: replicas that all find
    no verdict yet still store one, and each gets that one back."""
    suite = load_suite(PROBES / "arithmetic")
    rules = Policy().rules_for(suite.capability)
    _measure(store, suite, "v1", right=True)
    _measure(store, suite, "v2", right=False)
    replicas = [Store(store.url) for _ in range(4)]
    together = threading.Barrier(len(replicas))

    def judge(replica: Store) -> int | None:
        together.wait()
        return judge_suite(replica, suite, rules, "bot", "v2", "v1")[1].id

    try:
        with ThreadPoolExecutor(len(replicas)) as pool:
            ids = list(pool.map(judge, replicas))
    finally:
        for replica in replicas:
            replica.close()
    stored = store.verdicts(model="bot")
    assert len(stored) == 1 and set(ids) == {stored[0].id}
    found = store.get_verdict(stored[0].id or 0)
    assert found is not None and len(found[1]) == 2, "the kinds of one verdict, stored once"


def _ladder(store: Store, tmp_path: Path) -> tuple[Any, Suite]:
    path = ladder_policy(tmp_path, store.url)
    path.write_text(path.read_text().replace("policy:\n", "policy:\n  defaults: {failure_limit: 3}\n"))
    return load_config(path), load_suite(tmp_path / "probes" / "arithmetic")


def test_failure_limit_counts_measurements_of_live_not_judgings(store: Store, tmp_path: Path) -> None:
    """`failure_limit: 3` wants three measurements of live that FAIL: one run judged three times
    is one, and so is one run judged again against a newer run of the baseline."""
    config, suite = _ladder(store, tmp_path)
    rules = config.policy.rules_for(suite.capability)

    def judge() -> None:
        judge_suite(store, suite, rules, "bot", "v3", "v1")

    _measure(store, suite, "v1", right=True)
    _measure(store, suite, "v3", right=False)
    for _ in range(3):
        judge()
    assert ladder.act(store, config, "bot", "r") == []
    _measure(store, suite, "v1", right=True)
    judge()
    _measure(store, suite, "v3", right=False)
    judge()
    assert ladder.act(store, config, "bot", "r") == [], "two measurements of live"
    _measure(store, suite, "v3", right=False)
    judge()
    assert [a.kind for a in ladder.act(store, config, "bot", "r")] == ["alert", "rollback"]


def _stored_twice(store: Store, candidate_runs: str, baseline_runs: str) -> None:
    """A verdict as the judge stored it before verdicts had an identity: once per judging."""
    for _ in range(2):
        store.save_verdict(Verdict(model="bot", candidate="v3", baseline="v1", suite="arithmetic",
                                   capability="arithmetic", content_hash="h", phase="FAIL",
                                   diagnosis="knowledge_loss", reason="FAIL", candidate_runs=candidate_runs,
                                   baseline_runs=baseline_runs), [])


def test_verdicts_stored_twice_before_they_had_an_identity_count_once(store: Store, tmp_path: Path) -> None:
    config, _ = _ladder(store, tmp_path)
    _stored_twice(store, "10", "1")
    _stored_twice(store, "11", "1")
    assert len(store.verdicts()) == 4
    assert ladder.act(store, config, "bot", "r") == []
    _stored_twice(store, "12", "1")
    assert [a.kind for a in ladder.act(store, config, "bot", "r")] == ["alert", "rollback"]


def _serve_backends(config: Any, model: str, version: str) -> FakeBackend:
    return _backend(load_suite(PROBES / "arithmetic"), right=version == "v1")


def test_serve_judging_live_after_each_job_counts_each_measurement_once(store: Store, tmp_path: Path,
                                                                      tiny_model_dir: Path) -> None:
    """Each interval `serve` judges live after the baseline's job and again after live's own: two
    verdicts, one new measurement of live. `failure_limit: 3` acts in the third interval."""
    path = serve_policy(tmp_path, tiny_model_dir, database=store.url)
    path.write_text(path.read_text().replace("{min_items: 5}", "{min_items: 5, failure_limit: 3}"))
    monitor = open_monitor(path, load_backend=_serve_backends)
    for slot in (1, 2):
        assert monitor.cycle("bot", "v1", slot=slot) and monitor.cycle("bot", "v2", slot=slot)
    assert len(store.verdicts(capability="arithmetic")) == 3
    assert store.actions("bot") == [], "two measurements of live, judged three times"
    assert monitor.cycle("bot", "v1", slot=3) and monitor.cycle("bot", "v2", slot=3)
    assert [a.kind for a in store.actions("bot")] == ["alert", "rollback"]
    monitor.store.close()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrading_keeps_verdicts_judged_twice_and_gives_the_first_its_identity(
        database: str, tmp_path: Path) -> None:
    """Rows judged twice before the key existed stay readable; the first of each gets the
    identity, so judging those runs again returns it instead of adding a third."""
    from contextlib import ExitStack

    from sqlalchemy import text

    from monitor.store.verdicts import measurement_of
    from tests.conftest import postgres_database

    rules = Policy().rules_for("arithmetic").model_dump_json()
    row = {"created_at": "2026-12-01 10:00:00", "model": "bot", "candidate": "v3", "baseline": "v1",
           "suite": "arithmetic", "capability": "arithmetic", "content_hash": "h", "phase": "FAIL",
           "diagnosis": "knowledge_loss", "reason": "FAIL", "muted": False, "critical": False,
           "candidate_runs": "2", "baseline_runs": "1", "rules": rules}
    insert = text(f"INSERT INTO verdict ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})")
    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'twice.db'}"
        if database == "postgres":
            url = stack.enter_context(postgres_database())
        engine = _at_revision(url, "0008")
        with engine.begin() as connection:
            for candidate_runs in ("2", "2", "3", "2"):
                connection.execute(insert, {**row, "candidate_runs": candidate_runs})
        engine.dispose()
        store = stack.enter_context(Store(url))
        key = measurement_of("2", "1", rules)
        assert [v.measurement for v in store.verdicts()] == [key, None, measurement_of("3", "1", rules), None]
        fields = {name: value for name, value in row.items() if name != "created_at"}
        again = Verdict(**fields, measurement=key)
        assert store.save_verdict(again, []).id == 1 and len(store.verdicts()) == 4
