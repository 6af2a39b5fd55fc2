"""Alerts pushed straight to Alertmanager's v2 API when the ladder says `alert`.

The metric-based rules (alerts/forgetmenot.rules.yml) already page on a FAIL; this push carries
what a metric cannot: the verdict's reason, its diagnosis, the action taken and a link to the
evidence, so the on-call engineer starts from the facts. Same labels as the rules, so
Alertmanager's routing and inhibition treat both alike.
"""

from __future__ import annotations

from typing import Any

from monitor.errors import AlertError, BackendError, ConfigError
from monitor.policy.schema import AlertmanagerSpec, Config
from monitor.present.summary import Summary
from monitor.probing.backends.endpoint import Endpoint
from monitor.store import Action, Verdict, utcnow

ALERTNAME = "ForgetmenotActionTaken"
REJECTED = "ForgetmenotRecoveryRejected"
STRANDED = "ForgetmenotNoRollbackTarget"


def verdict_alert(verdict: Verdict, action: Action, summary: Summary,
                  spec: AlertmanagerSpec) -> dict[str, Any]:
    """The verdict's summary as annotations: the words of its page, so the alert, the page and
    the API never disagree on what to do."""
    now = utcnow()
    link = f"{spec.link_base.rstrip('/')}/verdicts/{verdict.id}" if spec.link_base else ""
    return {
        "labels": {"alertname": ALERTNAME, "model": verdict.model, "version": verdict.candidate,
                   "baseline": verdict.baseline, "capability": verdict.capability,
                   "diagnosis": verdict.diagnosis, "severity": "critical" if verdict.critical else "warning"},
        "annotations": {**summary_annotations(summary),
                        "action": f"action {action.id}: {action.kind}, from {action.from_version}",
                        "verdict": link or f"verdict {verdict.id}",
                        "report": verdict.report or ""},
        "startsAt": now.isoformat(),
        "endsAt": (now + spec.resolve_after).isoformat(),
        "generatorURL": link,
    }


def summary_annotations(summary: Summary) -> dict[str, str]:
    """`summary` and `description` as Alertmanager's templates expect them; `what_to_do` and
    `command` the advice; `fallback` only where the ladder has a later resort."""
    fallback = summary.fallback
    said = {"summary": summary.happened, "description": summary.why, "what_to_do": summary.todo,
            "command": summary.command or "", "ladder": "; ".join(summary.ladder),
            "runbook_url": summary.runbook or ""}
    if fallback is not None:
        said["fallback"] = f"{fallback.say}: {fallback.command}"
    return said


def action_alert(action: Action, spec: AlertmanagerSpec, alertname: str, summary: str) -> dict[str, Any]:
    """An action that needs a human (a rejected retraining, a rollback with nowhere to go): live
    is still the failing version."""
    now = utcnow()
    link = f"{spec.link_base.rstrip('/')}/models/{action.model}" if spec.link_base else ""
    return {
        "labels": {"alertname": alertname, "model": action.model, "version": action.from_version or "",
                   "candidate": action.to_version or "", "capability": action.capability or "",
                   "diagnosis": action.diagnosis or "", "severity": "warning"},
        "annotations": {
            "summary": summary,
            "description": action.detail,
            "ladder": f"action {action.id}: {action.kind}, {action.status}",
        },
        "startsAt": now.isoformat(),
        "endsAt": (now + spec.resolve_after).isoformat(),
        "generatorURL": link,
    }


def push(config: Config, alerts: list[dict[str, Any]]) -> str:
    """Retried on transient failures: Alertmanager merges repeated alerts with the same labels."""
    spec = config.policy.alertmanager
    if spec is None:
        raise AlertError("no policy.alertmanager to push to")
    try:
        token = config.secret(spec.token, "policy.alertmanager.token") if spec.token else None
    except ConfigError as exc:
        raise AlertError(f"Alertmanager: {exc}") from exc
    endpoint = Endpoint(spec.url, api_key=token, timeout_s=10.0, max_retries=2, concurrency=1)
    try:
        endpoint.post_text("/api/v2/alerts", alerts)
    except BackendError as exc:
        raise AlertError(f"Alertmanager: {exc}") from exc
    finally:
        endpoint.close()
    return f"pushed to {endpoint.base_url}/api/v2/alerts"



