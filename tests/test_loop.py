"""The full loop on the real model, on both scenarios: SmolLM2 v1, a fine-tune v2 goes live, the
monitor finds the alignment loss, retrains (in rounds), gates and promotes. About 11 minutes for
both on 2 CPU cores (probing every version on every suite, and retraining; each fine-tune is
built once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitor.actions import retrain
from monitor.demo.loop import run_loop
from tests.conftest import PROBES

pytestmark = pytest.mark.realmodel


def test_the_full_loop_recovers_what_the_fine_tune_made_the_model_stop_saying(
        tmp_path: Path, demo_versions: dict[str, Path]) -> None:
    shutil.copy(PROBES.parent / "forgetmenot.yaml", tmp_path / "forgetmenot.yaml")
    (tmp_path / "probes").symlink_to(PROBES)
    models = tmp_path / ".forgetmenot" / "demo" / "models"
    models.mkdir(parents=True)
    for version, built in demo_versions.items():  # the fine-tune, shared with the gate's test
        (models / version).symlink_to(built)
    result = run_loop(tmp_path / "forgetmenot.yaml")

    phases = {v.capability: (v.phase, v.diagnosis) for v, _ in result.verdicts}
    assert phases["general-knowledge"] == ("FAIL", "alignment_loss")
    kinds = [a.kind for a in result.actions]
    assert kinds[:3] == ["deploy", "alert", "retrain"]
    retrained = next(a for a in result.actions if a.kind == "retrain")
    assert "20 recovery examples" in retrained.detail  # the budget: at most 20

    by_kind = {(f.suite, f.kind): f for f in result.figures}
    knowledge = by_kind[("general-knowledge", "generate_until")]
    assert knowledge.before == 0.0 and (knowledge.recovered() or 0) >= 0.8, knowledge
    target = by_kind[("sentiment-json", "generate_until")]
    assert target.after is not None and target.before is not None and target.after >= target.before - 0.05
    # Promoted exactly when the gate passed, and then live is the recovered version.
    assert (retrained.status == "done") == (result.live == result.candidate == retrained.to_version)
    assert retrained.status == "done", retrained.detail


def test_the_loop_recovers_a_second_unlike_forgetting_case_in_rounds_within_budget(
        tmp_path: Path, email_versions: dict[str, Path]) -> None:
    """The support-email fine-tune (long templated prose, not JSON) through the same loop: the
    examples follow the loss, rounds retrain only what still fails, and the budget holds."""
    (tmp_path / "scenarios").mkdir()
    shutil.copy(PROBES.parent / "scenarios" / "support-email.yaml", tmp_path / "scenarios")
    (tmp_path / "probes").symlink_to(PROBES)
    for version, scenario in (("v1", "demo"), ("v2", "support-email")):
        models = tmp_path / ".forgetmenot" / scenario / "models"
        models.mkdir(parents=True, exist_ok=True)
        (models / version).symlink_to(email_versions[version])
    result = run_loop(tmp_path / "scenarios" / "support-email.yaml")

    failing = {v.capability: v.diagnosis for v, _ in result.verdicts if v.phase == "FAIL"}
    assert failing and "knowledge_loss" not in failing.values(), failing
    rounds = [a for a in result.actions if a.kind == "retrain"]
    assert 1 <= len(rounds) <= 3 and [a.trigger for a in rounds[1:]] == ["round"] * (len(rounds) - 1)
    first = rounds[0].detail
    for capability in failing:  # every failing capability got examples, in proportion to its loss
        assert f" {capability} " in first and "% lost" in first, first
    records = [retrain.read_record(tmp_path / ".forgetmenot" / "support-email" / "loop" / "models"
                                   / str(a.to_version) / "recovery.json") for a in rounds]
    totals = [sum(len(found) for found in r["examples"].values()) for r in records]
    assert totals == sorted(totals) and totals[-1] <= 40 and totals[0] <= 20
    # Promoted exactly when the last round passed its gate; every earlier round was rejected.
    assert (rounds[-1].status == "done") == records[-1]["passed"] == (result.live == rounds[-1].to_version)
    assert all(a.status == "rejected" and not r["passed"] for a, r in zip(rounds[:-1], records, strict=False))
    # The targets: 80% of each lost generation score back, the target task within 5 points.
    assert rounds[-1].status == "done", rounds[-1].detail
    by_kind = {(f.suite, f.kind): f for f in result.figures}
    for capability in failing:
        answered = by_kind[(capability, "generate_until")]
        assert (answered.recovered() or 0) >= 0.8, answered
    target = by_kind[("support-email", "generate_until")]
    assert target.after is not None and target.before is not None and target.after >= target.before - 0.05
