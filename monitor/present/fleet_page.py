"""The fleet board (`/`): every model against every capability, the newest verdict in each cell.

A cell says the phase as a word on its colour, the diagnosis, which version was judged against
which, and when; it links to the verdict's page. Per model: the live version, the last run and
the latest actions. A summary line counts the cells per phase, worst first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from monitor.present.html import (
    Html,
    e,
    join,
    link,
    model_href,
    page,
    phase_badge,
    phase_cell_class,
    since,
    table,
    verdict_href,
    words,
)
from monitor.store import Action, Run, Verdict
from monitor.vocabulary import Diagnosis, Phase


@dataclass(frozen=True)
class ModelRow:
    name: str
    live: str
    baseline: str
    cells: Mapping[str, Verdict]  # capability -> the verdict shown
    last_run: Run | None
    actions: Sequence[Action]  # newest first


@dataclass(frozen=True)
class Board:
    capabilities: Sequence[str]
    models: Sequence[ModelRow]


def fleet_page(board: Board, now: datetime) -> Html:
    headers = ["model", "live", *board.capabilities, "last run", "recent actions"]
    rows = [_row(model, board.capabilities, now) for model in board.models]
    body = Html(f"<h1>Fleet</h1>{_summary(board)}{table(headers, rows, css='board')}"
                f'<p class="muted small">Each cell is the newest verdict of that capability: the live '
                f"version's where it has one. Phases: PASS, MARGINAL (past the tolerance, not yet "
                f"confidently), FAIL, INCONCLUSIVE (too little evidence), ERROR (the measurement broke; "
                f"never a FAIL).</p>")
    return page("Fleet", body, now)


def _summary(board: Board) -> Html:
    counts = Counter(v.phase for m in board.models for v in m.cells.values())
    if not counts:
        return Html('<p class="muted">No verdicts yet: the monitor has not judged a live version.</p>')
    ordered = sorted(counts, key=lambda p: -Phase(p).severity if p in set(Phase) else 0)
    parts = [Html(f"{phase_badge(p)} {counts[p]}") for p in ordered]
    return Html(f"<p>{len(board.models)} model(s), {sum(counts.values())} verdict(s): "
                f"{join(parts, ' · ')}</p>")


def _row(model: ModelRow, capabilities: Sequence[str], now: datetime) -> list[object]:
    cells: list[object] = [link(model_href(model.name), model.name), _versions(model)]
    for capability in capabilities:
        verdict = model.cells.get(capability)
        cells.append(_verdict_cell(verdict, model.live, now) if verdict else
                     Html('<span class="muted">no verdict</span>'))
    cells += [_run(model.last_run, now), _actions(model.actions, now)]
    return cells


def _versions(model: ModelRow) -> Html:
    return Html(f'<strong>{e(model.live)}</strong><br><span class="muted small nowrap">baseline '
                f"{e(model.baseline)}</span>")


def _verdict_cell(verdict: Verdict, live: str, now: datetime) -> tuple[Html, str]:
    diagnosis = "" if verdict.diagnosis == Diagnosis.NONE else f"<br>{e(words(verdict.diagnosis))}"
    stale = "" if verdict.candidate == live else ' <span class="small">(not live)</span>'
    content = Html(f'<a href="{e(verdict_href(verdict.id))}">{phase_badge(verdict.phase)}</a>{diagnosis}'
                   f'<br><span class="muted small">{e(verdict.candidate)} vs {e(verdict.baseline)}{stale}'
                   f" · {since(verdict.created_at, now)}</span>")
    return content, phase_cell_class(verdict.phase)


def _run(run: Run | None, now: datetime) -> Html:
    if run is None:
        return Html('<span class="muted">never</span>')
    return Html(f"{e(run.status)} · {since(run.finished_at or run.started_at, now)}<br>"
                f'<span class="muted small">{e(run.version)} · {e(run.suite)}</span>')


def _actions(actions: Sequence[Action], now: datetime) -> Html:
    if not actions:
        return Html('<span class="muted">none</span>')
    return join((Html(f'{e(a.kind)} <strong>{e(words(a.status))}</strong> <span class="muted small">'
                      f"{since(a.created_at, now)}</span>") for a in actions), Html("<br>"))
