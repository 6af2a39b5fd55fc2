"""Probing: errors are recorded as errors, never as wrong answers; runs always finish honestly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import BackendError
from monitor.policy.suites import load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.run import VersionRef, probe_suite, work_units
from monitor.probing.version import probe_version
from monitor.store import Store
from tests.conftest import PROBES

REF = VersionRef("bot", "v1")


def test_scores_come_from_the_backend_and_are_stored(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    items = suite.select("probe")
    answers = {f"{i.question} Answer in a few words.": f"It is {i.targets()[0]}." for i in items[:10]}
    backend = FakeBackend(answers=answers, preferred=lambda r: 0)
    run = probe_suite(store, backend, suite, REF)
    assert run.status == "complete" and run.item_count == 2 * len(items) and run.error_count == 0
    gen = {r.item_id: r for r in store.results(run.id or 0, kind="generate_until")}
    assert sum(r.correct is True for r in gen.values()) == 10
    mc = store.results(run.id or 0, kind="multiple_choice")
    expected = sum(i.gold == 0 for i in items)
    assert sum(bool(r.correct) for r in mc) == expected
    assert all((r.margin or 0) > 0 if r.correct else (r.margin or 0) < 0 for r in mc)


def test_a_failing_chunk_is_an_error_not_a_wrong_answer(store: Store) -> None:
    suite = load_suite(PROBES / "arithmetic")
    poisoned = suite.select("probe")[0].question or ""
    backend = FakeBackend(fail_on=lambda text: poisoned in text)
    run = probe_suite(store, backend, suite, REF)
    results = store.results(run.id or 0)
    errors = [r for r in results if r.error_kind is not None]
    assert run.status == "complete" and run.error_count == len(errors) > 0
    assert all(r.correct is None and r.score is None and r.error_kind == "scripted" for r in errors)


def test_a_run_where_nothing_could_be_measured_is_an_error(store: Store) -> None:
    suite = load_suite(PROBES / "refusal")
    run = probe_suite(store, FakeBackend(fail_on=lambda text: True), suite, REF)
    assert run.status == "error" and run.error_count == run.item_count > 0


def test_an_interrupted_run_is_marked_interrupted(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    calls = {"n": 0}

    def stop(_: str) -> bool:
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        probe_suite(store, FakeBackend(fail_on=stop), suite, REF)
    [run] = store.runs()
    assert run.status == "interrupted"


def test_progress_advances_once_per_item_and_kind(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    ticks: list[int] = []
    probe_suite(store, FakeBackend(), suite, REF, advance=ticks.append)
    assert sum(ticks) == work_units(suite) == 2 * len(suite.select("probe"))


def test_rolling_scores_are_mean_logprob_per_token(store: Store) -> None:
    suite = load_suite(PROBES / "fluency")
    run = probe_suite(store, FakeBackend(), suite, REF)
    assert {r.score for r in store.results(run.id or 0)} == {-2.0}


def test_recovery_split_is_never_scored_unless_asked(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    run = probe_suite(store, FakeBackend(), suite, REF)
    recovery = {i.id for i in suite.select("recovery")}
    assert recovery and not recovery & {r.item_id for r in store.results(run.id or 0)}


def test_version_that_will_not_load_gets_error_runs(store: Store) -> None:
    suites = [load_suite(PROBES / "arithmetic"), load_suite(PROBES / "refusal")]

    def load() -> Any:
        raise BackendError("weights missing", kind="load")

    measured = probe_version(store, REF, suites, load)
    assert [m.run.status for m in measured] == ["error", "error"]
    assert all("load: weights missing" in (m.run.error or "") for m in measured)


def test_reuse_skips_suites_already_measured_on_the_same_content(store: Store, tmp_path: Path) -> None:
    suites = [load_suite(PROBES / "arithmetic")]
    loads = {"n": 0}

    def load() -> FakeBackend:
        loads["n"] += 1
        return FakeBackend()

    first = probe_version(store, REF, suites, load, reuse_on=("fake", "none"))
    again = probe_version(store, REF, suites, load, reuse_on=("fake", "none"))
    assert loads["n"] == 1 and again[0].reused and again[0].run.id == first[0].run.id
    fresh = probe_version(store, REF, suites, load)
    assert loads["n"] == 2 and fresh[0].run.id != first[0].run.id


@pytest.mark.postgres
def test_database_gone_mid_run_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real PostgreSQL database is dropped while a run is measuring: the results are spooled."""
    from sqlalchemy import create_engine, text

    from monitor.errors import StoreError
    from tests.conftest import PG_ADMIN, postgres_database

    monkeypatch.setenv("FORGETMENOT_HOME", str(tmp_path))
    suite = load_suite(PROBES / "general-knowledge")
    with postgres_database() as url:
        store = Store(url)
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")

        def drop(_: int) -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))

        with pytest.raises(StoreError, match="results measured so far are saved in") as caught:
            probe_suite(store, FakeBackend(), suite, REF, advance=drop)
        admin.dispose()
    [spooled] = (tmp_path / "spool").glob("run-bot-v1-general-knowledge-*.json")
    assert str(spooled) in str(caught.value)
    record = json.loads(spooled.read_text())
    assert record["run"]["suite"] == "general-knowledge"
    assert len(record["results"]) == len(suite.select("probe"))
    assert {r["kind"] for r in record["results"]} == {"multiple_choice"}


