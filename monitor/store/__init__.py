"""Every score forgetmenot measures, kept: SQLite by default, PostgreSQL in production.

`Store` is the one way in and out of the database; pass it around, never a global. It is one
class made of one mixin per concern, each in its own module:

    engine.Database        open (migrating to the current schema), sessions, close
    registry.Registry      versions and suite contents seen
    runs.Runs              runs, item results, per-kind summaries, the newest complete run
    coordination.Coordination  heartbeats, reaping dead replicas' runs, claims, locks
    verdicts.Verdicts      verdicts, their statistics, flaky items
    audit.Audit            actions and the live-version pointer
    overview.Overview      the newest of everything per model, in grouped queries (the pages)

A run whose monitor died stays `running` until `reap` closes it as `interrupted`, so a crash
can never pass for a complete measurement.
"""

from __future__ import annotations

from monitor.store.audit import Audit
from monitor.store.coordination import Coordination
from monitor.store.engine import make_engine, redact
from monitor.store.overview import Overview
from monitor.store.registry import Registry
from monitor.store.runs import Runs
from monitor.store.tables import (
    Action,
    Claim,
    FlakyItem,
    Heartbeat,
    ItemResult,
    KindSummary,
    LiveVersion,
    ModelVersion,
    Run,
    RunError,
    RunKind,
    SuiteRecord,
    Verdict,
    VerdictKind,
    utcnow,
)
from monitor.store.verdicts import Verdicts


class Store(Registry, Runs, Coordination, Verdicts, Audit, Overview):
    """The database, every concern of it."""


__all__ = [
    "Action", "Claim", "FlakyItem", "Heartbeat", "ItemResult", "KindSummary", "LiveVersion",
    "ModelVersion", "Run", "RunError", "RunKind", "Store", "SuiteRecord", "Verdict", "VerdictKind",
    "make_engine", "redact", "utcnow",
]
