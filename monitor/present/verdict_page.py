"""A verdict's page (`/verdicts/{id}`): what every alert links to.

Top to bottom, what the on-call engineer asks in turn: what was judged and how it came out; the
one command to run (roll back, or approve what waits for approval); each kind's drop with its
confidence bounds against the tolerance it was held to (the rules stored with the verdict, not
today's policy); the diagnosis with its numbers; the regressed items side by side; the evidence
report; and the actions the verdict set off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.present import svg
from monitor.present.html import (
    Html,
    e,
    facts,
    join,
    link,
    model_href,
    number,
    page,
    phase_badge,
    table,
    when,
    words,
)
from monitor.present.model_page import actions_table
from monitor.store import Action, ItemResult, Verdict, VerdictKind
from monitor.vocabulary import Diagnosis, Kind, Phase


@dataclass(frozen=True)
class Regressed:
    kind: str
    shown: Sequence[tuple[ItemResult, ItemResult]]  # (baseline, candidate), worst first
    total: int


@dataclass(frozen=True)
class VerdictView:
    verdict: Verdict
    kinds: Sequence[VerdictKind]
    live: str
    regressed: Sequence[Regressed]
    actions: Sequence[Action]  # those this verdict set off, newest first
    pending: Sequence[Action]  # the model's actions waiting for approval
    report_missing: str | None  # why there is no evidence report; None: /verdicts/{id}/report


def verdict_page(view: VerdictView, now: datetime) -> Html:
    v = view.verdict
    title = f"{v.model} · {v.capability} · {v.phase}"
    body = Html(f"<h1>{e(v.model)} · {e(v.capability)} {phase_badge(v.phase)}</h1>{_facts(view, now)}"
                f"<h2>What to do</h2>{_commands(view)}"
                f"<h2>Per kind: the drop against the tolerance</h2>{_kinds(v, view.kinds)}"
                f"<h2>Diagnosis</h2>{_diagnosis(v, view.kinds)}"
                f"<h2>Regressed items</h2>{join(_regressed(v, r) for r in view.regressed) or _none()}"
                f"<h2>Evidence report</h2>{_report(view)}"
                f"<h2>Actions from this verdict</h2>{actions_table(view.actions, now)}")
    return page(title, body, now)


def rules_of(verdict: Verdict) -> dict[str, Any]:
    """The rules the verdict was judged by; a verdict from before they were stored has none."""
    try:
        found = json.loads(verdict.rules) if verdict.rules else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _facts(view: VerdictView, now: datetime) -> Html:
    v = view.verdict
    live = Html(f"<strong>{e(view.live)}</strong>" + ("" if view.live == v.candidate else
                                                       " (not the candidate judged here)"))
    flags = ", ".join(f for f, on in (("critical", v.critical), ("muted: never acted on", v.muted)) if on)
    return facts([("model", link(model_href(v.model), v.model)),
                  ("candidate vs baseline", f"{v.candidate} vs {v.baseline}"), ("live now", live),
                  ("capability", f"{v.capability} (suite {v.suite})" + (f"; {flags}" if flags else "")),
                  ("phase", phase_badge(v.phase)),
                  ("diagnosis", Html(f"<strong>{e(words(v.diagnosis))}</strong>")), ("reason", v.reason),
                  ("judged", when(v.created_at, now)), ("verdict", f"#{v.id}")])


def _commands(view: VerdictView) -> Html:
    v = view.verdict
    bad = _bad(v.phase)
    parts = [Html(f"<p>Approve action #{a.id} ({e(_move(a))}), held for manual approval:</p>"
                  f'<pre class="command">forgetmenot approve {int(a.id or 0)}</pre>') for a in view.pending]
    if view.live == v.candidate and bad:
        parts.append(Html(f"<p>Roll {e(v.model)} back to the baseline (through the same guards and "
                          f'audit trail as the monitor):</p><pre class="command">forgetmenot rollback '
                          f"{e(v.model)} --to {e(v.baseline)}</pre>"))
    elif view.live != v.candidate:
        parts.append(Html(f"<p>{e(v.candidate)} is no longer live ({e(view.live)} is): nothing to roll "
                          f"back.</p>"))
    if not parts:
        parts.append(Html(f"<p>Nothing: the verdict is {e(v.phase)}.</p>"))
    note = "bad" if bad else ""
    return Html(f'<div class="note {note}">{join(parts)}<p class="muted small">Add -c with the policy '
                f"file's path when it is not ./forgetmenot.yaml.</p></div>")


def _bad(phase: str) -> bool:
    """A phase a newer forgetmenot wrote, unknown here, is shown as written and asks for nothing."""
    return phase in set(Phase) and Phase(phase).bad


def _move(action: Action) -> str:
    if action.to_version:
        return f"{action.kind} {action.from_version} → {action.to_version}"
    return f"{action.kind} of {action.from_version}"


def _kinds(v: Verdict, kinds: Sequence[VerdictKind]) -> Html:
    rules = rules_of(v)
    confidence = rules.get("confidence")
    bounds = f"{confidence:.0%} bounds" if isinstance(confidence, int | float) else "bounds"
    headers = ["kind", "phase", "pairs", "baseline", "candidate", f"drop ({bounds})", "tolerance",
               "drop vs tolerance", "p", "lost / gained"]
    if not kinds:
        return _none()
    reasons = "".join(f"<li>{e(words(k.kind))}: {e(k.reason)}</li>" for k in kinds)
    return Html(f"{table(headers, [_kind_row(k, rules) for k in kinds])}<ul class=\"small\">{reasons}</ul>")


def _kind_row(k: VerdictKind, rules: Mapping[str, Any]) -> list[object]:
    binary = k.kind in set(Kind) and Kind(k.kind).binary
    unit, scale = ("pts", 100.0) if binary else ("nats/token", 1.0)
    limit = rules.get("max_drop" if binary else "max_drop_nats")
    tolerance = float(limit) if isinstance(limit, int | float) else None
    measured = _measured(k)
    drop: object = "—"
    chart: object = "—"
    if measured is not None:
        mid, low, high = measured
        drop = f"{mid * scale:+.1f} {unit} [{low * scale:+.1f}, {high * scale:+.1f}]"
        chart = Html(svg.interval_chart(mid, low, high, tolerance, unit=unit, scale=scale))
    return [words(k.kind), phase_badge(k.phase), (str(k.n), "num"), (number(k.baseline_score), "num"),
            (number(k.candidate_score), "num"), (drop, "num"),
            (f"{tolerance * scale:g} {unit}" if tolerance is not None else "—", "num"), chart,
            (number(k.p_value, "{:.2g}"), "num"), (f"{k.lost} / {k.gained}", "num")]


def _measured(k: VerdictKind) -> tuple[float, float, float] | None:
    """The drop and its bounds, when the kind was measured at all."""
    if k.drop is None or k.low is None or k.high is None:
        return None
    return k.drop, k.low, k.high


def _diagnosis(v: Verdict, kinds: Sequence[VerdictKind]) -> Html:
    by_kind = {k.kind: k for k in kinds}
    mc, gen = by_kind.get(Kind.MULTIPLE_CHOICE), by_kind.get(Kind.GENERATE_UNTIL)
    meaning = {Diagnosis.ALIGNMENT_LOSS: "the model still knows (multiple choice held) but stopped "
               "using it in its answers: recoverable with a little retraining",
               Diagnosis.KNOWLEDGE_LOSS: "both kinds dropped: the knowledge left the weights; roll back",
               Diagnosis.UNDIAGNOSED: "dropped, but measured one way only: knowledge and alignment "
               "cannot be told apart"}.get(Diagnosis(v.diagnosis) if v.diagnosis in set(Diagnosis) else
                                           Diagnosis.NONE, "no loss diagnosed")
    knowledge = mc.candidate_score if mc is not None else None
    gap = (gen.drop - mc.drop) if mc is not None and gen is not None and mc.drop is not None \
        and gen.drop is not None else None
    return facts([("diagnosis", Html(f"<strong>{e(words(v.diagnosis))}</strong>: {e(meaning)}")),
                  ("knowledge score", Html(f"{number(knowledge)} <span class=\"muted small\">the candidate's "
                                           f"multiple-choice accuracy</span>")),
                  ("alignment gap", Html(f"{number(gap, '{:+.3f}')} <span class=\"muted small\">generation "
                                         f"drop minus multiple-choice drop</span>"))])


def _regressed(v: Verdict, found: Regressed) -> Html:
    more = found.total - len(found.shown)
    rows = [[base.item_id, (_answer(base), "answer"), (_answer(cand), "answer"), (_margin(base, cand), "num")]
            for base, cand in found.shown]
    caption = (f"{words(found.kind)}: {found.total} item(s) regressed"
               + (f"; the worst {len(found.shown)} shown, {more} more" if more > 0 else ""))
    if not rows:
        return Html(f"<h3>{e(caption)}</h3>")
    measure = "log-likelihood margin" if found.kind == Kind.MULTIPLE_CHOICE else "score"
    headers = ["item", f"baseline {v.baseline}", f"candidate {v.candidate}",
               f"{measure} (baseline → candidate)"]
    return Html(f"<h3>{e(caption)}</h3>" + table(headers, rows))


def _answer(result: ItemResult) -> str:
    return (result.output or "").strip()[:500] or "—"


def _margin(base: ItemResult, cand: ItemResult) -> str:
    if base.margin is None or cand.margin is None:
        return "—" if base.score is None or cand.score is None else f"{base.score:.3f} → {cand.score:.3f}"
    return f"{base.margin:+.2f} → {cand.margin:+.2f}"


def _report(view: VerdictView) -> Html:
    if view.report_missing is not None:
        return Html(f'<p class="muted">{e(view.report_missing)}</p>')
    href = f"/verdicts/{int(view.verdict.id or 0)}/report"
    return Html(f"<p>{link(href, 'The evidently report')}: candidate outputs against the baseline's "
                f"(length, words, JSON validity, refusals). Made on first request, then kept.</p>")


def _none() -> Html:
    return Html('<p class="muted">None.</p>')
