"""The facts `serve` logs, one record each: a run finished, a verdict judged, an action taken.

Each record's fields are what a log pipeline filters and counts on (`monitor.service.logs.fact`;
their names are listed in docs/serve.md, "Logs"). A drop is given in the unit a person reads it
in (`monitor.units`: points for an accuracy, nats per token for fluency) beside that unit; the
API keeps the raw fractions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from monitor import units
from monitor.service.logs import fact
from monitor.store import Action, KindSummary, Run, Verdict
from monitor.store.runs import RunErrors
from monitor.vocabulary import Phase, RunStatus, diagnosed


def ran(log: logging.Logger, run: Run, kinds: Sequence[KindSummary], failed: RunErrors | None,
        seconds: float) -> None:
    fields = run_fields(run, kinds, failed, seconds)
    level = logging.INFO if run.status == RunStatus.COMPLETE else logging.WARNING
    log.log(level, "run %s: %s/%s on %s", run.status, run.model, run.version, run.suite,
            extra=fact("run", fields))


def run_fields(run: Run, kinds: Sequence[KindSummary], failed: RunErrors | None,
               seconds: float) -> dict[str, Any]:
    """Its mean score per kind and its failed items per error kind."""
    scores = {kind.kind: kind.mean_score for kind in kinds}
    errors = dict(failed.kinds) if failed is not None else {}
    return {"model": run.model, "version": run.version, "suite": run.suite, "capability": run.capability,
            "status": run.status, "items": run.item_count, "scores": scores, "errors": errors,
            "error": run.error, "duration_s": round(seconds, 3), "run": run.id}


def judged(log: logging.Logger, verdict: Verdict, kind: str | None) -> None:
    fields = verdict_fields(verdict, kind)
    level = logging.WARNING if verdict.phase in (Phase.FAIL, Phase.ERROR) else logging.INFO
    log.log(level, "verdict %s: %s/%s against %s on %s", verdict.phase, verdict.model, verdict.candidate,
            verdict.baseline, verdict.capability, extra=fact("verdict", fields))


def verdict_fields(verdict: Verdict, kind: str | None) -> dict[str, Any]:
    """`kind` is the kind whose drop the verdict carries: it gives the drop's unit."""
    drop: float | None = None
    unit: str | None = None
    if kind is not None and verdict.drop is not None:
        drop = units.amount(kind, verdict.drop)
        unit = units.unit(kind)
    return {"model": verdict.model, "candidate": verdict.candidate, "baseline": verdict.baseline,
            "suite": verdict.suite, "capability": verdict.capability, "phase": verdict.phase,
            "diagnosis": diagnosed(verdict.diagnosis), "drop": drop, "unit": unit, "kind": kind,
            "verdict": verdict.id}


def acted(log: logging.Logger, action: Action) -> None:
    fields = action_fields(action)
    said = f"action {action.kind} {action.status}: {action.model}/{action.capability}"
    if action.to_version:
        said += f" {action.from_version} → {action.to_version}"
    log.warning("%s", said, extra=fact("action", fields))


def action_fields(action: Action) -> dict[str, Any]:
    return {"model": action.model, "capability": action.capability, "kind": action.kind,
            "status": action.status, "from": action.from_version, "to": action.to_version,
            "action": action.id, "verdict": action.verdict_id, "dry_run": action.dry_run,
            "reason": action.reason, "detail": action.detail}
