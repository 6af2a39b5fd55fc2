"""The store, against SQLite and the real PostgreSQL server alike."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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


# A NUL (PostgreSQL text cannot hold it) and lone surrogates (no UTF-8 column can), as an answer,
# an endpoint's error body or a deployer's reply may carry them; and how every column keeps them.
UNSTORABLE = "said \x00 then \ud800 and \udfff"
ESCAPED = "said \\x00 then \\ud800 and \\udfff"


def test_every_free_text_column_keeps_any_text_visibly_escaped(store: Store) -> None:
    from monitor.store import Action, Verdict, VerdictKind

    run_id = _run(store)
    store.add_results(run_id, [ItemResult(item_id="a", kind="generate_until", output=UNSTORABLE,
                                          error_kind="backend", error=UNSTORABLE)])
    store.finish_run(run_id, "error", error=UNSTORABLE)
    verdict = Verdict(model="bot", candidate="v2", baseline="v1", suite="s", capability="c", content_hash="h",
                      phase="ERROR", diagnosis="none", reason=UNSTORABLE)
    kind = VerdictKind(kind="generate_until", phase="ERROR", reason=UNSTORABLE)
    verdict_id = store.save_verdict(verdict, [kind]).id or 0
    action_id = store.add_action(Action(model="bot", kind="alert", trigger="verdict", reason=UNSTORABLE,
                                        detail=UNSTORABLE)).id or 0
    [result] = store.results(run_id)
    run, found, action = store.get_run(run_id), store.get_verdict(verdict_id), store.get_action(action_id)
    assert run is not None and found is not None and action is not None
    saved, [saved_kind] = found
    stored = [result.output, result.error, saved.reason, saved_kind.reason, action.reason, action.detail]
    assert stored == [ESCAPED] * len(stored)
    assert run.error == f"{ESCAPED}: 1 backend; first: {ESCAPED}"  # the run's error summary holds both


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


def test_a_lock_held_too_long_is_waited_on_for_a_bounded_time(store: Store) -> None:
    """A replica stuck holding the move lock delays the others by the wait allowed, no more."""
    import threading
    import time

    from monitor.store.coordination import LockBusy

    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.exclusive(43):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(5)
        began = time.monotonic()
        with pytest.raises(LockBusy, match=r"held by another replica for over 0\.5 s"), \
                store.exclusive(43, wait_s=0.5):
            pass
        assert 0.5 <= time.monotonic() - began < 3
    finally:
        release.set()
        thread.join()
    with store.exclusive(43, wait_s=1):  # free again once the holder is done
        pass


def test_the_head_written_in_the_package_is_the_newest_migration() -> None:
    """Opening a current database skips Alembic on the strength of `HEAD`: it must be the scripts'."""
    from alembic.script import ScriptDirectory

    from monitor.store.migrate import alembic_config
    from monitor.store.migrations import HEAD

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD


def test_a_database_behind_the_head_is_upgraded_on_open(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from monitor.store.engine import make_engine
    from monitor.store.migrate import alembic_config, current, upgrade
    from monitor.store.migrations import HEAD

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("verdict")}

    assert current(engine) == "0003" and "rules" not in columns()
    upgrade(engine)
    assert current(engine) == HEAD and "rules" in columns()
    engine.dispose()


