"""A verdict's summary: the advice follows the diagnosis and the policy's ladder, never the phase
alone, and the alert the ladder pushes carries the same words. Pure functions over real rows."""

from __future__ import annotations

from typing import Any

from monitor.actions.alertmanager import summary_annotations
from monitor.policy.schema import Guards, Policy
from monitor.present.summary import Facts, Summary, summarize
from monitor.store import Action, Verdict, VerdictKind

MC = VerdictKind(kind="multiple_choice", phase="PASS", reason="held", n=78, drop=0.0, low=0.0, high=0.0,
                 baseline_score=0.6, candidate_score=0.6)
GEN = VerdictKind(kind="generate_until", phase="FAIL", reason="dropped", n=78, drop=0.526, low=0.45,
                  high=0.6, baseline_score=0.526, candidate_score=0.0)


def _verdict(**fields: Any) -> Verdict:
    base: dict[str, Any] = dict(id=9, model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                                capability="arithmetic", content_hash="h", phase="FAIL",
                                diagnosis="alignment_loss", reason="generate_until dropped")
    return Verdict.model_validate({**base, **fields})


def _action(kind: str, status: str, **fields: Any) -> Action:
    return Action(id=4, model="bot", kind=kind, trigger="verdict", verdict_id=9, capability="arithmetic",
                  from_version="v2", status=status, **fields)


def summary(verdict: Verdict | None = None, actions: list[Action] | None = None,
            ladder: str = "[alert, retrain]", guards: Guards | None = None,
            probe_items: int | None = None) -> Summary:
    policy = Policy.model_validate({"on_alignment_loss": ladder.strip("[]").split(", ")})
    facts = Facts(verdict or _verdict(), [MC, GEN], policy.rules_for("arithmetic"), guards or Guards(), "v2",
                  actions or [], [], None, probe_items, "https://runbooks.example/alerts")
    return summarize(facts)


def _said(found: Summary) -> str:
    """Everything the advice says, fallback excluded."""
    return " ".join([found.todo, *(f"{s.say} {s.command}" for s in found.steps)])


def test_a_dry_run_says_nothing_moved_and_offers_no_rollback() -> None:
    dry = _action("retrain", "dry_run", dry_run=True, detail="would retrain v2 on 12 recovery examples")
    found = summary(actions=[dry], guards=Guards(dry_run=True))
    assert found.steps[0].say.startswith("Dry run: nothing moved") and found.command is None
    assert "dry run: nothing moved (policy.guards.dry_run)" in found.ladder
    assert "rollback" not in _said(found) and found.fallback is None


def test_alignment_loss_keeps_the_rollback_as_a_labelled_fallback_only_where_the_ladder_has_one() -> None:
    found = summary(actions=[_action("retrain", "pending_approval")], ladder="[alert, retrain, rollback]")
    assert found.command == "forgetmenot approve 4" and "rollback" not in _said(found)
    assert found.fallback is not None and found.fallback.say.startswith("Fallback")
    assert found.fallback.command == "forgetmenot rollback bot --to v1"
    without_retrain = summary(ladder="[alert, rollback]")
    assert "has no retrain step" in _said(without_retrain) and "rollback" not in _said(without_retrain)
    assert without_retrain.command == "forgetmenot explain 9"


def test_before_the_ladder_acts_the_summary_says_what_it_will_do() -> None:
    found = summary(guards=Guards(approval="manual"))
    assert found.ladder == ("the ladder will: alert → retrain, once 1 FAIL verdict(s) settle it; each move "
                            "waits for forgetmenot approve",)


def test_knowledge_loss_rolled_back_asks_for_nothing() -> None:
    done = _action("rollback", "done", to_version="v1")
    found = summary(_verdict(diagnosis="knowledge_loss"), [done], ladder="[alert, retrain]")
    assert found.steps[0].say == "Nothing: rolled back to v1 (action #4)." and found.command is None
    assert found.ladder[0].startswith("rollback v2 → v1 (action #4, for verdict #9): done")


def test_the_alert_carries_the_pages_advice() -> None:
    found = summary(actions=[_action("retrain", "pending_approval")], ladder="[alert, retrain, rollback]")
    annotations = summary_annotations(found)
    assert annotations["command"] == "forgetmenot approve 4" and annotations["what_to_do"] == found.todo
    assert annotations["fallback"].startswith("Fallback") and annotations["description"] == found.why
    assert "+52.6 pts" in annotations["description"] and "52.6%" in annotations["description"]
    assert annotations["runbook_url"] == "https://runbooks.example/alerts/forgetmenot-retention-breach.md"


def test_inconclusive_with_enough_items_waits_and_critical_marginal_is_loud() -> None:
    waiting = summary(_verdict(phase="INCONCLUSIVE", diagnosis="none"), probe_items=78)
    assert "not enough evidence" in waiting.happened and waiting.command == "forgetmenot explain 9"
    assert waiting.banner is None and waiting.runbook is None
    marginal = summary(_verdict(phase="MARGINAL", critical=True))
    assert marginal.banner == "Critical capability arithmetic: MARGINAL."
    assert marginal.command == "forgetmenot explain 9" and marginal.fallback is None
