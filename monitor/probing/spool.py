"""Measurements the database could not take, kept until it can.

When the database goes away mid-run, what was measured is written here, one JSON file per run,
atomically (a temporary file, fsync, rename: a crash leaves the old state or the new, never half a
file). The folder is the policy's `spool` (in Kubernetes, a volume: a pod restart keeps it), else
`<FORGETMENOT_HOME>/spool`. If even that cannot be written, the record is kept in this process's
memory and the error says so: that is the one case where a crash loses it.

`replay` puts every record back: at `serve` start, before each cycle, and on
`forgetmenot spool replay`. Each record is put back exactly once, whatever runs at the same time:

- a replay **claims** a file with a lock on the open file (`flock`) before reading it, so two
  replays at once (the live and baseline jobs fire together) never both put it back; the kernel
  drops the lock when its process ends, however it ends, so no claim outlives a crash;
- the database keeps one result per run, item and kind (`monitor.store.runs.replay_run`), so a
  file whose results were partly stored before the outage adds each result once;
- a replayed file is deleted only after its transaction commits.

An outage (the database unreachable) leaves the file for the next replay. A **refusal** (the
database turned the data itself down, or the file is not a spool record) would fail the same way
for ever, so the file moves to `quarantine/` with a `.reason` file beside it, the run it holds
ends as an error (the judge says ERROR rather than nothing), and the monitor reports it
(`problems`, the `spool_quarantined_files` metric and its alert) until someone deals with it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from monitor.errors import StoreError, StoreRefused
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.probing.weights import home
from monitor.store import ItemResult, Run, Store

log = logging.getLogger(__name__)
QUARANTINE = "quarantine"
SHOWN = 3  # quarantined files named in a problem line; the rest are counted
_IN_MEMORY: list[tuple[str, bytes]] = []  # (file name, record) for each record no folder took
_IN_MEMORY_LOCK = threading.Lock()


@dataclass
class Replayed:
    runs: int = 0
    results: int = 0
    failed: list[str] = field(default_factory=list)  # left in place: the next replay tries again
    quarantined: list[str] = field(default_factory=list)  # set aside for good, with why
    busy: int = 0  # files another replay held (or had just put back)


class Spool:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or home() / "spool"

    def keep(self, run: Run, suite: Suite, results: Sequence[ItemResult], complete: bool) -> str:
        """Save what the database could not take; returns where, for the error message."""
        record = {"run": run.model_dump(mode="json"), "complete": complete,
                  "suite": {"name": suite.name, "version": suite.spec.version,
                            "capability": suite.capability, "content_hash": suite.content_hash},
                  "results": [r.model_dump(mode="json", exclude={"id", "run_id"}) for r in results]}
        name = f"run-{run.model}-{run.version}-{run.suite}-{run.started_at:%Y%m%dT%H%M%S}-{run.id}.json"
        data = json.dumps(record).encode()
        try:
            return str(_write(self.folder, name, data))
        except OSError as exc:
            with _IN_MEMORY_LOCK:
                _IN_MEMORY.append((name, data))
            log.error("spool folder %s cannot be written (%s): %d results kept in memory only",
                      self.folder, exc.strerror or exc, len(results))
            return (f"memory only, as the spool folder {self.folder} cannot be written "
                    f"({exc.strerror or exc}); replayed when the database returns, lost if this "
                    "process stops first")

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("run-*.json")) if self.folder.is_dir() else []

    def quarantined(self) -> list[Path]:
        folder = self.folder / QUARANTINE
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def reason(self, path: Path) -> str:
        """Why a quarantined file was set aside, as written beside it."""
        try:
            return path.with_suffix(".reason").read_text(errors="replace").strip()
        except OSError:
            return "no reason recorded"

    def problems(self) -> list[str]:
        """What an operator must see to: records set aside, and records only this process holds."""
        found = []
        quarantined = self.quarantined()
        if quarantined:
            found.append(self._quarantine_line(quarantined))
        with _IN_MEMORY_LOCK:
            held = len(_IN_MEMORY)
        if held:
            found.append(f"{held} spooled run(s) held in memory only, as the spool folder {self.folder} "
                         "cannot be written: lost if this process stops before they are replayed")
        return found

    def _quarantine_line(self, quarantined: list[Path]) -> str:
        shown = [f"{path.name} ({_headline(self.reason(path))})" for path in quarantined[:SHOWN]]
        listed = ", ".join(shown)
        if len(quarantined) > SHOWN:
            listed += f" and {len(quarantined) - SHOWN} more"
        files = "file" if len(quarantined) == 1 else "files"
        return f"{len(quarantined)} spool {files} quarantined in {self.folder / QUARANTINE}: {listed}"

    # -- replay -----------------------------------------------------------------------------

    def replay(self, store: Store) -> Replayed:
        """Every kept record into `store`, once: see the module's docstring."""
        done = Replayed()
        self._replay_held(store, done)
        for path in self.pending():
            with self.claimed(path) as data:
                if data is None:
                    done.busy += 1
                else:
                    self._replay(store, path.name, data, path, done)
        return done

    @contextmanager
    def claimed(self, path: Path) -> Iterator[bytes | None]:
        """The record at `path`, this process's alone until the block ends; None when another
        replay holds it or has already put it back."""
        held = _open(path)
        if held is None:
            yield None
            return
        with held:
            yield _lock(held, path)

    def _replay_held(self, store: Store, done: Replayed) -> None:
        """Records held in memory, claimed by taking them out of the list: a replay running at the
        same time finds none; what is neither put back nor set aside goes back in."""
        with _IN_MEMORY_LOCK:
            held = list(_IN_MEMORY)
            _IN_MEMORY.clear()
        for name, data in held:
            if not self._replay(store, name, data, None, done):
                with _IN_MEMORY_LOCK:
                    _IN_MEMORY.append((name, data))

    def _replay(self, store: Store, name: str, data: bytes, path: Path | None, done: Replayed) -> bool:
        """Put one record back (its file deleted once committed), or set it aside if it never can
        be; False if it must wait for the next replay."""
        source = str(path) if path else "memory"
        try:
            added = _put_back(store, data, source)
        except StoreRefused as exc:
            return self._set_aside(store, name, data, path, str(exc), done)
        except StoreError as exc:
            done.failed.append(f"{source}: {exc}; left for the next replay")
            return False
        if path is not None:
            path.unlink(missing_ok=True)
        done.runs += 1
        done.results += added
        return True

    def _set_aside(self, store: Store, name: str, data: bytes, path: Path | None, reason: str,
                   done: Replayed) -> bool:
        """Quarantine a record no replay can put back, and end its run as an error. The file moves
        last (under the claim), so an outage while ending the run leaves it to be tried again."""
        target = self.folder / QUARANTINE / name
        try:
            _end_run(store, data, f"its spool record could not be replayed and is quarantined in "
                                  f"{target}: {reason}")
            _quarantine(target, data, path, reason)
        except (StoreError, OSError) as exc:
            done.failed.append(f"{path or 'memory'}: {reason}; and it could not be quarantined ({exc})")
            return False
        done.quarantined.append(f"{target}: {reason}")
        return True


