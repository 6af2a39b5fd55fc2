"""Alerts pushed straight to Alertmanager's v2 API when the ladder says `alert`.

The metric-based rules (alerts/forgetmenot.rules.yml) already page on a FAIL; this push carries
what a metric cannot: the verdict's reason, its diagnosis, the action taken and a link to the
evidence, so the on-call engineer starts from the facts. Same labels as the rules, so
Alertmanager's routing and inhibition treat both alike.
"""

from __future__ import annotations

from typing import Any

import httpx

from monitor.config import AlertmanagerSpec, Rules
from monitor.errors import ForgetmenotError
from monitor.store import Action, Verdict, utcnow

ALERTNAME = "ForgetmenotActionTaken"


class AlertError(ForgetmenotError):
    """Alertmanager did not take the alert."""


def verdict_alert(verdict: Verdict, action: Action, rules: Rules, spec: AlertmanagerSpec) -> dict[str, Any]:
    now = utcnow()
    link = f"{spec.link_base.rstrip('/')}/api/v1/verdicts/{verdict.id}" if spec.link_base else ""
    return {
        "labels": {"alertname": ALERTNAME, "model": verdict.model, "version": verdict.candidate,
                   "baseline": verdict.baseline, "capability": verdict.capability,
                   "diagnosis": verdict.diagnosis, "severity": "critical" if rules.critical else "warning"},
        "annotations": {
            "summary": f"{verdict.model}/{verdict.candidate} lost {verdict.capability} "
                       f"({verdict.diagnosis.replace('_', ' ')})",
            "description": verdict.reason,
            "ladder": f"action {action.id}: {action.kind}, from {action.from_version}",
            "verdict": link or f"verdict {verdict.id}",
            "report": verdict.report or "",
        },
        "startsAt": now.isoformat(),
        "endsAt": (now + spec.resolve_after).isoformat(),
        "generatorURL": link,
    }


def push(spec: AlertmanagerSpec, alerts: list[dict[str, Any]]) -> str:
    url = f"{spec.url.rstrip('/')}/api/v2/alerts"
    try:
        response = httpx.post(url, json=alerts, timeout=10.0)
    except httpx.HTTPError as exc:
        raise AlertError(f"Alertmanager {url}: {exc}") from exc
    if response.status_code // 100 != 2:
        raise AlertError(f"Alertmanager {url}: HTTP {response.status_code}: {response.text[:200]}")
    return f"pushed to {url}"



