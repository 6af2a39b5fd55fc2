"""Rich tables for people: what a run measured, what changed between two versions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from monitor import units
from monitor.judge import Judgement
from monitor.store import Action, KindSummary, Run
from monitor.vocabulary import ActionKind, ActionStatus, Diagnosis, Kind, Phase, RunStatus, TriggeredBy

KIND_LABELS: dict[str, str] = {
    Kind.MULTIPLE_CHOICE: "knows (multiple-choice log-likelihood)",
    Kind.GENERATE_UNTIL: "uses it (generated answer)",
    Kind.LOGLIKELIHOOD_ROLLING: "fluency (mean log-prob per token)",
}
SHORT_LABELS: dict[str, str] = {
    Kind.MULTIPLE_CHOICE: "knows (choice)",
    Kind.GENERATE_UNTIL: "uses it (answer)",
    Kind.LOGLIKELIHOOD_ROLLING: "fluency (log-prob)",
}
SHORT_KINDS: dict[str, str] = {Kind.MULTIPLE_CHOICE: "choice", Kind.GENERATE_UNTIL: "generate",
                               Kind.LOGLIKELIHOOD_ROLLING: "perplexity"}
NARROW = 120  # below this many columns, tables drop their secondary columns and shorten labels


def _frame(title: str, narrow: bool, **settings: Any) -> Table:
    """Narrow terminals get a table without side borders and one space between columns, so the
    columns keep the width."""
    if narrow:
        return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False, **settings)
    return Table(title=title, box=box.HEAVY_HEAD, **settings)


def _label(kind: str, narrow: bool) -> str:
    return (SHORT_LABELS if narrow else KIND_LABELS).get(kind, kind)


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if kind == Kind.LOGLIKELIHOOD_ROLLING else f"{value:.1%}"


def fmt_drop(before: float | None, after: float | None, kind: str) -> str:
    """How much worse `after` is than `before`, in the kind's unit: positive when worse (red),
    negative for a gain (green), as every surface writes a drop."""
    if before is None or after is None:
        return "—"
    drop = before - after
    colour = "white"
    if abs(drop) > 0.05:
        colour = "red" if drop > 0 else "green"
    return f"[{colour}]{units.drop_text(kind, drop)}[/{colour}]"


def runs_table(runs: Sequence[Run], summaries: dict[int, list[KindSummary]], title: str,
               width: int = NARROW) -> Table:
    """One line per run and kind. Narrow terminals get the date without the year and short kinds;
    the run id stays (`probe` names a broken run by it, `/api/v1/runs/{id}` shows its errors), and
    only the version and the suite give way, between words."""
    narrow = width < NARROW
    table = _frame(title, narrow)
    columns = _RUN_COLUMNS_NARROW if narrow else _RUN_COLUMNS
    for column in columns:
        table.add_column(column, justify="right" if column in ("score", "items", "errors") else "left",
                         no_wrap=narrow and column not in ("version", "suite"), overflow="fold")
    several = len({run.model for run in runs}) > 1  # then a narrow table still names the model
    for run in runs:
        assert run.id is not None
        for s in summaries.get(run.id) or [KindSummary("—", None, 0, run.error_count)]:
            cells = _run_cells(run, s, narrow, several)
            table.add_row(*(cells[c] for c in columns))
    return table


_RUN_COLUMNS = ("run", "when (UTC)", "model/version", "suite", "kind", "score", "items", "errors", "status")
_RUN_COLUMNS_NARROW = ("run", "when (UTC)", "version", "suite", "kind", "score", "items", "errors", "status")


def _run_cells(run: Run, s: KindSummary, narrow: bool, several: bool) -> dict[str, str]:
    both = f"{run.model}/{run.version}"
    when = run.started_at.strftime("%m-%d %H:%M" if narrow else "%Y-%m-%d %H:%M")
    return {"run": str(run.id), "when (UTC)": when,
            "model/version": both, "version": both if several else run.version, "suite": run.suite,
            "kind": SHORT_KINDS.get(s.kind, s.kind) if narrow else s.kind,
            "score": fmt(s.mean_score, s.kind), "items": str(s.scored), "errors": str(s.errors),
            "status": _status(run)}


def _status(run: Run) -> str:
    colour = {RunStatus.COMPLETE: "green", RunStatus.ERROR: "red",
              RunStatus.INTERRUPTED: "yellow"}.get(RunStatus(run.status), "white")
    return f"[{colour}]{run.status}[/{colour}]"


@dataclass(frozen=True)
class Row:
    capability: str
    kind: str
    before: float | None
    after: float | None
    items: int


@dataclass(frozen=True)
class Conclusion:
    """One capability as the monitor sees it: the phase, the diagnosis with its second witness
    (`heard`: the re-elicited generation in words, empty where it was not asked), and the ladder
    the policy would climb (nothing unless it FAILs and is not muted)."""

    capability: str
    phase: Phase
    diagnosis: Diagnosis
    muted: bool
    steps: tuple[str, ...]
    heard: str = ""

    @classmethod
    def of(cls, judgement: Judgement) -> Conclusion:
        rules = judgement.rules
        acts = judgement.phase == Phase.FAIL and not rules.muted
        ladder = rules.on_knowledge_loss if judgement.diagnosis == Diagnosis.KNOWLEDGE_LOSS else (
            rules.on_alignment_loss)
        return cls(judgement.capability, judgement.phase, judgement.diagnosis, rules.muted,
                   tuple(ladder) if acts else (), _witness_line(judgement))


def _witness_line(judgement: Judgement) -> str:
    """The second witness as a line under the conclusions: the re-elicited score beside the
    baseline's, and whether the witnesses agree; where it was not measured, the verdict's words."""
    again = judgement.reelicited
    if again is None:
        return ""
    found = again.judgement
    if found is None or found.result is None:
        return again.said()
    kind = Kind.GENERATE_UNTIL
    plain = units.score_text(kind, found.result.baseline)
    asked = units.score_text(kind, found.result.candidate)
    back = "came back" if again.recovered else "did not come back"
    said = f"re-elicited {asked} (baseline {plain}): {back}"
    witnesses = judgement.witnesses
    return f"{said}; witnesses {witnesses}" if witnesses else said


def conclusions_table(conclusions: Sequence[Conclusion], title: str) -> RenderableType:
    """One row per capability; each second witness heard is a line under the table, as wide as the
    terminal, where it has the width a sentence needs."""
    table = Table(title=title)
    for column in ("capability", "phase", "diagnosis", "the policy would"):
        table.add_column(column)
    for c in conclusions:
        would = " → ".join(c.steps) if c.steps else ("nothing (muted)" if c.muted else "nothing")
        diagnosis = "—" if c.diagnosis == Diagnosis.NONE else c.diagnosis.replace("_", " ")
        table.add_row(c.capability, phase(c.phase), diagnosis, would)
    heard = [Text(f"{c.capability}: {c.heard}") for c in conclusions if c.heard]
    return Group(table, *heard)


def comparison_table(rows: Sequence[Row], before: str, after: str, title: str,
                     width: int = NARROW) -> Table:
    narrow = width < NARROW
    table = _frame(title, narrow)
    table.add_column("capability")
    table.add_column("measured as")
    for column in (before, after, "drop", "items"):
        table.add_column(column, justify="right")
    previous = None
    for row in rows:
        name = row.capability if row.capability != previous else ""
        previous = row.capability
        table.add_row(name, _label(row.kind, narrow), fmt(row.before, row.kind),
                      fmt(row.after, row.kind), fmt_drop(row.before, row.after, row.kind),
                      str(row.items))
    return table


PHASE_COLOURS: dict[str, str] = {Phase.PASS: "green", Phase.FAIL: "red", Phase.MARGINAL: "yellow",
                 Phase.INCONCLUSIVE: "cyan", Phase.ERROR: "magenta"}


STATUS_COLOURS: dict[str, str] = {
    ActionStatus.DONE: "green", ActionStatus.FAILED: "red", ActionStatus.REFUSED: "yellow",
    ActionStatus.REJECTED: "magenta", ActionStatus.PENDING_APPROVAL: "cyan", ActionStatus.DRY_RUN: "blue"}


def phase(text: str) -> str:
    colour = PHASE_COLOURS.get(text, "white")
    return f"[bold {colour}]{text}[/bold {colour}]"


def verdicts_table(rows: Sequence[tuple[Any, Sequence[Any]]], title: str, width: int = NARROW) -> Table:
    """One line per capability and kind: the numbers, the phase, and why. The verdict id (what
    `explain` takes), the phase and the diagnosis are never wrapped or cut, and a capability wraps
    only between words; the drop and the bounds give way first. Under `WIDE` columns the table
    loses its side borders and the kinds their long names; under `NARROW` the scores, the bounds
    and p go too (the reasons printed after the table carry them)."""
    narrow = width < NARROW
    wide = width >= WIDE
    table = _frame(title, not wide, show_lines=wide)
    for column in _verdict_columns(narrow):
        table.add_column(column, justify="right" if column in _NUMERIC else "left",
                         no_wrap=column not in _WRAPPED, overflow="fold")
    table.columns[1].width = _longest_word([verdict.capability for verdict, _ in rows], "capability")
    for verdict, kinds in rows:
        for i, k in enumerate(kinds):
            table.add_row(*_verdict_cells(verdict, k, first=i == 0, narrow=narrow, wide=wide))
        again = _reelicited_cells(verdict, narrow, wide)
        if again:
            table.add_row(*again)
    return table


def _reelicited_cells(verdict: Any, narrow: bool, wide: bool) -> list[str] | None:
    """The diagnosis's second witness as one more line under the verdict's kinds: generation asked
    again, reminded, against the baseline's plain generation; its diagnosis cell says whether the
    witnesses agree. None where it was not measured (the reason says why)."""
    stored = getattr(verdict, "reelicited", None)
    again = json.loads(stored) if stored else {}
    if again.get("drop") is None:
        return None
    figures = {key: again.get(key) for key in ("phase", "drop", "low", "high", "p_value", "baseline_score",
                                               "candidate_score")}
    cells = _verdict_cells(verdict, SimpleNamespace(kind=Kind.GENERATE_UNTIL, **figures), first=False,
                           narrow=narrow, wide=wide)
    cells[2] = "generate_until re-elicited" if wide else "re-elicited"
    cells[-1] = f"witnesses {verdict.witnesses}" if verdict.witnesses else ""
    return cells


WIDE = 180  # from here the verdicts table has room for borders and the kinds' full names
_NUMERIC = ("baseline", "candidate", "drop", "p")
_WRAPPED = ("capability", "drop", "bounds")  # between words; the capability at its fixed width
_LONGEST_CAPABILITY = 24  # a longer name folds rather than push the id, phase or diagnosis out


def _longest_word(texts: Sequence[str], header: str) -> int:
    words = [len(word) for text in texts for word in text.split()]
    return min(max([len(header), *words]), _LONGEST_CAPABILITY)


def _verdict_columns(narrow: bool) -> tuple[str, ...]:
    if narrow:
        return ("id", "capability", "kind", "drop", "phase", "diagnosis")
    return ("verdict", "capability", "kind", "baseline", "candidate", "drop", "bounds", "p", "phase",
            "diagnosis")


def _verdict_cells(verdict: Any, k: Any, first: bool, narrow: bool, wide: bool) -> list[str]:
    muted = " (muted)" if verdict.muted else ""
    capability = f"{verdict.capability}{muted}" if first else ""
    diagnosis = verdict.diagnosis if first else ""
    verdict_id = str(verdict.id) if first else ""
    kind = k.kind if wide else SHORT_KINDS.get(k.kind, k.kind)
    drop = units.drop_text(k.kind, k.drop)
    if narrow:
        return [verdict_id, capability, kind, drop, phase(k.phase), diagnosis]
    p_value = "—" if k.p_value is None else f"{k.p_value:.2g}"
    return [verdict_id, capability, kind, fmt(k.baseline_score, k.kind), fmt(k.candidate_score, k.kind), drop,
            units.bounds_text(k.kind, k.low, k.high), p_value, phase(k.phase), diagnosis]


def actions_table(actions: Sequence[Any], title: str, width: int = NARROW) -> RenderableType:
    """The audit trail: what the ladder (or a human) did, when, and why. Under `NARROW` columns
    the table keeps the short facts and each action's reason and detail follow it as paragraphs,
    instead of columns wrapped a few characters a line."""
    narrow = width < NARROW
    columns = ("action", "when (UTC)", "kind", "from → to", "status", "by") if narrow else (
        "action", "when (UTC)", "model", "kind", "trigger", "from → to", "status", "why", "detail", "by")
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for a in actions:
        cells = _action_cells(a)
        table.add_row(*(cells[c] for c in columns))
    if not narrow:
        return table
    notes = [Text.assemble((f"action {a.id}", "bold"), f" why: {a.reason}" if a.reason else "",
                           f"\n  detail: {a.detail}" if a.detail else "") for a in actions]
    return Group(table, *notes)


def _action_cells(a: Any) -> dict[str, str]:
    moved = f"{a.from_version or '—'} → {a.to_version or '—'}" if a.kind != ActionKind.ALERT else "—"
    return {"action": str(a.id), "when (UTC)": a.created_at.strftime("%Y-%m-%d %H:%M:%S"), "model": a.model,
            "kind": a.kind, "trigger": _trigger(a),
            "from → to": moved, "status": f"[{STATUS_COLOURS.get(a.status, 'white')}]{a.status}[/]",
            "why": a.reason, "detail": a.detail, "by": a.actor}


def noise_table(found: Sequence[Any]) -> Table:
    """What calibration found per suite: how often it measured, and which items flipped."""
    table = Table(title="noise floor")
    for column in ("suite", "measurements", "items", "flaky (quarantined)", "examples"):
        table.add_column(column)
    for c in found:
        examples = ", ".join(f"{f.item_id}/{f.kind}" for f in c.flaky[:4])
        table.add_row(c.suite, str(c.measurements), str(c.items), str(len(c.flaky)), examples or "—")
    return table


def recovery_table(figures: Sequence[Any], baseline: str, before: str, after: str,
                   width: int = NARROW) -> Table:
    """What recovery retraining brought back: baseline, the forgetful version, the recovered one."""
    narrow = width < NARROW
    table = _frame(f"recovery: {baseline} → {before} → {after} (probe split)", narrow)
    table.add_column("suite")
    table.add_column("measured as")
    for column in (baseline, before, after, "recovered"):
        table.add_column(column, justify="right")
    for f in figures:
        share = f.recovered()
        table.add_row(f.suite, _label(f.kind, narrow), fmt(f.baseline, f.kind),
                      fmt(f.before, f.kind), fmt(f.after, f.kind), "—" if share is None else f"{share:.0%}")
    return table


def _trigger(action: Action) -> str:
    """`verdict 4`; a later recovery round says so (`round, verdict 4`)."""
    if not action.verdict_id:
        return action.trigger
    if action.trigger == TriggeredBy.VERDICT:
        return f"verdict {action.verdict_id}"
    return f"{action.trigger}, verdict {action.verdict_id}"