def _put_back(store: Store, data: bytes, source: str) -> int:
    suite, run, results, complete = _parsed(data)
    kept = store.ensure_suite(*suite)
    run.suite_id = kept.id or 0
    return store.replay_run(run, results, complete, note=f"replayed from {source}")


def _parsed(data: bytes) -> tuple[tuple[Any, ...], Run, list[ItemResult], bool]:
    """The record's suite (as `ensure_suite` takes it), run, results and whether the run measured
    every kind; a file that holds none is refused, like data the database refuses."""
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise StoreRefused(f"unreadable ({exc.__class__.__name__}: {exc})") from exc
    try:
        suite = tuple(record["suite"][key] for key in ("name", "version", "capability", "content_hash"))
        run = Run.model_validate(record["run"])
        results = [ItemResult.model_validate(r) for r in record["results"]]
        return suite, run, results, bool(record["complete"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreRefused(f"not a spool record ({exc.__class__.__name__}: {exc})") from exc


def _end_run(store: Store, data: bytes, reason: str) -> None:
    """The record's run, if it has one the database still holds as running, ends as an error."""
    try:
        run = Run.model_validate(json.loads(data)["run"])
    except (KeyError, TypeError, ValueError):
        return  # no run to end
    if store.end_unreplayable(run, reason):
        log.warning("run %s ended as an error: %s", run.id, reason)


def _headline(reason: str) -> str:
    lines = reason.splitlines() or ["no reason recorded"]
    return lines[0][:160]


def _quarantine(target: Path, data: bytes, path: Path | None, reason: str) -> None:
    """The reason first: a crash in between leaves the record where the next replay finds it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".reason").write_text(reason + "\n", errors="backslashreplace")
    if path is None:
        _write(target.parent, target.name, data)
    else:
        os.replace(path, target)


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=".", suffix=".tmp", delete=False) as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, target)
    return target


def _open(path: Path) -> IO[bytes] | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _lock(held: IO[bytes], path: Path) -> bytes | None:
    """The file's content once this process holds its lock, if `path` still names that file: a
    replay that put it back (and deleted it) in between must not be followed by a second."""
    try:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return None
    if not os.path.samestat(current, os.fstat(held.fileno())):
        return None
    return held.read()


def spool_for(config: Config) -> Spool:
    return Spool(config.resolve(config.spool) if config.spool else None)