def _schema(url: str) -> dict[str, object]:
    """Every table's columns (type, nullability, server default), indexes and foreign keys."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {table: ([(c["name"], str(c["type"]), c["nullable"], c.get("default"))
                         for c in found.get_columns(table)],
                        sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                               for i in found.get_indexes(table)),
                        sorted((tuple(f["constrained_columns"]), f["referred_table"])
                               for f in found.get_foreign_keys(table)),
                        found.get_pk_constraint(table)["constrained_columns"])
                for table in sorted(found.get_table_names())}
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_new_database_made_at_the_head_equals_the_migrations_replayed(database: str,
                                                                       tmp_path: Path) -> None:
    """New databases skip replaying the migrations (`create_at_head`); that is only safe while the
    models and the migrations describe the same schema, column for column."""
    from contextlib import ExitStack

    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    from monitor.store.engine import make_engine
    from monitor.store.migrate import alembic_config, current, upgrade
    from monitor.store.migrations import HEAD
    from tests.conftest import postgres_database

    with ExitStack() as stack:
        if database == "sqlite":
            urls = [f"sqlite:///{tmp_path / 'replayed.db'}", f"sqlite:///{tmp_path / 'created.db'}"]
        else:
            urls = [stack.enter_context(postgres_database()) for _ in range(2)]
        replayed, created = (make_engine(u) for u in urls)
        with replayed.begin() as connection:
            config = alembic_config(urls[0])
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        upgrade(created)  # new: made at the head
        assert current(created) == current(replayed) == HEAD
        with replayed.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
        replayed.dispose()
        created.dispose()
        assert _schema(urls[1]) == _schema(urls[0])


@pytest.mark.postgres
def test_replicas_opening_a_new_database_together_all_start() -> None:
    """Creating a new database at the head takes the migration lock, as a migration does: the
    replicas that lose the race find the tables made and start on them."""
    import subprocess
    import sys

    from monitor.store.engine import make_engine
    from monitor.store.migrate import current
    from monitor.store.migrations import HEAD
    from tests.conftest import postgres_database

    with postgres_database() as url:
        code = f"import time; time.sleep(max(0, {time.time() + 3} - time.time())); " \
               f"from monitor.store import Store; Store({url!r}).close()"
        replicas = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
                    for _ in range(4)]
        errors = [replica.communicate(timeout=120)[1] for replica in replicas]
        assert [r.returncode for r in replicas] == [0, 0, 0, 0], errors
        engine = make_engine(url)
        assert current(engine) == HEAD
        engine.dispose()


def _results_stored_twice(url: str) -> int:
    """A database at 0007 holding what two replays at once left: every result of a finished run
    twice, its counts and per-kind sums made over both copies, and one running run's results twice."""
    from sqlmodel import Session

    from monitor.store.tables import ItemResult, Run, RunError, RunKind, SuiteRecord

    engine = _at_revision(url, "0007")
    rows = [ItemResult(item_id="a", kind="multiple_choice", score=1.0, correct=True),
            ItemResult(item_id="b", kind="multiple_choice", score=0.0, correct=False),
            ItemResult(item_id="a", kind="generate_until", error_kind="timeout", error="took too long")]
    with Session(engine) as s:
        suite = SuiteRecord(name="s", version=1, capability="c", content_hash="h")
        s.add(suite)
        s.flush()
        common = {"model": "bot", "suite_id": suite.id, "suite": "s", "capability": "c", "backend": "fake",
                  "device": "cpu", "dtype": "none"}
        finished = Run(version="v1", status="complete", item_count=6, error_count=2, **common)
        running = Run(version="v2", **common)
        s.add_all([finished, running])
        s.flush()
        for run in (finished, running):
            s.add_all([ItemResult(**r.model_dump(exclude={"id", "run_id"}), run_id=run.id) for r in rows * 2])
        s.add_all([RunKind(run_id=finished.id, kind="multiple_choice", mean_score=0.5, scored=4),
                   RunKind(run_id=finished.id, kind="generate_until", errors=2),
                   RunError(run_id=finished.id, error_kind="timeout", count=2)])
        s.commit()
        finished_id = finished.id or 0
    engine.dispose()
    return finished_id


def _at_revision(url: str, revision: str) -> Any:
    from alembic import command

    from monitor.store.engine import make_engine
    from monitor.store.migrate import alembic_config

    engine = make_engine(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return engine


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrading_keeps_the_first_of_each_result_stored_twice_and_sums_its_run_again(
        database: str, tmp_path: Path) -> None:
    """Before item results had a unique key, replays at once could store a result twice. The
    migration that adds the key keeps the first copy of each, and counts and sums a finished run
    again from what it kept; after it, the database refuses a second copy."""
    from contextlib import ExitStack

    from sqlalchemy.exc import IntegrityError
    from sqlmodel import Session, select

    from monitor.store.tables import RunError
    from tests.conftest import postgres_database

    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'twice.db'}"
        if database == "postgres":
            url = stack.enter_context(postgres_database())
        run_id = _results_stored_twice(url)
        store = stack.enter_context(Store(url))
        kept = store.results(run_id)
        summary = {s.kind: (s.mean_score, s.scored, s.errors) for s in store.summaries([run_id])[run_id]}
        run = store.get_run(run_id)
        with Session(store.engine) as s:
            errors = [(e.error_kind, e.count) for e in s.exec(select(RunError)).all()]
        per_run = [len(store.results(r.id or 0)) for r in store.runs()]
        assert [r.id for r in kept] == [1, 2, 3] and per_run == [3, 3]
        assert run is not None and (run.item_count, run.error_count) == (3, 1)
        assert summary == {"multiple_choice": (0.5, 2, 0), "generate_until": (None, 0, 1)}
        assert errors == [("timeout", 1)]
        with pytest.raises(IntegrityError), Session(store.engine) as s:
            s.add(ItemResult(run_id=run_id, item_id="a", kind="multiple_choice", score=0.0))
            s.commit()