@pytest.mark.postgres
def test_a_database_outage_mid_run_is_spooled_and_replayed_once(tmp_path: Path) -> None:
    """The real PostgreSQL database stops taking connections while a run measures its last kind
    (the first kind already stored), then comes back: the replay adds what was missing, once, and
    the run is complete; replaying again adds nothing."""
    from monitor.errors import StoreError
    from monitor.probing.spool import Spool
    from tests.conftest import database_switch, postgres_database

    suite = load_suite(PROBES / "general-knowledge")
    spool = Spool(tmp_path / "spool")
    with postgres_database() as url, database_switch(url) as allow:
        store = Store(url)
        measured, total = {"n": 0}, work_units(suite)

        def advance(n: int) -> None:
            measured["n"] += n
            if measured["n"] == total:
                allow(False)

        try:
            with pytest.raises(StoreError, match="results measured so far are saved in"):
                probe_suite(store, FakeBackend(), suite, REF, advance=advance, spool=spool)
            assert len(spool.pending()) == 1
            with pytest.raises(StoreError):
                store.runs()  # still away: nothing to replay into yet
        finally:
            allow(True)
        done = spool.replay(store)
        again = spool.replay(store)
        [run] = store.runs()
        results = store.results(run.id or 0)
        store.close()
    expected = len(suite.select("probe")) * len(suite.kinds)
    last_kind = len(suite.select("probe"))
    assert (done.runs, done.results, done.failed) == (1, last_kind, [])
    assert (again.runs, again.results) == (0, 0) and spool.pending() == []
    assert run.status == "complete" and run.item_count == expected == len(results)
    assert len({(r.item_id, r.kind) for r in results}) == expected, "each result once"


def test_an_unwritable_spool_keeps_results_in_memory_until_replayed(store: Store, tmp_path: Path) -> None:
    from monitor.probing.spool import Spool
    from monitor.store import ItemResult

    (tmp_path / "not-a-folder").write_text("")
    spool = Spool(tmp_path / "not-a-folder" / "spool")
    suite = load_suite(PROBES / "arithmetic")
    run = store.start_run(model="bot", version="v1", suite=suite.name, capability=suite.capability,
                          backend="fake", device="cpu", dtype="none", split="probe",
                          suite_id=store.ensure_suite(suite.name, suite.spec.version, suite.capability,
                                                      suite.content_hash).id)
    results = [ItemResult(item_id=i.id, kind="multiple_choice", score=1.0, correct=True)
               for i in suite.select("probe")]
    where = spool.keep(run, suite, results, complete=True)
    assert where.startswith("memory only") and "cannot be written" in where
    done = spool.replay(store)
    assert (done.runs, done.results) == (1, len(results))
    assert store.get_run(run.id or 0).status == "complete"  # type: ignore[union-attr]
    assert spool.replay(store).runs == 0


def test_a_spooled_run_the_database_lost_comes_back_as_a_new_run(tmp_path: Path) -> None:
    """The outage took the database with it (restored from a backup without that run)."""
    from monitor.probing.spool import Spool

    suite = load_suite(PROBES / "arithmetic")
    first = Store(f"sqlite:///{tmp_path / 'first.db'}")
    run = probe_suite(first, FakeBackend(), suite, REF)
    spool = Spool(tmp_path / "spool")
    spool.keep(run, suite, first.results(run.id or 0), complete=True)
    restored = Store(f"sqlite:///{tmp_path / 'restored.db'}")
    done = spool.replay(restored)
    [back] = restored.runs()
    assert done.runs == 1 and back.status == "complete" and back.item_count == run.item_count
    assert restored.summaries([back.id or 0])[back.id or 0] == first.summaries([run.id or 0])[run.id or 0]


def test_a_corrupt_spool_file_is_left_in_place_and_reported(store: Store, tmp_path: Path) -> None:
    from monitor.probing.spool import Spool

    spool = Spool(tmp_path / "spool")
    spool.folder.mkdir()
    (spool.folder / "run-bot-v1-x.json").write_text('{"run": {"model": ')
    (spool.folder / "run-bot-v1-y.json").write_text('{"run": {}, "results": []}')
    done = spool.replay(store)
    assert done.runs == 0 and len(done.failed) == 2 and len(spool.pending()) == 2
    assert "unreadable" in done.failed[0] and "not a spool record" in done.failed[1]
