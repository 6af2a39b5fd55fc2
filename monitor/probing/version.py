"""Probe one model version on a list of suites, reusing what is already measured.

This is the unit of work the CLI, the demo and (later) the scheduler share. The backend is loaded
only if some suite actually needs measuring, and a version whose weights will not load gets an
`error` run per suite: an outage is recorded, never mistaken for forgetting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.errors import BackendError
from monitor.policy.suites import Split, Suite
from monitor.probing.backends.base import Backend
from monitor.probing.run import Advance, VersionRef, open_run, probe_suite, work_units
from monitor.probing.spool import Spool
from monitor.store import Run, Store
from monitor.vocabulary import RunStatus

Track = Callable[[str, int], Advance]
BackendFactory = Callable[[], Backend]


@dataclass(frozen=True)
class Measured:
    suite: Suite
    run: Run
    reused: bool


def probe_version(store: Store, ref: VersionRef, suites: Sequence[Suite], load: BackendFactory, *,
                  split: Split = Split.PROBE, reuse_on: tuple[str, str] | None = None,
                  track: Track | None = None, holder: str | None = None,
                  spool: Spool | None = None) -> list[Measured]:
    """Measure every suite on one version.

    `reuse_on=(backend kind, dtype)` keeps an existing error-free complete run of the same suite
    content measured that way, instead of measuring again.
    """
    store.register_version(ref.model, ref.version)
    done = _reusable(store, ref, suites, reuse_on) if reuse_on else {}
    todo = [s for s in suites if s.name not in done]
    out = [Measured(s, done[s.name], True) for s in suites if s.name in done]
    if not todo:
        return out
    try:
        backend = load()
    except BackendError as exc:
        return out + [Measured(s, _error_run(store, ref, s, exc), False) for s in todo]
    try:
        for suite in todo:
            advance = track(suite.name, work_units(suite, split)) if track else None
            out.append(Measured(suite, probe_suite(store, backend, suite, ref, split=split,
                                                   advance=advance, holder=holder, spool=spool), False))
    finally:
        backend.close()
    return out


def _reusable(store: Store, ref: VersionRef, suites: Sequence[Suite],
              measured_on: tuple[str, str]) -> dict[str, Run]:
    found = {}
    for suite in suites:
        run = store.latest_complete_run(ref.model, ref.version, suite.content_hash, *measured_on)
        if run is not None and run.error_count == 0:
            found[suite.name] = run
    return found


def _error_run(store: Store, ref: VersionRef, suite: Suite, exc: BackendError) -> Run:
    run = open_run(store, suite, ref, backend="unavailable", device="-", dtype="-")
    assert run.id is not None
    return store.finish_run(run.id, RunStatus.ERROR, error=f"{exc.kind}: {exc}")
