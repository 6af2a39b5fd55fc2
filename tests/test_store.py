"""The store, against SQLite and the real PostgreSQL server alike."""

from __future__ import annotations

import pytest

from monitor.errors import StoreError
from monitor.store import ItemResult, Store


def _run(store: Store, version: str = "v1", content_hash: str = "abc") -> int:
    suite = store.ensure_suite("general-knowledge", 1, "general-knowledge", content_hash)
    run = store.start_run(model="bot", version=version, suite_id=suite.id, suite=suite.name,
                          capability=suite.capability, backend="transformers", device="cpu",
                          dtype="float32")
    assert run.id is not None and run.status == "running"
    return run.id


def test_run_round_trip_with_item_results(store: Store) -> None:
    run_id = _run(store)
    store.add_results(run_id, [
        ItemResult(item_id="a", kind="multiple_choice", score=1.0, correct=True, margin=2.5, output="Paris"),
        ItemResult(item_id="b", kind="multiple_choice", score=0.0, correct=False, margin=-1.0),
        ItemResult(item_id="a", kind="generate_until", score=1.0, correct=True, output="Paris."),
        ItemResult(item_id="b", kind="generate_until", error_kind="timeout", error="took too long"),
    ])
    finished = store.finish_run(run_id, "complete")
    assert (finished.status, finished.item_count, finished.error_count) == ("complete", 4, 1)
    assert finished.finished_at is not None and finished.finished_at >= finished.started_at
    results = store.results(run_id, kind="multiple_choice")
    assert [(r.item_id, r.correct, r.margin, r.output) for r in results] == [
        ("a", True, 2.5, "Paris"), ("b", False, -1.0, None)]
    summary = {s.kind: s for s in store.summaries([run_id])[run_id]}
    assert summary["multiple_choice"].mean_score == pytest.approx(0.5)
    assert (summary["generate_until"].mean_score, summary["generate_until"].scored,
            summary["generate_until"].errors) == (1.0, 1, 1)


def test_suites_and_versions_are_registered_once(store: Store) -> None:
    first = store.ensure_suite("s", 1, "cap", "h1")
    assert store.ensure_suite("s", 1, "cap", "h1").id == first.id
    assert store.ensure_suite("s", 2, "cap", "h2").id != first.id
    v = store.register_version("bot", "v1", "/models/v1")
    assert store.register_version("bot", "v1").id == v.id


def test_runs_filter_and_latest_complete_run_matches_content(store: Store) -> None:
    old = _run(store, "v1")
    store.finish_run(old, "complete")
    other_content = _run(store, "v1", content_hash="different")
    store.finish_run(other_content, "complete")
    _run(store, "v2")
    assert [r.id for r in store.runs(version="v1")] == [old, other_content]
    assert len(store.runs(status="running")) == 1
    latest = store.latest_complete_run("bot", "v1", "abc", "transformers", "float32")
    assert latest is not None and latest.id == old
    assert store.latest_complete_run("bot", "v1", "abc", "transformers", "bfloat16") is None


def test_interrupted_runs_are_closed_not_left_running(store: Store) -> None:
    from datetime import timedelta

    suite = store.ensure_suite("general-knowledge", 1, "general-knowledge", "abc")
    run_id = store.start_run(model="bot", version="v1", suite_id=suite.id, suite=suite.name,
                             capability=suite.capability, backend="transformers", device="cpu",
                             dtype="float32", holder="died:1").id
    assert store.reap(timedelta(seconds=30)) == 1
    run = store.get_run(run_id or 0)
    assert run is not None and run.status == "interrupted" and run.finished_at is not None
    assert store.reap(timedelta(seconds=30)) == 0


def test_unknown_status_and_missing_run_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown run status"):
        store.finish_run(_run(store), "great")
    with pytest.raises(StoreError, match="does not exist"):
        store.finish_run(99999, "complete")


def test_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open database") as caught:
        Store("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(caught.value)


def test_exclusive_lets_one_holder_in_at_a_time(store: Store) -> None:
    """What serializes two replicas' moves of one model, on SQLite as on PostgreSQL."""
    import threading
    import time

    inside, order = threading.Event(), []

    def first() -> None:
        with store.exclusive(42):
            order.append("first in")
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(5)
    with store.exclusive(42):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]
