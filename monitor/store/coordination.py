"""Replicas working on one database: heartbeats, reaping the runs of the dead, claims and locks."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta

from sqlalchemy import Connection, text
from sqlalchemy import select as sa_select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col, select

from monitor.errors import StoreError
from monitor.store.engine import Database
from monitor.store.tables import Claim, Heartbeat, Run, utcnow
from monitor.vocabulary import RunStatus


def process_id() -> str:
    """This process as a holder of runs, claims and actions: the same on every call."""
    return f"{socket.gethostname()}:{os.getpid()}"


LOCK_WAIT_S = 120.0  # a move holds the lock for one deployer call, itself bounded to 30 s


class LockBusy(StoreError):
    """Another replica held a lock past the wait allowed; nothing was done under it."""


def _flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for(acquired: Callable[[], bool], key: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    pause = 0.01
    while not acquired():
        if time.monotonic() >= deadline:
            raise LockBusy(f"lock {key:#x} was held by another replica for over {wait_s:g} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _unlock(conn: Connection, key: int) -> None:
    """A lock whose connection died went with it: nothing to release, and no error to raise over
    the one the block may be raising."""
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        conn.commit()
    except DBAPIError:
        logging.getLogger(__name__).warning("lock %#x went with its connection", key)
    finally:
        with suppress(DBAPIError):
            conn.close()


class Coordination(Database):
    def beat(self, holder: str) -> None:
        with self.session() as s:
            row = s.get(Heartbeat, holder) or Heartbeat(holder=holder)
            row.seen_at = utcnow()
            s.add(row)
            s.commit()

    @contextmanager
    def beating(self, holder: str, every: float = 10.0) -> Iterator[None]:
        """Say `holder` is alive for as long as the block runs (an action carried out by the CLI,
        a retraining that takes an hour): a monitor that sees it fall silent reaps its work."""
        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.beat(holder)
                except StoreError as exc:
                    logging.getLogger(__name__).warning("heartbeat of %s failed: %s", holder, exc)
                if stop.wait(every):
                    return

        thread = threading.Thread(target=beat, name="forgetmenot-action-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def reap(self, silent_for: timedelta) -> int:
        """Mark interrupted the running runs of monitors silent for `silent_for`; returns how many."""
        cutoff = utcnow() - silent_for
        alive = sa_select(col(Heartbeat.holder)).where(col(Heartbeat.seen_at) >= cutoff)
        with self.session() as s:
            stale = s.exec(select(Run).where(Run.status == RunStatus.RUNNING, col(Run.holder).is_not(None),
                                             col(Run.holder).not_in(alive))).all()
            for run in stale:
                run.status, run.finished_at = RunStatus.INTERRUPTED, utcnow()
                run.error = f"monitor {run.holder} stopped beating while this run was in progress"
                s.add(run)
            s.commit()
            return len(stale)

    @contextmanager
    def exclusive(self, key: int, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
        """One process at a time across replicas: a PostgreSQL advisory lock, or for a SQLite file
        an exclusive lock on a file beside it (SQLite replicas share one host anyway). Waiting
        ends at `wait_s` with a StoreError: a replica stuck while holding it delays the others by
        at most that, never for ever."""
        if self.engine.dialect.name != "postgresql":
            database = self.engine.url.database
            if not database or database == ":memory:":
                yield
                return
            with open(f"{database}.lock-{key}", "a") as handle:
                _wait_for(lambda: _flock(handle.fileno()), key, wait_s)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        try:
            conn = self.engine.connect()
        except DBAPIError as exc:
            raise self.failed(exc) from exc
        try:
            _wait_for(lambda: self._try_lock(conn, key), key, wait_s)
        except BaseException:
            with suppress(DBAPIError):
                conn.close()
            raise
        try:
            yield
        finally:
            _unlock(conn, key)

    def _try_lock(self, conn: Connection, key: int) -> bool:
        try:
            return bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
        except DBAPIError as exc:
            raise self.failed(exc) from exc

    def claim(self, name: str, holder: str) -> bool:
        """True for exactly one caller per `name`, whichever replica or process asks first."""
        try:
            with Session(self.engine) as s:
                s.add(Claim(name=name, holder=holder))
                s.commit()
            return True
        except IntegrityError:
            return False
        except DBAPIError as exc:
            raise self.failed(exc) from exc
