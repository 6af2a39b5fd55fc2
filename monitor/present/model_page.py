"""A model's page (`/models/{model}`): its score history as charts, its versions, its verdicts and
its actions.

One chart per suite and kind, one line per version (x: when the run finished, y: the mean score;
accuracy kinds on a fixed 0 to 1 axis, perplexity on its own).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor import units
from monitor.present import svg
from monitor.present.html import (
    Html,
    aware,
    e,
    facts,
    join,
    link,
    page,
    phase_badge,
    table,
    verdict_href,
    when,
    words,
)
from monitor.probing.reelicit import SUFFIX as REELICITED
from monitor.store import Action, Run, RunKind, Verdict


@dataclass(frozen=True)
class VersionRow:
    name: str
    where: str  # the weights' path, served name, adapter or image
    description: str
    live: bool
    baseline: bool


@dataclass(frozen=True)
class ModelView:
    name: str
    live: str
    baseline: str
    backend: str
    versions: Sequence[VersionRow]
    history: Sequence[tuple[Run, RunKind]]  # oldest first
    verdicts: Sequence[Verdict]  # newest first
    actions: Sequence[Action]  # newest first
    shown: int  # at most this many verdicts and actions are listed


def model_page(view: ModelView, now: datetime) -> Html:
    head = facts([("live", Html(f"<strong>{e(view.live)}</strong>")), ("baseline", view.baseline),
                  ("backend", view.backend)])
    body = Html(f"<h1>{e(view.name)}</h1>{head}<h2>Score history</h2>{_charts(view)}"
                f"<h2>Versions</h2>{_versions(view.versions)}"
                f"<h2>Verdicts</h2>{_verdicts(view, now)}<h2>Actions</h2>{actions_table(view.actions, now)}"
                f"{_cut(view)}")
    return page(view.name, body, now)


def _charts(view: ModelView) -> Html:
    series: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for run, kind in view.history:
        asked_again = run.suite.endswith(REELICITED)  # a verdict's witness, measured only while failing
        if kind.mean_score is None or run.finished_at is None or asked_again:
            continue
        lines = series.setdefault((run.suite, kind.kind), {})
        lines.setdefault(run.version, []).append((aware(run.finished_at).timestamp(), kind.mean_score))
    if not series:
        return Html('<p class="muted">No complete runs yet.</p>')
    versions = [v.name for v in view.versions]
    figures = [_figure(suite, kind, lines, versions) for (suite, kind), lines in sorted(series.items())]
    labels = [v.name + (" (live)" if v.live else " (baseline)" if v.baseline else "") for v in view.versions]
    return Html(f"{svg.legend(labels)}<div class=\"charts\">{join(figures)}</div>")


def _figure(suite: str, kind: str, lines: dict[str, list[tuple[float, float]]], versions: list[str]) -> Html:
    """One chart; each version keeps its place in `versions`, so its colour and dash are the
    legend's on every chart."""
    drawn = [svg.Series(v, lines.get(v, [])) for v in versions]
    accuracy = units.is_accuracy(kind)
    y_format = functools.partial(units.score_text, kind)  # as every surface writes a score
    xs = [x for points in lines.values() for x, _ in points]
    chart = svg.line_chart(f"{suite} · {kind}", drawn, y_range=(0.0, 1.0) if accuracy else None,
                           x_format=time_format(max(xs) - min(xs)), y_format=y_format)
    return Html(f"<figure><figcaption>{e(suite)} · {e(words(kind))}</figcaption>{Html(chart)}</figure>")


def time_format(span: float) -> Callable[[float], str]:
    """Times on an axis `span` seconds long, as precisely as it needs (UTC)."""
    pattern = "%H:%M:%S" if span < 3600 else "%m-%d %H:%M" if span < 3 * 86400 else "%Y-%m-%d"
    return lambda x: datetime.fromtimestamp(x, UTC).strftime(pattern)


def _versions(rows: Sequence[VersionRow]) -> Html:
    def role(row: VersionRow) -> Html:
        marks = [Html("<strong>live</strong>")] if row.live else []
        return join([*marks, *(["baseline"] if row.baseline else [])], ", ")

    return table(["version", "role", "weights", "description"],
                 [[r.name, role(r), r.where, r.description] for r in rows])


def _verdicts(view: ModelView, now: datetime) -> Html:
    if not view.verdicts:
        return Html('<p class="muted">No verdicts yet.</p>')
    rows = [[link(verdict_href(v.id), f"#{v.id}"), when(v.created_at, now), f"{v.candidate} vs {v.baseline}",
             v.capability, phase_badge(v.phase), words(v.diagnosis), v.reason] for v in view.verdicts]
    return table(["verdict", "judged", "versions", "capability", "phase", "diagnosis", "reason"], rows)


def actions_table(actions: Sequence[Action], now: datetime) -> Html:
    """The audit trail's rows, as the CLI's `forgetmenot actions` lists them."""
    if not actions:
        return Html('<p class="muted">No actions.</p>')
    rows = [[f"#{a.id}", when(a.created_at, now), a.kind, Html(f"<strong>{e(words(a.status))}</strong>"),
             f"{a.from_version or '—'} → {a.to_version or '—'}",
             link(verdict_href(a.verdict_id), f"#{a.verdict_id}") if a.verdict_id else "—",
             a.reason, a.detail, a.actor] for a in actions]
    headers = ["action", "created", "kind", "status", "from → to", "verdict", "reason", "detail", "by"]
    return table(headers, rows)


def _cut(view: ModelView) -> Html:
    if max(len(view.verdicts), len(view.actions)) < view.shown:
        return Html("")
    return Html(f'<p class="muted small">The newest {view.shown} verdicts and actions are listed; '
                f"the JSON API has more (/api/v1/verdicts?model=…, /api/v1/actions?model=…).</p>")
