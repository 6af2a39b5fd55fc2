"""One unit and one sign on the surfaces besides the pages: the gate's table and JUnit, the judge's
reasons, the demo's before/after table. Accuracy in points, fluency in nats per token, a drop
positive when the candidate is worse."""

from __future__ import annotations

from rich.console import Console

from monitor.judge import decide, diagnose
from monitor.judge.gate import Check, Gate
from monitor.judge.stats import PairedResult
from monitor.judge.verdict import KindJudgement
from monitor.policy.schema import Policy
from monitor.present.gate import gate_table, junit_xml
from monitor.present.tables import Row, comparison_table
from monitor.vocabulary import Decision, Kind, Phase

RULES = Policy().rules_for("x")  # max_drop 0.05, max_drop_nats 0.05, confidence 0.95


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, force_terminal=False, color_system=None)
    console.print(renderable)
    return " ".join(console.export_text().split())


def _gate() -> Gate:
    reason = "generate_until: drop +52.6 pts"
    accuracy = Check("arithmetic", "arithmetic", "v1", "FAIL", "alignment_loss", 0.526, 0.45, 0.6, 0.05,
                     verdict=3, reason=reason, kind="generate_until", tolerance=0.05)
    fluency = Check("fluency", "fluency", "v1", "PASS", "none", -0.0304, -0.05, -0.01, 0.05, verdict=4,
                    reason="within", kind="loglikelihood_rolling", tolerance=0.2)
    return Gate("bot", "v2", Decision.FAIL, "arithmetic against v1: FAIL", [accuracy, fluency])


def test_the_gate_table_writes_drops_and_tolerances_in_their_units() -> None:
    text = _text(gate_table(_gate()))
    assert "+52.6 pts │ 5 pts" in text, text
    assert "-0.030 nats/token │ 0.2 nats/token" in text, "a gain is negative, in the fluency unit"
    assert "0.526" not in text and "0.100" not in text
    assert 'message="FAIL: generate_until: drop +52.6 pts"' in junit_xml(_gate()), "JUnit: the judge's reason"


def test_the_judges_reasons_and_diagnosis_write_a_drop_positive_when_worse() -> None:
    lost = PairedResult(78, 0.526, 0.0, 0.526, 0.45, 0.6, 1e-9, "t")
    phase, reason = decide(lost, RULES)
    assert phase == Phase.FAIL
    assert reason == "drop +52.6 pts (95% bounds [+45.0, +60.0] pts) exceeds the tolerance 5 pts"
    gained = PairedResult(78, 0.5, 0.65, -0.15, -0.2, -0.1, 1e-3, "t")
    assert decide(gained, RULES)[1].startswith("drop -15.0 pts (95% bounds [-20.0, -10.0] pts)")
    fluency = PairedResult(35, -3.331, -3.361, 0.0304, 0.017, 0.044, 0.01, "t")
    assert decide(fluency, RULES, unit="nats/token")[1] == (
        "drop +0.030 nats/token (95% bounds [+0.017, +0.044] nats/token) is within the tolerance "
        "0.05 nats/token")
    held = PairedResult(78, 0.6, 0.6, 0.0, -0.02, 0.02, 1.0, "t")
    kinds = [KindJudgement(Kind.MULTIPLE_CHOICE, Phase.PASS, "", held),
             KindJudgement(Kind.GENERATE_UNTIL, Phase.FAIL, "", lost)]
    assert "generation drop +52.6 pts (FAIL), multiple-choice drop +0.0 pts (PASS)" in diagnose(kinds)[1]


def test_the_demos_before_after_table_writes_a_drop_positive_when_worse() -> None:
    rows = [Row("general-knowledge", "generate_until", 0.568, 0.0, 176),
            Row("sentiment-json", "generate_until", 0.0, 0.982, 55),
            Row("fluency", "loglikelihood_rolling", -3.331, -3.361, 35)]
    text = _text(comparison_table(rows, "v1", "v2", "what the fine-tune did"))
    assert "drop ┃ items" in text and "delta" not in text
    assert "+56.8 pts" in text and "-98.2 pts" in text and "+0.030 nats/token" in text, text
