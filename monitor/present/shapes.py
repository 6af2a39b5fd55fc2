"""The JSON shapes of what the monitor knows, one function per shape, shared by the HTTP API and
every `--output json` of the CLI: a script reads both alike, and `docs/openapi.json` describes
them once.

Each value is typed as JSON types it: a JSON column is an object, run ids are integers, and what
is not there is null (no diagnosis, rules a verdict stored before verdicts carried them). Scores
and drops stay raw fractions (or nats per token) in named fields; `summary` says them in words.
The retention gate's shape is `monitor.judge.gate.Gate.to_json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from monitor.policy.schema import ModelSpec
from monitor.policy.suites import Suite
from monitor.present.facts import Summaries
from monitor.present.summary import Summary
from monitor.store import Action, ItemResult, KindSummary, ModelVersion, Run, Verdict, VerdictKind
from monitor.store.runs import RunErrors
from monitor.vocabulary import Split, diagnosed

Regression = tuple[ItemResult, ItemResult]  # one item: the baseline's result, then the candidate's


def verdict_json(verdict: Verdict, kinds: Sequence[VerdictKind], summary: Summary) -> dict[str, Any]:
    """A verdict, its statistics per kind, and what it means for whoever is on call."""
    row = verdict.model_dump(mode="json")
    row["diagnosis"] = diagnosed(verdict.diagnosis)
    row["rules"] = _rules(verdict.rules)
    row["reelicited"] = json.loads(verdict.reelicited) if verdict.reelicited else None
    row["candidate_runs"] = run_ids(verdict.candidate_runs)
    row["baseline_runs"] = run_ids(verdict.baseline_runs)
    row["kinds"] = [verdict_kind_json(kind) for kind in kinds]
    row["summary"] = summary.to_json()
    return row


def verdict_kind_json(kind: VerdictKind) -> dict[str, Any]:
    return kind.model_dump(mode="json", exclude={"verdict_id"})


def run_ids(joined: str) -> list[int]:
    """The ids a verdict's runs column holds, comma-separated as stored."""
    parts = [part.strip() for part in joined.split(",")]
    return [int(part) for part in parts if part.isdigit()]


def _rules(stored: str) -> dict[str, Any] | None:
    """The rules as judged; None for a verdict stored before verdicts carried them."""
    if not stored:
        return None
    parsed: dict[str, Any] = json.loads(stored)
    return parsed


def run_json(run: Run, kinds: Sequence[KindSummary], failed: RunErrors | None) -> dict[str, Any]:
    """A run, its score per kind, and why it broke: failed items per error kind, the first error."""
    counts = failed.kinds if failed is not None else {}
    row = run.model_dump(mode="json")
    row["kinds"] = [asdict(kind) for kind in kinds]
    row["errors"] = [{"kind": kind, "count": count} for kind, count in counts.items()]
    row["first_error"] = failed.first if failed is not None else None
    return row


def action_json(action: Action) -> dict[str, Any]:
    row = action.model_dump(mode="json")
    row["diagnosis"] = diagnosed(action.diagnosis)
    return row


def candidate_json(row: ModelVersion) -> dict[str, Any]:
    """A registered candidate: who registered it and its version spec, as registered."""
    return {"model": row.model, "version": row.version, "registered_at": row.created_at.isoformat(),
            "by": row.source.partition(":")[2], "spec": json.loads(row.spec or "{}")}


def model_json(name: str, spec: ModelSpec, live: str, latest: Sequence[Verdict]) -> dict[str, Any]:
    """A model's versions, which is live, and its newest verdict per capability against the baseline."""
    capabilities = {verdict.capability: _cell(verdict) for verdict in latest}
    return {"model": name, "live": live, "baseline": spec.baseline, "versions": list(spec.versions),
            "backend": spec.backend.kind, "capabilities": capabilities}


def _cell(verdict: Verdict) -> dict[str, Any]:
    return {"phase": verdict.phase, "diagnosis": diagnosed(verdict.diagnosis), "verdict": verdict.id,
            "candidate": verdict.candidate}


def suite_json(suite: Suite) -> dict[str, Any]:
    """A probe suite as loaded: its kinds and how many items each split holds."""
    return {"name": suite.name, "version": suite.spec.version, "capability": suite.capability,
            "kinds": [str(kind) for kind in suite.kinds], "probe": len(suite.select(Split.PROBE)),
            "recovery": len(suite.select(Split.RECOVERY)), "content_hash": suite.content_hash}


def explained_json(verdict: dict[str, Any], regressed: Mapping[str, Sequence[Regression]]) -> dict[str, Any]:
    """A verdict (`verdict_json`) and, per kind, the items its candidate lost, worst first."""
    items = {}
    for kind, pairs in regressed.items():
        items[kind] = [regression_json(base, cand) for base, cand in pairs]
    return {"verdict": verdict, "regressions": items}


def regression_json(base: ItemResult, cand: ItemResult) -> dict[str, Any]:
    return {"item": base.item_id, "baseline": _answer(base), "candidate": _answer(cand)}


def _answer(result: ItemResult) -> dict[str, Any]:
    return {"output": result.output, "correct": result.correct, "score": result.score,
            "margin": result.margin}


def judged_json(model: str, candidate: str, baseline: str, phase: str,
                verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`forgetmenot judge`: the overall phase and each verdict (`verdict_json`) it stored."""
    return {"model": model, "candidate": candidate, "baseline": baseline, "phase": phase,
            "verdicts": list(verdicts)}


def verdicts_json(verdicts: Sequence[Verdict], kinds: Mapping[int, Sequence[VerdictKind]],
                  summaries: Summaries) -> list[dict[str, Any]]:
    """Each verdict as `verdict_json`, in the order given; the runs of those that broke are read
    in one query."""
    summaries.prefetch(verdicts)
    listed = []
    for verdict in verdicts:
        stats = kinds.get(verdict.id or 0, [])
        listed.append(verdict_json(verdict, stats, summaries.of(verdict, stats)))
    return listed
