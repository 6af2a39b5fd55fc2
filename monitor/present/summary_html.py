"""A verdict's summary (`monitor.present.summary`) as the top of its page: the banner, what
happened and why, what to do with the commands, what the ladder did, and for an ERROR the cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from monitor.present.advice import Step
from monitor.present.html import Html, e, facts, join, link, table
from monitor.present.model_page import actions_table
from monitor.present.summary import Cause, RunCause, Summary
from monitor.store import Action

CONFIG_NOTE = ('<p class="muted small">Add -c with the policy file\'s path when it is not '
               "./forgetmenot.yaml.</p>")


def banner(summary: Summary) -> Html:
    if summary.banner is None:
        return Html("")
    return Html(f'<div class="banner" role="alert"><strong>{e(summary.banner)}</strong></div>')


def happened(summary: Summary) -> Html:
    return Html(f"<p><strong>{e(summary.happened)}</strong></p><p>{e(summary.why)}</p>")


def what_to_do(summary: Summary, bad: bool) -> Html:
    steps = join(_step(step) for step in summary.steps)
    fallback = _fallback(summary.fallback)
    note = "note bad" if bad else "note"
    return Html(f'<div class="{note}"><p class="todo"><strong>{e(summary.todo)}</strong></p>{steps}'
                f"{fallback}{_runbook(summary.runbook)}{CONFIG_NOTE}</div>")


def ladder(summary: Summary, actions: Sequence[Action], now: datetime) -> Html:
    lines = join(Html(f"<li>{e(line)}</li>") for line in summary.ladder)
    listed = actions_table(actions, now) if actions else Html("")
    return Html(f'<ul class="ladder">{lines}</ul>{listed}')


def cause(found: Cause | None) -> Html:
    """An ERROR's cause: per run that broke, its error kinds with counts and its first message,
    linked to the run (whose JSON lists its errors); then the endpoint."""
    if found is None:
        return Html("")
    rows = [_run_row(run) for run in found.runs]
    runs = table(["run", "version", "ended", "failed item measurements", "first error"], rows)
    return Html(f"<h2>Cause</h2>{runs}{facts([('endpoint', found.endpoint or '—')])}")


def _run_row(run: RunCause) -> list[object]:
    errors = ", ".join(f"{kind} {count}" for kind, count in run.errors.items()) or "—"
    first = Html(f'<pre class="message">{e(run.first)}</pre>') if run.first else "—"
    return [link(f"/api/v1/runs/{run.run}", f"run {run.run}"), run.version, run.status, errors, first]


def _step(step: Step) -> Html:
    command = f'<pre class="command">{e(step.command)}</pre>' if step.command else ""
    return Html(f"<p>{e(step.say)}</p>{command}")


def _fallback(step: Step | None) -> Html:
    if step is None:
        return Html("")
    return Html(f'<div class="fallback"><p class="muted"><strong>Not the advice.</strong> {e(step.say)}:</p>'
                f'<pre class="command">{e(step.command or "")}</pre></div>')


def _runbook(runbook: str | None) -> Html:
    if runbook is None:
        return Html("")
    if runbook.startswith(("http://", "https://")):
        return Html(f"<p>Runbook: {link(runbook, runbook)}</p>")
    return Html(f"<p>Runbook: <code>{e(runbook)}</code> (in the forgetmenot repository)</p>")
