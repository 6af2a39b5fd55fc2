"""The full loop on the real model: SmolLM2 v1, the JSON-sentiment fine-tune v2 goes live, the
monitor finds the alignment loss, retrains, gates and promotes. About 10 minutes on 2 CPU cores
(probing both versions on every suite is most of it; the fine-tune is built once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
