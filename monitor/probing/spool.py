"""Measurements the database could not take, kept until it can.

When the database goes away mid-run, what was measured is written here, one JSON file per run,
atomically (a temporary file, fsync, rename: a crash leaves the old state or the new, never half a
file). The folder is the policy's `spool` (in Kubernetes, a volume: a pod restart keeps it), else
`<FORGETMENOT_HOME>/spool`. If even that cannot be written, the record is kept in this process's
memory and the error says so: that is the one case where a crash loses it.

`replay` puts every record back: at `serve` start, before each cycle, and on
`forgetmenot spool replay`. It is idempotent (keyed by run and item), so replaying twice, or a
file whose results were partly stored before the outage, adds each result once. A replayed file
is deleted only after its transaction commits.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.errors import StoreError
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.probing.weights import home
from monitor.store import ItemResult, Run, Store

log = logging.getLogger(__name__)
_IN_MEMORY: list[dict[str, Any]] = []
_IN_MEMORY_LOCK = threading.Lock()


@dataclass
class Replayed:
    runs: int = 0
    results: int = 0
    failed: list[str] = field(default_factory=list)


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
        try:
            return str(self._write(name, record))
        except OSError as exc:
            with _IN_MEMORY_LOCK:
                _IN_MEMORY.append(record)
            log.error("spool folder %s cannot be written (%s): %d results kept in memory only",
                      self.folder, exc.strerror or exc, len(results))
            return (f"memory only, as the spool folder {self.folder} cannot be written "
                    f"({exc.strerror or exc}); replayed when the database returns, lost if this "
                    "process stops first")

    def _write(self, name: str, record: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / name
        with tempfile.NamedTemporaryFile("w", dir=self.folder, prefix=".", suffix=".tmp",
                                         delete=False) as out:
            json.dump(record, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(out.name, target)
        return target

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("run-*.json")) if self.folder.is_dir() else []

    def replay(self, store: Store) -> Replayed:
        """Every kept record into `store`; a record that fails stays where it is."""
        done = Replayed()
        with _IN_MEMORY_LOCK:
            held = list(_IN_MEMORY)
        for record in held:
            if self._replay_one(store, record, "memory", done):
                with _IN_MEMORY_LOCK:
                    _IN_MEMORY.remove(record)
        for path in self.pending():
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                done.failed.append(f"{path}: unreadable ({exc}); left in place")
                continue
            if self._replay_one(store, record, str(path), done):
                path.unlink(missing_ok=True)
        return done

    def _replay_one(self, store: Store, record: dict[str, Any], source: str, done: Replayed) -> bool:
        try:
            suite = record["suite"]
            kept = store.ensure_suite(suite["name"], suite["version"], suite["capability"],
                                      suite["content_hash"])
            run = Run.model_validate({**record["run"], "suite_id": kept.id})
            results = [ItemResult.model_validate(r) for r in record["results"]]
            added = store.replay_run(run, results, bool(record["complete"]), note=f"replayed from {source}")
        except StoreError as exc:
            done.failed.append(f"{source}: {exc}")
            return False
        except (KeyError, TypeError, ValueError) as exc:
            done.failed.append(f"{source}: not a spool record ({exc.__class__.__name__}: {exc}); "
                               "left in place")
            return False
        done.runs += 1
        done.results += added
        return True


def spool_for(config: Config) -> Spool:
    return Spool(config.resolve(config.spool) if config.spool else None)
