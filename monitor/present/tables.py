"""Rich tables for people: what a run measured, what changed between two versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from monitor.store import KindSummary, Run
from monitor.vocabulary import ActionKind, Kind, Phase

KIND_LABELS = {
    "multiple_choice": "knows (multiple-choice log-likelihood)",
    "generate_until": "uses it (generated answer)",
    "loglikelihood_rolling": "fluency (mean log-prob per token)",
}


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if kind == Kind.LOGLIKELIHOOD_ROLLING else f"{value:.1%}"


def fmt_delta(before: float | None, after: float | None, kind: str) -> str:
    if before is None or after is None:
        return "—"
    delta = after - before
    text = fmt_signed(delta, kind)
    colour = "red" if delta < -0.05 else "green" if delta > 0.05 else "white"
    return f"[{colour}]{text}[/{colour}]"


def runs_table(runs: Sequence[Run], summaries: dict[int, list[KindSummary]], title: str) -> Table:
    table = Table(title=title)
    for column in ("run", "when (UTC)", "model/version", "suite", "kind", "score", "items", "errors",
                   "status"):
        table.add_column(column, justify="right" if column in ("score", "items", "errors") else "left")
    for run in runs:
        assert run.id is not None
        kinds = summaries.get(run.id) or [KindSummary("—", None, 0, run.error_count)]
        for s in kinds:
            table.add_row(str(run.id), run.started_at.strftime("%Y-%m-%d %H:%M"),
                          f"{run.model}/{run.version}", run.suite, s.kind, fmt(s.mean_score, s.kind),
                          str(s.scored), str(s.errors), _status(run))
    return table


def _status(run: Run) -> str:
    colour = {"complete": "green", "error": "red", "interrupted": "yellow"}.get(run.status, "white")
    return f"[{colour}]{run.status}[/{colour}]"


@dataclass(frozen=True)
class Row:
    capability: str
    kind: str
    before: float | None
    after: float | None
    items: int


def comparison_table(rows: Sequence[Row], before: str, after: str, title: str) -> Table:
    table = Table(title=title)
    table.add_column("capability")
    table.add_column("measured as")
    for column in (before, after, "delta", "items"):
        table.add_column(column, justify="right")
    previous = None
    for row in rows:
        name = row.capability if row.capability != previous else ""
        previous = row.capability
        table.add_row(name, KIND_LABELS.get(row.kind, row.kind), fmt(row.before, row.kind),
                      fmt(row.after, row.kind), fmt_delta(row.before, row.after, row.kind),
                      str(row.items))
    return table


PHASE_COLOURS = {"PASS": "green", Phase.FAIL: "red", Phase.MARGINAL: "yellow", Phase.INCONCLUSIVE: "cyan",
                 "ERROR": "magenta"}


def phase(text: str) -> str:
    colour = PHASE_COLOURS.get(text, "white")
    return f"[bold {colour}]{text}[/bold {colour}]"


def verdicts_table(rows: Sequence[tuple[Any, Sequence[Any]]], title: str) -> Table:
    """One line per capability and kind: the numbers, the phase, and why."""
    table = Table(title=title, show_lines=True)
    for column in ("verdict", "capability", "kind", "baseline", "candidate", "drop", "bounds", "p",
                   "phase", "diagnosis"):
        numeric = column in ("baseline", "candidate", "drop", "p")
        table.add_column(column, justify="right" if numeric else "left")
    for verdict, kinds in rows:
        for i, k in enumerate(kinds):
            first = i == 0
            table.add_row(
                str(verdict.id) if first else "", verdict.capability + (" (muted)" if verdict.muted else "")
                if first else "", k.kind, fmt(k.baseline_score, k.kind), fmt(k.candidate_score, k.kind),
                fmt_signed(k.drop, k.kind), _bounds(k.low, k.high, k.kind),
                f"{k.p_value:.2g}" if k.p_value is not None else "—", phase(k.phase),
                verdict.diagnosis if first else "")
    return table


def fmt_signed(value: float | None, kind: str) -> str:
    """A change in score: points for accuracies, raw log-prob per token for fluency."""
    if value is None:
        return "—"
    return f"{value:+.3f}" if kind == Kind.LOGLIKELIHOOD_ROLLING else f"{value * 100:+.1f} pts"


def _bounds(low: float | None, high: float | None, kind: str) -> str:
    if low is None or high is None:
        return "—"
    if kind == Kind.LOGLIKELIHOOD_ROLLING:
        return f"{low:+.3f} … {high:+.3f}"
    return f"{low * 100:+.1f} … {high * 100:+.1f}"


def actions_table(actions: Sequence[Any], title: str) -> Table:
    """The audit trail: what the ladder (or a human) did, when, and why."""
    table = Table(title=title)
    for column in ("action", "when (UTC)", "model", "kind", "trigger", "from → to", "status", "why",
                   "detail", "by"):
        table.add_column(column, overflow="fold")
    colors = {"done": "green", "failed": "red", "refused": "yellow", "rejected": "magenta",
              "pending_approval": "cyan", "dry_run": "blue"}
    for a in actions:
        moved = f"{a.from_version or '—'} → {a.to_version or '—'}" if a.kind != ActionKind.ALERT else "—"
        status = f"[{colors.get(a.status, 'white')}]{a.status}[/]"
        trigger = f"verdict {a.verdict_id}" if a.verdict_id else a.trigger
        table.add_row(str(a.id), a.created_at.strftime("%Y-%m-%d %H:%M:%S"), a.model, a.kind, trigger,
                      moved, status, a.reason, a.detail, a.actor)
    return table


def recovery_table(figures: Sequence[Any], baseline: str, before: str, after: str) -> Table:
    """What recovery retraining brought back: baseline, the forgetful version, the recovered one."""
    table = Table(title=f"recovery: {baseline} → {before} → {after} (probe split)")
    table.add_column("suite")
    table.add_column("measured as")
    for column in (baseline, before, after, "recovered"):
        table.add_column(column, justify="right")
    for f in figures:
        share = f.recovered()
        table.add_row(f.suite, KIND_LABELS.get(f.kind, f.kind), fmt(f.baseline, f.kind),
                      fmt(f.before, f.kind), fmt(f.after, f.kind), "—" if share is None else f"{share:.0%}")
    return table
