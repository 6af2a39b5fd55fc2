"""Probing: errors are recorded as errors, never as wrong answers; runs always finish honestly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import BackendError, Stopping
from monitor.policy.suites import load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.run import VersionRef, probe_suite, work_units
from monitor.probing.spool import Replayed, Spool
from monitor.probing.version import probe_version
from monitor.store import Run, Store
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
    (the first kind already stored), then comes back: a replay while it is away leaves the file in
    place; the replay after adds what was missing, once, and the run is complete; replaying again
    adds nothing."""
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
            during = spool.replay(store)  # an outage is no refusal: the file waits for the next replay
            assert during.failed and during.quarantined == [] and len(spool.pending()) == 1
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


def test_a_file_that_is_not_a_spool_record_is_quarantined_and_reported(store: Store, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.folder.mkdir()
    (spool.folder / "run-bot-v1-x.json").write_text('{"run": {"model": ')
    (spool.folder / "run-bot-v1-y.json").write_text('{"run": {}, "results": []}')
    done = spool.replay(store)
    assert (done.runs, done.failed, spool.pending()) == (0, [], [])
    assert "unreadable" in done.quarantined[0] and "not a spool record" in done.quarantined[1]
    assert [p.name for p in spool.quarantined()] == ["run-bot-v1-x.json", "run-bot-v1-y.json"]
    assert "not a spool record" in spool.reason(spool.quarantined()[1])
    assert spool.replay(store) == Replayed()


def _spooled_run(store: Store, spool: Spool) -> tuple[Run, Path]:
    """A run whose results the database never took: its row `running`, its results in the spool."""
    from monitor.probing.run import open_run, score_kind

    suite = load_suite(PROBES / "arithmetic")
    run = open_run(store, suite, REF, backend="fake", device="cpu", dtype="none")
    results = score_kind(FakeBackend(), suite, suite.kinds[0], suite.select("probe"))
    return run, Path(spool.keep(run, suite, results, complete=True))


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


# Item ids come from the suite's own files; one the database cannot hold is refused at every replay.
REFUSED = {"a lone surrogate, which no UTF-8 column holds": "ar-\ud800",
           "a NUL, which PostgreSQL text cannot hold": "ar-\x00"}


@pytest.mark.parametrize("item_id", list(REFUSED.values()), ids=list(REFUSED))
def test_a_record_the_database_refuses_is_quarantined_and_its_run_ends_as_error(
        store: Store, tmp_path: Path, item_id: str) -> None:
    """A refusal is not an outage: no replay will ever get it in. It moves to quarantine/ with its
    reason beside it, and the run it belongs to ends as an error, which the judge reports."""
    spool = Spool(tmp_path / "spool")
    run, path = _spooled_run(store, spool)
    _edit(path, lambda record: record["results"][0].update(item_id=item_id))
    done = spool.replay(store)
    if "\x00" in item_id and store.url.startswith("sqlite"):  # SQLite text holds a NUL: no refusal
        assert (done.runs, done.quarantined, spool.pending()) == (1, [], [])
        return
    assert (done.runs, done.failed, len(done.quarantined), spool.pending()) == (0, [], 1, [])
    [kept] = spool.quarantined()
    assert kept.name == path.name and "refused" in spool.reason(kept)
    ended = store.get_run(run.id or 0)
    assert ended is not None and ended.status == "error" and "quarantined" in (ended.error or "")
    assert spool.replay(store) == Replayed()
    assert _judged_against_a_baseline(store) == "ERROR"


def _judged_against_a_baseline(store: Store) -> str:
    """The phase of v1's arithmetic run judged against a fresh v2 baseline."""
    from monitor.judge import judge_suite
    from monitor.policy.schema import Policy

    suite = load_suite(PROBES / "arithmetic")
    probe_suite(store, FakeBackend(), suite, VersionRef("bot", "v2"))
    _, verdict = judge_suite(store, suite, Policy().rules_for(suite.capability), "bot", "v1", "v2")
    return verdict.phase


def test_a_kept_answer_no_database_could_hold_replays_escaped(store: Store, tmp_path: Path) -> None:
    """A kept record whose answer holds a NUL and a lone surrogate goes back at the next replay,
    escaped as answers stored directly are: the replay's own insert escapes too."""
    spool = Spool(tmp_path / "spool")
    run, path = _spooled_run(store, spool)
    _edit(path, lambda record: record["results"][0].update(output="8\x00\ud800"))
    done = spool.replay(store)
    outputs = [r.output for r in store.results(run.id or 0)]
    assert (done.runs, done.quarantined, spool.pending()) == (1, [], [])
    assert outputs[0] == "8\\x00\\ud800" and (store.get_run(run.id or 0) or run).status == "complete"


def _replay_together(spool: Spool, store: Store, replays: int) -> list[Replayed]:
    import threading

    start = threading.Barrier(replays)
    done: list[Replayed] = []

    def replay() -> None:
        start.wait()
        done.append(spool.replay(store))

    threads = [threading.Thread(target=replay) for _ in range(replays)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


def test_replays_at_the_same_time_store_each_result_once(store: Store, tmp_path: Path) -> None:
    """The live and baseline jobs fire together and both replay the spool: one claims each file,
    and the database keeps one row per run, item and kind whatever gets past the claim."""
    spool = Spool(tmp_path / "spool")
    for _ in range(10):
        run, _path = _spooled_run(store, spool)
        done = _replay_together(spool, store, replays=6)
        results = store.results(run.id or 0)
        assert len(results) == len({(r.item_id, r.kind) for r in results}), "each result once"
        assert sum(d.runs for d in done) == 1 and [d.failed for d in done] == [[]] * 6
        assert spool.pending() == [] and (store.get_run(run.id or 0) or run).status == "complete"


HOLD_A_CLAIM = """
import sys, time
from pathlib import Path
from monitor.probing.spool import Spool
with Spool(Path(sys.argv[1]).parent).claimed(Path(sys.argv[1])) as record:
    print("claimed" if record is not None else "not claimed", flush=True)
    time.sleep(120)
"""


def test_a_claim_goes_with_the_process_that_held_it(store: Store, tmp_path: Path) -> None:
    """While another process replays a file this one leaves it alone; killed mid-replay (-9), that
    process leaves no claim behind, and the next replay puts the record back."""
    import subprocess
    import sys

    spool = Spool(tmp_path / "spool")
    run, path = _spooled_run(store, spool)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_CLAIM, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "claimed\n"
        busy = spool.replay(store)
    finally:
        holder.kill()
        holder.wait()
    assert (busy.runs, busy.busy, spool.pending()) == (0, 1, [path])
    done = spool.replay(store)
    assert (done.runs, done.busy, spool.pending()) == (1, 0, [])
    assert (store.get_run(run.id or 0) or run).status == "complete"


def _answers_with(suite: Any, tail: str) -> dict[str, str]:
    """Every generation prompt of `suite` answered right, followed by `tail`."""
    spec = suite.spec.kinds.generate_until
    return {spec.doc_to_text.format_map(i.fields()): i.targets()[0] + tail for i in suite.items}


@pytest.mark.parametrize(("said", "stored"), [(" \x00 NUL", " \\x00 NUL"),
                                              (" \ud800 lone surrogate", " \\ud800 lone surrogate")])
def test_any_text_a_model_answers_is_stored_and_judged(store: Store, tmp_path: Path, said: str,
                                                       stored: str) -> None:
    """What a model says is data: a NUL (PostgreSQL text cannot hold it) and a lone surrogate (no
    UTF-8 column can) are stored visibly escaped, the runs complete, nothing is spooled, and the
    judge makes a verdict."""
    from monitor.judge import judge_suite
    from monitor.policy.schema import Policy

    suite = load_suite(PROBES / "general-knowledge")
    answers = _answers_with(suite, said)
    spool = Spool(tmp_path / "spool")
    for version in ("v1", "v2"):
        run = probe_suite(store, FakeBackend(answers=answers), suite, VersionRef("bot", version), spool=spool)
        assert run.status == "complete" and run.error_count == 0
    assert spool.pending() == []
    outputs = {r.output for r in store.results(run.id or 0, kind="generate_until")}
    assert outputs and all((o or "").endswith(stored) for o in outputs)
    _, verdict = judge_suite(store, suite, Policy().rules_for(suite.capability), "bot", "v2", "v1")
    assert verdict.id is not None and verdict.phase == "PASS"


# -- whatever breaks while measuring one chunk costs that chunk, never the run -------------

def poisoned_by(error: BaseException, suite_name: str = "arithmetic") -> tuple[FakeBackend, str]:
    """A backend that raises `error` on the first probe item's prompts and answers the rest."""
    suite = load_suite(PROBES / suite_name)
    poisoned = suite.select("probe")[0].question or ""

    def fail_on(text: str) -> bool:
        if poisoned in text:
            raise error
        return False

    return FakeBackend(fail_on=fail_on), poisoned


@pytest.mark.parametrize(("error", "kind"), [(KeyError("choices"), "runtime"), (MemoryError(), "oom")])
def test_a_backend_bug_is_an_error_on_its_chunk_and_the_run_goes_on(
        store: Store, caplog: pytest.LogCaptureFixture, error: Exception, kind: str) -> None:
    backend, _ = poisoned_by(error)
    run = probe_suite(store, backend, load_suite(PROBES / "arithmetic"), REF)
    results = store.results(run.id or 0)
    errors = [r for r in results if r.error_kind is not None]
    assert run.status == "complete" and 0 < len(errors) < len(results)
    assert all(r.error_kind == kind and r.correct is None and r.score is None for r in errors)
    assert type(error).__name__ in (errors[0].error or "")
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert logged and logged[0].exc_info[1] is error, "logged with its traceback"  # type: ignore[index]


@pytest.mark.parametrize("error", [Stopping("stop requested"), KeyboardInterrupt()])
def test_a_stop_still_ends_the_run_as_interrupted(store: Store, error: BaseException) -> None:
    backend, _ = poisoned_by(error)
    with pytest.raises(type(error)):
        probe_suite(store, backend, load_suite(PROBES / "arithmetic"), REF)
    [run] = store.runs()
    assert run.status == "interrupted"


def untrusted_answers_suite(tmp_path: Path) -> Path:
    """Three generated items: a catastrophic pattern, JSON asked for, and a plain sum."""
    folder = tmp_path / "untrusted"
    folder.mkdir()
    (folder / "suite.yaml").write_text(
        "name: untrusted\nversion: 1\ncapability: untrusted\nsplit: {recovery_fraction: 0.0}\n"
        "kinds:\n  generate_until: {scorer: regex}\n")
    items = [{"id": "catastrophic", "question": "Say a.", "pattern": "^(a|a)+$"},
             {"id": "deep", "question": "Some JSON.", "scorer": "json_valid"},
             {"id": "sum", "question": "2+2?", "pattern": "\\b4\\b"}]
    (folder / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return folder


@pytest.mark.timeout(60)
def test_a_scorer_that_breaks_on_an_answer_is_an_error_never_a_wrong_answer(
        store: Store, tmp_path: Path) -> None:
    suite = load_suite(untrusted_answers_suite(tmp_path))
    answers = {"Say a.": "a" * 34 + "b", "Some JSON.": "[" * 50_000 + "]" * 50_000, "2+2?": "4"}
    run = probe_suite(store, FakeBackend(answers=answers), suite, REF)
    results = {r.item_id: r for r in store.results(run.id or 0)}
    assert run.status == "complete" and run.error_count == 1
    timed_out = results["catastrophic"]
    assert (timed_out.error_kind, timed_out.correct, timed_out.score) == ("scorer", None, None)
    assert "ran past" in (timed_out.error or "") and timed_out.output == "a" * 34 + "b"
    assert (results["deep"].error_kind, results["deep"].correct) == (None, False), "not the JSON asked for"
    assert results["sum"].correct is True
