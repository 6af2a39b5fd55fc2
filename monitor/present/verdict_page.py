"""A verdict's page (`/verdicts/{id}`): what every alert links to.

Top to bottom, what the on-call engineer asks in turn: a banner when a critical capability is in
trouble; what was judged; what happened and why; what to do, with the command (from the verdict's
summary, the same words the API and the alerts carry); what the ladder did; for an ERROR, its
cause; each kind's drop with its confidence bounds against the tolerance it was held to (the
rules stored with the verdict, not today's policy); the diagnosis with its numbers; the regressed
items with their prompt and expected answer beside both answers; the evidence report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor import units
from monitor.present import summary_html as sections
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
from monitor.present.item_text import ItemText
from monitor.present.summary import Summary
from monitor.store import Action, ItemResult, Verdict, VerdictKind
from monitor.vocabulary import Diagnosis, Kind, Phase

# An item the suite at hand no longer holds (edited since, or not loadable): its answers still show.
UNKNOWN_ITEM = ItemText("— (not in the suite as loaded now)", "—")


@dataclass(frozen=True)
class Regressed:
    kind: str
    shown: Sequence[tuple[ItemResult, ItemResult]]  # (baseline, candidate), worst first
    total: int
    texts: Mapping[str, ItemText] = field(default_factory=dict)  # by item id: prompt, expected


@dataclass(frozen=True)
class VerdictView:
    verdict: Verdict
    kinds: Sequence[VerdictKind]
    live: str
    regressed: Sequence[Regressed]
    summary: Summary
    ladder: Sequence[Action]  # what the ladder did about this failure, newest first
    report_missing: str | None  # why there is no evidence report; None: /verdicts/{id}/report


def verdict_page(view: VerdictView, now: datetime) -> Html:
    v = view.verdict
    title = f"{v.model} · {v.capability} · {v.phase}"
    regressed = join(_regressed(v, r) for r in view.regressed) or _none()
    body = Html(f"{sections.banner(view.summary)}"
                f"<h1>{e(v.model)} · {e(v.capability)} {phase_badge(v.phase)}</h1>{_facts(view, now)}"
                f"<h2>What happened</h2>{sections.happened(view.summary)}"
                f"<h2>What to do</h2>{sections.what_to_do(view.summary, _bad(v.phase))}"
                f"<h2>What the ladder did</h2>{sections.ladder(view.summary, view.ladder, now)}"
                f"{sections.cause(view.summary.cause)}"
                f"<h2>Per kind: the drop against the tolerance</h2>{_kinds(v, view.kinds)}"
                f"<h2>Diagnosis</h2>{_diagnosis(v, view.kinds)}"
                f"<h2>Regressed items</h2>{regressed}"
                f"<h2>Evidence report</h2>{_report(view)}")
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


def _bad(phase: str) -> bool:
    """A phase a newer forgetmenot wrote, unknown here, is shown as written and asks for nothing."""
    return phase in set(Phase) and Phase(phase).bad


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
    limit = rules.get("max_drop" if units.is_accuracy(k.kind) else "max_drop_nats")
    tolerance = float(limit) if isinstance(limit, int | float) else None
    measured = _measured(k)
    drop: object = "—"
    chart: object = "—"
    if measured is not None:
        mid, low, high = measured
        drop = f"{units.drop_text(k.kind, mid)} {units.bounds_text(k.kind, low, high)}"
        chart = Html(svg.interval_chart(mid, low, high, tolerance, kind=k.kind))
    baseline = units.score_text(k.kind, k.baseline_score)
    candidate = units.score_text(k.kind, k.candidate_score)
    return [words(k.kind), phase_badge(k.phase), (str(k.n), "num"), (baseline, "num"), (candidate, "num"),
            (drop, "num"), (units.tolerance_text(k.kind, tolerance), "num"), chart,
            (number(k.p_value, "{:.2g}"), "num"), (f"{k.lost} / {k.gained}", "num")]


def _measured(k: VerdictKind) -> tuple[float, float, float] | None:
    """The drop and its bounds, when the kind was measured at all."""
    if k.drop is None or k.low is None or k.high is None:
        return None
    return k.drop, k.low, k.high


def _diagnosis(v: Verdict, kinds: Sequence[VerdictKind]) -> Html:
    by_kind = {k.kind: k for k in kinds}
    mc, gen = by_kind.get(Kind.MULTIPLE_CHOICE), by_kind.get(Kind.GENERATE_UNTIL)
    held = "asked again with a reminder, it does it again" if v.witnesses == "one" else "multiple choice held"
    meaning = {Diagnosis.ALIGNMENT_LOSS: f"the model still knows ({held}) but stopped "
               "using it in its answers: recoverable with a little retraining",
               Diagnosis.KNOWLEDGE_LOSS: "both kinds dropped: the knowledge left the weights; roll back",
               Diagnosis.UNDIAGNOSED: "dropped, but measured one way only: knowledge and alignment "
               "cannot be told apart"}.get(Diagnosis(v.diagnosis) if v.diagnosis in set(Diagnosis) else
                                           Diagnosis.NONE, "no loss diagnosed")
    knowledge = units.score_text(Kind.MULTIPLE_CHOICE, mc.candidate_score if mc is not None else None)
    gap = units.drop_text(Kind.GENERATE_UNTIL, _gap(mc, gen))
    return facts([("diagnosis", Html(f"<strong>{e(words(v.diagnosis))}</strong>: {e(meaning)}")),
                  ("knowledge score", Html(f"{e(knowledge)} <span class=\"muted small\">the candidate's "
                                           f"multiple-choice accuracy</span>")),
                  ("alignment gap", Html(f"{e(gap)} <span class=\"muted small\">generation "
                                         f"drop minus multiple-choice drop</span>")), *_witnesses(v)])


WITNESSES = {"agree": "two witnesses agree: multiple choice and re-elicitation",
             "disagree": "the two witnesses disagree (multiple choice and re-elicitation): the reason "
                         "says which way each went; read the regressed items before acting",
             "one": "one witness", "none": "no witness: measured one way only"}


def _witnesses(v: Verdict) -> list[tuple[str, object]]:
    """The diagnosis's witnesses, and the second one's numbers: failing generation asked again."""
    rows: list[tuple[str, object]] = []
    if v.witnesses:
        rows.append(("witnesses", WITNESSES.get(v.witnesses, v.witnesses)))
    if not v.reelicited:
        return rows
    again = json.loads(v.reelicited)
    if again.get("drop") is None:
        return [*rows, ("re-elicited", f"not measured: {again.get('note') or again.get('reason') or '—'}")]
    kind = Kind.GENERATE_UNTIL
    outcome = "came back" if again.get("recovered") else "did not come back"
    share = again.get("came_back")
    if share is not None and again.get("phase") not in ("PASS", "INCONCLUSIVE"):
        outcome = f"{outcome} ({share:.0%} of the loss returned)"
    scores = (f"{units.score_text(kind, again.get('candidate_score'))} re-elicited vs the baseline's "
              f"{units.score_text(kind, again.get('baseline_score'))}")
    drop = f"drop {units.drop_text(kind, again['drop'])} ({again.get('phase')})"
    said = Html(f"{e(outcome)}: {e(scores)}, {e(drop)} <span class=\"muted small\">reminded with "
                f"{e(again.get('how', ''))}; run {e(again.get('run'))}</span>")
    return [*rows, ("re-elicited", said)]


def _gap(mc: VerdictKind | None, gen: VerdictKind | None) -> float | None:
    """How much more generation dropped than multiple choice: the alignment gap."""
    if mc is None or gen is None or mc.drop is None or gen.drop is None:
        return None
    return gen.drop - mc.drop


def _regressed(v: Verdict, found: Regressed) -> Html:
    more = found.total - len(found.shown)
    rows = [_regressed_row(found, base, cand) for base, cand in found.shown]
    caption = f"{words(found.kind)}: {found.total} item(s) regressed"
    if more > 0:
        caption += f"; the worst {len(found.shown)} shown, {more} more"
    if not rows:
        return Html(f"<h3>{e(caption)}</h3>")
    measure = "log-likelihood margin" if found.kind == Kind.MULTIPLE_CHOICE else "score"
    headers = ["item", "prompt", "expected", f"baseline {v.baseline}", f"candidate {v.candidate}",
               f"{measure} (baseline → candidate)"]
    return Html(f"<h3>{e(caption)}</h3>" + table(headers, rows))


def _regressed_row(found: Regressed, base: ItemResult, cand: ItemResult) -> list[object]:
    text = found.texts.get(base.item_id, UNKNOWN_ITEM)
    return [base.item_id, (text.prompt, "answer"), (text.expected, "answer"), (_answer(base), "answer"),
            (_answer(cand), "answer"), (_margin(base, cand), "num")]


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
